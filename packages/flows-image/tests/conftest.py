"""flows-image's tests run tiny convolutions, where extra intra-op threads only add overhead."""

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


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 1e-10


def _perturb(module: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Move every parameter off its initial value: zero-started layers are no identity then."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.add_(scale * noise.to(dtype=p.dtype, device=p.device))
    return module


def _autograd_ladj(f, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``f`` at each image of ``x`` (N, C, H, W), from the full Jacobian."""
    values = []
    for image in x:
        jacobian = torch.autograd.functional.jacobian(
            lambda v, shape=image.shape: f(v.view(1, *shape)).flatten(), image.flatten()
        )
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


@pytest.fixture
def tolerance():
    """Absolute and relative tolerance of exact identities, by dtype."""
    return _tolerance


@pytest.fixture
def perturb():
    return _perturb


@pytest.fixture
def autograd_ladj():
    return _autograd_ladj
