r"""Let a module's code read other tensors in place of its parameters, for a while.

:class:`torch.nn.Module` keeps parameters in ``_parameters`` and finds them through
``__getattr__``, which Python consults only when the instance ``__dict__`` has no entry of that
name. An entry put in ``__dict__`` is therefore what ``module.weight`` reads, while the parameter
stays registered: ``state_dict``, ``parameters()``, ``.to()`` and optimizers see it unchanged.
Unlike :func:`torch.func.functional_call`, the substitution outlasts a forward call, so
distributions that call their networks later (autoregressive transforms evaluate them inside
``log_prob``) read the substituted tensors too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import Tensor, nn

__all__ = ["owner_of", "substitute", "substituted", "unsubstitute"]


def owner_of(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding the parameter ``name`` (dotted) and the parameter's own name."""
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def substitute(owner: nn.Module, leaf: str, tensor: Tensor) -> None:
    """Make ``owner.<leaf>`` read ``tensor``; the parameter stays registered."""
    owner.__dict__[leaf] = tensor


def unsubstitute(owner: nn.Module, leaf: str) -> None:
    """Make ``owner.<leaf>`` read its registered parameter again."""
    owner.__dict__.pop(leaf, None)


@contextlib.contextmanager
def substituted(module: nn.Module, tensors: Mapping[str, Tensor]) -> Iterator[None]:
    """Within the block, ``module``'s code reads ``tensors[name]`` for each dotted parameter
    ``name``; any substitution in place before the block is put back after it."""
    owners = [(*owner_of(module, name), tensor) for name, tensor in tensors.items()]
    before = [(owner, leaf, owner.__dict__.get(leaf)) for owner, leaf, _ in owners]
    try:
        for owner, leaf, tensor in owners:
            substitute(owner, leaf, tensor)
        yield
    finally:
        for owner, leaf, previous in before:
            if previous is None:
                unsubstitute(owner, leaf)
            else:
                substitute(owner, leaf, previous)
