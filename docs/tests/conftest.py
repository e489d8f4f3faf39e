"""The docs tests import the site's build code (docs/hooks/flowsdoc) and run on one thread."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hooks"))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Small flows train fastest on one thread, and a shared machine makes more threads slower;
    # one thread also makes printed values the same on every machine.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
