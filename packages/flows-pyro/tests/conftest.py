"""flows-pyro's tests fit tiny flows by SVI: one intra-op thread, a fresh Pyro parameter store."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_and_fresh_params():
    """One intra-op thread and an empty parameter store per test; restore the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
    torch.set_num_threads(previous)
