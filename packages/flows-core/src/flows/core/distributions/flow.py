r"""The normalizing flow: a base distribution pulled back through a bijective transform."""

from __future__ import annotations

__all__ = ["NormalizingFlow"]

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, Independent, constraints
from torch.distributions import Transform as _TorchTransform
from torch.types import _size

from flows.core.transforms.base import call_and_ladj, inverse_and_ladj, sum_rightmost
from flows.core.validation import check_event_shape


class NormalizingFlow(Distribution):
    r"""The distribution of :math:`X` when :math:`Z = f(X)` follows a base distribution.

    By the change of variables formula,

    .. math:: \log p(X = x) = \log p(Z = f(x)) + \log \left| \det \frac{\partial f(x)}{\partial x}
        \right| ,

    computed in one pass of :math:`f` (``call_and_ladj``); samples are
    :math:`x = f^{-1}(z)` with :math:`z \sim p(Z)`.

    Batch dimensions of the base that the transform treats as event dimensions are
    reinterpreted as such. The batch shape is the base's: a transform with batched parameters
    (a conditional flow evaluated at a batch of contexts) goes with a base expanded to that batch
    shape, as :class:`flows.core.lazy.Flow` does.

    Arguments:
        transform: A transform :math:`f` from :math:`X` to :math:`Z`.
        base: A base distribution :math:`p(Z)`.

    Example:
        >>> from flows.core.distributions import DiagNormal
        >>> from flows.core.transforms import MonotonicAffineTransform
        >>> t = MonotonicAffineTransform(torch.zeros(3), torch.zeros(3))
        >>> flow = NormalizingFlow(t, DiagNormal(torch.zeros(3), torch.ones(3)))
        >>> flow
        NormalizingFlow(
          (transform): MonotonicAffineTransform(slope=0.001)
          (base): DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))
        )
        >>> flow.sample((2,)).shape
        torch.Size([2, 3])
        >>> flow.log_prob(torch.zeros(3))
        tensor(-2.7568)
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    has_rsample = True

    def __init__(self, transform: _TorchTransform, base: Distribution) -> None:
        if not isinstance(transform, _TorchTransform):
            raise TypeError(
                "transform must be a torch.distributions.Transform, "
                f"got {type(transform).__name__}"
            )
        if not isinstance(base, Distribution):
            raise TypeError(
                f"base must be a torch.distributions.Distribution, got {type(base).__name__}"
            )
        domain_dim = transform.domain.event_dim
        codomain_dim = transform.codomain.event_dim
        missing = codomain_dim - len(base.event_shape)
        if missing > 0:
            if missing > len(base.batch_shape):
                raise ValueError(
                    f"base must have at least {codomain_dim} dimensions for the transform's "
                    f"codomain, got batch_shape {tuple(base.batch_shape)} and event_shape "
                    f"{tuple(base.event_shape)}"
                )
            base = Independent(base, missing, validate_args=False)
        self.transform = transform
        self.base = base
        # Event dimensions of the flow beyond those the transform sums over itself.
        self._reinterpreted = len(base.event_shape) - codomain_dim
        event_dim = self._reinterpreted + domain_dim
        shape = transform.inverse_shape(base.batch_shape + base.event_shape)
        cut = len(shape) - event_dim
        super().__init__(Size(shape[:cut]), Size(shape[cut:]), validate_args=False)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.transform.domain, self._reinterpreted)

    def expand(self, batch_shape: _size, _instance: object = None) -> NormalizingFlow:
        """Return the flow with its base expanded to ``batch_shape``."""
        return NormalizingFlow(self.transform, self.base.expand(Size(batch_shape)))

    def log_prob(self, x: Tensor) -> Tensor:
        """The log-density of ``x``, of shape ``(*batch, *event_shape)``.

        Raises:
            ValueError: ``x`` does not end in the flow's event shape.
        """
        check_event_shape("x", x.shape, self.event_shape)
        z, ladj = call_and_ladj(self.transform, x)
        return self.base.log_prob(z) + sum_rightmost(ladj, self._reinterpreted)

    def _base_sample(self, shape: Size) -> Tensor:
        if self.base.has_rsample:
            return self.base.rsample(shape)
        return self.base.sample(shape)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        """Draw samples :math:`x = f^{-1}(z)`, differentiable when the base's are."""
        return self.transform.inv(self._base_sample(Size(sample_shape)))

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        r"""Draw samples and their log-densities in one inverse pass.

        .. math:: \log p(X = x) = \log p(Z = z) - \log \left| \det
            \frac{\partial f^{-1}(z)}{\partial z} \right|
        """
        z = self._base_sample(Size(sample_shape))
        log_p = self.base.log_prob(z)
        x, ladj = inverse_and_ladj(self.transform, z)
        return x, log_p - sum_rightmost(ladj, self._reinterpreted)

    def __repr__(self) -> str:
        transform = repr(self.transform).replace("\n", "\n  ")
        base = repr(self.base).replace("\n", "\n  ")
        return f"{type(self).__name__}(\n  (transform): {transform}\n  (base): {base}\n)"
