r"""A base for networks built as a sequence of layers."""

from __future__ import annotations

__all__ = ["LayerSequence", "in_place_activation"]

import functools
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.modules.module as _global_hooks
from torch import Tensor


class LayerSequence(nn.Sequential):
    r"""An :class:`torch.nn.Sequential` whose slices are plain :class:`torch.nn.Sequential`.

    :class:`torch.nn.Sequential` builds a slice by calling the constructor of its class with
    the layers, which subclasses with their own constructor arguments do not accept.

    An activation that directly follows one of this package's linear layers runs in place on
    the layer's fresh output when :func:`in_place_activation` gives it an in-place form (a
    :class:`torch.nn.ReLU`, or a :class:`torch.nn.LeakyReLU` or :class:`torch.nn.ELU` whose
    slope is not negative) and neither has hooks: these compute their gradient from their
    result, so nothing autograd needs is overwritten, and each hidden layer saves the
    allocation of its activations (on CPU, also the page faults of a fresh block). Layers
    without hooks are run through their ``forward`` directly, which skips the per-call
    bookkeeping of :class:`torch.nn.Module`.
    """

    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, len(self))

    def forward_hidden(self, x: Tensor) -> Tensor:
        """The output of every layer but the last: the last hidden features."""
        return self._run(x, len(self) - 1)

    def _run(self, x: Tensor, stop: int) -> Tensor:
        # A hook on every module, or on the layer itself, could see the layer's input or output:
        # then the layer is called as a module and nothing runs in place on its output.
        unobserved = not _globally_hooked()
        fresh = False
        for i, layer in enumerate(self._modules.values()):
            if i == stop:
                break
            plain = unobserved and not _hooked(layer)
            activate = in_place_activation(layer) if fresh and plain else None
            if activate is not None:
                x = activate(x)
            elif plain and not _compiled(layer):
                x = layer.forward(x)
            else:
                x = layer(x)
            fresh = plain and _returns_new_tensor(layer)
        return x


def _globally_hooked() -> bool:
    """Whether a hook registered for every module may see the layers' inputs or outputs."""
    return bool(
        _global_hooks._global_forward_hooks
        or _global_hooks._global_forward_pre_hooks
        or _global_hooks._global_backward_hooks
        or _global_hooks._global_backward_pre_hooks
    )


def _hooked(module: nn.Module) -> bool:
    """Whether a hook of ``module`` may see its inputs or outputs."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _compiled(module: nn.Module) -> bool:
    """Whether ``module`` was compiled on its own (``module.compile()``): call it as a module."""
    return getattr(module, "_compiled_call_impl", None) is not None


def _returns_new_tensor(layer: nn.Module) -> bool:
    """Whether ``layer`` returns a new tensor that nothing else holds.

    The linear layers of this package say so by the class attribute ``_returns_new_tensor``.
    """
    return getattr(type(layer), "_returns_new_tensor", False)


def in_place_activation(activation: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The in-place form of ``activation``, if it is safe under autograd; else ``None``.

    The one rule for every place of this package that rectifies a fresh tensor in place
    (:class:`LayerSequence` and :meth:`MaskedMLP.forward_pieces`): :class:`torch.nn.ReLU`,
    and :class:`torch.nn.LeakyReLU` or :class:`torch.nn.ELU` whose slope is not negative,
    compute their gradient from their result, so their in-place form overwrites nothing
    autograd needs. Only these exact classes qualify: a subclass may change the function.
    While :func:`torch.jit.trace` records (Pyro's ``JitTrace_ELBO`` does), none does: a traced
    graph may replay a linear layer's output as a view, which autograd will not rectify in
    place. The caller decides whether hooks allow skipping the module call.

    Example:
        >>> relu_ = in_place_activation(nn.ReLU())
        >>> x = torch.tensor([-1.0, 2.0])
        >>> relu_(x) is x, x
        (True, tensor([0., 2.]))
        >>> in_place_activation(nn.Tanh()) is None
        True
    """
    if torch.jit.is_tracing():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return None
    if type(activation) is nn.ReLU:
        return torch.relu_
    # With a negative slope the result no longer tells the sign of the input, and autograd
    # refuses the in-place form's backward.
    if type(activation) is nn.LeakyReLU and activation.negative_slope >= 0:
        return functools.partial(F.leaky_relu_, negative_slope=activation.negative_slope)
    if type(activation) is nn.ELU and activation.alpha >= 0:
        return functools.partial(F.elu_, alpha=activation.alpha)
    return None
