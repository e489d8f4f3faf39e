r"""Multi-layer perceptrons."""

from __future__ import annotations

__all__ = ["MLP"]

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch.nn as nn

from ._checks import check_features, check_hidden_features
from ._sequential import LayerSequence
from .linear import Linear


class MLP(LayerSequence):
    r"""Creates a multi-layer perceptron (MLP), a fully connected feed-forward network.

    An MLP is a sequence of affine maps and non-linear activations

    .. math:: h_{i+1} = a_{i+1}(h_i W_{i+1}^T + b_{i+1})

    where :math:`x = h_0` is the input, :math:`y = h_L` the output and the last layer has no
    activation. With :py:`normalize=True`, each hidden activation is followed by a layer
    normalization (without affine parameters, which the next linear layer already provides),
    so every linear layer after the first sees features of zero mean and unit variance.

    Arguments:
        in_features: The number of input features.
        out_features: The number of output features.
        hidden_features: The numbers of hidden features of the hidden layers.
        activation: The activation function constructor. If :py:`None`, use
            :class:`torch.nn.ReLU` instead.
        normalize: Whether features are normalized between layers or not.
        linear_kwargs: Keyword arguments passed to :class:`flows.nn.Linear`, such as
            :py:`stack=S` to build :math:`S` independent networks applied to stacked inputs
            :math:`(*, S, C)`.

    Example:
        >>> import torch
        >>> net = MLP(64, 1, [32, 16], activation=nn.ELU)
        >>> net
        MLP(
          (0): Linear(in_features=64, out_features=32, bias=True)
          (1): ELU(alpha=1.0)
          (2): Linear(in_features=32, out_features=16, bias=True)
          (3): ELU(alpha=1.0)
          (4): Linear(in_features=16, out_features=1, bias=True)
        )
        >>> net(torch.randn(8, 64)).shape
        torch.Size([8, 1])
    """

    # The linear layer constructor, replaced by subclasses that constrain the weights.
    linear_layer: ClassVar[type[Linear]] = Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] | None = None,
        normalize: bool = False,
        **linear_kwargs: Any,
    ) -> None:
        in_features = check_features("in_features", in_features)
        out_features = check_features("out_features", out_features)
        hidden_features = check_hidden_features(hidden_features)
        if activation is None:
            activation = nn.ReLU
        elif not callable(activation):
            raise TypeError(
                f"activation must be a module constructor such as torch.nn.ELU, got {activation!r}"
            )

        widths = (in_features, *hidden_features, out_features)
        layers: list[nn.Module] = []
        for before, after in itertools.pairwise(widths[:-1]):
            layers.append(self.linear_layer(before, after, **linear_kwargs))
            layers.append(activation())
            if normalize:
                layers.append(nn.LayerNorm(after, elementwise_affine=False))
        layers.append(self.linear_layer(widths[-2], widths[-1], **linear_kwargs))

        super().__init__(*layers)

        self.in_features = in_features
        self.out_features = out_features
