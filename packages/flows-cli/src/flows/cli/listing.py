"""The listing commands: what transforms, presets, plugins and data sets are available.

They read the plugin registry, which names constructors by import path, so nothing here
imports torch (or numpy): a listing answers in a fraction of a second. A name that two
distributions provide is listed once for each, with the status ``conflict`` (``ok`` otherwise)
and one warning line on stderr naming both; a plugin that failed is named on stderr by the
registry's warning and is listed by ``flows plugins`` as ``failed``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "format_table",
    "run_datasets",
    "run_list_flows",
    "run_list_transforms",
    "run_plugins",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, the last column unpadded.

    Example:
        >>> print(format_table(["NAME", "SUMMARY"], [["maf", "Masked"], ["realnvp", "Coupling"]]))
        NAME     SUMMARY
        maf      Masked
        realnvp  Coupling
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _emit(args: argparse.Namespace, headers: list[str], records: list[dict[str, Any]]) -> int:
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not records:
        print("(none)")
        return 0
    keys = list(records[0])
    rows = [[_cell(record[key]) for key in keys] for record in records]
    print(format_table(headers, rows))
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value) if value not in ("", None) else "-"


def _conflicts(what: str, provided: Sequence[Any]) -> dict[str, str]:
    """Each name's status, ``"ok"`` or ``"conflict"``; one warning line per name in conflict.

    A name provided by two distributions cannot be used until one is uninstalled (the lookup
    raises), so the listing marks both rows and says so on stderr.
    """
    providers: dict[str, list[Any]] = {}
    for p in provided:
        providers.setdefault(p.spec.name, []).append(p)
    status = {}
    for name, found in providers.items():
        status[name] = "conflict" if len(found) > 1 else "ok"
        if len(found) > 1:
            both = " and ".join(f"{p.distribution} {p.version}".rstrip() for p in found)
            print(
                f"flows: warning: {what} {name!r} is provided by both {both}; "
                "it cannot be used until one of them is uninstalled",
                file=sys.stderr,
            )
    return status


def run_list_transforms(args: argparse.Namespace) -> int:
    """``flows list-transforms``: name, summary, hyper-parameters, provider, status."""
    from flows.core.plugins import list_transforms

    provided = list_transforms()
    status = _conflicts("transform", provided)
    records = [
        {
            "name": p.spec.name,
            "summary": p.spec.summary,
            "domain": p.spec.domain,
            "defaults": dict(p.spec.defaults),
            "distribution": p.distribution,
            "version": p.version,
            "status": status[p.spec.name],
        }
        for p in provided
    ]
    headers = ["NAME", "SUMMARY", "DOMAIN", "DEFAULTS", "DISTRIBUTION", "VERSION", "STATUS"]
    return _emit(args, headers, records)


def run_list_flows(args: argparse.Namespace) -> int:
    """``flows list-flows``: the presets with the transforms they use, provider and status."""
    from flows.core.plugins import list_presets

    provided = list_presets()
    status = _conflicts("preset", provided)
    records = [
        {
            "name": p.spec.name,
            "summary": p.spec.summary,
            "transforms": list(p.spec.transforms),
            "distribution": p.distribution,
            "version": p.version,
            "status": status[p.spec.name],
        }
        for p in provided
    ]
    headers = ["NAME", "SUMMARY", "TRANSFORMS", "DISTRIBUTION", "VERSION", "STATUS"]
    return _emit(args, headers, records)


def run_plugins(args: argparse.Namespace) -> int:
    """``flows plugins``: every plugin seen, whether it loaded, and why not."""
    from flows.core.plugins import plugin_report

    records = [
        {
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "status": info.status,
            "hooks": list(info.hooks),
            "error": info.error,
        }
        for info in plugin_report()
    ]
    headers = ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS", "ERROR"]
    return _emit(args, headers, records)


# The toy sets' names and descriptions, kept here too so this listing needs no numpy;
# a test checks they match flows.cli.datasets.TOY_SETS.
TOY_DESCRIPTIONS = {
    "8gaussians": "Eight Gaussians on a circle of radius 2",
    "checkerboard": "Uniform on the dark squares of a 4x4 board",
    "circles": "Two concentric noisy circles",
    "moons": "Two interleaving half circles",
    "pinwheel": "Five curved arms around the origin",
    "rings": "Four concentric noisy rings",
    "spirals": "Two interleaved spiral arms",
    "swissroll": "A 2-D swiss roll",
}


# The built-in image sets (flows.cli.images.IMAGE_SETS), described here so that this listing
# imports neither flows-image (torch) nor scikit-learn; a test checks them against the data.
IMAGE_DESCRIPTIONS = {
    "digits": {
        "summary": "Handwritten digits, 8x8 pixels",
        "shape": "1797 images, 1x8x8, 17 levels",
        "source": "scikit-learn's bundled copy, through flows-image",
        "needs": ("flows.image", "sklearn"),
    }
}
IMAGE_EXTRA = "pip install 'flows-image[digits]'"


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (nor torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _image_status(needs: Sequence[str]) -> str:
    image, library = needs
    if not _importable(image):
        return f"flows-image is not installed: {IMAGE_EXTRA}"
    if not _importable(library):
        return f"scikit-learn is not installed: {IMAGE_EXTRA}"
    return "ok"


def run_datasets(args: argparse.Namespace) -> int:
    """``flows datasets``: the built-in 2-D toy sets, and the image sets of flows-image.

    An image set whose packages are missing is listed all the same, its status saying what to
    install.
    """
    records = [
        {
            "name": name,
            "summary": text,
            "features": 2,
            "shape": "N x 2 (N = fit --samples)",
            "source": "generated by flows-cli",
            "status": "ok",
        }
        for name, text in TOY_DESCRIPTIONS.items()
    ]
    records += [
        {
            "name": name,
            "summary": about["summary"],
            "features": 64,
            "shape": about["shape"],
            "source": about["source"],
            "status": _image_status(about["needs"]),
        }
        for name, about in IMAGE_DESCRIPTIONS.items()
    ]
    return _emit(args, ["NAME", "SUMMARY", "FEATURES", "SHAPE", "SOURCE", "STATUS"], records)
