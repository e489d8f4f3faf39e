r"""The base of a multi-scale flow: latents of several shapes, joined into one vector.

A multi-scale flow factors out latents at every scale, each an image of its own shape. Its base
distribution is the product of one distribution per scale over those images, seen as one event:
the concatenation of the flattened latents, in scale order.

Example:
    >>> base = FactoredLatents.standard([(2, 4, 4), (4, 2, 2)])
    >>> base.event_shape, base.sizes
    (torch.Size([48]), [32, 16])
    >>> z = base.sample((3,))
    >>> [part.shape for part in base.split(z)]
    [torch.Size([3, 2, 4, 4]), torch.Size([3, 4, 2, 2])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.types import _size

__all__ = ["FactoredLatents"]


class FactoredLatents(Distribution):
    r"""The product of distributions over images of several shapes, as one flat event.

    .. math:: \log p(z) = \sum_i \log p_i(z_i), \qquad
        z = (\operatorname{flat}(z_1), \dots, \operatorname{flat}(z_n)) .

    Arguments:
        parts: Distributions whose events are images (any event shape), with one batch shape.

    Example:
        >>> base = FactoredLatents.standard([(1, 2, 2), (2, 1, 1)])
        >>> base.log_prob(torch.zeros(6))
        tensor(-5.5136)
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, parts: Sequence[Distribution]) -> None:
        parts = list(parts)
        if not parts:
            raise ValueError("parts must hold at least one distribution, got none")
        batch = parts[0].batch_shape
        for i, part in enumerate(parts):
            if not isinstance(part, Distribution):
                raise TypeError(
                    f"parts[{i}] must be a torch Distribution, got {type(part).__name__}"
                )
            if part.batch_shape != batch:
                raise ValueError(
                    f"parts must share one batch shape: parts[0] has {tuple(batch)}, "
                    f"parts[{i}] has {tuple(part.batch_shape)}"
                )
        self.parts = parts
        self.shapes = [part.event_shape for part in parts]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        #: Whether every part is a standard normal (set by :meth:`standard`): then
        #: ``log_prob`` reads the flat latents at once, with no split.
        self.is_standard = False
        super().__init__(batch, Size((sum(self.sizes),)), validate_args=False)

    @classmethod
    def standard(
        cls,
        shapes: Sequence[Sequence[int]],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> FactoredLatents:
        """Standard normal latents of the given shapes."""
        zero = torch.zeros((), dtype=dtype, device=device)
        parts = [
            Independent(
                Normal(zero.expand(shape), (zero + 1).expand(shape), validate_args=False),
                len(shape),
                validate_args=False,
            )
            for shape in (tuple(s) for s in shapes)
        ]
        base = cls(parts)
        base.is_standard = True
        return base

    def split(self, z: Tensor) -> list[Tensor]:
        r"""The latents of each part, of shapes :math:`(*, *\text{shape}_i)`."""
        return [
            part.unflatten(-1, shape)
            for part, shape in zip(z.split(self.sizes, dim=-1), self.shapes, strict=True)
        ]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        r"""The inverse of :meth:`split`: one flat tensor of shape :math:`(*, D)`."""
        return torch.cat(
            [p.flatten(p.dim() - len(s)) for p, s in zip(parts, self.shapes, strict=True)], -1
        )

    def expand(self, batch_shape: _size, _instance: object = None) -> FactoredLatents:
        base = FactoredLatents([part.expand(Size(batch_shape)) for part in self.parts])
        base.is_standard = self.is_standard
        return base

    def log_prob(self, z: Tensor) -> Tensor:
        if self.is_standard:
            # The same sum, -(|z|^2 + D log(2 pi)) / 2, in four operations instead of
            # a normal's per part (its backward included).
            half = 0.5 * self.event_shape[0] * math.log(2 * math.pi)
            value = z.square().sum(-1).mul(-0.5).sub(half)
            return value.expand(torch.broadcast_shapes(value.shape, self.batch_shape))
        terms = [part.log_prob(x) for part, x in zip(self.parts, self.split(z), strict=True)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.join([part.rsample(Size(sample_shape)) for part in self.parts])

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(s)) for s in self.shapes)
        return f"{type(self).__name__}(shapes: [{shapes}])"
