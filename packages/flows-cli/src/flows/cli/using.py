"""``flows sample MODEL`` and ``flows eval MODEL DATA``: use a checkpoint written by ``fit``.

Both work in the data's original units: samples are un-standardized, and log-densities include
the standardization's log-determinant, ``-sum(log s)``.

``eval`` finds the model's columns in DATA by their header names; when the file's header names
others, it refuses rather than guess by position (``--columns`` says which to use). Rows whose
standardized values or log-densities are not finite in float32 (finite data far outside what
the model was fitted on, such as 1e37) are named and refused, with or without ``--per-row``,
before anything is printed: a mean over them would be NaN or -inf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli import datasets, images
from flows.cli.arguments import CLIError
from flows.cli.modeling import Standardizer, load_model
from flows.cli.outputs import OutputPlan, write_rows, write_table

__all__ = ["run_eval", "run_sample"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)

CHUNK = 8192


def _context_rows(text: str, key: str | None, width: int, names: list[str]) -> np.ndarray:
    """Context given as ``"0.5,1"`` or as a file of rows."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = np.array([[float(p) for p in parts]])
    except ValueError:
        if not Path(text).suffix:
            raise CLIError(
                f"--context {text!r}: expected {width} comma-separated numbers or a file"
            ) from None
        table = datasets.read_file(text, key)
        if table.header and all(n in table.names for n in names):
            table, _ = datasets.select(table, names)
        values = table.values
    if values.shape[1] != width:
        raise CLIError(
            f"--context has {values.shape[1]} value(s) per row; the model expects {width} "
            f"({', '.join(names)})"
        )
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise CLIError(f"--context row(s) {', '.join(map(str, bad[:10] + 1))} hold NaN or inf")
    return values


def _samples(flow: Any, scale: Standardizer, num: int) -> Iterator[np.ndarray]:
    """``num`` samples in the data's units, drawn and yielded ``CHUNK`` rows at a time."""
    distribution = flow()
    for start in range(0, num, CHUNK):
        z = distribution.sample((min(CHUNK, num - start),))
        yield _finite(scale.backward(z.double().numpy()))


def _conditional_samples(
    flow: Any, scale: Standardizer, c: np.ndarray, zc: Any, num: int
) -> Iterator[np.ndarray]:
    """Rows ``[context, sample]``: ``num`` samples for each context row in turn, by chunks.

    A draw covers as many context rows as fit in ``CHUNK`` samples, or a ``CHUNK`` of one
    row's samples when ``num`` alone exceeds it.
    """
    block = max(1, CHUNK // num)  # context rows per draw
    for first in range(0, len(c), block):
        rows = slice(first, first + block)
        distribution = flow(zc[rows])
        for start in range(0, num, CHUNK):
            count = min(CHUNK, num - start)
            z = distribution.sample((count,))  # (count, rows, features)
            z = z.transpose(0, 1).reshape(-1, z.shape[-1])
            c_rep = np.repeat(c[rows], count, axis=0)
            samples = _finite(scale.backward(z.double().numpy()))
            yield np.concatenate([c_rep, samples], axis=1)


def _finite(samples: np.ndarray) -> np.ndarray:
    """``samples``, unless one of them is NaN or infinite: a model that yields those is broken
    (weights that diverged or were altered), and such rows are no result."""
    if not np.isfinite(samples).all():
        raise CLIError(
            "the model drew samples holding NaN or inf: its weights are broken (diverged or "
            "altered); refit it"
        )
    return samples


def run_sample(args: argparse.Namespace) -> int:
    plan = OutputPlan(force=args.force, inputs={"MODEL": args.model, "--context": args.context})
    if args.out is not None:
        plan.add("--out", args.out, "table")
    if images.image_checkpoint(args.model):
        return images.run_sample_images(args)
    import torch

    flow, extra, _ = load_model(args.model)
    scale = Standardizer.from_extra(extra, "")
    names = list(extra["columns"])
    context_names = list(extra.get("context_columns", []))
    if args.seed is not None:
        torch.manual_seed(args.seed)

    if context_names:
        if args.context is None:
            raise CLIError(
                f"the model is conditional on {', '.join(context_names)}; give --context"
            )
        c = _context_rows(args.context, args.key, len(context_names), context_names)
        zc = torch.as_tensor(
            Standardizer.from_extra(extra, "context_").forward(c), dtype=torch.float32
        )
        chunks = _conditional_samples(flow, scale, c, zc, args.num)
        header, rows = context_names + names, len(c) * args.num
    else:
        if args.context is not None:
            raise CLIError("the model is not conditional; --context does not apply")
        chunks = _samples(flow, scale, args.num)
        header, rows = names, args.num
    with torch.no_grad():  # the chunks are drawn while they are written
        write_rows(chunks, header, rows, args.out, sys.stdout)
    return 0


def _columns_for(
    table: datasets.Table,
    names: list[str],
    context_names: list[str],
    args: argparse.Namespace,
    named: bool = True,
) -> tuple[datasets.Table, datasets.Table | None]:
    """The data and context columns of ``table``: as chosen, by header name, or by position.

    ``named`` says whether the model's column names came from a header (or a built-in set);
    then a table whose header names other columns is refused instead of read by position.
    """
    columns = datasets.parse_columns(args.columns)
    context_columns = datasets.parse_columns(args.context_columns)
    if columns is None and context_columns is None and table.header:
        wanted = names + context_names
        if all(n in table.names for n in wanted):
            columns, context_columns = names, (context_names or None)
        elif named:
            missing = [n for n in wanted if n not in table.names]
            options = "--columns" + (" and --context-columns" if context_names else "")
            example = ",".join(table.names[: len(names)])
            raise CLIError(
                f"{table.source} has no column(s) named {', '.join(missing)}: the model was "
                f"fitted on {', '.join(names)}"
                + (f" given {', '.join(context_names)}" if context_names else "")
                + f", the file's columns are {', '.join(table.names)}; choose which to use "
                f"with {options} (e.g. --columns {example})"
            )
    if columns is None and context_columns is None and context_names:
        width = len(names) + len(context_names)
        if len(table.names) != width:
            raise CLIError(
                f"{table.source} has {len(table.names)} column(s); the model expects "
                f"{len(names)} data ({', '.join(names)}) and {len(context_names)} context "
                f"({', '.join(context_names)}) columns: choose them with --columns and "
                "--context-columns"
            )
        context_columns = [str(i) for i in range(len(names), width)]
    return datasets.select(table, columns, context_columns)


def _fits_float32(values: np.ndarray) -> np.ndarray:
    """Per row: whether every value is finite once cast to float32."""
    return (np.abs(values) <= _FLOAT32_MAX).all(axis=1)


def run_eval(args: argparse.Namespace) -> int:
    data_file = None if args.data in datasets.TOY_SETS else args.data
    plan = OutputPlan(force=args.force, inputs={"MODEL": args.model, "DATA": data_file})
    if args.out is not None:
        plan.add("--out", args.out, "table")
    if images.image_checkpoint(args.model):
        return images.run_eval_images(args)
    import torch

    flow, extra, preset = load_model(args.model)
    names = list(extra["columns"])
    context_names = list(extra.get("context_columns", []))
    table = datasets.load_data(args.data, key=args.key, samples=args.samples, seed=args.seed)
    x, c = _columns_for(table, names, context_names, args, bool(extra.get("header", True)))
    if x.values.shape[1] != len(names):
        raise CLIError(
            f"{table.source} gives {x.values.shape[1]} data column(s); the model expects "
            f"{len(names)} ({', '.join(names)}): choose them with --columns"
        )
    if context_names and (c is None or c.values.shape[1] != len(context_names)):
        got = 0 if c is None else c.values.shape[1]
        raise CLIError(
            f"the model expects {len(context_names)} context column(s) "
            f"({', '.join(context_names)}), got {got}: choose them with --context-columns"
        )
    if not context_names and c is not None:
        raise CLIError("the model is not conditional; --context-columns does not apply")
    numbers = np.flatnonzero(~datasets.nonfinite_rows(x, c)) + 1  # of the rows kept, from 1
    x, c, dropped = datasets.check_finite(x, c, drop=args.drop_nonfinite)

    scale = Standardizer.from_extra(extra, "")
    zx = scale.forward(x.values)
    representable = _fits_float32(zx)
    z = scale.kept_inside(torch.as_tensor(zx, dtype=torch.float32), x.values)
    zc = None
    if c is not None:
        zc_values = Standardizer.from_extra(extra, "context_").forward(c.values)
        representable &= _fits_float32(zc_values)
        zc = torch.as_tensor(zc_values, dtype=torch.float32)
    parts = []
    with torch.no_grad():
        for start in range(0, z.shape[0], CHUNK):
            rows = slice(start, start + CHUNK)
            distribution = flow() if zc is None else flow(zc[rows])
            parts.append(distribution.log_prob(z[rows]).double())
    log_p = torch.cat(parts).numpy() - scale.log_scale
    # NaN and +inf are overflow; so is -inf, mostly (z**2 overflows float32 from 1e19 on),
    # and a density of 0 averages to -inf all the same: none of them is worth a mean.
    outside = ~representable | ~np.isfinite(log_p)
    if outside.any():
        raise CLIError(
            f"{table.source}: {int(outside.sum())} row(s) lie outside the model's numeric "
            f"range (data rows {datasets.row_numbers(numbers[outside])}, counted from 1): "
            "their log-density is not a finite float32 number (it overflows, or the model "
            "gives them no density); leave them out, or fit a model on data that covers them"
        )

    summary = (
        f"mean log-density {log_p.mean():.4f} nats over {len(log_p)} rows of {table.source} "
        f"under {preset}" + (f" ({dropped} non-finite rows dropped)" if dropped else "")
    )
    if args.out is not None:
        write_table(log_p[:, None], ["log_prob"], args.out, sys.stdout)
    if args.per_row:
        write_table(log_p[:, None], ["log_prob"], None, sys.stdout)
        print(summary, file=sys.stderr)
    else:
        print(summary)
    return 0
