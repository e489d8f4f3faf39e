"""Check what the installed `flows` command lists: used by `nox -s plugins` after real installs.

python tools/check_plugins.py --clean --present rqs --absent-preset cnf \
    --distribution rqs=flows-splines

--clean also asks that every listing exits 0 with nothing on stderr (no plugin warning), that
every plugin in `flows plugins` is ok, and that no name is in conflict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def listing(command: str) -> tuple[dict[str, dict], list[dict], str]:
    """The rows of `flows COMMAND --json` by name, all of them, and what it wrote on stderr."""
    result = subprocess.run(
        ["flows", command, "--json"], check=True, capture_output=True, text=True
    )
    rows = json.loads(result.stdout)
    return {row["name"]: row for row in rows}, rows, result.stderr


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
    parser.add_argument(
        "--clean",
        action="store_true",
        help="no warning on stderr, every plugin ok, no name in conflict",
    )
    args = parser.parse_args()

    transforms, transform_rows, transform_err = listing("list-transforms")
    presets, preset_rows, preset_err = listing("list-flows")
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
    if args.clean:
        _, plugin_rows, plugin_err = listing("plugins")
        for command, err in [
            ("list-transforms", transform_err),
            ("list-flows", preset_err),
            ("plugins", plugin_err),
        ]:
            if err:
                errors.append(f"`flows {command}` wrote on stderr: {err.strip()}")
        for row in plugin_rows:
            if row["status"] != "ok":
                errors.append(f"plugin {row['name']!r} from {row['distribution']}: {row}")
        for row in transform_rows + preset_rows:
            if row["status"] != "ok":
                errors.append(f"{row['name']!r} from {row['distribution']} is {row['status']}")
    for error in errors:
        print(f"check_plugins: {error}", file=sys.stderr)
    if not errors:
        print(f"check_plugins: ok ({len(transforms)} transforms, {len(presets)} presets)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
