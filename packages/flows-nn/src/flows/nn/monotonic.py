r"""Monotonic networks: every output is a strictly increasing function of every input."""

from __future__ import annotations

__all__ = ["MonotonicLinear", "MonotonicMLP", "TwoWayELU"]

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .linear import Linear
from .mlp import MLP


class MonotonicLinear(Linear):
    r"""Creates a linear layer with positive weights.

    .. math:: y = x |W|^T + b

    Every output is an increasing function of every input. Arguments, shapes and stacking are
    those of :class:`flows.nn.Linear`.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> layer = MonotonicLinear(3, 2)
        >>> x = torch.randn(3)
        >>> bool((layer(x + 1) > layer(x)).all())
        True
    """

    def effective_weight(self) -> Tensor:
        return self.weight.abs()


class TwoWayELU(nn.Module):
    r"""Creates an activation that applies ELU to half of the features and its point
    reflection to the other half.

    .. math::
        y_k = \begin{cases}
            \text{ELU}(x_k) & \text{if } k < \lceil C / 2 \rceil \\
            -\text{ELU}(-x_k) & \text{otherwise}
        \end{cases}

    for the :math:`C` features of the last dimension. Both halves are strictly increasing, but
    one is convex and the other concave, so that a network with positive weights can represent
    both kinds of curvature.

    Arguments:
        alpha: The :math:`\alpha` of the ELU, the negative saturation value.

    Example:
        >>> TwoWayELU()(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
        tensor([-0.6321,  1.0000, -1.0000,  0.6321])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        features = x.shape[-1]
        convex = (features + 1) // 2
        head, tail = x.split_with_sizes((convex, features - convex), dim=-1)
        return torch.cat((F.elu(head, self.alpha), -F.elu(-tail, self.alpha)), dim=-1)

    def forward_and_derivative(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns the activation and its element-wise derivative, in one pass.

        Example:
            >>> TwoWayELU().forward_and_derivative(torch.tensor([-1.0, 1.0, -1.0, 1.0]))[1]
            tensor([0.3679, 1.0000, 1.0000, 0.3679])
        """
        features = x.shape[-1]
        convex = (features + 1) // 2
        head, tail = x.split_with_sizes((convex, features - convex), dim=-1)
        # Both halves as ELU(z) with z = x and z = -x: the slope is ELU'(z) in either.
        z = torch.cat((head, -tail), dim=-1)
        elu = F.elu(z, self.alpha)
        y = torch.cat((elu[..., :convex], -elu[..., convex:]), dim=-1)
        slope = torch.where(z > 0, 1.0, self.alpha * torch.exp(z.clamp_max(0)))
        return y, slope

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class MonotonicMLP(MLP):
    r"""Creates a monotonic multi-layer perceptron.

    Every Jacobian entry :math:`\frac{\partial y_i}{\partial x_j}` is strictly positive: the
    layers are :class:`MonotonicLinear` (positive weights) and the activations
    :class:`TwoWayELU` (strictly increasing), so every path from an input to an output is a
    product of positive factors.

    Arguments:
        in_features: The number of input features.
        out_features: The number of output features.
        hidden_features: The numbers of hidden features of the hidden layers.
        kwargs: Keyword arguments passed to :class:`flows.nn.MLP` and its linear layers (for
            example :py:`stack` or :py:`bias`). The activation is always
            :class:`TwoWayELU` and :py:`normalize` is always :py:`False` (layer normalization
            subtracts the mean of the features, which breaks monotonicity).

    Example:
        >>> net = MonotonicMLP(3, 4, [16, 32])
        >>> net
        MonotonicMLP(
          (0): MonotonicLinear(in_features=3, out_features=16, bias=True)
          (1): TwoWayELU(alpha=1.0)
          (2): MonotonicLinear(in_features=16, out_features=32, bias=True)
          (3): TwoWayELU(alpha=1.0)
          (4): MonotonicLinear(in_features=32, out_features=4, bias=True)
        )
        >>> jacobian = torch.autograd.functional.jacobian(net, torch.randn(3))
        >>> bool((jacobian > 0).all())
        True
    """

    linear_layer: ClassVar[type[Linear]] = MonotonicLinear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        **kwargs: Any,
    ) -> None:
        if "activation" in kwargs:
            raise TypeError(
                f"MonotonicMLP does not take an activation (its activation is TwoWayELU), "
                f"got activation={kwargs['activation']!r}"
            )
        if kwargs.pop("normalize", False):
            raise ValueError(
                "MonotonicMLP does not accept normalize=True: layer normalization breaks "
                "monotonicity; use normalize=False"
            )

        super().__init__(
            in_features,
            out_features,
            hidden_features,
            activation=TwoWayELU,
            normalize=False,
            **kwargs,
        )

    def forward_and_derivative(self, x: Tensor, feature: int = 0) -> tuple[Tensor, Tensor]:
        r"""Returns the outputs and their derivatives with respect to one input feature.

        The derivative :math:`\frac{\partial y}{\partial x_j}` is propagated forward with the
        values (forward-mode differentiation, the chain rule layer by layer): a linear layer
        maps it by its weight, an activation scales it by its slope. It needs no
        ``torch.autograd.grad`` (which ``torch.compile`` cannot trace), and stays differentiable.

        Arguments:
            x: The inputs, with shape :math:`(*, C)`, or :math:`(*, S, C)` if stacked.
            feature: The index :math:`j` of the input feature.

        Returns:
            The outputs :math:`y` and :math:`\frac{\partial y}{\partial x_j}`, both with the
            shape of the outputs.

        Example:
            >>> net = MonotonicMLP(2, 1, [8])
            >>> x = torch.randn(5, 2)
            >>> y, dydx = net.forward_and_derivative(x, feature=0)
            >>> expected = torch.func.vmap(torch.func.jacrev(net))(x)[..., 0]
            >>> torch.allclose(dydx, expected)
            True
        """
        if not -self.in_features <= feature < self.in_features:
            raise ValueError(
                f"feature must index one of the {self.in_features} input features, got {feature!r}"
            )
        tangent: Tensor | None = None
        for layer in self:
            if isinstance(layer, TwoWayELU):
                x, slope = layer.forward_and_derivative(x)
                assert tangent is not None  # an MLP starts with a linear layer
                tangent = tangent * slope
            elif isinstance(layer, MonotonicLinear):
                weight = layer.effective_weight()
                if tangent is None:
                    # The derivative of the inputs is a one-hot vector: take the column.
                    tangent = weight[..., feature]
                elif layer.stack is None:
                    tangent = F.linear(tangent, weight)
                else:
                    tangent = torch.einsum("...si,soi->...so", tangent, weight)
                x = layer(x)
            else:
                raise TypeError(f"forward_and_derivative cannot differentiate {layer!r}")
        assert tangent is not None
        return x, tangent.expand_as(x)
