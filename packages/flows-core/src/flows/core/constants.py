r"""Numbers as cached tensors of a computation's dtype and device.

A Python number in a tensor operation is wrapped into a new tensor and converted at every call:
four more dispatcher calls, about 2 us on CPU, often more than the operation itself. Transforms
built at every layer call and inverse pass (affine maps, splines) read their numbers as tensors
made once per dtype and device instead.

Example:
    >>> import math
    >>> @cached_constants
    ... def bounds(slope):
    ...     return (1 / -math.log(slope), -math.log(slope))
    >>> inverse, bound = bounds(1e-3, like=torch.zeros(2, dtype=torch.float64))
    >>> bound
    tensor(6.9078, dtype=torch.float64)
"""

from __future__ import annotations

__all__ = ["cached_constants"]

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

T = TypeVar("T", bound=tuple[Any, ...])


def cached_constants(build: Callable[..., T]) -> Callable[..., T]:
    """Turn ``build(*key)``, a tuple (or named tuple) of numbers and nested lists of numbers,
    into ``constants(*key, like=x)``, the same tuple of tensors of ``x``'s dtype and device.

    The tensors are cached per key, dtype and device, and made outside inference mode, so
    autograd may save them whichever mode first asked. An integer ``like`` gets tensors of the
    default floating dtype (the numbers are not truncated); compiled code gets fresh tensors,
    which the compiler folds into its graph as constants.
    """

    @functools.lru_cache(maxsize=64)
    def cached(key: tuple[Any, ...], dtype: torch.dtype, device: torch.device) -> T:
        with torch.inference_mode(False):
            return _tensors(build(*key), dtype, device)

    @functools.wraps(build)
    def constants(*key: Any, like: Tensor) -> T:
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        if torch.compiler.is_compiling():
            return _tensors(build(*key), dtype, like.device)
        return cached(key, dtype, like.device)

    return constants


def _tensors(values: T, dtype: torch.dtype, device: torch.device) -> T:
    tensors = [torch.tensor(value, dtype=dtype, device=device) for value in values]
    # The same tuple type, tensors in place of its numbers: T describes that structure.
    return cast(T, type(values)(*tensors) if hasattr(values, "_fields") else tuple(tensors))
