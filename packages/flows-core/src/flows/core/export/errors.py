"""What goes wrong when exporting, said in one line: :class:`ExportError` and missing extras."""

from __future__ import annotations

__all__ = ["EXTRA_HINT", "ExportError", "require"]

import importlib.util

#: How to install what ONNX export needs.
EXTRA_HINT = "pip install 'flows-core[export]'"


class ExportError(ValueError):
    """A flow that cannot be exported as asked, or a missing dependency; the message says why.

    A :class:`ValueError`: what is refused is the flow (or the format) given to the export.

    Example:
        >>> str(ExportError("cannot export sample of GMM: ..."))
        'cannot export sample of GMM: ...'
    """


def require(*modules: str, purpose: str) -> None:
    """Raise :class:`ExportError` naming the extra to install if a module is missing.

    Arguments:
        modules: Top-level module names (``"onnx"``, ``"onnxruntime"``).
        purpose: What needs them, for the message (``"ONNX export"``).

    Example:
        >>> require("math", purpose="arithmetic")
        >>> require("not_a_module_of_flows", purpose="a demo")
        Traceback (most recent call last):
            ...
        flows.core.export.errors.ExportError: a demo needs not_a_module_of_flows, which is not installed: pip install 'flows-core[export]'
    """  # noqa: E501
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"{purpose} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {EXTRA_HINT}"
        )
