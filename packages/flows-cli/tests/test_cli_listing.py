"""Tests of the listing commands: tables, JSON, no torch, argparse usage errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from flows.cli.listing import IMAGE_DESCRIPTIONS, TOY_DESCRIPTIONS, format_table
from flows.cli.main import main


def run_json(capsys, *argv: str) -> list[dict]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_flows_shows_presets_with_their_distribution(capsys):
    records = {r["name"]: r for r in run_json(capsys, "list-flows")}
    assert records["maf"]["distribution"] == "flows-core"
    assert records["maf"]["transforms"] == ["affine"]
    assert records["maf"]["version"]
    assert records["maf"]["status"] == "ok"
    assert set(records["maf"]) == {
        "name",
        "summary",
        "transforms",
        "distribution",
        "version",
        "status",
    }


def test_list_transforms_shows_defaults_and_provider(capsys):
    records = {r["name"]: r for r in run_json(capsys, "list-transforms")}
    assert records["affine"]["defaults"] == {"slope": 0.001}
    assert records["additive"]["distribution"] == "flows-core"
    assert {r["status"] for r in records.values()} == {"ok"}


def test_plugins_report_status_and_hooks(capsys):
    records = {r["name"]: r for r in run_json(capsys, "plugins")}
    assert records["core"]["status"] == "ok"
    assert "flows_register_presets" in records["core"]["hooks"]


def test_tables_are_aligned(capsys):
    assert main(["list-flows"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "SUMMARY"]
    start = lines[0].index("DISTRIBUTION")
    for line in lines[1:]:
        assert line[start - 2 : start] == "  " and line[start] != " "


def test_format_table_pads_all_but_the_last_column():
    text = format_table(["A", "B", "C"], [["x", "long value", "1"], ["yy", "b", "22"]])
    assert text.splitlines() == ["A   B           C", "x   long value  1", "yy  b           22"]


def test_datasets_lists_every_built_in_set(capsys):
    from flows.cli.datasets import TOY_SETS
    from flows.cli.images import IMAGE_SETS

    names = [r["name"] for r in run_json(capsys, "datasets")]
    assert names[: len(TOY_SETS)] == sorted(TOY_SETS) == sorted(TOY_DESCRIPTIONS)
    assert names[len(TOY_SETS) :] == sorted(IMAGE_SETS) == sorted(IMAGE_DESCRIPTIONS)


@pytest.mark.together
def test_datasets_describes_digits_as_the_data_is(capsys):
    records = {r["name"]: r for r in run_json(capsys, "datasets")}
    digits = records["digits"]
    assert digits["shape"] == "1797 images, 1x8x8, 17 levels" and digits["features"] == 64
    assert "scikit-learn" in digits["source"] and "flows-image" in digits["source"]
    installed = all(importlib.util.find_spec(m) for m in ("flows.image", "sklearn"))
    assert (digits["status"] == "ok") == installed
    if not installed:
        return  # the data cannot be read here; the status said what to install
    from flows.image.data import load_digits

    images, levels = load_digits()
    count, *shape = images.shape
    assert f"{count} images, {'x'.join(map(str, shape))}, {levels} levels" == digits["shape"]
    assert int(images.max()) + 1 == levels and digits["features"] == images[0].numel()


@pytest.mark.parametrize(
    "missing, expected",
    [
        ("flows.image", "flows-image is not installed: pip install 'flows-image[digits]'"),
        ("sklearn", "scikit-learn is not installed: pip install 'flows-image[digits]'"),
    ],
)
def test_datasets_says_what_digits_needs_when_it_is_missing(
    missing, expected, capsys, monkeypatch
):
    import flows.cli.listing as listing

    # Everything else present, whatever this environment holds (flows-cli's own session has
    # no flows-image).
    monkeypatch.setattr(listing, "_importable", lambda module: module != missing)
    records = {r["name"]: r for r in run_json(capsys, "datasets")}
    assert records["digits"]["status"] == expected
    assert records["digits"]["shape"] == "1797 images, 1x8x8, 17 levels"
    assert {records[name]["status"] for name in TOY_DESCRIPTIONS} == {"ok"}


@pytest.mark.parametrize("command", ["list-transforms", "list-flows", "plugins", "datasets"])
def test_listing_imports_no_torch(command):
    code = (
        "import sys, runpy, io, contextlib\n"
        f"sys.argv = ['flows', {command!r}]\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        runpy.run_module('flows.cli', run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "assert out.getvalue().startswith('NAME'), out.getvalue()\n"
        "print(*(m in sys.modules for m in ('torch', 'numpy', 'sklearn')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False", "False"]


def test_python_dash_m_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "list-flows", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "maf" in {r["name"] for r in json.loads(result.stdout)}


@pytest.mark.parametrize(
    "argv", [["frobnicate"], ["list-flows", "--bogus"], [], ["fit"], ["fit", "moons", "--epochs"]]
)
def test_unknown_commands_and_options_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: flows") and "error:" in err.splitlines()[-1]
