"""Multivariate transforms: autoregressive, coupling, permutation, rotation, LU, composition."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from flows.core.transforms import (
    AdditiveTransform,
    AutoregressiveTransform,
    ComposedTransform,
    CouplingTransform,
    DependentTransform,
    ExpTransform,
    LULinearTransform,
    MonotonicAffineTransform,
    PermutationTransform,
    RotationTransform,
    call_and_ladj,
    inverse_and_ladj,
)

FEATURES = 4
BATCHES = [(), (5,), (2, 3)]


class MaskedAffineMeta(torch.nn.Module):
    """A strictly lower-triangular linear hyper-network: feature i sees x_{<i} only."""

    def __init__(self, features: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        mask = torch.ones(features, features, dtype=dtype, device=device).tril(-1)
        self.register_buffer("mask", mask)
        self.weight = torch.nn.Parameter(torch.randn(2, features, features, dtype=dtype) / 2)
        self.bias = torch.nn.Parameter(torch.randn(2, features, dtype=dtype) / 2)
        self.to(device)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> MonotonicAffineTransform:
        self.calls += 1
        shift, scale = torch.einsum("kij,...j->k...i", self.weight * self.mask, x).unbind(0)
        return MonotonicAffineTransform(shift + self.bias[0], scale + self.bias[1])


def coupling_meta(dtype, device):
    weight = torch.randn(2, 2, 2, dtype=dtype, device=device)

    def meta(x_kept):
        shift, scale = torch.einsum("kij,...j->k...i", weight, x_kept).unbind(0)
        return MonotonicAffineTransform(shift, scale)

    return meta


def make_transforms(dtype, device):
    generator = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    mask = torch.tensor([True, False, True, False], device=device)
    return {
        "autoregressive": AutoregressiveTransform(
            MaskedAffineMeta(FEATURES, dtype, device), passes=FEATURES
        ),
        "coupling": CouplingTransform(coupling_meta(dtype, device), mask),
        "permutation": PermutationTransform(torch.tensor([2, 0, 3, 1], device=device)),
        "rotation": RotationTransform(randn(FEATURES, FEATURES)),
        "lu": LULinearTransform(randn(FEATURES, FEATURES)),
        "composed": ComposedTransform(
            DependentTransform(MonotonicAffineTransform(randn(FEATURES), randn(FEATURES)), 1),
            RotationTransform(randn(FEATURES, FEATURES)),
            LULinearTransform(randn(FEATURES, FEATURES)),
        ),
    }


NAMES = ["autoregressive", "coupling", "permutation", "rotation", "lu", "composed"]


@pytest.fixture
def tol(dtype):
    return {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-3}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", BATCHES)
def test_inverse_and_shapes(name, batch, dtype, device, tol):
    t = make_transforms(dtype, device)[name]
    x = torch.randn(*batch, FEATURES, dtype=dtype, device=device)
    y, ladj = call_and_ladj(t, x)
    assert y.shape == x.shape and y.dtype == dtype and y.device.type == device.type
    assert ladj.shape == batch
    torch.testing.assert_close(t.inv(y), x, **tol)
    x_back, ladj_back = inverse_and_ladj(t, y)
    torch.testing.assert_close(x_back, x, **tol)
    torch.testing.assert_close(ladj_back, -ladj, **tol)
    x_inv, ladj_inv = t.inv.call_and_ladj(y)
    torch.testing.assert_close(x_inv, x, **tol)
    torch.testing.assert_close(ladj_inv, -ladj, **tol)


@pytest.mark.parametrize("name", NAMES)
def test_call_and_ladj_matches_separate_calls(name, dtype, device, tol):
    t = make_transforms(dtype, device)[name]
    x = torch.randn(5, FEATURES, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(y, t(x), **tol)
    torch.testing.assert_close(ladj, t.log_abs_det_jacobian(x, y), **tol)


@pytest.mark.parametrize("name", NAMES)
def test_ladj_matches_full_jacobian(name, dtype, device, tol):
    t = make_transforms(dtype, device)[name]
    x = torch.randn(FEATURES, dtype=dtype, device=device)
    J = jacobian(t, x)
    _, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(J).logabsdet, **tol)
    J_inv = jacobian(t.inv, t(x))
    torch.testing.assert_close(t.inv.call_and_ladj(t(x))[1], -ladj, **tol)
    torch.testing.assert_close(J_inv @ J, torch.eye(FEATURES, dtype=dtype, device=device), **tol)


def test_autoregressive_jacobian_is_lower_triangular(dtype, device):
    t = make_transforms(dtype, device)["autoregressive"]
    x = torch.randn(FEATURES, dtype=dtype, device=device)
    J = jacobian(t, x)
    assert (J.triu(1) == 0).all()
    assert (J.diagonal() > 0).all()


def test_autoregressive_ladj_has_batch_shape_and_one_meta_call(dtype, device):
    meta = MaskedAffineMeta(FEATURES, dtype, device)
    t = AutoregressiveTransform(meta, passes=3)
    _, ladj = t.call_and_ladj(torch.randn(32, FEATURES, dtype=dtype, device=device))
    assert ladj.shape == (32,)
    assert meta.calls == 1
    meta.calls = 0
    t.inverse_and_ladj(torch.randn(32, FEATURES, dtype=dtype, device=device))
    assert meta.calls == 3  # one per pass, the log-determinant from the last


def test_autoregressive_inverse_needs_enough_passes(dtype, device):
    meta = MaskedAffineMeta(FEATURES, dtype, device)
    x = torch.randn(64, FEATURES, dtype=dtype, device=device)
    y = AutoregressiveTransform(meta, passes=1)(x)
    few = AutoregressiveTransform(meta, passes=1).inv(y)
    enough = AutoregressiveTransform(meta, passes=FEATURES).inv(y)
    assert (few - x).abs().max() > 1e-2
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(enough, x, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("passes", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_autoregressive_rejects_bad_passes(passes, error):
    message = f"AutoregressiveTransform: passes must be an int >= 1, got {passes!r}"
    with pytest.raises(error) as caught:
        AutoregressiveTransform(lambda x: AdditiveTransform(x), passes)
    assert str(caught.value) == message


def test_coupling_keeps_masked_features(dtype, device):
    t = make_transforms(dtype, device)["coupling"]
    x = torch.randn(10, FEATURES, dtype=dtype, device=device)
    y = t(x)
    assert torch.equal(y[:, [0, 2]], x[:, [0, 2]])
    assert not torch.allclose(y[:, [1, 3]], x[:, [1, 3]])


def test_coupling_broadcasts_a_batched_meta(dtype, device):
    # A conditional meta with a batch of 3 contexts applied to a single x.
    shift = torch.randn(3, 1, 2, dtype=dtype, device=device)
    t = CouplingTransform(
        lambda xa: AdditiveTransform(shift + xa),
        torch.tensor([True, True, False, False], device=device),
    )
    x = torch.randn(7, FEATURES, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    assert y.shape == (3, 7, FEATURES) and ladj.shape == (3, 7)
    torch.testing.assert_close(t.inv(y), x.expand(3, 7, FEATURES))


@pytest.mark.parametrize(
    ("mask", "error"),
    [
        (torch.tensor([True, True]), ValueError),
        (torch.tensor([False, False]), ValueError),
        (torch.tensor([1, 0]), TypeError),
        (torch.ones(2, 2, dtype=torch.bool), TypeError),
    ],
)
def test_coupling_rejects_bad_mask(mask, error):
    with pytest.raises(error, match="mask"):
        CouplingTransform(lambda x: AdditiveTransform(x), mask)


def test_permutation_moves_features(dtype, device):
    t = PermutationTransform(torch.tensor([2, 0, 1], device=device))
    x = torch.tensor([10.0, 20.0, 30.0], dtype=dtype, device=device)
    assert t(x).tolist() == [30.0, 10.0, 20.0]
    assert t.inv(t(x)).tolist() == x.tolist()


@pytest.mark.parametrize("order", [torch.tensor([0.0, 1.0]), [1, 0], torch.zeros(2, 2).long()])
def test_permutation_rejects_bad_order(order):
    with pytest.raises(TypeError, match="order"):
        PermutationTransform(order)


def test_rotation_is_orthogonal_with_unit_determinant(dtype, device):
    A = torch.randn(3, FEATURES, FEATURES, dtype=dtype, device=device)
    R = RotationTransform(A).rotation
    eye = torch.eye(FEATURES, dtype=dtype, device=device).expand(3, -1, -1)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(R @ R.mT, eye, rtol=tol, atol=tol)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(3, dtype=dtype, device=device))


def test_batched_linear_transforms_broadcast(dtype, device, tol):
    A = torch.randn(3, 1, FEATURES, FEATURES, dtype=dtype, device=device)
    x = torch.randn(5, FEATURES, dtype=dtype, device=device)
    for t in (RotationTransform(A), LULinearTransform(A)):
        y, ladj = t.call_and_ladj(x)
        assert y.shape == (3, 5, FEATURES) and ladj.shape == (3, 5)
        # Two triangular solves of a random LU: float32 needs its looser tolerance.
        torch.testing.assert_close(t.inv(y), x.expand(3, 5, FEATURES), **tol)


def test_lu_zero_is_identity(dtype, device):
    t = LULinearTransform(torch.zeros(FEATURES, FEATURES, dtype=dtype, device=device))
    x = torch.randn(FEATURES, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(y, x)
    assert ladj == 0


@pytest.mark.parametrize("matrix", [torch.zeros(3), torch.zeros(2, 3), "eye"])
def test_linear_transforms_reject_non_square(matrix):
    with pytest.raises(ValueError, match="square"):
        RotationTransform(matrix)
    with pytest.raises(ValueError, match="square"):
        LULinearTransform(matrix)


def test_composed_with_torch_transform_and_dependent(dtype, device):
    t = ComposedTransform(
        DependentTransform(ExpTransform(), 1),
        MonotonicAffineTransform(
            torch.tensor(1.0, dtype=dtype, device=device),
            torch.tensor(0.5, dtype=dtype, device=device),
        ),
    )
    x = torch.randn(5, 3, dtype=dtype, device=device)
    _y, ladj = t.call_and_ladj(x)
    assert ladj.shape == (5,)
    J = jacobian(t, x[0])
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(J).logabsdet)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("autoregressive", "AutoregressiveTransform(passes=4)"),
        ("coupling", "CouplingTransform(mask=[True, False, True, False])"),
        ("permutation", "PermutationTransform(order=[2, 0, 3, 1])"),
        ("rotation", "RotationTransform(features=4)"),
        ("lu", "LULinearTransform(features=4)"),
    ],
)
def test_structural_repr(name, text):
    assert repr(make_transforms(torch.float64, torch.device("cpu"))[name]) == text


def test_coupling_accepts_precomputed_indices(dtype, device):
    mask = torch.tensor([True, False, True, False], device=device)
    indices = (mask.nonzero().flatten(), (~mask).nonzero().flatten())
    meta = coupling_meta(dtype, device)
    x = torch.randn(6, FEATURES, dtype=dtype, device=device)
    given = CouplingTransform(meta, mask, indices=indices)
    computed = CouplingTransform(meta, mask)
    for a, b in zip(given.call_and_ladj(x), computed.call_and_ladj(x), strict=True):
        torch.testing.assert_close(a, b)
