"""Options shared by every package's tests: run the same suite in float32/float64, CPU/CUDA.

pytest packages --dtype float32 --device cuda

And the rule that no test is skipped everywhere: in the sessions that set ``FLOWS_SKIPS``, a
skip fails the test unless the session allows it (see ``SKIPS_ALLOWED``).
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"])
    parser.addoption("--device", default="cpu", help="a torch device, e.g. cpu or cuda:0")


# Which tests may skip, in the sessions that set it: "together" in each package's isolated
# session (only tests marked `together`, which need more than that package's closure), "none"
# where everything is installed (nox -s all). A test skipped anywhere else would run nowhere in
# the default nox.
SKIPS_ALLOWED = "FLOWS_SKIPS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "together(*modules): needs flows packages or extras beyond its own package's closure, "
        "and skips where one of the named modules is missing (nox -s all runs it, with every "
        "package and extra installed)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("together")
    if marker is not None:
        missing = [name for name in marker.args if importlib.util.find_spec(name) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)}, not installed here")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    allowed = os.environ.get(SKIPS_ALLOWED)
    if allowed is None or not report.skipped or hasattr(report, "wasxfail"):
        return report
    if allowed == "together" and item.get_closest_marker("together") is not None:
        return report
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = (
        f"{reason}, where every package and extra is installed"
        if allowed == "none"
        else f"{reason}, in its package's isolated session: a test that needs more than the "
        "package's closure is marked `together` (nox -s all runs those)"
    )
    return report


@pytest.fixture
def dtype(request: pytest.FixtureRequest):
    import torch

    return getattr(torch, request.config.getoption("--dtype"))


@pytest.fixture
def device(request: pytest.FixtureRequest):
    import torch

    return torch.device(request.config.getoption("--device"))


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a test's torch.distributed run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
