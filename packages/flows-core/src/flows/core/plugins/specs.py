"""Declarative specs of what a plugin provides.

A spec names its constructor by import path (``"package.module:attribute"``) and imports it
only when asked, so listing the installed transforms never imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

__all__ = ["PresetSpec", "TransformSpec", "load_object"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_INVERSES = ("exact", "numerical")


def load_object(path: str) -> Any:
    """Import the object at ``"package.module:attribute"``.

    Example:
        >>> load_object("math:pi")
        3.141592653589793
    """
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _check_common(kind: str, name: str, constructor: str, summary: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{kind} name must be lower-case letters, digits, '-' or '_', got {name!r}"
        )
    if not isinstance(constructor, str) or not _PATH.match(constructor):
        raise ValueError(
            f"{kind} {name!r}: constructor must be an import path 'package.module:attribute', "
            f"got {constructor!r}"
        )
    if not isinstance(summary, str) or "\n" in summary:
        raise ValueError(f"{kind} {name!r}: summary must be one line of text, got {summary!r}")


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    r"""A univariate transform family, registered by name.

    The constructor receives the parameter tensors positionally, one per shape returned by
    ``shapes``, and the ``options`` as keyword arguments:
    ``constructor(*params, **options)``, where ``params[i]`` has shape ``(*batch, *shapes[i])``.

    Optionally, the constructor (a class) also has a class method
    ``from_rows(rows, batch, **options)`` taking the parameters as one block laid out
    parameters first, ``rows`` of shape ``(total, F, N)`` with ``N`` the elements of ``batch``,
    as masked autoregressive layers compute them; it must build the transform that the
    constructor builds from the block's per-parameter views. Without it, the constructor
    receives those views. See :class:`flows.core.transforms.UnivariateTransform`.

    Arguments:
        name: The unique, lower-case name users pass as ``univariate=name``.
        constructor: Import path of the transform constructor.
        shapes: A function from the shape hyper-parameters (``shape_defaults``) to the
            parameter shapes; it raises :class:`ValueError` on invalid values.
        summary: One line saying what the transform is.
        shape_defaults: Hyper-parameters that determine the parameter shapes (``bins=8``).
        options: Keyword arguments of the constructor and their defaults (``bound=5.0``).
        domain: Where the transform is a bijection: ``"real"``, ``"interval"`` or ``"circle"``.

    Example:
        >>> spec = TransformSpec(
        ...     name="affine",
        ...     constructor="flows.core.transforms:MonotonicAffineTransform",
        ...     shapes=lambda: [(), ()],
        ...     summary="y = exp(a) x + b",
        ...     options={"slope": 1e-3},
        ... )
        >>> spec.defaults
        {'slope': 0.001}
    """

    name: str
    constructor: str
    shapes: Callable[..., Sequence[tuple[int, ...]]]
    summary: str
    shape_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    domain: str = "real"

    def __post_init__(self) -> None:
        _check_common("transform", self.name, self.constructor, self.summary)
        if not callable(self.shapes):
            raise TypeError(f"transform {self.name!r}: shapes must be callable")
        clash = set(self.shape_defaults) & set(self.options)
        if clash:
            raise ValueError(
                f"transform {self.name!r}: {sorted(clash)} are both shape defaults and options"
            )

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyper-parameter the transform accepts, with its default."""
        return {**self.shape_defaults, **self.options}

    def load(self) -> Callable[..., Any]:
        """Import and return the constructor."""
        # By contract the import path names a constructor; nothing here checks that it is one.
        return cast("Callable[..., Any]", load_object(self.constructor))

    def resolve(self, **hyper: Any) -> tuple[Callable[..., Any], list[tuple[int, ...]]]:
        """Bind hyper-parameters: returns ``(constructor, shapes)`` ready for a lazy transform.

        Raises:
            TypeError: A hyper-parameter the transform does not accept.
            ValueError: A hyper-parameter value the transform refuses.
        """
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(
                f"transform {self.name!r} got unexpected hyper-parameter(s) "
                f"{', '.join(sorted(unknown))}; it accepts: {accepted}"
            )
        shape_args = {k: hyper.get(k, v) for k, v in self.shape_defaults.items()}
        options = {k: hyper.get(k, v) for k, v in self.options.items()}
        shapes = [tuple(shape) for shape in self.shapes(**shape_args)]
        constructor = self.load()
        if options:
            constructor = functools.partial(constructor, **options)
        return constructor, shapes


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """A preset flow (a lazy distribution constructor such as ``MAF``), registered by name.

    Arguments:
        name: The unique, lower-case name (``"maf"``).
        constructor: Import path of the preset class.
        summary: One line saying what the preset is.
        transforms: The registered transform names the preset is built from.
        inverse: How the flow's transform is inverted in the direction it does not take in
            one pass (sampling for MAF, ``log_prob`` for IAF): ``"exact"`` (closed-form, or a
            fixed number of exact passes) or ``"numerical"`` (an iterative solve whose
            tolerance the preset states).

    Example:
        >>> PresetSpec("maf", "flows.core.presets:MAF", "Masked autoregressive flow").name
        'maf'
        >>> PresetSpec(
        ...     "planar", "flows.core.presets:Planar", "Planar", inverse="numerical"
        ... ).inverse
        'numerical'
    """

    name: str
    constructor: str
    summary: str
    transforms: tuple[str, ...] = ()
    # Left out of the repr, which messages quote, so that they read as before the field.
    inverse: str = dataclasses.field(default="exact", repr=False)

    def __post_init__(self) -> None:
        _check_common("preset", self.name, self.constructor, self.summary)
        object.__setattr__(self, "transforms", tuple(self.transforms))
        if self.inverse not in _INVERSES:
            raise ValueError(
                f"preset {self.name!r}: inverse must be one of {', '.join(map(repr, _INVERSES))}, "
                f"got {self.inverse!r}"
            )

    def load(self) -> Callable[..., Any]:
        """Import and return the preset constructor."""
        return cast("Callable[..., Any]", load_object(self.constructor))
