"""The ``flows`` command beside hostile or broken installed plugins, faked without installing:
a folder on PYTHONPATH holding ``*.dist-info`` folders and the plugins' modules."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap

SHIFT_MODULE = """
    from flows.core.plugins import TransformSpec, hookimpl

    @hookimpl
    def flows_register_transforms():
        return [TransformSpec("{name}", "flows.core.transforms:AdditiveTransform",
                              shapes=lambda: [()], summary="third-party {name}")]
"""

EXITING_HOOK = """
    import sys
    from flows.core.plugins import hookimpl

    @hookimpl
    def flows_register_transforms():
        sys.exit(3)
"""


def fake_install(
    folder: pathlib.Path,
    dist: str,
    version: str,
    modules: dict[str, str] | None = None,
    text: str | None = None,
) -> pathlib.Path:
    """Write the metadata of distribution ``dist`` into ``folder``, with a ``flows`` entry
    point and a module for each item of ``modules``, or ``text`` as its entry_points.txt."""
    info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[flows]"]
    for entry_point, source in (modules or {}).items():
        module = f"flows_test_{dist.replace('-', '_')}_{entry_point}"
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{entry_point} = {module}")
    (info / "entry_points.txt").write_text(text or "\n".join(lines) + "\n")
    return folder


def flows(folders: list[pathlib.Path], *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m flows.cli ARGV`` with ``folders`` first on the path."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FLOWS_DISABLE_PLUGIN_AUTOLOAD", "FLOWS_TRACEBACK", "PYTHONWARNINGS")
    }
    paths = [str(folder) for folder in folders]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    environment.update(PYTHONPATH=os.pathsep.join(paths), **env)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def plugins_json(folders: list[pathlib.Path]) -> tuple[dict[tuple[str, str], dict], str]:
    result = flows(folders, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    return {(row["name"], row["distribution"]): row for row in rows}, result.stderr


def test_a_plugin_calling_sys_exit_at_import_silences_nothing(tmp_path):
    good = {"good": SHIFT_MODULE.format(name="good-shift")}
    fake_install(tmp_path, "flows-good", "1.0", good)
    fake_install(tmp_path, "flows-exiter", "0.3", {"exiter": "import sys\nsys.exit(3)\n"})
    warning = (
        "flows: warning: flows plugin 'exiter' from flows-exiter 0.3 failed and was skipped: "
        "SystemExit: 3"
    )

    listed = flows([tmp_path], "list-transforms")
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [warning]
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert {"affine", "additive", "good-shift"} <= set(names)

    table = flows([tmp_path], "plugins")
    assert table.returncode == 0
    assert table.stderr.splitlines() == [warning]
    rows = {tuple(line.split()[:4]) for line in table.stdout.splitlines()}
    assert ("exiter", "flows-exiter", "0.3", "failed") in rows
    assert ("good", "flows-good", "1.0", "ok") in rows

    records, _ = plugins_json([tmp_path])
    assert records["exiter", "flows-exiter"]["error"] == "SystemExit: 3"
    assert records["core", "flows-core"]["status"] == "ok"


def test_a_hook_calling_sys_exit_is_reported_failed(tmp_path):
    fake_install(tmp_path, "flows-exiter", "0.3", {"exiter": EXITING_HOOK})

    records, stderr = plugins_json([tmp_path])
    exiter = records["exiter", "flows-exiter"]
    assert exiter["status"] == "failed"
    assert exiter["error"] == "flows_register_transforms raised SystemExit: 3"
    assert exiter["hooks"] == ["flows_register_transforms"]
    assert stderr.splitlines() == [
        "flows: warning: flows plugin 'exiter' from flows-exiter 0.3 failed and was skipped: "
        "flows_register_transforms raised SystemExit: 3"
    ]
    listed = flows([tmp_path], "list-flows", "--json")
    assert listed.returncode == 0
    assert "maf" in {row["name"] for row in json.loads(listed.stdout)}


def test_a_malformed_entry_points_txt_of_an_unrelated_distribution(tmp_path):
    fake_install(tmp_path, "flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    fake_install(tmp_path, "unrelated", "2.0", text="[console_scripts]\nthis line is broken\n")
    reason = "malformed entry_points.txt, line 2: 'this line is broken' is not 'name = value'"
    warning = f"flows: warning: unrelated 2.0 failed and was skipped: {reason}"

    for command in ("list-transforms", "list-flows", "plugins"):
        result = flows([tmp_path], command)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr.splitlines() == [warning], command
    listed = flows([tmp_path], "list-transforms", "--json")
    assert "good-shift" in {row["name"] for row in json.loads(listed.stdout)}
    records, _ = plugins_json([tmp_path])
    assert records["", "unrelated"]["status"] == "failed"
    assert records["", "unrelated"]["error"] == reason
    assert records["good", "flows-good"]["status"] == "ok"


def test_a_distribution_cannot_take_the_name_of_flows_splines(tmp_path):
    evil = fake_install(
        tmp_path / "early", "aaa-evil", "6.6", {"splines": SHIFT_MODULE.format(name="rqs")}
    )
    folders = [evil]  # first on sys.path, before flows-splines
    try:
        version = importlib.metadata.version("flows-splines")
    except importlib.metadata.PackageNotFoundError:  # flows-cli tested alone: a stand-in
        version = "0.1.0"
        stand_in = {"splines": SHIFT_MODULE.format(name="rqs")}
        folders.append(fake_install(tmp_path / "late", "flows-splines", version, stand_in))
    taken = f"its name 'splines' is already taken by flows-splines {version}"

    records, stderr = plugins_json(folders)
    assert records["splines", "flows-splines"]["status"] == "ok"
    assert records["splines", "aaa-evil"]["status"] == "failed"
    assert records["splines", "aaa-evil"]["error"] == f"{taken} (uninstall one of them)"
    assert stderr.splitlines() == [
        f"flows: warning: flows plugin 'splines' from aaa-evil 6.6 failed and was skipped: "
        f"{taken} (uninstall one of them)"
    ]
    listed = flows(folders, "list-transforms", "--json")
    assert listed.returncode == 0
    rqs = [row for row in json.loads(listed.stdout) if row["name"] == "rqs"]
    assert [(row["distribution"], row["status"]) for row in rqs] == [("flows-splines", "ok")]


def test_a_transform_provided_twice_is_listed_as_a_conflict(tmp_path):
    fake_install(tmp_path, "shift-one", "1.0", {"one": SHIFT_MODULE.format(name="shift")})
    fake_install(tmp_path, "shift-two", "2.5", {"two": SHIFT_MODULE.format(name="shift")})
    warning = (
        "flows: warning: transform 'shift' is provided by both shift-one 1.0 and shift-two 2.5; "
        "it cannot be used until one of them is uninstalled"
    )

    table = flows([tmp_path], "list-transforms")
    assert table.returncode == 0
    assert table.stderr.splitlines() == [warning]
    header, *lines = table.stdout.splitlines()
    assert header.split()[-1] == "STATUS"
    shift = [line.split() for line in lines if line.startswith("shift ")]
    assert [(row[-3], row[-1]) for row in shift] == [
        ("shift-one", "conflict"),
        ("shift-two", "conflict"),
    ]
    assert all(line.split()[-1] == "ok" for line in lines if not line.startswith("shift "))

    listed = flows([tmp_path], "list-transforms", "--json")
    assert listed.stderr.splitlines() == [warning]
    rows = [row for row in json.loads(listed.stdout) if row["name"] == "shift"]
    assert [(row["distribution"], row["status"]) for row in rows] == [
        ("shift-one", "conflict"),
        ("shift-two", "conflict"),
    ]


def test_a_preset_shadowing_a_core_name_is_listed_as_a_conflict(tmp_path):
    clone = """
        from flows.core.plugins import PresetSpec, hookimpl

        @hookimpl
        def flows_register_presets():
            return [PresetSpec("maf", "flows.core.presets:MAF", "A copy of MAF")]
    """
    fake_install(tmp_path, "maf-clone", "0.9", {"clone": clone})

    listed = flows([tmp_path], "list-flows", "--json")
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [
        "flows: warning: preset 'maf' is provided by both flows-core "
        f"{importlib.metadata.version('flows-core')} and maf-clone 0.9; "
        "it cannot be used until one of them is uninstalled"
    ]
    rows = [row for row in json.loads(listed.stdout) if row["name"] == "maf"]
    assert [(row["distribution"], row["status"]) for row in rows] == [
        ("flows-core", "conflict"),
        ("maf-clone", "conflict"),
    ]


def test_autoload_stays_on_for_a_zero(tmp_path):
    fake_install(tmp_path, "flows-fake", "1.0", {"fake": SHIFT_MODULE.format(name="fake-shift")})

    def names(value: str) -> set[str]:
        result = flows(
            [tmp_path], "list-transforms", "--json", FLOWS_DISABLE_PLUGIN_AUTOLOAD=value
        )
        assert result.returncode == 0 and not result.stderr
        return {row["name"] for row in json.loads(result.stdout)}

    assert "fake-shift" in names("0")
    assert "fake-shift" in names("false")
    assert "fake-shift" not in names("1")
    assert "fake-shift" not in names("yes")
