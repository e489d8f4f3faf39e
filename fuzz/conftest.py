"""Shared pieces of the fault campaign: run the command in-process and judge how it ended.

The campaign is bounded: ``FLOWS_FUZZ_EXAMPLES`` (default 100) examples per property, no
deadline (a tiny fit takes a fraction of a second, a cold import more).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FLOWS_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("FLOWS_FUZZ_SEED") is None,
)
settings.load_profile("fuzz")


@dataclasses.dataclass
class Ran:
    """How one ``flows`` command ended."""

    status: int
    stdout: str
    stderr: str


class Harness:
    """The campaign's tools, handed to tests as the ``harness`` fixture."""

    @staticmethod
    def run(*argv: str) -> Ran:
        return run_flows(*argv)

    @staticmethod
    def assert_clean_ending(ran: Ran) -> None:
        assert_clean_ending(ran)

    @staticmethod
    def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
        return snapshot(folder)


@pytest.fixture(scope="session")
def harness() -> type[Harness]:
    return Harness


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small checkpoint written by ``flows fit``, the target of the checkpoint campaign."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    ran = run_flows(
        "fit", "moons", "--flow", "maf", "--transforms", "1", "--hidden", "8",
        "--epochs", "1", "--samples", "300", "--no-plot", "--out", str(path),
    )  # fmt: skip
    assert ran.status == 0, ran.stderr
    return path


def run_flows(*argv: str) -> Ran:
    """Run ``flows argv`` in this process, as the ``flows`` script would."""
    from flows.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as stop:  # argparse refusing the command line
            status = stop.code if isinstance(stop.code, int) else 1
    return Ran(status, out.getvalue(), err.getvalue())


def assert_clean_ending(ran: Ran) -> None:
    """The promise: success, a usage error, or exactly one ``flows: error:`` line; no traceback."""
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.status in (0, 1, 2), (ran.status, ran.stderr)
    lines = [line for line in ran.stderr.splitlines() if not line.startswith("flows: warning:")]
    if ran.status == 1:
        assert len(lines) == 1 and lines[0].startswith("flows: error: "), ran.stderr
    if ran.status == 2:
        assert (lines and lines[-1].startswith("flows: error: ")) or "usage:" in ran.stderr
    for line in lines:
        assert not any(ord(ch) < 32 and ch != "\t" for ch in line), repr(line)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mode of every file in ``folder``: what must survive a failed command."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mode)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
