r"""Three simulators for the sbi benchmark, each with a posterior we can sample exactly.

* ``crescent``: two parameters on the box :math:`[-1, 1]^2`; the observation is a point on a
  noisy half-circle of radius 0.1 around a centre that moves with :math:`|\theta_1 + \theta_2|`
  and :math:`\theta_2 - \theta_1`, so the posterior is two thin crescents (a two-moons-like
  task). Its likelihood is known in closed form (polar coordinates), and reference samples come
  from rejection sampling against the prior.
* ``mixture``: two parameters on :math:`[-10, 10]^2`; :math:`x` is :math:`N(\theta, I)` or
  :math:`N(\theta, 0.01 I)` with equal odds. The posterior is the same mixture around
  :math:`x`, restricted to the box: sampled exactly (draw, reject what leaves the box).
* ``squares``: five parameters with a standard normal prior; :math:`x_1 = \theta_1^2`,
  :math:`x_2 = \theta_2^2` and :math:`x_{3..5} = A \theta_{3..5}`, each plus noise of scale
  0.2. The posterior has four modes (the signs of :math:`\theta_1` and :math:`\theta_2`) and a
  correlated Gaussian block; it factorizes into two one-dimensional posteriors, sampled by
  inverting their CDF on a fine grid, and a Gaussian, sampled exactly.

Every task is a :class:`Task`: its prior (a torch distribution), its simulator, and
``reference(x_o, n, rng)`` returning exact posterior samples at ``x_o``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from sbi.utils import BoxUniform
from torch.distributions import Distribution, MultivariateNormal

__all__ = ["TASKS", "Task"]


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    prior: Callable[[], Distribution]
    simulate: Callable[[torch.Tensor], torch.Tensor]
    reference: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    theta_o: tuple[float, ...]  # the parameters that made the observation
    bounded: bool


# crescent


def _crescent_shift(theta: np.ndarray) -> np.ndarray:
    a = -np.abs(theta[..., 0] + theta[..., 1]) / math.sqrt(2)
    b = (-theta[..., 0] + theta[..., 1]) / math.sqrt(2)
    return np.stack([a + 0.25, b], -1)


def _crescent_simulate(theta: torch.Tensor) -> torch.Tensor:
    n = theta.shape[0]
    angle = (torch.rand(n) - 0.5) * math.pi
    radius = 0.1 + 0.01 * torch.randn(n)
    point = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)
    shift = torch.from_numpy(_crescent_shift(theta.double().numpy())).float()
    return point + shift


def _crescent_likelihood(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """p(x | theta): the point u = x - shift in polar coordinates, angle uniform on a half."""
    u = x - _crescent_shift(theta)
    radius = np.hypot(u[..., 0], u[..., 1])
    density = np.exp(-0.5 * ((radius - 0.1) / 0.01) ** 2) / (0.01 * math.sqrt(2 * math.pi))
    return np.where(u[..., 0] > 0, density / (math.pi * radius), 0.0)


def _crescent_reference(x_o: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # The likelihood is at most the radial density's peak over (pi * its smallest radius).
    bound = 1.0 / (0.01 * math.sqrt(2 * math.pi)) / (math.pi * 0.05)
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        theta = rng.uniform(-1.0, 1.0, size=(1_000_000, 2))
        keep = rng.uniform(0.0, bound, size=len(theta)) < _crescent_likelihood(x_o, theta)
        out.append(theta[keep])
    return np.concatenate(out)[:n]


# mixture


def _mixture_simulate(theta: torch.Tensor) -> torch.Tensor:
    scale = torch.where(torch.rand(theta.shape[0], 1) < 0.5, 1.0, 0.1)
    return theta + scale * torch.randn_like(theta)


def _mixture_reference(x_o: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # The flat prior makes the posterior the likelihood's mixture around x_o, cut to the box;
    # the cut leaves the mixture's odds as they are when x_o is deep inside the box (it is).
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        scale = np.where(rng.uniform(size=(n, 1)) < 0.5, 1.0, 0.1)
        theta = x_o + scale * rng.standard_normal((n, 2))
        out.append(theta[(np.abs(theta) <= 10.0).all(-1)])
    return np.concatenate(out)[:n]


# squares

_SQUARES_NOISE = 0.2
_SQUARES_A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.8], [0.3, 0.0, 1.0]])


def _squares_simulate(theta: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(_SQUARES_A, dtype=theta.dtype)
    mean = torch.cat([theta[:, :2] ** 2, theta[:, 2:] @ a.T], -1)
    return mean + _SQUARES_NOISE * torch.randn_like(mean)


def _squares_reference(x_o: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    columns = []
    grid = np.linspace(-6.0, 6.0, 200_001)
    for i in range(2):  # p(theta_i | x_i) ∝ N(theta_i; 0, 1) N(x_i; theta_i^2, noise^2)
        log_p = -0.5 * grid**2 - 0.5 * ((x_o[i] - grid**2) / _SQUARES_NOISE) ** 2
        cdf = np.cumsum(np.exp(log_p - log_p.max()))
        cdf /= cdf[-1]
        columns.append(np.interp(rng.uniform(size=n), cdf, grid))
    # Gaussian block: prior N(0, I), x = A theta + noise.
    precision = np.eye(3) + _SQUARES_A.T @ _SQUARES_A / _SQUARES_NOISE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ _SQUARES_A.T @ x_o[2:] / _SQUARES_NOISE**2
    block = rng.multivariate_normal(mean, covariance, size=n)
    return np.column_stack([*columns, block])


TASKS = {
    "crescent": Task(
        "crescent",
        lambda: BoxUniform(-torch.ones(2), torch.ones(2)),
        _crescent_simulate,
        _crescent_reference,
        theta_o=(0.3, 0.5),
        bounded=True,
    ),
    "mixture": Task(
        "mixture",
        lambda: BoxUniform(-10 * torch.ones(2), 10 * torch.ones(2)),
        _mixture_simulate,
        _mixture_reference,
        theta_o=(1.5, -2.0),
        bounded=True,
    ),
    "squares": Task(
        "squares",
        lambda: MultivariateNormal(torch.zeros(5), torch.eye(5)),
        _squares_simulate,
        _squares_reference,
        theta_o=(1.0, -0.7, 0.5, -1.0, 0.8),
        bounded=False,
    ),
}
