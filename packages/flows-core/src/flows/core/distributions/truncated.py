r"""Truncated distributions and uniform distributions in a transformed space."""

from __future__ import annotations

__all__ = ["TransformedUniform", "Truncated"]

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints
from torch.distributions import Transform as _TorchTransform
from torch.types import _size

from flows.core.transforms.base import call_and_ladj


def _uniform(shape: Size, like: Tensor) -> Tensor:
    # Strictly inside (0, 1), so that quantile functions stay finite.
    tiny = torch.finfo(like.dtype).tiny
    return torch.rand(shape, dtype=like.dtype, device=like.device).clamp(tiny, 1 - 1e-7)


class Truncated(Distribution):
    r"""A univariate distribution truncated to :math:`[l, u]`.

    .. math:: p(x) = \frac{p_\text{base}(x)}{F(u) - F(l)} \text{ if } l \leq x \leq u

    and :math:`-\infty` log-density outside. Samples are
    :math:`x = F^{-1}(F(l) + v (F(u) - F(l)))` with :math:`v \sim \mathcal{U}(0, 1)`,
    reparametrized. The base must implement ``cdf`` and ``icdf``.

    Arguments:
        base: A univariate distribution (empty event shape).
        lower: The lower bound :math:`l`.
        upper: The upper bound :math:`u > l`.

    Example:
        >>> d = Truncated(torch.distributions.Normal(0.0, 1.0), 0.0, float("inf"))
        >>> d.log_prob(torch.tensor([-1.0, 0.0]))
        tensor([   -inf, -0.2258])
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    has_rsample = True

    def __init__(
        self,
        base: Distribution,
        lower: Tensor | float = float("-inf"),
        upper: Tensor | float = float("inf"),
    ) -> None:
        if not isinstance(base, Distribution) or base.event_shape:
            raise TypeError(
                "base must be a univariate torch.distributions.Distribution (empty event "
                f"shape), got {base!r}"
            )
        self.base = base
        with torch.no_grad():
            like = base.sample()  # the dtype and device of the base's values
        self.lower = torch.as_tensor(lower, dtype=like.dtype, device=like.device)
        self.upper = torch.as_tensor(upper, dtype=like.dtype, device=like.device)
        self._cdf_lower = base.cdf(self.lower)
        self._cdf_upper = base.cdf(self.upper)
        self._log_mass = torch.log(self._cdf_upper - self._cdf_lower)
        batch_shape = torch.broadcast_shapes(base.batch_shape, self.lower.shape, self.upper.shape)
        super().__init__(batch_shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return constraints.interval(self.lower, self.upper)

    def expand(self, batch_shape: _size, _instance: object = None) -> Truncated:
        batch_shape = Size(batch_shape)
        return Truncated(
            self.base.expand(batch_shape),
            self.lower.expand(batch_shape),
            self.upper.expand(batch_shape),
        )

    def _inside(self, x: Tensor) -> Tensor:
        return (self.lower <= x) & (x <= self.upper)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = self._inside(x)
        safe = torch.where(inside, x, self.base.icdf(torch.full_like(x, 0.5)))
        log_p = self.base.log_prob(safe) - self._log_mass
        return torch.where(inside, log_p, torch.full_like(log_p, float("-inf")))

    def cdf(self, x: Tensor) -> Tensor:
        v = (self.base.cdf(x) - self._cdf_lower) / (self._cdf_upper - self._cdf_lower)
        return v.clamp(0.0, 1.0)

    def icdf(self, v: Tensor) -> Tensor:
        u = self._cdf_lower + v * (self._cdf_upper - self._cdf_lower)
        return torch.minimum(torch.maximum(self.base.icdf(u), self.lower), self.upper)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        shape = self._extended_shape(Size(sample_shape))
        return self.icdf(_uniform(shape, self._log_mass))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r}, lower: {self.lower.shape})"


class TransformedUniform(Distribution):
    r"""The distribution on :math:`[l, u]` that is uniform after a monotonic transform :math:`f`.

    :math:`f(X) \sim \mathcal{U}(f(l), f(u))`, that is

    .. math:: p(x) = \frac{|f'(x)|}{|f(u) - f(l)|} \text{ if } l \leq x \leq u ,

    and :math:`-\infty` log-density outside. With :math:`f = \log` it is the log-uniform
    distribution. Samples are :math:`x = f^{-1}(v)` with
    :math:`v \sim \mathcal{U}(f(l), f(u))`, reparametrized.

    Arguments:
        transform: A strictly monotonic element-wise transform :math:`f`.
        lower: The lower bound :math:`l`.
        upper: The upper bound :math:`u > l`.

    Example:
        >>> log = torch.distributions.ExpTransform().inv
        >>> d = TransformedUniform(log, torch.tensor(1.0), torch.tensor(100.0))  # log-uniform
        >>> d.log_prob(torch.tensor([0.5, 1.0, 10.0]))
        tensor([   -inf, -1.5272, -3.8298])
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    has_rsample = True

    def __init__(self, transform: _TorchTransform, lower: Tensor, upper: Tensor) -> None:
        if not isinstance(transform, _TorchTransform) or transform.domain.event_dim != 0:
            raise TypeError(
                f"transform must be an element-wise torch Transform, got {transform!r}"
            )
        self.transform = transform
        self.lower, self.upper = torch.broadcast_tensors(
            torch.as_tensor(lower), torch.as_tensor(upper)
        )
        f_lower, f_upper = transform(self.lower), transform(self.upper)
        self._low = torch.minimum(f_lower, f_upper)
        self._high = torch.maximum(f_lower, f_upper)
        self._log_width = torch.log(self._high - self._low)
        super().__init__(self.lower.shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return constraints.interval(self.lower, self.upper)

    def expand(self, batch_shape: _size, _instance: object = None) -> TransformedUniform:
        batch_shape = Size(batch_shape)
        return TransformedUniform(
            self.transform, self.lower.expand(batch_shape), self.upper.expand(batch_shape)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        inside = (self.lower <= x) & (x <= self.upper)
        # Evaluate f only where it is defined, so that no NaN leaks through the gradients.
        safe = torch.where(inside, x, (self.lower + self.upper) / 2)
        _, ladj = call_and_ladj(self.transform, safe)
        log_p = ladj - self._log_width
        return torch.where(inside, log_p, torch.full_like(log_p, float("-inf")))

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        shape = self._extended_shape(Size(sample_shape))
        v = self._low + _uniform(shape, self._low) * (self._high - self._low)
        x = self.transform.inv(v)
        return torch.minimum(torch.maximum(x, self.lower), self.upper)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transform={self.transform!r}, lower: {self.lower.shape})"
