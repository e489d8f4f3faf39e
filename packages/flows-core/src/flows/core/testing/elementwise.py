r"""The element-wise contract: checks for a fixed bijection onto per-feature bounds.

:func:`check_univariate` checks families of transforms built from random parameters, on a
domain with one pair of scalar bounds. A fixed element-wise bijection between the real line and
a box with different bounds per feature, such as
:class:`~flows.core.transforms.support.SupportTransform`, is checked here instead, on the
transform itself:

    >>> import torch
    >>> from flows.core.testing import check_elementwise
    >>> from flows.core.transforms import SupportTransform
    >>> inf = float("inf")
    >>> t = SupportTransform(torch.tensor([0.0, 0.0, -inf]), torch.tensor([1.0, inf, 2.0]))
    >>> check_elementwise(t, features=3, dtype=torch.float32)

It imports only torch and flows.core.
"""

from __future__ import annotations

__all__ = ["check_elementwise"]

import math

import torch
from torch import Tensor
from torch.distributions import Transform as _TorchTransform
from torch.distributions import constraints

from flows.core.testing.univariate import _DEFAULT_ATOL, _Checker
from flows.core.transforms.base import call_and_ladj, inverse_and_ladj


class _ElementwiseChecker(_Checker):
    def fail(self, check: str, detail: str) -> None:
        raise AssertionError(
            f"check_elementwise({self.name}) failed the {check!r} check: {detail}"
        )


def _box(
    constraint: constraints.Constraint, features: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The per-feature bounds of a constraint, infinite where there are none."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    low = getattr(constraint, "lower_bound", -math.inf)
    high = getattr(constraint, "upper_bound", math.inf)
    shape = (features,)
    low = torch.as_tensor(low, dtype=dtype, device=device).expand(shape)
    high = torch.as_tensor(high, dtype=dtype, device=device).expand(shape)
    return low, high


def _inside(low: Tensor, high: Tensor, rows: int, generator: torch.Generator) -> Tensor:
    """Points inside the box: normal on a line, around the bound on a half-line, uniform in
    (1%, 99%) of an interval."""
    shape = (rows, low.shape[-1])
    normal = torch.randn(shape, generator=generator, dtype=torch.float64).to(low)
    u = torch.rand(shape, generator=generator, dtype=torch.float64).to(low)
    lower, upper = torch.isfinite(low), torch.isfinite(high)
    a = torch.where(lower, low, torch.zeros_like(low))
    b = torch.where(upper, high, torch.zeros_like(high))
    return torch.where(
        lower & upper,
        a + (b - a) * (0.01 + 0.98 * u),
        torch.where(lower, a + normal.exp(), torch.where(upper, b - normal.exp(), 2 * normal)),
    )


def _edges(low: Tensor, high: Tensor) -> Tensor:
    """Two rows: the closest floats inside each finite bound (at least the square root of the
    smallest normal float away from it, beyond which gradients of order one over the distance
    overflow), and the largest floats of each open side."""
    margin = math.sqrt(torch.finfo(low.dtype).tiny)
    near_low = torch.maximum(torch.nextafter(low, high), low + margin)
    near_high = torch.minimum(torch.nextafter(high, low), high - margin)
    return torch.stack([near_low, near_high])


def check_elementwise(
    transform: _TorchTransform,
    features: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    atol: float | None = None,
    rows: int = 64,
    extreme: float = 1e4,
    seed: int = 0,
) -> None:
    r"""Check that a fixed element-wise bijection onto per-feature bounds honours the contract.

    The transform maps its domain onto its codomain feature by feature; either may be an
    interval, a half-line or the line, with bounds that are scalars or one per feature (as
    ``constraints.interval(low, high)`` with tensors). With inputs of shape ``(rows, F)``, it
    checks, each check named in the error:

    * ``shape``: the output and log-determinant have the shape, dtype and device of the input;
    * ``call_and_ladj``: it agrees with ``t(x)`` and ``t.log_abs_det_jacobian(x, y)``;
    * ``inverse``: :math:`f^{-1}(f(x)) \approx x` inside the domain and
      :math:`f(f^{-1}(y)) \approx y` inside the codomain, the inverse's log-determinant minus
      the forward one;
    * ``element-wise``: the Jacobian of a row is diagonal, its log-diagonal the log-determinant;
    * ``codomain``: outputs of inputs up to ``extreme`` in magnitude (near the ends of a bounded
      domain) are finite and strictly inside the codomain, never on a bound;
    * ``edges``: at the closest floats inside each bound of the codomain (at least the square
      root of the smallest normal float away from a finite one), the inverse, its
      log-determinant and their gradients are finite; outputs of the domain's edges likewise.

    Tolerances are relative, :math:`|a - b| \leq \text{atol} (1 + |b|)`, with ``atol``
    :math:`10^{-6}` in float64 and :math:`10^{-3}` in float32 by default.

    Arguments:
        transform: The transform, built (its bounds on ``device``, or Python floats).
        features: The number of features :math:`F`, the inputs' last dimension.
        dtype: The floating point type of the inputs.
        device: The device of the inputs.
        atol: The tolerance; ``None`` for the default of ``dtype``.
        rows: The number of input rows.
        extreme: The largest input magnitude on an unbounded side of the domain.
        seed: The seed of the random inputs (the global RNG is untouched).

    Raises:
        AssertionError: A check failed; the message names it and shows the worst value.
    """
    name = repr(transform)
    device = torch.device(device)
    tol = atol if atol is not None else _DEFAULT_ATOL.get(dtype, 1e-2)
    checker = _ElementwiseChecker(name)
    generator = torch.Generator().manual_seed(seed)
    t = transform
    domain = _box(t.domain, features, dtype, device)
    codomain = _box(t.codomain, features, dtype, device)

    x = _inside(*domain, rows, generator).requires_grad_()
    y, ladj = call_and_ladj(t, x)
    for what, value in (("y", y), ("ladj", ladj)):
        if value.shape != x.shape:
            checker.fail("shape", f"{what} has shape {tuple(value.shape)}, x has {tuple(x.shape)}")
        if value.dtype != dtype or value.device.type != device.type:
            checker.fail(
                "shape", f"{what} is {value.dtype} on {value.device}, x is {dtype} on {device}"
            )
    checker.close("call_and_ladj", y, t(x), tol)
    checker.close("call_and_ladj", ladj, t.log_abs_det_jacobian(x, y), tol)

    x_back, ladj_back = inverse_and_ladj(t, y.detach())
    checker.close("inverse", x_back, x.detach(), tol)
    checker.close("inverse", ladj_back, -ladj.detach(), tol)
    y_drawn = _inside(*codomain, rows, generator)
    checker.close("inverse", t(t.inv(y_drawn)), y_drawn, tol)

    jacobian = torch.autograd.functional.jacobian(lambda row: t(row), x[0].detach())
    diagonal = torch.diagonal(jacobian)
    off = jacobian - torch.diag_embed(diagonal)
    if off.abs().max() > 0:
        checker.fail("element-wise", f"the Jacobian of a row is not diagonal: {jacobian}")
    checker.close("element-wise", ladj[0].detach(), diagonal.abs().log(), 10 * tol)

    magnitudes = torch.logspace(0, math.log10(extreme), 5, dtype=torch.float64).to(dtype)
    far = torch.cat([-magnitudes.flip(0), torch.zeros(1, dtype=dtype), magnitudes]).to(device)
    far = far[:, None].expand(-1, features)
    low, high = domain
    far = torch.where(
        torch.isfinite(low) | torch.isfinite(high), _inside(low, high, len(far), generator), far
    )
    for what, inputs in (("large inputs", far), ("the domain's edges", _edges(*domain))):
        inputs = inputs.clone().requires_grad_()
        y_far, ladj_far = call_and_ladj(t, inputs)
        checker.finite("codomain", f"y at {what}", y_far)
        checker.finite("codomain", f"ladj at {what}", ladj_far)
        outside = (y_far <= codomain[0]) | (y_far >= codomain[1])
        if outside.any():
            index = int(outside.flatten().nonzero()[0])
            checker.fail(
                "codomain",
                f"y = {y_far.flatten()[index].item()!r} at {what} is not strictly inside the "
                f"codomain (feature {index % features})",
            )
        (grad,) = torch.autograd.grad(y_far.sum() + ladj_far.sum(), inputs)
        checker.finite("edges", f"the gradient at {what}", grad)

    edges = _edges(*codomain).requires_grad_()
    x_edge, ladj_edge = inverse_and_ladj(t, edges)
    checker.finite("edges", "the inverse at the codomain's edges", x_edge)
    checker.finite("edges", "the inverse's ladj at the codomain's edges", ladj_edge)
    (grad,) = torch.autograd.grad(x_edge.sum() + ladj_edge.sum(), edges)
    checker.finite("edges", "the inverse's gradient at the codomain's edges", grad)
