r"""Importance-sampling diagnostics: effective sample size and Pareto-smoothed weights (PSIS).

Given draws :math:`x_s \sim q` and their log importance weights
:math:`\log w_s = \log p(x_s) - \log q(x_s)` (``p`` possibly unnormalized), two numbers say
how far ``q`` is from ``p``:

- the effective sample size per draw,
  :math:`\text{ESS} / S = (\sum_s w_s)^2 / (S \sum_s w_s^2)`, 1 when every weight is equal and
  :math:`1 / S` when one draw holds all the weight;
- the Pareto :math:`\hat{k}`: the shape of a generalized Pareto distribution fitted to the
  largest weights. The weights have finite variance when :math:`k < 1/2` and a finite mean
  when :math:`k < 1`; in practice estimates from ``q`` are reliable below 0.7.

:func:`psis` also replaces the largest weights by the quantiles of the fitted distribution
(Pareto-smoothed importance sampling), which lowers the variance of self-normalized estimates.
The fit is that of Zhang and Stephens (2009), a posterior mean over a grid of the profile
likelihood, followed by the weakly informative prior on :math:`k` of Vehtari et al.

References:
    | A new and efficient estimation method for the generalized Pareto distribution
    | (Zhang and Stephens, 2009)
    | https://doi.org/10.1198/tech.2009.08017

    | Pareto Smoothed Importance Sampling (Vehtari et al., 2015, revised 2024)
    | https://arxiv.org/abs/1507.02646

Example:
    >>> import torch
    >>> log_weights = torch.zeros(1000)  # q equal to p: every weight is 1
    >>> importance_diagnostics(log_weights)
    (1.0, -inf)
    >>> _ = torch.manual_seed(0)
    >>> pareto = torch.distributions.Pareto(torch.tensor(1.0).double(), 2.0)  # tail k = 1 / 2
    >>> ess, khat = importance_diagnostics(pareto.sample((100000,)).log())
    >>> round(khat, 1)
    0.5
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gpd_fit", "importance_diagnostics", "psis", "tail_length"]


def tail_length(samples: int) -> int:
    r"""The number :math:`M = \lceil \min(S / 5, 3 \sqrt{S}) \rceil` of largest weights that
    PSIS fits a generalized Pareto distribution to, out of ``samples`` draws.

    Example:
        >>> tail_length(100), tail_length(10000)
        (20, 300)
    """
    return math.ceil(min(0.2 * samples, 3 * math.sqrt(samples)))


def gpd_fit(exceedances: Tensor) -> tuple[float, float]:
    r"""Fit a generalized Pareto distribution to positive exceedances; return ``(k, sigma)``.

    The distribution of shape :math:`k` and scale :math:`\sigma` has the survival function
    :math:`(1 + k x / \sigma)^{-1/k}`. With :math:`\theta = k / \sigma`, the likelihood's
    maximum over :math:`k` is :math:`\hat{k}(\theta) = \frac{1}{n} \sum_i \log(1 + \theta
    x_i)`; :math:`\theta` is the mean of a grid of values weighted by this profile likelihood
    (Zhang and Stephens), and the estimate of :math:`k` is then pulled toward 1/2 as by a
    prior worth 10 draws: :math:`(n \hat{k} + 5) / (n + 10)`.

    Arguments:
        exceedances: The ``n`` amounts by which the largest draws exceed a threshold, 1-D and
            sorted in increasing order.

    Returns:
        The shape :math:`k` (after the prior) and the scale :math:`\sigma`; ``(inf, nan)``
        when a quarter of the exceedances or more are 0.

    Example:
        >>> _ = torch.manual_seed(1)
        >>> x = torch.distributions.Exponential(2.0).sample((5000,)).double().sort().values
        >>> k, sigma = gpd_fit(x)  # an exponential is a GPD with k = 0, sigma = 1 / rate
        >>> round(k, 1), round(sigma, 1)
        (0.0, 0.5)
    """
    x = exceedances.double()
    n = x.numel()
    grid = 30 + int(math.sqrt(n))
    j = torch.arange(1, grid + 1, dtype=x.dtype, device=x.device)
    # The grid of Zhang and Stephens, in their b = -theta, anchored at the largest draw and
    # the first quartile.
    quartile = x[max(int(n / 4 + 0.5), 1) - 1]
    if float(quartile) <= 0:
        # A quarter of the tail does not exceed the threshold (weights that underflow beside
        # the largest, log weights some 700 apart): no Pareto fit, the heaviest of tails.
        return math.inf, math.nan
    b = 1 / x[-1] + (1 - torch.sqrt(grid / (j - 0.5))) / (3 * quartile)
    k = torch.log1p(-b[:, None] * x).mean(dim=1)
    profile = n * (torch.log(-b / k) - k - 1)
    weights = torch.softmax(profile, dim=0)
    b_mean = (weights * b).sum()
    k_hat = float(torch.log1p(-b_mean * x).mean())
    sigma = -k_hat / float(b_mean)
    k_hat = (n * k_hat + 10 * 0.5) / (n + 10)
    return k_hat, sigma


def _gpd_quantiles(p: Tensor, k: float, sigma: float) -> Tensor:
    if abs(k) < 1e-12:
        return -sigma * torch.log1p(-p)
    return sigma / k * torch.expm1(-k * torch.log1p(-p))


def _psis_1d(log_weights: Tensor) -> tuple[Tensor, float]:
    """Smoothed, self-normalized log weights of one set of draws, and their k-hat."""
    lw = log_weights.double()
    samples = lw.numel()
    tail = tail_length(samples)
    largest = lw.max()
    if not bool(torch.isfinite(largest)):
        # +inf: one draw takes all the weight; all -inf: none has any.
        out = torch.where(lw == largest, 0.0, -math.inf) if largest > 0 else lw.clone()
        return out - torch.logsumexp(out, 0), math.inf
    lw = lw - largest
    if tail < 5 or tail >= samples:
        return lw - torch.logsumexp(lw, 0), math.inf  # too few draws to fit a tail
    order = torch.argsort(lw)
    threshold = lw[order[-tail - 1]]
    tail_rows = order[-tail:]
    exceedances = lw[tail_rows].exp() - threshold.exp()
    smoothed = lw.clone()
    if float(exceedances[-1]) <= 0:
        return smoothed - torch.logsumexp(smoothed, 0), -math.inf  # a flat tail
    k, sigma = gpd_fit(exceedances)
    if math.isfinite(k):
        p = (torch.arange(1, tail + 1, dtype=lw.dtype, device=lw.device) - 0.5) / tail
        values = torch.log(threshold.exp() + _gpd_quantiles(p, k, sigma))
        # No smoothed weight above the largest raw one (the largest shifted to 0).
        smoothed[tail_rows] = values.clamp(max=0.0)
    return smoothed - torch.logsumexp(smoothed, 0), k


def _per_column(log_weights: Tensor, name: str) -> Tensor:
    """``log_weights`` as a ``(S, B)`` matrix, after checking it."""
    if not isinstance(log_weights, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(log_weights).__name__}")
    if log_weights.dim() < 1 or log_weights.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (S,) or (S, *batch) with S >= 1 draws, "
            f"got {tuple(log_weights.shape)}"
        )
    if bool(torch.isnan(log_weights).any()):
        raise ValueError(f"{name} holds NaN; a log weight is a number or -inf")
    return log_weights.reshape(log_weights.shape[0], -1)


def psis(log_weights: Tensor) -> tuple[Tensor, Tensor | float]:
    r"""Pareto-smoothed importance sampling: smoothed, self-normalized log weights and k-hat.

    The :math:`M` largest of the :math:`S` weights (:func:`tail_length`) are replaced by the
    quantiles :math:`u + F^{-1}((i - 1/2) / M)` of a generalized Pareto distribution
    :math:`F` fitted (:func:`gpd_fit`) to their excess over the largest other weight :math:`u`,
    none above the largest raw weight; the weights are then normalized to sum to 1.

    Arguments:
        log_weights: Log importance weights, of shape :math:`(S,)` or :math:`(S, *)`: the
            first dimension indexes the draws, each other index its own set of draws.

    Returns:
        The smoothed log weights (same shape, ``logsumexp`` 0 over the draws) and
        :math:`\hat{k}`: a float for 1-D input, else a float64 tensor of the batch shape.
        :math:`\hat{k}` is ``inf`` with fewer than 5 tail draws (:math:`S < 21`), a weight
        of ``inf``, or a few weights that dwarf the rest of the tail (which underflow to 0
        beside them), and ``-inf`` when the largest weights are all equal.

    Raises:
        TypeError: ``log_weights`` is not a tensor.
        ValueError: ``log_weights`` has no draws or holds NaN.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> log_weights = 0.5 * torch.randn(1000)  # q close to p: a light tail
        >>> smoothed, khat = psis(log_weights)
        >>> round(float(smoothed.logsumexp(0)), 6), khat < 0.5
        (0.0, True)
    """
    columns = _per_column(log_weights, "log_weights")
    results = [_psis_1d(columns[:, i]) for i in range(columns.shape[1])]
    smoothed = torch.stack([r[0] for r in results], dim=1).reshape(log_weights.shape)
    smoothed = smoothed.to(log_weights.dtype if log_weights.is_floating_point() else torch.float64)
    if log_weights.dim() == 1:
        return smoothed, results[0][1]
    khat = torch.tensor([r[1] for r in results], dtype=torch.float64)
    return smoothed, khat.reshape(log_weights.shape[1:])


def importance_diagnostics(log_weights: Tensor) -> tuple[Tensor | float, Tensor | float]:
    r"""The effective sample size per draw and the Pareto :math:`\hat{k}` of importance weights.

    .. math:: \frac{\text{ESS}}{S} = \frac{(\sum_s w_s)^2}{S \sum_s w_s^2}

    computed from the raw weights, and :math:`\hat{k}` as :func:`psis` estimates it.

    Arguments:
        log_weights: Log importance weights :math:`\log p(x_s) - \log q(x_s)` of draws
            :math:`x_s \sim q`, of shape :math:`(S,)` or :math:`(S, *)` (one set of draws per
            index of the other dimensions, e.g. one per context).

    Returns:
        ``(ess_per_sample, khat)``: floats for 1-D input, else float64 tensors of the batch
        shape. ESS per sample is in :math:`[1/S, 1]`.

    Raises:
        TypeError: ``log_weights`` is not a tensor.
        ValueError: ``log_weights`` has no draws or holds NaN.

    Example:
        >>> log_weights = torch.tensor([0.0, 0.0, 0.0, -math.inf])  # one draw of no weight
        >>> round(importance_diagnostics(log_weights)[0], 6)
        0.75
    """
    columns = _per_column(log_weights, "log_weights").double()
    samples = columns.shape[0]
    # Weights relative to the largest: the ratio is unchanged and nothing overflows.
    weights = torch.exp(columns - columns.max(dim=0).values)
    ess = weights.sum(0) ** 2 / (samples * (weights**2).sum(0))
    # Rounding may pass 1; no draw with any weight (NaN) has no effective draw.
    ess = torch.nan_to_num(ess, nan=0.0).clamp(max=1.0)
    khat = torch.tensor(
        [_psis_1d(columns[:, i])[1] for i in range(columns.shape[1])], dtype=torch.float64
    )
    if log_weights.dim() == 1:
        return float(ess[0]), float(khat[0])
    return ess.reshape(log_weights.shape[1:]).cpu(), khat.reshape(log_weights.shape[1:])
