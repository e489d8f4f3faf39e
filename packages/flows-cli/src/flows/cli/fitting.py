"""``flows fit DATA``: fit a preset to data, write a checkpoint and a picture.

Everything that can be refused (data, columns, flow name, its options, output folders) is
checked before training starts, so a mistake costs no training time and leaves no file behind.
A run whose loss or NLL turns NaN or infinite stops there with one line and writes nothing.
Under ``torchrun`` every process runs this same code; only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli import datasets
from flows.cli.arguments import CLIError
from flows.cli.modeling import Standardizer, build_flow, default_flow
from flows.cli.outputs import OutputPlan, plot_pair
from flows.cli.workers import start_workers
from flows.core.files import atomic_path

__all__ = ["diverged_message", "run_fit"]

# With no --epochs, aim for about this many optimizer steps (at least 2 epochs).
TARGET_STEPS = 2000
PLOT_SAMPLES = 20000


def _hyper(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    hyper: dict[str, tuple[str, Any]] = {}
    if args.transforms is not None:
        hyper["transforms"] = ("--transforms", args.transforms)
    if args.hidden is not None:
        hyper["hidden_features"] = ("--hidden", list(args.hidden))
    if args.bins is not None:
        hyper["bins"] = ("--bins", args.bins)
    for key, value in args.flow_arg:
        hyper[key] = (f"--flow-arg {key}", value)
    return hyper


def _progress_bar(total: int, enabled: bool, shift: float) -> Any:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        file=sys.stderr,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        desc="fit",
    )

    def callback(progress: Any) -> None:
        bar.update(1)
        if progress.val_nll is not None or progress.step % 20 == 0:
            postfix = {"loss": f"{progress.loss + shift:.3f}"}
            if progress.best_val_nll is not None:
                postfix["held-out"] = f"{progress.best_val_nll + shift:.3f}"
            bar.set_postfix(postfix, refresh=False)

    return bar, callback


def run_fit(args: argparse.Namespace) -> int:
    from flows.cli import images
    from flows.core.plugins import preset_spec

    if images.wants_images(args.data, args.flow):
        return images.run_fit_images(args)

    # The name first, from the registry alone: a misspelt one is answered before torch loads.
    name = args.flow or default_flow()
    provided = preset_spec(name)  # an unknown name: RegistryError suggests close ones
    data_file = None if args.data in datasets.TOY_SETS else args.data
    plan = OutputPlan(force=args.force, inputs={"DATA": data_file})
    out = plan.add("--out", args.out, "checkpoint")
    table = datasets.load_data(args.data, key=args.key, samples=args.samples, seed=args.seed)
    x, c = datasets.select(
        table, datasets.parse_columns(args.columns), datasets.parse_columns(args.context_columns)
    )
    numbers = np.flatnonzero(~datasets.nonfinite_rows(x, c)) + 1  # of the rows kept, from 1
    x, c, dropped = datasets.check_finite(x, c, drop=args.drop_nonfinite)
    rows = x.values.shape[0]
    if rows < 2 or (args.validation > 0 and rows < 3):
        raise CLIError(f"{table.source}: {rows} usable row(s) are too few to fit a flow")

    plot_path = None
    if x.values.shape[1] == 2 and not args.no_plot:
        plot_path = plan.add(
            "--plot", args.plot or out.with_suffix(".png"), "plot", default=args.plot is None
        )

    scale_x = Standardizer.of(x.values, x.names, table.source)
    if getattr(args, "support", None) is not None:
        scale_x = scale_x.with_support(args.support, x.values, x.names, table.source, numbers)
    scale_c = Standardizer.of(c.values, c.names, table.source) if c is not None else None

    import torch

    from flows.core.checkpoint import save
    from flows.core.training import FitDivergedError, fit

    torch.set_num_threads(args.threads)
    workers = start_workers(args.device, args.dist_timeout)
    try:
        torch.manual_seed(args.seed)
        features = x.values.shape[1]
        context = 0 if c is None else c.values.shape[1]
        support = scale_x.standardized_support()
        flow = build_flow(name, features, context, _hyper(args), support).to(workers.device)

        z = scale_x.kept_inside(
            torch.as_tensor(scale_x.forward(x.values), dtype=torch.float32), x.values
        )
        zc = None
        if c is not None and scale_c is not None:
            zc = torch.as_tensor(scale_c.forward(c.values), dtype=torch.float32)

        train_rows = rows - round(args.validation * rows)
        per_epoch = math.ceil(train_rows / args.batch_size)
        epochs = args.epochs or max(2, math.ceil(TARGET_STEPS / per_epoch))
        shift = scale_x.log_scale  # standardized NLL + shift = NLL in the data's units

        if workers.main:
            print(
                f"fitting {name} ({provided.distribution} {provided.version}) to "
                f"{table.source}: {rows} rows x {features} features"
                + (f", {context} context" if context else "")
                + (f" ({dropped} non-finite rows dropped)" if dropped else ""),
                file=sys.stderr,
            )
        bar, callback = _progress_bar(
            epochs * per_epoch, workers.main and sys.stderr.isatty(), shift
        )
        compile_mode = getattr(args, "compile_mode", None)
        compiled = compile_mode or bool(getattr(args, "compile", False))
        try:
            with warnings.catch_warnings(record=True) as caught:
                result = fit(
                    flow,
                    z,
                    zc,
                    epochs=epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    validation=args.validation,
                    patience=args.patience,
                    lr_patience=args.lr_patience,
                    clip_grad=args.clip_grad,
                    callback=callback,
                    seed=args.seed,
                    compile=compiled,
                )
            for warning in caught:
                if "torch.compile" not in str(warning.message):
                    warnings.warn_explicit(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )
                elif workers.main:  # the compiler missing: one line, no source line quoted
                    print(f"flows: note: {warning.message}", file=sys.stderr)
        except FitDivergedError as error:
            raise CLIError(diverged_message(error, args)) from None
        finally:
            bar.close()
        workers.stop()  # done with the other processes: leave the group before writing
        if not workers.main:
            return 0

        flow.eval()
        extra: dict[str, Any] = {
            "data": str(table.source),
            "columns": list(x.names),
            "context_columns": list(c.names) if c is not None else [],
            "header": bool(table.header),
            **scale_x.to_extra(""),
            **(scale_c.to_extra("context_") if scale_c is not None else {}),
            "train_nll": result.train_nll + shift,
            "val_nll": None if result.val_nll is None else result.val_nll + shift,
            "steps": result.steps,
        }
        with atomic_path(out) as staged:
            save(flow, staged, extra=extra)

        note = None
        if plot_path is not None:
            note = _plot(flow, x.values, zc, scale_x, x.names, name, table.source, plot_path)
        _summary(name, result, shift, out, plot_path if note is None else None, workers)
        if note:
            print(f"flows: note: {note}", file=sys.stderr)
        return 0
    except BaseException as error:
        workers.abandon()  # without the barrier: another process may be stopped or gone
        explained = workers.explain(error)
        if explained is error:
            raise
        raise explained from error


def diverged_message(error: Any, args: argparse.Namespace) -> str:
    """The line for flows-core's ``FitDivergedError``, in the command's own options."""
    return (
        f"training diverged at step {error.step} ({error.what} {error.loss:g}); lower --lr "
        f"(now {args.lr:g}) or set a smaller --clip-grad (now {args.clip_grad:g})"
    )


def _plot(
    flow: Any,
    data: np.ndarray,
    zc: Any,
    scale: Standardizer,
    names: list[str],
    name: str,
    source: str,
    path: Path,
) -> str | None:
    import torch

    count = min(len(data), PLOT_SAMPLES)
    with torch.no_grad():
        if zc is None:
            z = flow().sample((count,))
        else:
            z = flow(zc[:count].to(next(flow.parameters()).device)).sample()
    # Samples of data near the largest double may overflow to inf: the plot leaves them out
    # (or says it cannot be drawn), so numpy's overflow warnings would only be noise here.
    with np.errstate(over="ignore", invalid="ignore"):
        samples = scale.backward(z.cpu().double().numpy())
    return plot_pair(data[:count], samples, names, f"{name} fitted to {source}", path)


def _summary(
    name: str, result: Any, shift: float, out: Path, plot: Path | None, workers: Any
) -> None:
    held = "-" if result.val_nll is None else f"{result.val_nll + shift:.4f} nats"
    lines = [
        ("flow", name + (f" ({workers.world} processes)" if workers.world > 1 else "")),
        ("train NLL", f"{result.train_nll + shift:.4f} nats"),
        ("held-out NLL", held),
        ("steps", f"{result.steps} (best at {result.best_step})"),
        ("time", f"{result.seconds:.1f} s"),
        ("checkpoint", str(out)),
    ]
    if result.compile_seconds is not None:  # what compiling cost, beside what a step costs
        cost = f"{result.compile_seconds:.1f} s"
        if result.steps > 1:
            cost += f", then {1e3 * result.step_seconds:.2f} ms per step"
        lines.insert(-1, ("compile", cost))
    if plot is not None:
        lines.append(("plot", str(plot)))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
