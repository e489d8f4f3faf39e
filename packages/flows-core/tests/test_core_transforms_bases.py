"""The transform bases: a transform written in one pass each way gets torch's methods for free."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import constraints

from flows.core.testing import check_univariate
from flows.core.transforms import (
    AdditiveTransform,
    CircularShiftTransform,
    ComposedTransform,
    CosTransform,
    CouplingTransform,
    GaussianizationTransform,
    IdentityTransform,
    LULinearTransform,
    MonotonicAffineTransform,
    OnePassTransform,
    PermutationTransform,
    RotationTransform,
    SignedPowerTransform,
    SinTransform,
    SoftclipTransform,
    UnivariateTransform,
)


class Scale(UnivariateTransform):
    """``y = exp(tanh(a)) x``, as a third party writes it: the two one-pass methods only."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.tanh(a)
        self.calls: list[str] = []

    def call_and_ladj(self, x):
        self.calls.append("call_and_ladj")
        return x * self.a.exp(), self.a.expand(x.shape)

    def inverse_and_ladj(self, y):
        self.calls.append("inverse_and_ladj")
        return y * torch.exp(-self.a), -self.a.expand(y.shape)


def test_univariate_transforms_default_to_an_increasing_bijection_of_the_real_line(device):
    t = Scale(torch.tensor(0.5, device=device))
    assert t.domain is constraints.real and t.codomain is constraints.real
    assert t.bijective is True and t.sign == 1
    assert t.event_dim == 0
    assert t.inv.sign == 1 and t.inv.domain is constraints.real


def test_univariate_declarations_are_overridden_where_they_differ(device):
    def value(v: float) -> torch.Tensor:
        return torch.tensor(v, device=device)

    assert CosTransform().sign == -1 and CosTransform().inv.sign == -1
    assert CosTransform().codomain.check(value(-0.5))
    assert not SoftclipTransform(2.0).codomain.check(value(2.5))
    assert CircularShiftTransform(2.0).domain.check(value(-2.0))
    assert not CircularShiftTransform(2.0).domain.check(value(2.0))


def test_torch_methods_derive_from_the_one_pass_methods(dtype, device):
    a = torch.tensor([0.5, -1.0], dtype=dtype, device=device)
    x = torch.tensor([2.0, 3.0], dtype=dtype, device=device)
    t = Scale(a)
    y = t(x)
    assert t.calls == ["call_and_ladj"]  # one pass for the value, not a second
    torch.testing.assert_close(y, x * a.tanh().exp())
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), a.tanh())
    torch.testing.assert_close(t.inv(y), x)
    assert t.calls == ["call_and_ladj", "call_and_ladj", "inverse_and_ladj"]
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, x), -a.tanh())


def test_a_third_party_univariate_passes_the_contract_kit(dtype, device):
    check_univariate(Scale, [()], batch=(5,), dtype=dtype, device=device)


def test_a_missing_one_pass_method_names_the_class(device):
    class ForwardOnly(UnivariateTransform):
        def call_and_ladj(self, x):
            return x, torch.zeros_like(x)

    t = ForwardOnly()
    ones = torch.ones(2, device=device)
    assert torch.equal(t(ones), ones)
    with pytest.raises(NotImplementedError, match="ForwardOnly must implement inverse_and_ladj"):
        t.inv(ones)

    class InverseOnly(OnePassTransform):
        def inverse_and_ladj(self, y):
            return y, torch.zeros_like(y)

    with pytest.raises(NotImplementedError, match="InverseOnly must implement call_and_ladj"):
        InverseOnly()(ones)


# Transforms whose value (or inverse) alone costs less than with the log-determinant.
CHEAP_ALONE = {
    "affine": lambda v: MonotonicAffineTransform(v(0.3), v(0.2)),
    "additive": lambda v: AdditiveTransform(v(0.3)),
    "softclip": lambda v: SoftclipTransform(3.0),
    "circular-shift": lambda v: CircularShiftTransform(3.0),
    "sin": lambda v: SinTransform(),
    "cos": lambda v: CosTransform(),
    "signed-power": lambda v: SignedPowerTransform(v(0.2)),
}


@pytest.mark.parametrize("name", CHEAP_ALONE)
def test_values_alone_compute_no_log_determinant(name, dtype, device):
    t = CHEAP_ALONE[name](lambda v: torch.tensor(v, dtype=dtype, device=device))
    x = torch.tensor([0.2, 0.7, 1.1], dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    x_back, inverse_ladj = t.inverse_and_ladj(y)

    def refuse(v):
        raise AssertionError("computed the log-determinant")

    t.call_and_ladj = t.inverse_and_ladj = refuse  # instance attributes: this object only
    torch.testing.assert_close(t(x), y)
    torch.testing.assert_close(t.inv(y), x_back)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ladj)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, x_back), inverse_ladj)


def test_gaussianization_value_is_that_of_its_one_pass_method(dtype, device):
    shift = torch.tensor([0.0, 2.0], dtype=dtype, device=device)
    t = GaussianizationTransform(shift, torch.tensor([0.5, -0.5], dtype=dtype, device=device))
    x = torch.linspace(-3, 3, 7, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    assert torch.equal(t(x), y)
    assert torch.equal(t.log_abs_det_jacobian(x, y), ladj)
    assert torch.equal(t.inv(y), t.inverse_and_ladj(y)[0])


def _coupling(v) -> CouplingTransform:
    mask = v([True, False, True])
    return CouplingTransform(lambda xa: AdditiveTransform(xa.sum(-1, keepdim=True)), mask)


MULTIVARIATE = {
    "coupling": _coupling,
    "permutation": lambda v: PermutationTransform(v([2, 0, 1])),
    "rotation": lambda v: RotationTransform(v([[0.0, 0.3, 0.1]] * 3)),
    "lu": lambda v: LULinearTransform(v([[0.1, 0.3, 0.0]] * 3)),
    "composed": lambda v: ComposedTransform(
        PermutationTransform(v([1, 2, 0])), LULinearTransform(v([[0.1, 0.0, 0.0]] * 3))
    ),
}


@pytest.mark.parametrize("name", MULTIVARIATE)
def test_multivariate_one_pass_transforms_are_bijections_with_torch_methods(name, dtype, device):
    def v(data: list) -> torch.Tensor:
        floats = isinstance(torch.tensor(data).flatten()[0].item(), float)
        return torch.tensor(data, dtype=dtype if floats else None, device=device)

    t = MULTIVARIATE[name](v)
    assert isinstance(t, OnePassTransform) and t.bijective
    x = v([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    y, ladj = t.call_and_ladj(x)
    assert ladj.shape == (2,)
    torch.testing.assert_close(t(x), y)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ladj)
    torch.testing.assert_close(t.inv(y), x)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, x), -ladj)


def test_identity_is_its_own_inverse(dtype, device):
    t = IdentityTransform()
    x = torch.tensor([1.0, -2.0], dtype=dtype, device=device)
    for value, ladj in (t.call_and_ladj(x), t.inverse_and_ladj(x), t.inv.call_and_ladj(x)):
        assert torch.equal(value, x) and torch.equal(ladj, torch.zeros_like(x))
    assert t.sign == 1 and t.domain is constraints.real


def test_circular_shift_is_its_own_inverse_with_null_log_determinant(dtype, device):
    t = CircularShiftTransform(math.pi)
    x = torch.tensor([-3.0, 0.0, 3.0], dtype=dtype, device=device)
    y, ladj = t.inverse_and_ladj(x)
    torch.testing.assert_close(y, t(x))
    assert torch.equal(ladj, torch.zeros_like(x))
    torch.testing.assert_close(t.inv(t(x)), x)
