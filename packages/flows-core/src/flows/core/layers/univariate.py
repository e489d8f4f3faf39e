r"""Resolve the ``univariate`` argument of lazy transforms into a constructor and a layout.

Lazy transforms take a univariate transform either as a registered name with its
hyper-parameters (``univariate="affine", slope=1e-2``) or as a constructor with the shapes of
its parameter tensors (``univariate=MonotonicAffineTransform, shapes=[(), ()]``). Either way,
the hyper-network predicts a flat vector of parameters per feature, which
:class:`UnivariateLayout` splits into the constructor's tensors with views only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Transform

__all__ = [
    "UnivariateLayout",
    "cat_context",
    "checked_context",
    "init_near_zero",
    "parameters_from_rows",
    "resolve_univariate",
]


class UnivariateLayout:
    r"""A univariate constructor and how its parameters lie in a flat vector.

    Feature :math:`i` owns the slice ``p[..., i, :]`` of a tensor of shape
    :math:`(*, F, \text{total})`; it is split along the last dimension into one tensor per
    shape, in order, without copies.

    Arguments:
        constructor: Builds a univariate transform from its parameter tensors.
        shapes: The shape of each parameter tensor, per feature.
        name: How to call the univariate in messages and reprs.

    Example:
        >>> from flows.core.transforms import MonotonicAffineTransform
        >>> layout = UnivariateLayout(MonotonicAffineTransform, [(), ()])
        >>> layout.total
        2
        >>> shift, scale = layout.split(torch.zeros(10, 3, 2))
        >>> shift.shape
        torch.Size([10, 3])
    """

    def __init__(
        self,
        constructor: Callable[..., Transform],
        shapes: Sequence[Sequence[int]],
        name: str | None = None,
    ) -> None:
        self.constructor = constructor
        self.shapes = [tuple(int(n) for n in shape) for shape in shapes]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.total = sum(self.sizes)
        self.scalars = all(shape == () for shape in self.shapes)
        self.name = _describe_constructor(constructor) if name is None else name
        self._from_rows = _from_rows(constructor)

    def split(self, p: Tensor) -> list[Tensor]:
        """Split ``p`` of shape ``(*, F, total)`` into tensors of shapes ``(*, F, *shape)``."""
        if self.scalars:
            return list(p.unbind(dim=-1))  # one view per scalar parameter, in a single op
        batch = p.shape[:-1]
        parts = p.split_with_sizes(self.sizes, dim=-1)
        return [q.reshape(*batch, *shape) for q, shape in zip(parts, self.shapes, strict=True)]

    def build(self, p: Tensor) -> Transform:
        """The univariate transform with the parameters ``p`` of shape ``(*, F, total)``."""
        return self.constructor(*self.split(p))

    def build_parameters_first(self, rows: Tensor, batch: Sequence[int]) -> Transform:
        """The univariate transform with the parameters laid out parameters first.

        ``rows`` has shape ``(total, F, N)``, ``N`` the flattened ``batch``: each parameter's
        values of every feature and sample are contiguous, the layout element-wise kernels
        over one parameter at a time prefer. A constructor with a ``from_rows(rows, batch,
        **options)`` class method takes the block whole (one tensor in, one gradient out);
        any other receives tensors of shapes ``(*batch, F, *shape)``, views of the block
        (:func:`parameters_from_rows`). The contract of ``from_rows`` is that of
        :class:`flows.core.transforms.UnivariateTransform`.

        Example:
            >>> from flows.core.transforms import MonotonicAffineTransform
            >>> layout = UnivariateLayout(MonotonicAffineTransform, [(), ()])
            >>> rows = torch.zeros(2, 3, 10)  # shift and scale, 3 features, batch (2, 5)
            >>> layout.build_parameters_first(rows, (2, 5)).shift.shape
            torch.Size([2, 5, 3])
        """
        from_rows = self._from_rows
        if from_rows is not None:
            return from_rows(rows, batch)
        return self.constructor(*parameters_from_rows(rows, batch, self.shapes))

    def __repr__(self) -> str:
        return self.name


def parameters_from_rows(
    rows: Tensor, batch: Sequence[int], shapes: Sequence[Sequence[int]]
) -> list[Tensor]:
    """The parameter tensors ``(*batch, F, *shape)`` of a block laid out parameters first.

    ``rows`` has shape ``(total, F, N)``, ``N`` the flattened ``batch``, the parameters one
    after the other along its first dimension; the tensors are views of it where its memory
    allows.

    Example:
        >>> rows = torch.arange(12.0).view(3, 2, 2)  # shapes [(), (2,)], 2 features, N = 2
        >>> shift, scale = parameters_from_rows(rows, (2,), [(), (2,)])
        >>> shift
        tensor([[0., 2.],
                [1., 3.]])
        >>> scale.shape
        torch.Size([2, 2, 2])
    """
    features = rows.shape[1]
    parts = rows.split([math.prod(shape) for shape in shapes], dim=0)
    return [
        q.permute(2, 1, 0).reshape(*batch, features, *shape)
        for q, shape in zip(parts, shapes, strict=True)
    ]


def _from_rows(constructor: Callable[..., Transform]) -> Callable[..., Transform] | None:
    """The constructor's ``from_rows`` class method with its options bound, if it has one.

    The optional class method of :class:`flows.core.transforms.UnivariateTransform`'s contract;
    a constructor without it, or with bound positional parameters, gets ``None``.
    """
    # A registered constructor comes as functools.partial(cls, **options).
    inner = getattr(constructor, "func", constructor)
    from_rows = getattr(inner, "from_rows", None)
    if from_rows is None or getattr(constructor, "args", None):
        return None  # bound positional parameters: only the constructor knows where they go
    return functools.partial(from_rows, **getattr(constructor, "keywords", {}))


def _describe_constructor(constructor: Any) -> str:
    inner = getattr(constructor, "func", constructor)  # a functools.partial from a spec
    return getattr(inner, "__name__", type(inner).__name__)


def resolve_univariate(
    owner: str,
    univariate: str | Callable[..., Transform],
    shapes: Sequence[Sequence[int]] | None,
    kwargs: dict[str, Any],
    network_arguments: Collection[str],
) -> tuple[UnivariateLayout, dict[str, Any]]:
    r"""Resolve a univariate transform and split the keyword arguments.

    Arguments:
        owner: The lazy transform's name, for messages.
        univariate: A registered name or a constructor.
        shapes: The parameter shapes, required with a constructor and refused with a name.
        kwargs: The remaining keyword arguments: the univariate's hyper-parameters and the
            hyper-network's arguments.
        network_arguments: The names the hyper-network accepts.

    Returns:
        The layout of the univariate's parameters and the hyper-network's keyword arguments.

    Raises:
        TypeError: A keyword argument that is neither, or a constructor without shapes.

    Example:
        >>> layout, network = resolve_univariate(
        ...     "MyTransform",
        ...     "affine",
        ...     None,
        ...     {"slope": 0.01, "hidden_features": [8]},
        ...     ["hidden_features"],
        ... )
        >>> layout.total, network
        (2, {'hidden_features': [8]})
    """
    if isinstance(univariate, str):
        from flows.core.plugins import transform_spec

        spec = transform_spec(univariate).spec
        if shapes is not None:
            raise TypeError(
                f"{owner}: shapes={shapes!r} is only for a univariate constructor; the shapes "
                f"of the registered transform {univariate!r} follow from its hyper-parameters "
                f"({', '.join(sorted(spec.shape_defaults)) or 'none'})"
            )
        hyper_names = set(spec.defaults)
        hyper = {key: kwargs[key] for key in kwargs if key in hyper_names}
        network = {key: value for key, value in kwargs.items() if key not in hyper_names}
        _check_network_arguments(owner, network, network_arguments, univariate, hyper_names)
        constructor, resolved = spec.resolve(**hyper)
        return UnivariateLayout(constructor, resolved, repr(univariate)), network

    if not callable(univariate):
        raise TypeError(
            f"{owner}: univariate must be a registered transform name or a constructor, "
            f"got {univariate!r}"
        )
    if shapes is None:
        raise TypeError(
            f"{owner}: univariate={_describe_constructor(univariate)} is a constructor, so the "
            "shapes of its parameters are needed too, e.g. shapes=[(), ()] for "
            "MonotonicAffineTransform; or pass a registered name such as univariate='affine'"
        )
    shapes = _check_shapes(owner, shapes)
    _check_network_arguments(owner, kwargs, network_arguments, None, set())
    return UnivariateLayout(univariate, shapes, _describe_constructor(univariate)), dict(kwargs)


def _check_shapes(owner: str, shapes: Any) -> list[tuple[int, ...]]:
    error = TypeError(
        f"{owner}: shapes must be a sequence of shapes (tuples of non-negative ints), one per "
        f"parameter of the univariate transform, e.g. [(), ()] or ([8], [8], [7]); got {shapes!r}"
    )
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence) or not shapes:
        raise error
    checked = []
    for shape in shapes:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise error
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise error
        checked.append(tuple(shape))
    return checked


def _check_network_arguments(
    owner: str,
    network: dict[str, Any],
    accepted: Collection[str],
    univariate: str | None,
    hyper_names: Collection[str],
) -> None:
    unknown = sorted(set(network) - set(accepted))
    if not unknown:
        return
    if univariate is None:
        hyper = "(a univariate constructor takes no hyper-parameters: its shapes say it all)"
    else:
        names = ", ".join(sorted(hyper_names)) or "none"
        hyper = f"and the hyper-parameters of univariate {univariate!r}: {names}"
    raise TypeError(
        f"{owner} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; it "
        f"accepts the network arguments {', '.join(sorted(accepted))} {hyper}"
    )


def init_near_zero(network: nn.Module, gain: float = 1e-2) -> None:
    """Shrink the last layer of a hyper-network so its output starts near zero.

    Zero parameters make the affine (and most) univariate transforms the identity, so a flow
    starts close to its base distribution, which makes deep flows train faster.
    """
    last = None
    for module in network.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() == 2:
            last = module, weight
    if last is None:
        return
    module, weight = last
    with torch.no_grad():
        weight.mul_(gain)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.zero_()


def checked_context(owner: str, context: int, c: Tensor | None) -> Tensor | None:
    """The context a layer's forward uses: ignored without context features, required with."""
    if context == 0:
        return None
    if c is None or c.dim() == 0 or c.shape[-1] != context:
        got = "None" if c is None else f"shape {tuple(c.shape)}"
        raise ValueError(
            f"{owner} has context={context}: a context c of shape (*, {context}) is required, "
            f"got {got}"
        )
    return c


def cat_context(x: Tensor, c: Tensor) -> Tensor:
    """Concatenate inputs and context along the last dimension, broadcasting their batches."""
    if x.shape[:-1] != c.shape[:-1]:
        # torch.broadcast_shapes is slow enough to show in a training step: only when needed.
        batch = torch.broadcast_shapes(x.shape[:-1], c.shape[:-1])
        x = x.expand(*batch, x.shape[-1])
        c = c.expand(*batch, c.shape[-1])
    return torch.cat((x, c), dim=-1)
