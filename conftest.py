"""Options shared by every package's tests: run the same suite in float32/float64, CPU/CUDA.

pytest packages --dtype float32 --device cuda
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dtype", default="float64", choices=["float32", "float64"])
    parser.addoption("--device", default="cpu", help="a torch device, e.g. cpu or cuda:0")


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
