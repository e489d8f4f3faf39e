"""Check what the installed `flows` command lists: used by `nox -s plugins` after real installs.

python tools/check_plugins.py --present rqs --absent-preset cnf --distribution rqs=flows-splines
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def listing(command: str) -> dict[str, dict]:
    out = subprocess.run(
        ["flows", command, "--json"], check=True, capture_output=True, text=True
    ).stdout
    return {row["name"]: row for row in json.loads(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--present", action="append", default=[], metavar="TRANSFORM")
    parser.add_argument("--absent", action="append", default=[], metavar="TRANSFORM")
    parser.add_argument("--present-preset", action="append", default=[], metavar="PRESET")
    parser.add_argument("--absent-preset", action="append", default=[], metavar="PRESET")
    parser.add_argument(
        "--distribution",
        action="append",
        default=[],
        metavar="NAME=DIST",
        help="the transform NAME is provided by distribution DIST",
    )
    args = parser.parse_args()

    transforms, presets = listing("list-transforms"), listing("list-flows")
    errors = []
    for name in args.present:
        if name not in transforms:
            errors.append(f"transform {name!r} missing from: {sorted(transforms)}")
    for name in args.absent:
        if name in transforms:
            errors.append(f"transform {name!r} listed but should not be")
    for name in args.present_preset:
        if name not in presets:
            errors.append(f"preset {name!r} missing from: {sorted(presets)}")
    for name in args.absent_preset:
        if name in presets:
            errors.append(f"preset {name!r} listed but should not be")
    for pair in args.distribution:
        name, _, dist = pair.partition("=")
        row = transforms.get(name, {})
        if row.get("distribution") != dist or not row.get("version"):
            errors.append(f"transform {name!r} should come from {dist} with a version: {row}")
    for error in errors:
        print(f"check_plugins: {error}", file=sys.stderr)
    if not errors:
        print(f"check_plugins: ok ({len(transforms)} transforms, {len(presets)} presets)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
