"""The fused formulation of MonotonicRQSTransform against the plain one, its reference.

The transform evaluates in one autograd node with a hand-derived backward; the plain
formulation of :mod:`flows.splines._rqs_kernels` (knots, bin gather, spline algebra),
differentiated by autograd, is the independent reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from flows.splines import MonotonicRQSTransform
from flows.splines._rqs_kernels import plain_monotonic_rqs


def reference(
    v: Tensor, params: list[Tensor], inverse: bool, bound: float = 5.0, slope: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The spline by the plain formulation, every step recorded by autograd."""
    return plain_monotonic_rqs(v, *params, bound, slope, inverse)


def fast(v: Tensor, params: list[Tensor], inverse: bool, **options: float) -> tuple[Tensor, ...]:
    t = MonotonicRQSTransform(*params, **options)
    return t.inverse_and_ladj(v) if inverse else t.call_and_ladj(v)


def draw(
    batch: tuple[int, ...],
    bins: int,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.randn(*batch, n, generator=g, dtype=torch.float64))
        .to(dtype=dtype, device=device)
        .requires_grad_()
        for n in (bins, bins, bins - 1)
    ]


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("bins", [1, 2, 8])
def test_rqs_values_and_gradients_match_autograd_reference(inverse, bins, dtype, device):
    # The reference runs in float64: in float32 only our own rounding is measured.
    params = draw((64,), bins, 2.0, torch.float64, device)
    g = torch.Generator().manual_seed(1)
    v = 4 * torch.randn(64, generator=g, dtype=torch.float64)
    v[:4] = torch.tensor([-9.0, -5.001, 5.001, 9.0])  # beyond the bound: the identity
    v = v.to(device).requires_grad_()
    cotangents = torch.randn(2, 64, generator=g, dtype=torch.float64).to(device)
    results = []
    for evaluate, inputs in (
        (reference, [v, *params]),
        (fast, [x.detach().to(dtype).requires_grad_() for x in (v, *params)]),
    ):
        out, ladj = evaluate(inputs[0], inputs[1:], inverse)
        loss = (out * cotangents[0].to(dtype)).sum() + (ladj * cotangents[1].to(dtype)).sum()
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        results.append((out, ladj, grads))
    tolerance = {"atol": 1e-3, "rtol": 1e-3} if dtype == torch.float32 else {}
    (expected_out, expected_ladj, expected_grads), (out, ladj, grads) = results
    torch.testing.assert_close(out.double(), expected_out, **tolerance)
    torch.testing.assert_close(ladj.double(), expected_ladj, **tolerance)
    for grad, expected in zip(grads, expected_grads, strict=True):
        expected = torch.zeros_like(grad) if expected is None else expected
        torch.testing.assert_close(grad.double(), expected.double(), **tolerance)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_rqs_gradcheck_with_broadcasting_and_tails(inverse, device):
    # Parameters (3, K) broadcast against inputs (2, 3); one input lies beyond the bound.
    params = draw((3,), 4, 1.0, torch.float64, device, seed=2)
    v = torch.tensor([[-2.5, 0.3, 7.0], [1.9, -0.8, 2.2]], dtype=torch.float64, device=device)
    v.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, *p: fast(v, list(p), inverse, bound=3.0), (v, *params)
    )


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_rqs_gradient_reaches_inputs_only_when_parameters_are_constant(inverse, dtype, device):
    params = [p.detach() for p in draw((8,), 8, 1.0, dtype, device, seed=3)]
    v = torch.linspace(-6, 6, 8, dtype=dtype, device=device).requires_grad_()
    out, _ = fast(v, params, inverse)
    (grad,) = torch.autograd.grad(out.sum(), v)
    expected = torch.autograd.grad(reference(v, params, inverse)[0].sum(), v)[0]
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(grad, expected, **tolerance)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_rqs_without_gradients_gives_the_same_values(inverse, dtype, device):
    params = draw((5, 3), 6, 3.0, dtype, device, seed=4)
    v = torch.randn(5, 3, dtype=dtype, device=device) * 3
    with_grad = fast(v, params, inverse)
    with torch.no_grad():
        without_grad = fast(v, params, inverse)
    for tensor, expected in zip(without_grad, with_grad, strict=True):
        assert tensor.grad_fn is None
        assert torch.equal(tensor, expected.detach())


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_rqs_second_derivatives_match_autograd_reference(inverse, device):
    # create_graph=True (e.g. a gradient penalty) differentiates the plain algebra.
    params = draw((6,), 5, 1.0, torch.float64, device, seed=5)
    v = torch.linspace(-4, 4, 6, dtype=torch.float64, device=device).requires_grad_()
    results = []
    for evaluate in (reference, fast):
        out, ladj = evaluate(v, params, inverse)
        (first,) = torch.autograd.grad(out.sum() + ladj.sum(), v, create_graph=True)
        results.append(torch.autograd.grad(first.square().sum(), [v, *params]))
    for grad, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(grad, expected)


def rows_of(params: list[Tensor]) -> Tensor:
    """The parameters ``(N, F, k)`` laid out parameters first, ``(3K - 1, F, N)``, as a leaf."""
    return torch.cat(params, dim=-1).permute(2, 1, 0).detach().contiguous().requires_grad_()


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("bins", [1, 2, 8])
def test_rqs_from_rows_matches_the_reference_values_and_gradients(inverse, bins, dtype, device):
    # The packed path (one parameter block, one gradient) against the plain algebra on the
    # same parameters split per tensor; batch (2, 3) of 4 features.
    params = [p.reshape(2, 3, 4, -1) for p in draw((24,), bins, 2.0, torch.float64, device, 6)]
    rows = rows_of([p.reshape(6, 4, -1) for p in params])
    g = torch.Generator().manual_seed(7)
    v = (4 * torch.randn(2, 3, 4, generator=g, dtype=torch.float64)).to(device)
    v[0, 0] = torch.tensor([-9.0, -5.001, 5.001, 9.0])  # beyond the bound: the identity
    cotangents = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64).to(device)

    def loss(out: Tensor, ladj: Tensor) -> Tensor:
        return (out * cotangents[0].to(out)).sum() + (ladj * cotangents[1].to(out)).sum()

    v_ref = v.clone().requires_grad_()
    expected_out, expected_ladj = reference(v_ref, params, inverse)
    expected = torch.autograd.grad(loss(expected_out, expected_ladj), [v_ref, *params])
    expected_rows = torch.cat(expected[1:], dim=-1).reshape(6, 4, -1).permute(2, 1, 0)

    v_fast = v.to(dtype).requires_grad_()
    t = MonotonicRQSTransform.from_rows(rows.detach().to(dtype).requires_grad_(), (2, 3))
    out, ladj = t.inverse_and_ladj(v_fast) if inverse else t.call_and_ladj(v_fast)
    # One autograd node that takes the block itself (no per-parameter views in between).
    inputs = [getattr(node, "variable", None) for node, _ in out.grad_fn.next_functions]
    assert any(tensor is t._rows for tensor in inputs)
    grad_v, grad_rows = torch.autograd.grad(loss(out, ladj), [v_fast, t._rows])
    tolerance = {"atol": 1e-3, "rtol": 1e-3} if dtype == torch.float32 else {}
    torch.testing.assert_close(out.double(), expected_out, **tolerance)
    torch.testing.assert_close(ladj.double(), expected_ladj, **tolerance)
    torch.testing.assert_close(grad_v.double(), expected[0], **tolerance)
    torch.testing.assert_close(grad_rows.double(), expected_rows, **tolerance)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_rqs_from_rows_second_derivatives_and_other_batches(inverse, device):
    params = draw((5,), 4, 1.0, torch.float64, device, seed=8)
    rows = rows_of([p.unsqueeze(1) for p in params])  # (11, 1, 5)
    t = MonotonicRQSTransform.from_rows(rows, (5,), bound=3.0)
    v = torch.linspace(-4, 4, 5, dtype=torch.float64, device=device).unsqueeze(1)
    v.requires_grad_()
    columns = [p.unsqueeze(1) for p in params]
    results = []
    for packed in (False, True):
        if packed:
            out, ladj = t.inverse_and_ladj(v) if inverse else t.call_and_ladj(v)
        else:
            out, ladj = reference(v, columns, inverse, 3.0)
        (first,) = torch.autograd.grad(out.sum() + ladj.sum(), v, create_graph=True)
        results.append(torch.autograd.grad(first.square().sum(), v)[0])
    torch.testing.assert_close(results[1], results[0])
    # An input of another batch broadcasts against the per-parameter views instead.
    wide = torch.zeros(2, 5, 1, dtype=torch.float64, device=device)
    out, ladj = t.call_and_ladj(wide)
    assert out.shape == ladj.shape == (2, 5, 1)
    torch.testing.assert_close(out[0], out[1])


def test_rqs_from_rows_refuses_blocks_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"rows must have shape \(3K - 1, F, N\)"):
        MonotonicRQSTransform.from_rows(torch.zeros(22, 3, 10), (10,))
    with pytest.raises(ValueError, match="batch \\(2, 4\\) has 8 elements but rows has N=10"):
        MonotonicRQSTransform.from_rows(torch.zeros(23, 3, 10), (2, 4))
