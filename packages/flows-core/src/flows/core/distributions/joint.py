r"""The joint distribution of independent marginals, concatenated along the last dimension."""

from __future__ import annotations

__all__ = ["Joint"]

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints
from torch.types import _size

from flows.core.validation import check_event_shape


class Joint(Distribution):
    r"""The joint distribution :math:`p(X) = \prod_i p(X_i)` of independent random variables.

    Each marginal :math:`X_i` is univariate (empty event shape) or a vector (event shape
    :math:`(D_i,)`); their values are concatenated along the last dimension, so the event
    shape is :math:`(\sum_i D_i,)` and the batch shape is the broadcast of the marginals'.

    Arguments:
        marginals: The distributions :math:`p(X_i)`.

    Example:
        >>> d = Joint(torch.distributions.Uniform(0.0, 1.0), torch.distributions.Normal(0.0, 1.0))
        >>> d.event_shape
        torch.Size([2])
        >>> d.log_prob(torch.tensor([0.5, 0.0]))
        tensor(-0.9189)
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012

    def __init__(self, *marginals: Distribution) -> None:
        if not marginals:
            raise ValueError("marginals must hold at least one distribution")
        sizes = []
        for i, marginal in enumerate(marginals):
            if not isinstance(marginal, Distribution):
                raise TypeError(
                    f"marginals[{i}] must be a torch.distributions.Distribution, "
                    f"got {type(marginal).__name__}"
                )
            if len(marginal.event_shape) > 1:
                raise ValueError(
                    f"marginals[{i}] must have an event shape () or (D,), "
                    f"got {tuple(marginal.event_shape)}"
                )
            sizes.append(marginal.event_shape.numel())
        self.marginals = marginals
        self.sizes = sizes
        batch_shape = torch.broadcast_shapes(*(m.batch_shape for m in marginals))
        super().__init__(batch_shape, Size([sum(sizes)]), validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(m.has_rsample for m in self.marginals)

    def expand(self, batch_shape: _size, _instance: object = None) -> Joint:
        return Joint(*(m.expand(Size(batch_shape)) for m in self.marginals))

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self._event_shape)
        parts = x.split(self.sizes, dim=-1)
        log_p: Tensor | float = 0.0
        for marginal, part in zip(self.marginals, parts, strict=True):
            if not marginal.event_shape:
                part = part.squeeze(-1)
            log_p = log_p + marginal.log_prob(part)
        return log_p  # type: ignore[return-value]

    def _draw(self, sample_shape: Size, reparametrized: bool) -> Tensor:
        shape = sample_shape + self.batch_shape
        parts = []
        for marginal in self.marginals:
            part = (
                marginal.rsample(sample_shape) if reparametrized else marginal.sample(sample_shape)
            )
            if not marginal.event_shape:
                part = part.unsqueeze(-1)
            parts.append(part.expand(*shape, part.shape[-1]))
        return torch.cat(parts, dim=-1)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self._draw(Size(sample_shape), reparametrized=True)

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            return self._draw(Size(sample_shape), reparametrized=self.has_rsample)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {m!r}" for m in self.marginals)
        return f"{type(self).__name__}(\n{inner}\n)"
