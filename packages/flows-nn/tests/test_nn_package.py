"""The flows.nn package: its public names, and a leaf that imports only torch."""

from __future__ import annotations

import subprocess
import sys

import flows.nn


def test_nn_exports_every_public_name() -> None:
    assert sorted(flows.nn.__all__) == sorted(set(flows.nn.__all__))
    for name in flows.nn.__all__:
        assert getattr(flows.nn, name).__module__.startswith("flows.nn.")


def test_nn_imports_no_other_flows_package() -> None:
    code = (
        "import sys, flows.nn; "
        "print(sorted(m for m in sys.modules if m.startswith('flows') and "
        "not m.startswith('flows.nn')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['flows']"
