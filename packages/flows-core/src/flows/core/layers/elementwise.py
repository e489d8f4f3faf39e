r"""The element-wise lazy transform: each feature through its own univariate transform."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from flows.core.layers.univariate import checked_context, init_near_zero, resolve_univariate
from flows.core.lazy import LazyTransform
from flows.core.transforms import DependentTransform
from flows.core.validation import check_count

__all__ = ["ElementWiseTransform"]

_NETWORK_ARGUMENTS = ("activation", "hidden_features", "normalize")


class ElementWiseTransform(LazyTransform):
    r"""An element-wise transform :math:`y_i = f(x_i; \phi_i(c))`.

    Without context, the parameters :math:`\phi_i` of each feature are free (trainable);
    with a context, an MLP predicts them from :math:`c`. The Jacobian is diagonal.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C` (0: unconditional).
        univariate: A registered univariate transform name, or a constructor taking the
            parameter tensors.
        shapes: The parameter shapes of a univariate constructor (only with a constructor).
        kwargs: The univariate's hyper-parameters (by name, e.g. ``slope``) and the MLP's
            arguments (``hidden_features``, ``activation``, ``normalize``; ignored
            without context).

    Example:
        >>> t = ElementWiseTransform(3, context=4, hidden_features=[16])
        >>> f = t(torch.randn(4))
        >>> f(torch.randn(3)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        univariate: str | Callable[..., Transform] = "affine",
        shapes: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_count("features", features, owner="ElementWiseTransform")
        check_count("context", context, minimum=0, owner="ElementWiseTransform")
        self.layout, network = resolve_univariate(
            "ElementWiseTransform", univariate, shapes, kwargs, _NETWORK_ARGUMENTS
        )
        self.features = features
        # The network's output, viewed as one row of parameters per feature.
        self.unflattened = (features, self.layout.total)
        self.context = context
        if context > 0:
            from flows.nn import MLP

            self.hyper = MLP(context, features * self.layout.total, **network)
            init_near_zero(self.hyper)
        else:
            # Small, random rather than zero: families with several components need their
            # symmetry broken to learn.
            self.phi = nn.Parameter(torch.randn(features, self.layout.total) * 1e-2)

    def forward(self, c: Tensor | None = None) -> Transform:
        r"""Return the transform :math:`y = f(x | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, required when ``context > 0``.
        """
        c = checked_context("ElementWiseTransform", self.context, c)
        if c is None:
            phi = self.phi
        else:
            phi = self.hyper(c)
            if phi.dtype != c.dtype:  # autocast: the transform's arithmetic in the data's dtype
                phi = phi.to(c.dtype)
            phi = phi.reshape(phi.shape[:-1] + self.unflattened)
        return DependentTransform(self.layout.build(phi), 1)

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context}, univariate={self.layout}"
