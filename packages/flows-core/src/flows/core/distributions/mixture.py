r"""Finite mixtures of distributions."""

from __future__ import annotations

__all__ = ["Mixture"]

import torch
from torch import Size, Tensor
from torch.distributions import Categorical, Distribution, constraints
from torch.types import _size

from flows.core.validation import check_event_shape


class Mixture(Distribution):
    r"""The mixture :math:`p(X) = \sum_{k=1}^K w_k \, p(X \mid Z = k)`.

    The :math:`K` components are the last batch dimension of ``base``, and the weights are
    :math:`w = \operatorname{softmax}(\text{logits})`. Samples are not reparametrizable (the
    component choice is discrete).

    Arguments:
        base: The components :math:`p(X \mid Z = k)`, a distribution of batch shape
            :math:`(*, K)`.
        logits: The unnormalized log-weights, of shape :math:`(*, K)`.

    Example:
        >>> from flows.core.distributions import DiagNormal
        >>> base = DiagNormal(torch.tensor([[-1.0], [1.0]]), torch.ones(2, 1))
        >>> d = Mixture(base, torch.zeros(2))
        >>> d.batch_shape, d.event_shape
        (torch.Size([]), torch.Size([1]))
        >>> d.log_prob(torch.tensor([0.0]))
        tensor(-1.4189)
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012

    def __init__(self, base: Distribution, logits: Tensor) -> None:
        if not isinstance(base, Distribution):
            raise TypeError(
                f"base must be a torch.distributions.Distribution, got {type(base).__name__}"
            )
        if len(base.batch_shape) < 1:
            raise ValueError(
                "base must have at least one batch dimension (the components), "
                f"got batch_shape {tuple(base.batch_shape)}"
            )
        logits = torch.as_tensor(logits)
        if logits.dim() < 1 or logits.shape[-1] != base.batch_shape[-1]:
            raise ValueError(
                f"logits must have shape (*, {base.batch_shape[-1]}) to match the base's "
                f"components, got {tuple(logits.shape)}"
            )
        self.base = base
        self.logits = logits
        batch_shape = torch.broadcast_shapes(base.batch_shape[:-1], logits.shape[:-1])
        super().__init__(batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint | None:
        return self.base.support

    def expand(self, batch_shape: _size, _instance: object = None) -> Mixture:
        batch_shape = Size(batch_shape)
        components = self.logits.shape[-1]
        return Mixture(
            self.base.expand((*batch_shape, components)),
            self.logits.expand(*batch_shape, components),
        )

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self.event_shape)
        x = x.unsqueeze(-len(self.event_shape) - 1)
        log_w = torch.log_softmax(self.logits, dim=-1)
        return torch.logsumexp(log_w + self.base.log_prob(x), dim=-1)

    def sample(self, sample_shape: _size = ()) -> Tensor:
        sample_shape = Size(sample_shape)
        with torch.no_grad():
            shape = sample_shape + self.batch_shape
            components = self.logits.shape[-1]
            # Draw every component, then pick one per sample: no data-dependent shapes.
            draws = self.base.expand((*self.batch_shape, components)).sample(sample_shape)
            if sample_shape.numel() == 0:  # Categorical refuses to draw nothing
                return draws.select(len(shape), 0)
            index = Categorical(logits=self.logits).sample(sample_shape).expand(shape)
            index = index.reshape(*shape, 1, *(1,) * len(self.event_shape))
            index = index.expand(*shape, 1, *self.event_shape)
            return draws.gather(len(shape), index).squeeze(len(shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r}, logits: {self.logits.shape})"
