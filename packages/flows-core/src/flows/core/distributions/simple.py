r"""Simple base distributions: diagonal normal, box uniform and generalized normal."""

from __future__ import annotations

__all__ = ["BoxUniform", "DiagNormal", "GeneralizedNormal"]

import math

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, Gamma, Independent, Normal, Uniform, constraints
from torch.types import _size

from flows.core.validation import check_event_shape


def _as_tensors(**tensors: Tensor | float) -> list[Tensor]:
    values = [v if isinstance(v, Tensor) else torch.as_tensor(v) for v in tensors.values()]
    # Built at every flow call: broadcast only when the shapes differ.
    if any(v.shape != values[0].shape for v in values[1:]):
        values = list(torch.broadcast_tensors(*values))
    for name, value in zip(tensors, values, strict=True):
        if value.dim() < 1:
            raise ValueError(
                f"{name} must have at least one dimension (the event), got a scalar; "
                f"use a tensor of shape (D,)"
            )
    return values


def _normal(loc: Tensor, scale: Tensor) -> Normal:
    """torch's :class:`~torch.distributions.Normal` of a ``loc`` and ``scale`` of one shape.

    Built as torch's own ``Normal.expand`` builds one, without the broadcast of its constructor:
    a flow builds its base at every call.
    """
    normal = Normal.__new__(Normal)
    normal.loc, normal.scale = loc, scale
    Distribution.__init__(normal, loc.shape, validate_args=False)
    return normal


class DiagNormal(Independent):
    r"""A multivariate normal with diagonal covariance,
    :math:`\mathcal{N}(\mu, \operatorname{diag}(\sigma^2))`.

    Its rightmost dimension (``ndims`` of them) is the event; the others are batch dimensions.

    Arguments:
        loc: The mean :math:`\mu`, of shape :math:`(*, D)`.
        scale: The standard deviation :math:`\sigma > 0`, of shape :math:`(*, D)`.
        ndims: The number of rightmost dimensions that form the event.

    Example:
        >>> d = DiagNormal(torch.zeros(3), torch.ones(3))
        >>> d
        DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))
        >>> d.log_prob(torch.zeros(3))
        tensor(-2.7568)
    """

    def __init__(self, loc: Tensor | float, scale: Tensor | float, ndims: int = 1) -> None:
        loc, scale = _as_tensors(loc=loc, scale=scale)
        if not isinstance(ndims, int) or not 1 <= ndims <= loc.dim():
            raise ValueError(f"ndims must be an int in [1, {loc.dim()}], got {ndims!r}")
        super().__init__(_normal(loc, scale), ndims, validate_args=False)
        # The scale before any expand: the normalizing constant needs no batch copies.
        self._unexpanded_scale = scale

    def log_prob(self, x: Tensor) -> Tensor:
        r"""The log-density, computed in a few fused steps.

        .. math:: \log p(x) = -\frac{1}{2} \sum_i \left(\frac{x_i - \mu_i}{\sigma_i}\right)^2
            - \sum_i \log \sigma_i - \frac{D}{2} \log 2 \pi
        """
        check_event_shape("x", x.shape, self._event_shape)
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        u = (x - self.base_dist.loc) / self.base_dist.scale
        scale = self._unexpanded_scale
        constant = 0.5 * math.log(2 * math.pi) * self._event_shape.numel()
        minus_log_normalizer = -constant - scale.log().sum(dims)
        return torch.sub(minus_log_normalizer, u.square().sum(dims), alpha=0.5)

    @property
    def loc(self) -> Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> Tensor:
        return self.base_dist.scale

    def expand(self, batch_shape: _size, _instance: object = None) -> DiagNormal:
        if type(self) is DiagNormal or _instance is not None:
            # Expanded at every conditional flow call: torch's expand skips the checks.
            new = self._get_checked_instance(DiagNormal, _instance)
            new = super().expand(batch_shape, _instance=new)
        else:
            shape = Size(batch_shape) + self.event_shape
            new = DiagNormal(
                self.loc.expand(shape), self.scale.expand(shape), self.reinterpreted_batch_ndims
            )
        new._unexpanded_scale = self._unexpanded_scale
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(loc: {self.loc.shape}, scale: {self.scale.shape})"


class BoxUniform(Independent):
    r"""A uniform distribution over the box :math:`[l_1, u_1) \times \dots \times [l_D, u_D)`.

    Its log-density is :math:`-\sum_i \log(u_i - l_i)` inside and :math:`-\infty` outside.

    Arguments:
        lower: The lower bounds :math:`l`, of shape :math:`(*, D)`.
        upper: The upper bounds :math:`u > l`, of shape :math:`(*, D)`.
        ndims: The number of rightmost dimensions that form the event.

    Example:
        >>> d = BoxUniform(-torch.ones(2), torch.ones(2))
        >>> d.log_prob(torch.tensor([[0.0, 0.5], [0.0, 2.0]]))
        tensor([-1.3863,    -inf])
    """

    def __init__(self, lower: Tensor | float, upper: Tensor | float, ndims: int = 1) -> None:
        lower, upper = _as_tensors(lower=lower, upper=upper)
        if not isinstance(ndims, int) or not 1 <= ndims <= lower.dim():
            raise ValueError(f"ndims must be an int in [1, {lower.dim()}], got {ndims!r}")
        super().__init__(Uniform(lower, upper, validate_args=False), ndims, validate_args=False)

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self._event_shape)
        # Summed over the event by dimension: Independent's reshape fails on empty batches.
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        return self.base_dist.log_prob(x).sum(dims)

    @property
    def lower(self) -> Tensor:
        return self.base_dist.low

    @property
    def upper(self) -> Tensor:
        return self.base_dist.high

    def expand(self, batch_shape: _size, _instance: object = None) -> BoxUniform:
        shape = Size(batch_shape) + self.event_shape
        return BoxUniform(
            self.lower.expand(shape), self.upper.expand(shape), self.reinterpreted_batch_ndims
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lower: {self.lower.shape}, upper: {self.upper.shape})"


class GeneralizedNormal(Distribution):
    r"""The generalized normal distribution, of shape parameter :math:`\beta > 0`.

    .. math:: p(x) = \frac{\beta}{2 \Gamma(1 / \beta)} \exp(-|x|^\beta)

    :math:`\beta = 2` is a normal of variance 1/2, :math:`\beta = 1` a Laplace, and
    :math:`\beta \to \infty` tends to the uniform on :math:`[-1, 1]`. Samples are drawn as
    :math:`x = \pm G^{1 / \beta}` with :math:`G \sim \Gamma(1 / \beta, 1)`, reparametrized.

    Arguments:
        beta: The shape parameter :math:`\beta`; its shape is the batch shape.

    Example:
        >>> d = GeneralizedNormal(torch.tensor(2.0))
        >>> d.log_prob(torch.tensor([0.0, 1.0]))
        tensor([-0.5724, -1.5724])
    """

    arg_constraints = {"beta": constraints.positive}  # noqa: RUF012
    support = constraints.real
    has_rsample = True

    def __init__(self, beta: Tensor | float) -> None:
        self.beta = torch.as_tensor(beta)
        super().__init__(self.beta.shape, validate_args=False)

    def expand(self, batch_shape: _size, _instance: object = None) -> GeneralizedNormal:
        return GeneralizedNormal(self.beta.expand(batch_shape))

    def log_prob(self, x: Tensor) -> Tensor:
        beta = self.beta
        log_norm = torch.log(beta) - math.log(2.0) - torch.lgamma(1 / beta)
        return log_norm - x.abs() ** beta

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        shape = self._extended_shape(Size(sample_shape))
        magnitude = Gamma(1 / self.beta, torch.ones_like(self.beta)).rsample(sample_shape)
        sign = torch.randint(0, 2, shape, device=self.beta.device).to(self.beta.dtype) * 2 - 1
        return sign * magnitude ** (1 / self.beta)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta: {self.beta.shape})"
