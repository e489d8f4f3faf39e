r"""Linear layers, optionally stacked: S independent operators applied to S stacked inputs."""

from __future__ import annotations

__all__ = ["Linear"]

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_features


class Linear(nn.Module):
    r"""Creates a linear layer, optionally a stack of independent linear layers.

    .. math:: y = x W^T + b

    Without :py:`stack`, the layer behaves like :class:`torch.nn.Linear`: same parameters
    (:py:`weight` of shape :math:`(C', C)`, :py:`bias` of shape :math:`(C',)`), same
    initialization and same printed form. With :py:`stack=S`, it holds :math:`S` independent
    operators (:py:`weight` of shape :math:`(S, C', C)`, :py:`bias` of shape :math:`(S, C')`)
    and maps stacked inputs :math:`(*, S, C)` to :math:`(*, S, C')`, the :math:`s`-th vector
    going through the :math:`s`-th operator.

    Arguments:
        in_features: The number of input features :math:`C`.
        out_features: The number of output features :math:`C'`.
        bias: Whether the layer learns an additive bias :math:`b`.
        stack: The number of stacked operators :math:`S`, or :py:`None` for a single one.

    Example:
        >>> layer = Linear(64, 32)
        >>> layer(torch.randn(8, 64)).shape
        torch.Size([8, 32])
        >>> stacked = Linear(64, 32, stack=5)
        >>> stacked
        Linear(in_features=64, out_features=32, bias=True, stack=5)
        >>> stacked(torch.randn(8, 5, 64)).shape
        torch.Size([8, 5, 32])
    """

    # Its output is a new tensor: a following activation may run in place (LayerSequence).
    _returns_new_tensor = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        stack: int | None = None,
    ) -> None:
        super().__init__()

        self.in_features = check_features("in_features", in_features)
        self.out_features = check_features("out_features", out_features)
        self.stack = None if stack is None else check_features("stack", stack)

        leading = () if self.stack is None else (self.stack,)
        self.weight = nn.Parameter(torch.empty(*leading, self.out_features, self.in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(*leading, self.out_features))
        else:
            self.register_parameter("bias", None)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Draws weights and biases from :math:`\mathcal{U}(-1 / \sqrt{C}, 1 / \sqrt{C})`, the
        initialization of :class:`torch.nn.Linear`, independently for each operator."""

        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> Tensor:
        r"""Returns the weight actually applied to the inputs (subclasses constrain it)."""

        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: The input vectors, with shape :math:`(*, C)`, or :math:`(*, S, C)` if stacked.

        Returns:
            The output vectors, with shape :math:`(*, C')`, or :math:`(*, S, C')` if stacked.
        """

        weight = self.effective_weight()
        if self.stack is None:
            return F.linear(x, weight, self.bias)

        y = torch.einsum("...si,soi->...so", x, weight)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        text = (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
        if self.stack is not None:
            text += f", stack={self.stack}"
        return text
