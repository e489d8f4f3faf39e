"""The ``flows`` command line: argument parsing and the one place errors become messages.

Commands import what they need when they run, so ``flows list-transforms`` never imports torch
or numpy. Every expected failure (bad data, unknown flow, damaged checkpoint, missing folder)
ends with one line ``flows: error: ...`` on stderr and exit status 1; a bad command line prints
the usage and exits with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from flows.cli.arguments import (
    MAX_SAMPLES,
    CLIError,
    fraction,
    hidden_sizes,
    key_value,
    non_negative_int,
    positive_float,
    positive_int,
    preset_name,
    sample_count,
    support_ranges,
)

__all__ = ["build_parser", "main"]

PROG = "flows"


# The parser


class _HelpFormatter(argparse.HelpFormatter):
    """Ends each option's help with its default, unless the help already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # Identity, not equality: a default of 0 is worth showing, False and None are not.
        unset = default is None or default is False or default is argparse.SUPPRESS
        if not action.option_strings or unset or default == [] or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _add_fit(commands: Any) -> None:
    fit = commands.add_parser(
        "fit",
        help="fit a flow to data and write a checkpoint",
        description="Fit a flow to DATA by maximum likelihood: standardizes the data, holds "
        "out a part for early stopping, writes a checkpoint and, for 2-D data, a PNG of data "
        "beside samples.",
    )
    fit.add_argument(
        "data",
        metavar="DATA",
        help="a built-in data set (see `flows datasets`) or a .csv, .npy or .npz file",
    )
    fit.add_argument(
        "--flow",
        type=preset_name,
        help="the preset to fit (see `flows list-flows`; default nsf if installed, else maf)",
    )
    fit.add_argument(
        "--transforms", type=positive_int, help="number of transforms (default: the preset's)"
    )
    fit.add_argument(
        "--hidden",
        type=hidden_sizes,
        metavar="W,W",
        help="hidden layer widths (default: the preset's)",
    )
    fit.add_argument(
        "--bins", type=positive_int, help="spline bins, for spline flows (default: the preset's)"
    )
    fit.add_argument(
        "--flow-arg",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other preset argument, as JSON (e.g. randperm=true); checked against the "
        "type the preset declares; repeat for more",
    )
    fit.add_argument(
        "--support",
        type=support_ranges,
        metavar="LO:HI[,LO:HI...]",
        help="the open range of each column, in the data's units, or one for all; an empty "
        "side is unbounded (0: is positive); samples lie inside, rows outside are an error "
        "(write --support=-1:1 for a negative bound)",
    )
    fit.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the training rows (default: about 2000 steps)",
    )
    fit.add_argument(
        "--batch-size", type=positive_int, default=256, help="rows per optimizer step"
    )
    fit.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate")
    fit.add_argument(
        "--patience",
        type=positive_int,
        default=10,
        help="epochs without held-out improvement before stopping",
    )
    fit.add_argument(
        "--lr-patience",
        type=non_negative_int,
        default=2,
        help="epochs without held-out improvement that the learning rate outlasts; the next "
        "one halves it (one at or above --patience keeps it constant)",
    )
    fit.add_argument("--validation", type=fraction, default=0.1, help="fraction of rows held out")
    fit.add_argument(
        "--clip-grad",
        type=positive_float,
        default=5.0,
        help="largest gradient norm; steps with larger gradients are scaled down to it",
    )
    fit.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the weights, the held-out split, the batches and built-in data",
    )
    fit.add_argument("--out", default="flow.pt", help="checkpoint file (default flow.pt)")
    fit.add_argument(
        "--plot",
        help="PNG of data and samples for 2-D data (default: the checkpoint name with .png)",
    )
    fit.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    fit.add_argument(
        "--force",
        action="store_true",
        help="replace existing output files flows cannot tell it wrote (a rerun replaces "
        "its own checkpoint and PNG without --force)",
    )
    fit.add_argument(
        "--samples",
        type=sample_count,
        default=10000,
        help=f"rows generated for a built-in data set (at most {MAX_SAMPLES:,})",
    )
    fit.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu)",
    )
    fit.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="under torchrun, how long a process waits for the others (to join, or at any "
        "collective step) before it gives up with an error",
    )
    fit.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads per process (default 1: small flows train fastest so)",
    )
    fit.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (compiled once, for every step and evaluation; "
        "the summary gives the compile time and the time per step)",
    )
    fit.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        default=None,
        help="the torch.compile mode (implies --compile; reduce-overhead captures CUDA graphs)",
    )
    _add_data_options(fit)
    fit.set_defaults(run="flows.cli.fitting:run_fit")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--columns", help="data columns: indices or header names, e.g. 0,1 or x,y")
    parser.add_argument("--context-columns", help="conditioning columns, as --columns")
    parser.add_argument("--key", help="the array to read from a .npz file")
    parser.add_argument(
        "--drop-nonfinite",
        action="store_true",
        help="drop rows holding NaN or inf instead of refusing them",
    )


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export a checkpoint's log-density or sampling to ONNX or torch.export",
        description="Export the log-density (inputs x[, c]) or the sampling (inputs z[, c]: "
        "standard normal noise; gmm also takes u, uniform in [0, 1)) of the flow in MODEL as "
        "an ONNX model or a torch.export program, with a dynamic batch size, in the data's "
        "original units (the checkpoint's standardization folded in). The file is checked "
        "against the flow before it is written.",
    )
    export.add_argument("model", metavar="MODEL", help="a checkpoint written by `flows fit`")
    export.add_argument(
        "--format",
        default="onnx",
        metavar="FORMAT",
        help="onnx (a .onnx file; needs pip install 'flows-core[export]') or pt2 (a "
        "torch.export program, .pt2)",
    )
    export.add_argument(
        "--what",
        default="log_prob",
        metavar="WHAT",
        help="log_prob (the log-density of data rows) or sample (samples from noise)",
    )
    export.add_argument(
        "--out",
        help="the file to write (default: MODEL's name with .onnx or .pt2, -sample before it "
        "for sampling)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file that flows did not export",
    )
    export.set_defaults(run="flows.cli.exporting:run_export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Normalizing flows: fit, sample, evaluate, list what is installed."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name, function, text in (
        ("list-transforms", "run_list_transforms", "list the registered univariate transforms"),
        ("list-flows", "run_list_flows", "list the registered flow presets"),
        ("plugins", "run_plugins", "list the plugins found and whether they loaded"),
        ("datasets", "run_datasets", "list the built-in data sets: toy point sets, digits images"),
    ):
        listing = commands.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + "."
        )
        listing.add_argument("--json", action="store_true", help="print JSON for scripts")
        listing.set_defaults(run=f"flows.cli.listing:{function}")

    _add_fit(commands)

    sample = commands.add_parser(
        "sample",
        help="draw samples from a checkpoint",
        description="Draw samples from the "
        "flow in MODEL, in the data's original units, as CSV on stdout or into --out.",
    )
    sample.add_argument("model", metavar="MODEL", help="a checkpoint written by `flows fit`")
    sample.add_argument(
        "-n", "--num", type=positive_int, default=1000, help="samples (per context row)"
    )
    sample.add_argument(
        "--context",
        help="comma-separated context values, or a file of context rows (.csv, .npy, .npz)",
    )
    sample.add_argument("--out", help="write to this .csv or .npy file instead of stdout")
    sample.add_argument("--force", action="store_true", help="replace an existing --out file")
    sample.add_argument(
        "--seed", type=non_negative_int, default=None, help="seed of the draw (default: random)"
    )
    sample.add_argument("--key", help="the array to read from a .npz context file")
    sample.set_defaults(run="flows.cli.using:run_sample")

    evaluate = commands.add_parser(
        "eval",
        help="log-density of data under a checkpoint",
        description="Evaluate the "
        "log-density of each row of DATA under the flow in MODEL, in the data's original units.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="a checkpoint written by `flows fit`")
    evaluate.add_argument(
        "data", metavar="DATA", help="a .csv, .npy or .npz file or a built-in data set"
    )
    evaluate.add_argument(
        "--per-row",
        action="store_true",
        help="print the log-density of every row (CSV) on stdout; rows outside the model's "
        "numeric range are refused all the same, before anything is printed",
    )
    evaluate.add_argument("--out", help="write the per-row log-densities to this .csv/.npy file")
    evaluate.add_argument("--force", action="store_true", help="replace an existing --out file")
    evaluate.add_argument(
        "--samples",
        type=sample_count,
        default=10000,
        help=f"rows generated for a built-in data set (at most {MAX_SAMPLES:,})",
    )
    evaluate.add_argument(
        "--seed", type=non_negative_int, default=1, help="seed of a built-in data set"
    )
    _add_data_options(evaluate)
    evaluate.set_defaults(run="flows.cli.using:run_eval")
    _add_export(commands)
    for command in commands.choices.values():
        command.formatter_class = _HelpFormatter
    return parser


def _version() -> str:
    from flows.cli import __version__

    return __version__


def _resolve(path: str) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    if isinstance(error, MemoryError):
        return "out of memory" + (f": {text}" if text else "")
    return text or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flows`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    debug = bool(os.environ.get("FLOWS_TRACEBACK"))
    from flows.core.interrupts import Terminated, interrupts_raise

    try:
        with interrupts_raise():  # so that a killed command removes its temporary files
            return _resolve(args.run)(args) or 0
    except Terminated:
        print(f"{PROG}: interrupted (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`flows sample ... | head`): not an error.
        sys.stderr.close()
        return 0
    except (
        CLIError,
        OSError,
        ValueError,
        TypeError,
        LookupError,
        RuntimeError,
        ImportError,
        AttributeError,
        ArithmeticError,
        MemoryError,
    ) as error:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        # Last resort: an error of a kind not foreseen above (a library's own exception class)
        # is still one line and exit 1, never a traceback; FLOWS_TRACEBACK=1 shows it.
        if debug:
            raise
        print(f"{PROG}: error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1


def entry() -> None:
    """Entry point for ``python -m flows.cli`` and the ``flows`` script."""
    sys.exit(main())
