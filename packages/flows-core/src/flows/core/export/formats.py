r"""The files an export writes, ONNX models and ``torch.export`` programs, and running them back.

* ``onnx``: an ONNX model (:func:`torch.onnx.export` of the program, one file, weights inside,
  the operations ONNX lacks written with those it has, see
  :mod:`~flows.core.export.substitutes`; optimized by onnxscript, without its pattern
  rewrites beyond :data:`REWRITE_LIMIT` nodes, where they cost minutes and gain little),
  its producer ``flows-core``, its inputs and outputs named as the function's (``x``, ``c``,
  ``z``, ``u``; ``log_prob``, ``x``) with the batch dimension named ``batch``, and a description
  of both in its ``metadata_props``. Needs ``onnx`` and ``onnxscript``, and ``onnxruntime`` to
  run it (the ``export`` extra).
* ``pt2``: a :func:`torch.export.save` archive, the same description in its extra file
  ``flows.json``; :func:`torch.export.load` reads it back, with torch alone.

:func:`load` returns a written file as a function of CPU float32 tensors, which is how
:func:`flows.core.export.export` checks what it wrote against the flow.
"""

from __future__ import annotations

__all__ = ["FORMATS", "PRODUCER", "SUFFIXES", "load", "read_metadata", "write"]

import contextlib
import importlib
import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from flows.core.export.errors import ExportError, require
from flows.core.export.substitutes import for_onnx, translations

#: The formats, and the file suffix each is written with.
FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}
#: The ``producer_name`` of the ONNX models flows writes.
PRODUCER = "flows-core"
#: The extra file of a ``pt2`` archive that holds its description.
METADATA_FILE = "flows.json"
#: The largest ONNX graph (in nodes) given onnxscript's pattern rewrites, whose time grows
#: faster than the graph; larger ones (bisection inverses) get constant folding, dead-node
#: removal and common subexpression elimination only, which run as fast (measured).
REWRITE_LIMIT = 1500


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress logs and their internal deprecation warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _write_onnx(
    program: torch.export.ExportedProgram,
    path: str | os.PathLike[str],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    metadata: Mapping[str, str],
) -> None:
    require("onnx", "onnxscript", purpose="ONNX export")
    from flows.core import __version__

    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                for_onnx(program),
                dynamo=True,
                custom_translation_table=translations(),
                input_names=list(inputs),
                output_names=list(outputs),
                verbose=False,
                optimize=False,
            )
            if onnx_program is None:  # pragma: no cover - the legacy exporter's return
                raise ExportError("torch.onnx.export returned no ONNX program")
            _optimize(onnx_program)
    except ExportError:
        raise
    except Exception as error:  # an operation without an ONNX counterpart, mostly
        raise ExportError(f"cannot convert to ONNX: {_summary(error)}") from error
    model = onnx_program.model
    batch = model.graph.inputs[0].shape[0] if model.graph.inputs[0].shape else None
    if batch is not None and not isinstance(batch, int) and hasattr(onnx_program, "rename_axes"):
        onnx_program.rename_axes({batch: "batch"})
    model.producer_name = PRODUCER
    model.producer_version = __version__
    model.doc_string = metadata.get("flows.description", "")
    for key, value in metadata.items():
        model.metadata_props[key] = value
    with _quiet():
        onnx_program.save(os.fspath(path), external_data=False)


def _optimize(onnx_program: Any) -> None:
    """Optimize as torch does, or without the pattern rewrites for a large graph."""
    model = onnx_program.model
    if sum(1 for _ in model.graph) <= REWRITE_LIMIT:
        onnx_program.optimize()
        return
    optimizer = importlib.import_module("onnxscript.optimizer")
    passes = importlib.import_module("onnx_ir.passes.common")
    optimizer.fold_constants(model)
    optimizer.remove_unused_nodes(model)
    passes.CommonSubexpressionEliminationPass()(model)
    optimizer.remove_unused_nodes(model)


def _summary(error: BaseException) -> str:
    """The most specific line of an exporter's error: the operation it has no ONNX for."""
    text = "\n".join(
        str(e) for e in (error, error.__cause__, getattr(error.__cause__, "__cause__", None)) if e
    )
    match = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if match:
        return f"ONNX has no counterpart of the operation {match.group(1)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def write(
    program: torch.export.ExportedProgram,
    path: str | os.PathLike[str],
    format: str,
    *,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    metadata: Mapping[str, str],
) -> None:
    """Write ``program`` to ``path`` in ``format``, its inputs, outputs and metadata named.

    Raises:
        ExportError: A package the format needs is missing, or the conversion failed.
    """
    if format == "onnx":
        _write_onnx(program, path, inputs, outputs, metadata)
    elif format == "pt2":
        with _quiet():
            torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata)})
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``flows.*`` description of a file written by :func:`write`, without running it.

    Raises:
        ExportError: The file is neither (``onnx`` is needed for ONNX files).
    """
    if os.fspath(path).endswith(SUFFIXES["pt2"]):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith(f"extra/{METADATA_FILE}"))
                return dict(json.loads(archive.read(name)))
        except (OSError, zipfile.BadZipFile, StopIteration, ValueError) as error:
            raise ExportError(f"{os.fspath(path)!r} is not a pt2 program flows wrote") from error
    require("onnx", purpose="reading an ONNX model")
    onnx = importlib.import_module("onnx")  # the export extra, which the type checks lack
    model = onnx.load(os.fspath(path), load_external_data=False)
    return {entry.key: entry.value for entry in model.metadata_props}


def load(path: str | os.PathLike[str], format: str) -> Callable[..., Tensor]:
    """A written file as a function of CPU float32 tensors returning a CPU tensor.

    ONNX models run in :mod:`onnxruntime` (on the CPU); pt2 programs in torch.

    Raises:
        ExportError: ``onnxruntime`` is missing for an ONNX model.
    """
    if format == "pt2":
        with _quiet():
            module = torch.export.load(os.fspath(path)).module()

        def run_program(*inputs: Tensor) -> Tensor:
            with torch.no_grad():
                output: Tensor = module(*inputs)
            return output

        return run_program
    require("onnxruntime", purpose="running an ONNX model")
    onnxruntime = importlib.import_module("onnxruntime")

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
    )
    names = [value.name for value in session.get_inputs()]

    def run_onnx(*inputs: Tensor) -> Tensor:
        feeds: dict[str, Any] = {
            name: value.detach().cpu().float().numpy()
            for name, value in zip(names, inputs, strict=True)
        }
        (output,) = session.run(None, feeds)
        return torch.from_numpy(output)

    return run_onnx
