r"""Order statistics of independent draws: sorted samples, top-k, minimum and maximum."""

from __future__ import annotations

__all__ = ["Maximum", "Minimum", "Sort", "TopK"]

import math

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints
from torch.types import _size

from flows.core.validation import check_count, check_event_shape


def _check_base(base: object) -> Distribution:
    if not isinstance(base, Distribution) or base.event_shape:
        raise TypeError(
            "base must be a univariate torch.distributions.Distribution (empty event shape), "
            f"got {base!r}"
        )
    return base


def _draws(base: Distribution, n: int, sample_shape: Size, reparametrized: bool) -> Tensor:
    """``n`` draws of the base, stacked along a new last dimension."""
    shape = Size((n, *sample_shape))
    draws = base.rsample(shape) if reparametrized else base.sample(shape)
    return draws.movedim(0, -1)


def _log_sf(base: Distribution, x: Tensor) -> Tensor:
    return torch.log1p(-base.cdf(x))


class _OrderStatistic(Distribution):
    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012

    def __init__(self, base: Distribution, n: int, event_shape: Size) -> None:
        self.base = _check_base(base)
        self.n = check_count("n", n, owner=type(self).__name__)
        super().__init__(base.batch_shape, event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base.has_rsample

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.base.support, len(self.event_shape))

    def _statistic(self, draws: Tensor) -> Tensor:
        raise NotImplementedError

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self._statistic(_draws(self.base, self.n, Size(sample_shape), True))

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            draws = _draws(self.base, self.n, Size(sample_shape), self.base.has_rsample)
            return self._statistic(draws)


class Sort(_OrderStatistic):
    r"""The sorted values of :math:`n` independent draws of a univariate distribution.

    .. math:: p(x_1, \dots, x_n) = n! \prod_{i=1}^n p(x_i) \text{ if } x_1 \leq \dots \leq x_n

    (reversed if ``descending``), and :math:`-\infty` log-density otherwise.

    Arguments:
        base: A univariate distribution :math:`p(X)`.
        n: The number of draws.
        descending: Whether the values are sorted in descending order.

    Example:
        >>> d = Sort(torch.distributions.Normal(0.0, 1.0), 3)
        >>> d.event_shape
        torch.Size([3])
        >>> d.log_prob(torch.tensor([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]]))
        tensor([-1.9651,    -inf])
    """

    def __init__(self, base: Distribution, n: int, descending: bool = False) -> None:
        super().__init__(base, n, Size([n]))
        self.descending = bool(descending)

    def expand(self, batch_shape: _size, _instance: object = None) -> Sort:
        return Sort(self.base.expand(Size(batch_shape)), self.n, self.descending)

    def _statistic(self, draws: Tensor) -> Tensor:
        return torch.sort(draws, dim=-1, descending=self.descending).values

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self._event_shape)
        log_p = self.base.log_prob(x.movedim(-1, 0)).sum(0) + math.lgamma(self.n + 1)
        steps = x[..., 1:] - x[..., :-1]
        ordered = (steps <= 0) if self.descending else (steps >= 0)
        return torch.where(ordered.all(-1), log_p, torch.full_like(log_p, float("-inf")))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, n={self.n}, descending={self.descending})"


class TopK(_OrderStatistic):
    r"""The :math:`k` largest of :math:`n` independent draws, in descending order.

    .. math:: p(x_1, \dots, x_k) = \frac{n!}{(n - k)!} \, F(x_k)^{n - k}
        \prod_{i=1}^k p(x_i) \text{ if } x_1 \geq \dots \geq x_k ,

    where :math:`F` is the base's CDF, and :math:`-\infty` log-density otherwise.

    Arguments:
        base: A univariate distribution :math:`p(X)` with a ``cdf``.
        k: The number of values kept.
        n: The number of draws, :math:`n \geq k`.

    Example:
        >>> d = TopK(torch.distributions.Uniform(0.0, 1.0), 2, 3)
        >>> d.log_prob(torch.tensor([0.9, 0.5]))
        tensor(1.0986)
    """

    def __init__(self, base: Distribution, k: int, n: int) -> None:
        k = check_count("k", k, owner="TopK")
        super().__init__(base, n, Size([k]))
        if n < k:
            raise ValueError(f"TopK: n must be at least k = {k}, got {n!r}")
        self.k = k

    def expand(self, batch_shape: _size, _instance: object = None) -> TopK:
        return TopK(self.base.expand(Size(batch_shape)), self.k, self.n)

    def _statistic(self, draws: Tensor) -> Tensor:
        return torch.topk(draws, self.k, dim=-1).values

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self._event_shape)
        log_p = self.base.log_prob(x.movedim(-1, 0)).sum(0)
        log_p = log_p + math.lgamma(self.n + 1) - math.lgamma(self.n - self.k + 1)
        if self.n > self.k:
            log_p = log_p + (self.n - self.k) * torch.log(self.base.cdf(x[..., -1]))
        ordered = (x[..., 1:] <= x[..., :-1]).all(-1)
        return torch.where(ordered, log_p, torch.full_like(log_p, float("-inf")))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, k={self.k}, n={self.n})"


class Minimum(_OrderStatistic):
    r"""The minimum of :math:`n` independent draws of a univariate distribution.

    .. math:: p(x) = n \, p_\text{base}(x) \, (1 - F(x))^{n - 1}

    Arguments:
        base: A univariate distribution :math:`p(X)` with a ``cdf``.
        n: The number of draws.

    Example:
        >>> d = Minimum(torch.distributions.Uniform(0.0, 1.0), 2)
        >>> d.log_prob(torch.tensor(0.5))
        tensor(0.)
    """

    def __init__(self, base: Distribution, n: int) -> None:
        super().__init__(base, n, Size())

    def expand(self, batch_shape: _size, _instance: object = None) -> Minimum:
        return Minimum(self.base.expand(Size(batch_shape)), self.n)

    def _statistic(self, draws: Tensor) -> Tensor:
        return draws.amin(dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        log_p = self.base.log_prob(x) + math.log(self.n)
        if self.n > 1:
            log_p = log_p + (self.n - 1) * _log_sf(self.base, x)
        return log_p

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, n={self.n})"


class Maximum(_OrderStatistic):
    r"""The maximum of :math:`n` independent draws of a univariate distribution.

    .. math:: p(x) = n \, p_\text{base}(x) \, F(x)^{n - 1}

    Arguments:
        base: A univariate distribution :math:`p(X)` with a ``cdf``.
        n: The number of draws.

    Example:
        >>> d = Maximum(torch.distributions.Uniform(0.0, 1.0), 2)
        >>> d.log_prob(torch.tensor(0.5))
        tensor(0.)
    """

    def __init__(self, base: Distribution, n: int) -> None:
        super().__init__(base, n, Size())

    def expand(self, batch_shape: _size, _instance: object = None) -> Maximum:
        return Maximum(self.base.expand(Size(batch_shape)), self.n)

    def _statistic(self, draws: Tensor) -> Tensor:
        return draws.amax(dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        log_p = self.base.log_prob(x) + math.log(self.n)
        if self.n > 1:
            log_p = log_p + (self.n - 1) * torch.log(self.base.cdf(x))
        return log_p

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, n={self.n})"
