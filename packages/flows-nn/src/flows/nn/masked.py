r"""Masked networks, whose Jacobian is null wherever an adjacency matrix says so."""

from __future__ import annotations

__all__ = ["MaskedLinear", "MaskedMLP", "MaskedResidualBlock"]

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_hidden_features
from ._sequential import LayerSequence
from .masking import adjacency_masks, check_adjacency


class MaskedLinear(nn.Module):
    r"""Creates a linear layer whose weight is multiplied by a fixed binary mask.

    .. math:: y = x (W \odot \Delta)^T + b

    Output :math:`k` depends on input :math:`j` only if :math:`\Delta_{kj} = 1`. The mask is a
    buffer in the dtype of the weight, so the forward pass is one product and one matmul. Each
    row of :math:`W` is initialized like :class:`torch.nn.Linear` with its actual fan-in, the
    number of inputs its mask lets through.

    Arguments:
        mask: The boolean mask :math:`\Delta`, of shape :math:`(C', C)`.
        bias: Whether the layer learns an additive bias :math:`b`.

    Example:
        >>> layer = MaskedLinear(torch.tensor([[True, False], [True, True]]))
        >>> layer
        MaskedLinear(in_features=2, out_features=2, bias=True)
        >>> jacobian = torch.autograd.functional.jacobian(layer, torch.randn(2))
        >>> jacobian[0, 1]
        tensor(0.)
    """

    # Its output is a new tensor: a following activation may run in place (LayerSequence).
    _returns_new_tensor = True

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__()

        mask = check_adjacency(mask, name="mask")
        self.out_features, self.in_features = mask.shape

        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features))
        else:
            self.register_parameter("bias", None)
        mask = mask.to(self.weight)
        if _few_features(self.in_features, self.out_features):
            # Column-major, as forward reads it transposed: no copy per call.
            mask = mask.T.contiguous().T
        self.register_buffer("mask", mask)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Draws the weights and biases of row :math:`k` from :math:`\mathcal{U}(-1 /
        \sqrt{n_k}, 1 / \sqrt{n_k})`, where :math:`n_k` is the number of ones in row :math:`k`
        of the mask."""

        with torch.no_grad():
            bound = self.mask.sum(dim=1).clamp(min=1).rsqrt()
            self.weight.uniform_(-1, 1).mul_(bound[:, None])
            if self.bias is not None:
                self.bias.uniform_(-1, 1).mul_(bound)

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: The input vectors, with shape :math:`(*, C)`.

        Returns:
            The output vectors, with shape :math:`(*, C')`.
        """

        # Each attribute read once: module attribute lookups show in a flow's training step.
        weight, mask, bias = self.weight, self.mask, self.bias
        if bias is not None and x.dim() == 2 and _few_inputs(self, x):
            # CPU BLAS computes the gradients of a layer with few inputs several times faster
            # when the masked weight is laid out transposed (inputs x outputs, contiguous).
            return torch.addmm(bias, x, torch.mul(mask.T.contiguous(), weight.T))
        return F.linear(x, weight * mask, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


def _few_inputs(layer: MaskedLinear, x: Tensor) -> bool:
    return _few_features(layer.in_features, layer.out_features) and x.is_cpu


def _few_features(in_features: int, out_features: int) -> bool:
    return in_features <= 12 and in_features < out_features


class MaskedResidualBlock(nn.Module):
    r"""Creates a residual block around an activation and a masked linear layer.

    .. math:: y = x + (a(x) (W \odot \Delta)^T + b)

    The skip connection links each feature to itself, so the block keeps the masking if the
    diagonal of the mask :math:`\Delta` is allowed (each hidden unit may depend on itself).

    Arguments:
        activation: The activation module :math:`a`.
        linear: A square masked linear layer.
    """

    def __init__(self, activation: nn.Module, linear: MaskedLinear) -> None:
        super().__init__()

        if linear.in_features != linear.out_features:
            raise ValueError(
                "linear must be square in a residual block, got "
                f"in_features={linear.in_features}, out_features={linear.out_features}"
            )

        self.activation = activation
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        return x + self.linear(self.activation(x))


class MaskedMLP(LayerSequence):
    r"""Creates a masked multi-layer perceptron, whose Jacobian is null wherever an adjacency
    matrix is.

    The network is a transformation :math:`y = f(x)` from :math:`\mathbb{R}^N` to
    :math:`\mathbb{R}^M` such that

    .. math:: A_{ij} = 0 \implies \frac{\partial y_i}{\partial x_j} = 0 ,

    exactly and for any weights. Its linear layers are masked (:class:`MaskedLinear`) with a
    generalization of the MADE degree construction to arbitrary adjacencies, described in
    :mod:`flows.nn.masking`: hidden units are given the distinct rows of :math:`A` as receptive
    sets. If every hidden layer is at least as wide as the number of distinct rows of
    :math:`A`, every allowed dependency :math:`A_{ij} = 1` is realized.

    Arguments:
        adjacency: The adjacency matrix :math:`A \in \{0, 1\}^{M \times N}`, a boolean tensor.
        hidden_features: The numbers of hidden features of the hidden layers.
        activation: The activation function constructor. If :py:`None`, use
            :class:`torch.nn.ReLU` instead.
        residual: Whether to use residual blocks or not. If :py:`True`, every hidden layer as
            wide as the one before it becomes a :class:`MaskedResidualBlock`, :math:`h + W
            a(h)`; units of equal width share their receptive sets, so the skip connections
            keep the masking.

    Raises:
        TypeError: if :py:`adjacency` is not a boolean tensor.
        ValueError: if :py:`adjacency` is not a non-empty matrix, or has no true entry (the
            Jacobian would be null, every output a constant).

    Example:
        >>> adjacency = torch.tensor(
        ...     [
        ...         [False, True, True],
        ...         [False, True, True],
        ...         [False, False, True],
        ...         [True, True, False],
        ...     ]
        ... )
        >>> net = MaskedMLP(adjacency, [16, 32], activation=nn.ELU)
        >>> x = torch.randn(3)
        >>> net(x).shape
        torch.Size([4])
        >>> jacobian = torch.autograd.functional.jacobian(net, x)
        >>> jacobian != 0
        tensor([[False,  True,  True],
                [False,  True,  True],
                [False, False,  True],
                [ True,  True, False]])
    """

    def __init__(
        self,
        adjacency: Tensor,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] | None = None,
        residual: bool = False,
    ) -> None:
        adjacency = check_adjacency(adjacency)
        hidden_features = check_hidden_features(hidden_features)
        if activation is None:
            activation = nn.ReLU
        elif not callable(activation):
            raise TypeError(
                f"activation must be a module constructor such as torch.nn.ELU, got {activation!r}"
            )

        masks = adjacency_masks(adjacency, hidden_features)

        layers: list[nn.Module] = [MaskedLinear(masks[0])]
        for mask in masks[1:-1]:
            if residual and mask.shape[0] == mask.shape[1]:
                layers.append(MaskedResidualBlock(activation(), MaskedLinear(mask)))
            else:
                layers.extend((activation(), MaskedLinear(mask)))
        if len(masks) > 1:
            layers.extend((activation(), MaskedLinear(masks[-1])))

        super().__init__(*layers)

        self.in_features = adjacency.shape[1]
        self.out_features = adjacency.shape[0]
