r"""Export a trained flow's log-density or sampling to ONNX or a ``torch.export`` program.

Where Python is not (a C++ simulator, a web service, a trigger system), a flow runs as an ONNX
model (onnxruntime, in any language it serves) or a ``torch.export`` program (libtorch,
AOTInductor). :func:`export` writes either, for

* ``what="log_prob"``: ``(x[, c]) -> log_prob``, the log-density of each row;
* ``what="sample"``: ``(z[, c]) -> x``, the sample :math:`x = f^{-1}(z \mid c)` of base noise
  :math:`z` (standard Gaussian), given as an input so that the model is deterministic. A
  Gaussian mixture (GMM), whose samples are no bijection of Gaussian noise, takes
  ``(z, u[, c])``: the uniform :math:`u \in [0, 1)` picks each row's component.

Every input and output has a dynamic batch dimension (first); given the data's
:class:`Standardization`, the model takes and returns the data's original units. The model
computes in float32 on the CPU: the flow is copied there, whatever its device and dtype. After
writing, :func:`export` runs the file (onnxruntime, or the loaded program) on probe inputs and
refuses it unless it matches the flow within ``tolerance``: the file is written whole, checked,
or not at all.

Every shipped preset exports: MAF, NICE, RealNVP, GF, GMM, NSF (autoregressive and coupling),
NCSF, NAF, UNAF, SOSPF, BPF, with or without context. A flow whose computation depends on the
values of its inputs, such as CNF's adaptive ODE solver, has no fixed graph:
:class:`ExportError` says so, naming the place.

ONNX export needs the ``export`` extra (``pip install 'flows-core[export]'``: onnx, onnxscript,
onnxruntime); without it, :class:`ExportError` says what to install. ``pt2`` needs torch alone.
The modules: :mod:`~flows.core.export.functions` (what is computed),
:mod:`~flows.core.export.tracing` (the graph), :mod:`~flows.core.export.folding` (its
constants), :mod:`~flows.core.export.formats` (the files).

Example:
    >>> import os, tempfile, torch
    >>> from flows.core import MAF
    >>> from flows.core.export import Standardization, export, load
    >>> flow = MAF(features=2, transforms=1)
    >>> scale = Standardization(mean=[10.0, -3.0], std=[2.0, 0.5])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "density.pt2")
    ...     report = export(flow, path, what="log_prob", standardization=scale)
    ...     model = load(path)
    ...     x = torch.tensor([[10.0, -3.0], [12.0, -2.5]])
    ...     log_p = model(x)
    >>> report.inputs, report.outputs
    ({'x': ('batch', 2)}, {'log_prob': ('batch',)})
    >>> report.max_error < 1e-4
    True
    >>> expected = flow().log_prob(torch.tensor([[0.0, 0.0], [1.0, 1.0]])) - scale.log_scale
    >>> torch.allclose(log_p, expected, atol=1e-5)
    True
"""

from __future__ import annotations

__all__ = [
    "FORMATS",
    "WHAT",
    "ExportError",
    "ExportFunction",
    "ExportReport",
    "Standardization",
    "export",
    "export_function",
    "export_program",
    "load",
    "read_metadata",
]

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from flows.core.export.errors import ExportError, require
from flows.core.export.formats import FORMATS, SUFFIXES, read_metadata, write
from flows.core.export.formats import load as _load_file
from flows.core.export.functions import WHAT, ExportFunction, Standardization, export_function
from flows.core.export.tracing import cpu_copy, export_program
from flows.core.files import atomic_path
from flows.core.validation import check_choice, check_count, check_positive

#: How far the written model may be from the flow, relative and absolute (float32 arithmetic).
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote.

    Arguments:
        path: The file.
        format: ``"onnx"`` or ``"pt2"``.
        what: ``"log_prob"`` or ``"sample"``.
        inputs: Each input's name and shape, ``"batch"`` standing for the batch size.
        outputs: Each output's name and shape.
        max_error: The largest difference between the file's outputs and the flow's on the
            probe inputs (``None`` if not checked).
        probes: The number of probe rows compared.
    """

    path: Path
    format: str
    what: str
    inputs: dict[str, tuple[int | str, ...]]
    outputs: dict[str, tuple[int | str, ...]]
    max_error: float | None
    probes: int


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        for name, suffix in SUFFIXES.items():
            if path.suffix.lower() == suffix:
                return name
        raise ValueError(
            f"format: cannot tell it from the file name {str(path)!r}; name a .onnx or .pt2 "
            "file, or pass format='onnx' or format='pt2'"
        )
    return check_choice("format", format, FORMATS)


def _shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int | str, ...]]:
    return {name: ("batch", *shape) for name, shape in shapes.items()}


def _metadata(function: ExportFunction, extra: Mapping[str, str] | None) -> dict[str, str]:
    from flows.core import __version__

    inputs = _shapes(function.input_shapes())
    outputs = _shapes(function.output_shapes())
    units = (
        "the data's original units"
        if function.standardization != Standardization()
        else ("the flow's own units")
    )
    signature = ", ".join(f"{n}[{', '.join(map(str, s))}]" for n, s in inputs.items())
    results = ", ".join(f"{n}[{', '.join(map(str, s))}]" for n, s in outputs.items())
    metadata = {
        "flows.what": function.what,
        "flows.flow": type(function.flow).__name__,
        "flows.inputs": json.dumps(inputs),
        "flows.outputs": json.dumps(outputs),
        "flows.units": units,
        "flows.version": __version__,
        "flows.description": (
            f"{function.what} of a flows {type(function.flow).__name__}: ({signature}) -> "
            f"{results}, float32, in {units}"
        ),
    }
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
        metadata[key] = value
    return metadata


def _max_error(expected: Tensor, actual: Tensor) -> float:
    """The largest difference, in units of ``1 + |expected|`` (relative and absolute)."""
    if expected.shape != actual.shape:
        raise ExportError(
            f"the exported model returns shape {tuple(actual.shape)}, the flow "
            f"{tuple(expected.shape)}"
        )
    expected, actual = expected.double(), actual.double()
    same = (expected == actual) | (expected.isnan() & actual.isnan())
    difference = ((expected - actual).abs() / (1 + expected.abs())).masked_fill(same, 0.0)
    worst = float(difference.max()) if difference.numel() else 0.0
    return math.inf if math.isnan(worst) else worst


def export(
    flow: nn.Module,
    path: str | os.PathLike[str],
    *,
    what: str = "log_prob",
    format: str | None = None,
    features: int | None = None,
    context: int | None = None,
    standardization: Standardization | None = None,
    metadata: Mapping[str, str] | None = None,
    check: bool = True,
    probes: int = 256,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export a flow's log-density or sampling to an ONNX model or a ``torch.export`` program.

    The file is written whole or not at all (:func:`flows.core.files.atomic_path`), and moved
    into place once written and checked: ``path`` is the old file or the whole new one.

    Arguments:
        flow: A preset (or a lazy distribution whose ``forward(c)`` gives a normalizing flow or
            a Gaussian mixture). Not modified: a CPU float32 copy is exported.
        path: The file to write; its folder must exist.
        what: ``"log_prob"`` or ``"sample"``.
        format: ``"onnx"`` or ``"pt2"``; by default the suffix of ``path`` (``.onnx``,
            ``.pt2``).
        features: The number of features, if the flow does not record it (not a preset).
        context: The number of context features, likewise.
        standardization: The data (and context) statistics, to take and return original units.
        metadata: More ``str`` entries for the file's description (ONNX ``metadata_props``,
            the pt2 archive's ``flows.json``), besides the ``flows.*`` ones it always holds.
        check: Whether to run the written file on ``probes`` rows (and on one row) and compare
            it with the flow.
        probes: The number of probe rows.
        tolerance: The largest difference allowed, relative to ``1 + |value|``.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: The flow cannot be exported as asked, a package the format needs is
            missing, or the written model does not match the flow (nothing is written then).
        ValueError: A bad ``what``, ``format``, ``probes`` or ``tolerance``, or statistics
            that do not fit the flow.
        FileNotFoundError: The folder of ``path`` does not exist.
        NotARegularFileError: ``path`` is a symbolic link, a folder or another file that is
            not a regular one (an ``OSError``).
    """
    path = Path(path)
    format = _format_of(path, format)
    check_count("probes", probes, minimum=1)
    check_positive("tolerance", tolerance)
    if format == "onnx":
        require("onnx", "onnxscript", *(["onnxruntime"] if check else []), purpose="ONNX export")
    function = export_function(
        flow, what, features=features, context=context, standardization=standardization
    )
    described = _metadata(function, metadata)
    program = export_program(function)
    with atomic_path(path) as staged:
        write(
            program,
            staged,
            format,
            inputs=function.inputs,
            outputs=function.outputs,
            metadata=described,
        )
        error = _check(function, _load_file(staged, format), probes) if check else None
        if error is not None and error > tolerance:
            raise ExportError(
                f"the exported {format} model does not match the flow: it differs by "
                f"{error:.3g} (relative to 1 + |value|) on probe inputs, more than the "
                f"tolerance {tolerance:g}; nothing was written"
            )
    return ExportReport(
        path=path,
        format=format,
        what=function.what,
        inputs=_shapes(function.input_shapes()),
        outputs=_shapes(function.output_shapes()),
        max_error=error,
        probes=probes if check else 0,
    )


def _check(function: ExportFunction, model: Callable[..., Tensor], probes: int) -> float:
    """The largest difference between ``model`` and the flow's float32 CPU copy."""
    reference = cpu_copy(function)
    inputs = reference.probe_inputs(probes)
    with torch.no_grad():
        expected = reference(*inputs)
    if bool(expected.isnan().any()):
        # NaN would match NaN, and a broken flow would pass for a faithful export.
        raise ExportError(
            f"the flow's own {function.what} is NaN at {int(expected.isnan().sum())} of the "
            f"{expected.numel()} values of the check's probes: its weights are broken"
        )
    error = _max_error(expected, model(*inputs))
    # One row too: a batch of one is where broadcasting mistakes show.
    single = tuple(t[:1] for t in inputs)
    with torch.no_grad():
        expected = reference(*single)
    return max(error, _max_error(expected, model(*single)))


def load(path: str | os.PathLike[str], format: str | None = None) -> Callable[..., Tensor]:
    """Load a file :func:`export` wrote as a function of CPU float32 tensors.

    ONNX models run in onnxruntime, pt2 programs in torch; the inputs are those of the
    export (``x``, ``c``, ...), in order.

    Raises:
        ExportError: onnxruntime is missing for an ONNX model.
        ValueError: The format cannot be told from the file name.
    """
    path = Path(path)
    return _load_file(path, _format_of(path, format))
