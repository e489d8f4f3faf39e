"""``flows export MODEL``: a checkpoint's log-density or sampling as an ONNX model or a program.

The checkpoint's standardization is folded in, so the exported model takes and returns data in
the original units, as ``flows eval`` and ``flows sample`` do:

* ``--what log_prob``: inputs ``x`` (``batch`` rows of the model's columns) and, for a
  conditional model, ``c`` (its context columns); output ``log_prob`` (``batch`` values).
* ``--what sample``: inputs ``z`` (standard normal noise, ``batch`` rows of one value per
  column) and ``c``; output ``x``, the samples. A Gaussian mixture (``gmm``) also takes ``u``,
  uniform in [0, 1), which picks each row's component.

Only tabular checkpoints export: one ``flows fit`` wrote for images (``digits``, ``--flow
glow``) is refused with the reason.

``--format onnx`` writes an ONNX model (``.onnx``, needs ``pip install 'flows-core[export]'``),
``--format pt2`` a ``torch.export`` program (``.pt2``). The batch size is dynamic; the model
computes in float32. The file is written whole or not at all, after it was run on probe inputs
and found to match the flow (the line printed says by how much); an existing file is replaced
only if flows exported it, or with ``--force``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli.arguments import CLIError
from flows.cli.outputs import OutputPlan
from flows.core.files import atomic_path

__all__ = ["FORMATS", "SUFFIXES", "WHAT", "default_out", "run_export"]

# Repeated from flows.core.export, so that the command checks its options before importing it.
FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}
WHAT = ("log_prob", "sample")
_NAMES = {"onnx": "an ONNX model", "pt2": "a torch.export program"}
_DESCRIBED = {"log_prob": "the log-density", "sample": "sampling"}


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise CLIError(f"{option} {value!r} is not one of {', '.join(choices)}")
    return value


def default_out(model: str, format: str, what: str) -> Path:
    """``flow.pt`` -> ``flow.onnx`` (``flow-sample.onnx`` for sampling), beside the model."""
    path = Path(model)
    stem = path.stem + ("-sample" if what == "sample" else "")
    return path.with_name(stem + SUFFIXES[format])


def _shape(name: str, shape: tuple[int | str, ...]) -> str:
    return f"{name}[{', '.join(map(str, shape))}]"


def run_export(args: argparse.Namespace) -> int:
    format = _choice("--format", args.format, FORMATS)
    what = _choice("--what", args.what, WHAT)
    default = args.out is None
    out = default_out(args.model, format, what) if default else Path(args.out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise CLIError(
            f"--out {str(out)!r}: {_NAMES[format]} is written to a {SUFFIXES[format]} file"
        )
    plan = OutputPlan(force=args.force, inputs={"MODEL": args.model})
    plan.add("--out", out, "model", default=default)

    from flows.cli import images

    if images.image_checkpoint(args.model):
        raise CLIError(
            f"{args.model!r} holds an image flow, and image checkpoints cannot be exported yet: "
            "an exported model takes rows of named columns, while an image flow takes "
            "(C, H, W) images on K levels through its dequantization, which export does not "
            "handle"
        )

    from flows.core.export import ExportError, Standardization, export
    from flows.core.export.errors import require

    if format == "onnx":
        try:
            require("onnx", "onnxscript", "onnxruntime", purpose="--format onnx")
        except ExportError as error:
            raise CLIError(str(error)) from None

    from flows.cli.modeling import load_model

    flow, extra, preset = load_model(args.model)
    columns = list(extra["columns"])
    context_columns = list(extra.get("context_columns", []))
    scale = Standardization(
        mean=extra["mean"],
        std=extra["std"],
        context_mean=extra.get("context_mean") if context_columns else None,
        context_std=extra.get("context_std") if context_columns else None,
    )
    metadata = {
        "flows.preset": preset,
        "flows.columns": json.dumps(columns),
        "flows.context_columns": json.dumps(context_columns),
        "flows.checkpoint": Path(args.model).name,
    }
    with atomic_path(out) as staged:
        report = export(
            flow,
            staged,
            what=what,
            format=format,
            context=len(context_columns),
            standardization=scale,
            metadata=metadata,
        )
    inputs = ", ".join(_shape(n, s) for n, s in report.inputs.items())
    outputs = ", ".join(_shape(n, s) for n, s in report.outputs.items())
    where = f"x = ({', '.join(columns)})" + (
        f", c = ({', '.join(context_columns)})" if context_columns else ""
    )
    print(
        f"wrote {out}: {_DESCRIBED[what]} of {preset} as {_NAMES[format]}, "
        f"({inputs}) -> ({outputs}) with {where} in the data's units; it matches the flow "
        f"within {report.max_error:.1e} on {report.probes} probe rows"
    )
    return 0
