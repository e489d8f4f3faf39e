"""flows-sbi's tests train small estimators, on one thread, each in a folder of its own."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one intra-op thread, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def own_folder(tmp_path, monkeypatch):
    """Run each test in a temporary folder: sbi's trainers log to ./sbi-logs."""
    monkeypatch.chdir(tmp_path)
