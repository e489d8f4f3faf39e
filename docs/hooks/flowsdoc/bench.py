"""Benchmark tables and plots, drawn from the JSON the benchmark scripts wrote.

``docs/data/bench.json`` is ``benchmarks/run.py --json``, ``docs/data/quality.json`` is
``benchmarks/quality.py --json`` and ``docs/data/presets.json`` is
``docs/tools/compare_presets.py --json``; ``docs/data/runs.json`` says when, where and how each
was run. Nothing here holds a number of its own.
"""

from __future__ import annotations

__all__ = [
    "commands_table",
    "presets_figure",
    "presets_table",
    "provenance",
    "quality_figure",
    "quality_table",
    "speed_figure",
    "speed_tables",
    "targets_table",
]

import functools
import io
import json
from typing import Any

from flowsdoc import api

DATA = api.ROOT / "docs" / "data"
LIBRARIES = ("floor", "bare", "ours", "zuko", "nflows")
COLORS = {"floor": "#9e9e9e", "bare": "#bdbdbd", "ours": "#3f51b5", "zuko": "#ef6c00",
          "nflows": "#2e7d32"}  # fmt: skip


@functools.cache
def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def provenance(name: str) -> str:
    """Markdown: how, when and where ``name`` was measured."""
    run = load("runs.json")[name]
    return (
        f"Measured {run['date']} on {run['machine']}, with `{run['command']}` "
        f"({run['settings']}). Quick runs on a loaded machine move by tens of percent from one "
        "run to the next: read ratios and orders of magnitude, not the last digit."
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(row: dict[str, Any], a: str, b: str) -> str:
    ms = row["ms"]
    if ms.get(a) is None or ms.get(b) is None:
        return "-"
    return f"{ms[a] / ms[b]:.2f}x"


def speed_tables() -> str:
    """Markdown: milliseconds per call for every workload, one table per thread count."""
    data = load("bench.json")
    out = []
    for threads in sorted({row["threads"] for row in data["rows"]}):
        rows = [row for row in data["rows"] if row["threads"] == threads]
        present = [lib for lib in LIBRARIES if any(r["ms"].get(lib) is not None for r in rows)]
        out += [
            f"**{threads} thread{'s' if threads > 1 else ''}**: ms per call, median of "
            f"{data['settings']['repeats']} repeats.",
            "",
            "| workload | op | " + " | ".join(present) + " | ours/floor | zuko/ours |",
            "| --- | --- | " + " | ".join("---:" for _ in present) + " | ---: | ---: |",
        ]
        for row in rows:
            cells = [_ms(row["ms"].get(lib)) for lib in present]
            out.append(
                f"| {row['label']} | {row['op']} | " + " | ".join(cells) + f" | "
                f"{_ratio(row, 'ours', 'floor')} | {_ratio(row, 'zuko', 'ours')} |"
            )
        out.append("")
    return "\n".join(out)


def targets_table() -> str:
    """Markdown: the speed targets run.py checks, and how this run did."""
    out = ["| threads | target | this run | verdict |", "| --- | --- | --- | --- |"]
    for check in load("bench.json")["targets"]:
        verdict = "met" if check["passed"] else "not met"
        out.append(
            f"| {check['threads'] or '-'} | {check['target']} | {check['shown']} | {verdict} |"
        )
    return "\n".join(out) + "\n"


def commands_table() -> str:
    """Markdown: wall time of imports and commands, fresh processes."""
    out = ["| command | median wall time |", "| --- | ---: |"]
    for label, result in load("bench.json")["commands"].items():
        shown = f"{result['median']:.3f} s" if result["ok"] else result.get("note", "skipped")
        out.append(f"| `{label}` | {shown} |")
    return "\n".join(out) + "\n"


def quality_table() -> str:
    """Markdown: KL(p || q) of ours and zuko's on each target."""
    data = load("quality.json")
    out = [
        "| target | flow | ours | zuko | ours <= zuko |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for entry in data["summary"]:
        verdict = {True: "yes", False: "no"}.get(entry.get("ours_le_zuko"), "-")
        ours = f"{entry['ours']:.4f}" if "ours" in entry else "-"
        zuko = f"{entry['zuko']:.4f}" if "zuko" in entry else "-"
        out.append(f"| {entry['dataset']} | {entry['flow']} | {ours} | {zuko} | {verdict} |")
    return "\n".join(out) + "\n"


def presets_table() -> str:
    """Markdown: every preset on every target: KL, training step, sampling, size."""
    data = load("presets.json")
    out = [
        "| target | preset | KL (nats) | train ms/step | sample ms (1024) | parameters |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in data["rows"]:
        out.append(
            f"| {row['dataset']} | {row['preset']} | {row['kl']:.3f} | {row['train_ms']:.1f} | "
            f"{row['sample_ms']:.1f} | {row['parameters']:,} |"
        )
    return "\n".join(out) + "\n"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def speed_figure() -> bytes:
    """Bars: ms per call of each library, one thread, log scale."""
    import matplotlib.pyplot as plt

    data = load("bench.json")
    rows = [row for row in data["rows"] if row["threads"] == 1]
    libraries = [lib for lib in ("floor", "ours", "zuko", "nflows")]
    figure, axes = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(libraries)
    for i, lib in enumerate(libraries):
        values = [row["ms"].get(lib) or 0.0 for row in rows]
        positions = [j + (i - (len(libraries) - 1) / 2) * width for j in range(len(rows))]
        axes.bar(positions, values, width, label=lib, color=COLORS[lib])
    axes.set_xticks(range(len(rows)), [f"{r['label']}\n{r['op']}" for r in rows], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("ms per call (log scale)")
    axes.set_title("One thread, batch of 1024: lower is faster")
    axes.legend(ncols=4, fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def quality_figure() -> bytes:
    """Bars: KL of ours and zuko's per target and flow."""
    import matplotlib.pyplot as plt

    summary = load("quality.json")["summary"]
    figure, axes = plt.subplots(figsize=(8, 3.2))
    labels = [f"{e['dataset']}\n{e['flow']}" for e in summary]
    for i, lib in enumerate(("ours", "zuko")):
        values = [e.get(lib, 0.0) for e in summary]
        axes.bar([j + (i - 0.5) * 0.4 for j in range(len(summary))], values, 0.4, label=lib,
                 color=COLORS[lib])  # fmt: skip
    axes.set_xticks(range(len(summary)), labels, fontsize=7)
    axes.set_yscale("log")
    axes.set_ylabel("KL(p || q), nats (log scale)")
    axes.set_title("Fit quality after a short fit: lower is better, 0 is exact")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def presets_figure() -> bytes:
    """Scatter: training step time against KL, one panel per target, one point per preset."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    rows = load("presets.json")["rows"]
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(2.6 * len(datasets), 2.8))
    for ax, dataset in zip(axes, datasets, strict=True):
        for row in (r for r in rows if r["dataset"] == dataset):
            ax.scatter(row["train_ms"], max(row["kl"], 1e-3), color="#3f51b5")
            ax.annotate(row["preset"], (row["train_ms"], max(row["kl"], 1e-3)), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(LogFormatterSciNotation())
            axis.set_minor_formatter(NullFormatter())
        ax.margins(0.25)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("ms per training step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("KL(p || q), nats", fontsize=8)
    figure.suptitle(
        "Lower left is better: fast to train and close to the target", fontsize=9, y=1.04
    )
    figure.tight_layout()
    return _png(figure)
