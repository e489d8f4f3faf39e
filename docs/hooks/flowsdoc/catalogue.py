"""The plugin catalogue: every transform and preset the registry finds, as the site is built.

The registry is asked exactly what ``flows list-transforms`` asks, so a plugin installed in
the documentation's environment appears with its provider; constructors are imported only to
read their signatures.
"""

from __future__ import annotations

__all__ = ["presets", "transforms"]

import inspect
from typing import Any

from flowsdoc import api

from flows.core.plugins import list_presets, list_transforms, plugin_report


def _reference(import_path: str) -> str:
    """``module:attr`` as a link into the reference when it is documented there, else code."""
    module, _, attribute = import_path.partition(":")
    name = attribute.rsplit(".", 1)[-1]
    try:
        obj: Any = api.tree().get_member(f"{module}.{attribute}".removeprefix("flows."))
        target = api.home(obj)
    except (KeyError, ValueError):
        target = None
    if target is not None and target.path in api.documented():
        return f"[`{name}`][{target.path}]"
    return f"`{import_path}`"


def _value(value: Any) -> str:
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def transforms() -> str:
    """Markdown: a table of the registered transforms, then one section each."""
    provided = list_transforms()
    out = ["| name | provided by | domain | summary |", "| --- | --- | --- | --- |"]
    for p in provided:
        spec = p.spec
        out.append(
            f"| [`{spec.name}`](#transform-{spec.name}) | {p.distribution} {p.version} | "
            f"{spec.domain} | {_cell(spec.summary)} |"
        )
    for p in provided:
        spec = p.spec
        shapes = [tuple(shape) for shape in spec.shapes(**spec.shape_defaults)]
        out += [
            "",
            f"### `{spec.name}` {{#transform-{spec.name}}}",
            "",
            f"{spec.summary}.",
            "",
            f"Provided by **{p.distribution}** {p.version} (plugin `{p.plugin}`); domain "
            f"`{spec.domain}`; constructor {_reference(spec.constructor)}. Per feature, at the "
            f"defaults, it takes {len(shapes)} parameter tensor{'s' if len(shapes) != 1 else ''}"
            f" of shape{'s' if len(shapes) != 1 else ''} "
            f"{', '.join(f'`{shape}`' for shape in shapes)}.",
            "",
        ]
        if spec.defaults:
            out += ["| hyper-parameter | default | role |", "| --- | --- | --- |"]
            for key, value in spec.shape_defaults.items():
                out.append(f"| `{key}` | {_value(value)} | shapes the parameter tensors |")
            for key, value in spec.options.items():
                out.append(f"| `{key}` | {_value(value)} | constructor option |")
        else:
            out.append("No hyper-parameters.")
        hyper = ", ".join(f"{k}={v!r}" for k, v in spec.shape_defaults.items())
        call = (
            f'MaskedAutoregressiveTransform(features=2, univariate="{spec.name}"'
            f"{', ' + hyper if hyper else ''})"
        )
        out += ["", f"In a layer: `{call}`; in a preset, the same keywords."]
    return "\n".join(out) + "\n"


def _parameters(constructor: Any) -> list[inspect.Parameter]:
    signature = inspect.signature(constructor)
    return [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def presets() -> str:
    """Markdown: a table of the registered presets, then one section each."""
    provided = list_presets()
    out = ["| name | provided by | built on | summary |", "| --- | --- | --- | --- |"]
    for p in provided:
        spec = p.spec
        built_on = ", ".join(f"[`{t}`](#transform-{t})" for t in spec.transforms) or "-"
        out.append(
            f"| [`{spec.name}`](#preset-{spec.name}) | {p.distribution} {p.version} | "
            f"{built_on} | {_cell(spec.summary)} |"
        )
    for p in provided:
        spec = p.spec
        constructor = spec.load()
        out += [
            "",
            f"### `{spec.name}` {{#preset-{spec.name}}}",
            "",
            f"{spec.summary}. Provided by **{p.distribution}** {p.version}; class "
            f"{_reference(spec.constructor)}. `flows fit DATA --flow {spec.name}` fits it.",
            "",
            "| parameter | default | type |",
            "| --- | --- | --- |",
        ]
        for parameter in _parameters(constructor):
            default = (
                "required" if parameter.default is parameter.empty else _value(parameter.default)
            )
            annotation = (
                "" if parameter.annotation is parameter.empty else f"`{parameter.annotation}`"
            )
            out.append(f"| `{parameter.name}` | {default} | {_cell(annotation)} |")
        keywords = any(
            parameter.kind is parameter.VAR_KEYWORD
            for parameter in inspect.signature(constructor).parameters.values()
        )
        if keywords:
            out += ["", "Other keyword arguments go to the layers it builds (see its reference)."]
    return "\n".join(out) + "\n"


def plugins() -> str:
    """Markdown: the plugins the registry loaded while this site was built."""
    out = [
        "| plugin | distribution | version | status | hooks |",
        "| --- | --- | --- | --- | --- |",
    ]
    for info in plugin_report():
        hooks = ", ".join(f"`{hook}`" for hook in info.hooks)
        out.append(
            f"| `{info.name}` | {info.distribution} | {info.version} | {info.status} | {hooks} |"
        )
    return "\n".join(out) + "\n"
