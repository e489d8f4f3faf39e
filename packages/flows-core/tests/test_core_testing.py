"""The contract kit passes good transforms and names the check a broken one fails."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from flows.core.testing import check_univariate
from flows.core.transforms import AdditiveTransform, MonotonicAffineTransform


class WrongLadj(MonotonicAffineTransform):
    def log_abs_det_jacobian(self, x, y):
        return 2 * self.log_scale.expand(y.shape)

    def call_and_ladj(self, x):
        y = self._call(x)
        return y, self.log_abs_det_jacobian(x, y)

    def inverse_and_ladj(self, y):
        x = self._inverse(y)
        return x, -self.log_abs_det_jacobian(x, y)


class WrongInverse(MonotonicAffineTransform):
    def _inverse(self, y):
        return (y - self.shift) * torch.exp(-self.log_scale) + 1e-2

    def inverse_and_ladj(self, y):
        return self._inverse(y), -self.log_scale.expand(y.shape)


class InconsistentCallAndLadj(AdditiveTransform):
    def call_and_ladj(self, x):
        return x + 2 * self.shift, torch.zeros_like(x)


class WrongShape(AdditiveTransform):
    def call_and_ladj(self, x):
        return x + self.shift, torch.zeros(x.shape[:-1], dtype=x.dtype)


class Overflowing(MonotonicAffineTransform):
    # The raw scale, unbounded: exp overflows for large parameters.
    def __init__(self, shift, scale):
        super().__init__(shift, scale)
        self.log_scale = torch.as_tensor(scale)


class IgnoresParameter(AdditiveTransform):
    def __init__(self, shift, unused):
        super().__init__(shift)


class FromRows(MonotonicAffineTransform):
    """Also takes its parameters as one block ``(2, F, N)``, parameters first."""

    @classmethod
    def from_rows(cls, rows, batch):
        shift, scale = (row.T.reshape(*batch, rows.shape[1]) for row in rows)
        return cls(shift, scale)


class WrongFromRows(MonotonicAffineTransform):
    @classmethod
    def from_rows(cls, rows, batch):
        scale, shift = (row.T.reshape(*batch, rows.shape[1]) for row in rows)
        return cls(shift, scale)


@pytest.mark.parametrize(
    ("constructor", "shapes"),
    [(MonotonicAffineTransform, [(), ()]), (AdditiveTransform, [()]), (FromRows, [(), ()])],
)
@pytest.mark.parametrize("batch", [(), (7,), (2, 3)])
def test_kit_passes_good_transforms(constructor, shapes, batch, dtype, device):
    check_univariate(constructor, shapes, batch=batch, dtype=dtype, device=device)


def test_kit_resolves_registered_names_with_hyper_parameters(dtype):
    check_univariate("affine", hyper={"slope": 1e-2}, dtype=dtype)


@pytest.mark.parametrize(
    ("constructor", "shapes", "check"),
    [
        (WrongLadj, [(), ()], "'call_and_ladj'|'ladj'"),
        (WrongInverse, [(), ()], "'inverse'"),
        (InconsistentCallAndLadj, [()], "'call_and_ladj'"),
        (WrongShape, [()], "'shape'"),
        (Overflowing, [(), ()], "'extreme'"),
        (IgnoresParameter, [(), ()], "'gradients'"),
        (WrongFromRows, [(), ()], "'from_rows'"),
    ],
)
def test_kit_names_the_failed_check(constructor, shapes, check):
    with pytest.raises(AssertionError, match=check) as info:
        check_univariate(constructor, shapes)
    assert constructor.__name__ in str(info.value)


def test_kit_wrong_ladj_is_caught_against_autograd():
    # Consistent everywhere but wrong: only autograd can tell.
    with pytest.raises(AssertionError, match="'ladj'"):
        check_univariate(WrongLadj, [(), ()])


def test_kit_requires_shapes_with_a_constructor():
    with pytest.raises(TypeError, match="shapes"):
        check_univariate(MonotonicAffineTransform)


def test_kit_leaves_the_global_rng_untouched():
    state = torch.random.get_rng_state()
    check_univariate(AdditiveTransform, [()])
    assert torch.equal(state, torch.random.get_rng_state())


def test_kit_imports_only_torch_and_flows_core():
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import flows.core.testing\n"
        "new = set(sys.modules) - before\n"
        "new = {m for m in new if m.split('.')[0] not in sys.stdlib_module_names}\n"
        "print(sorted(new))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    new = eval(result.stdout)
    assert new, "nothing imported?"
    assert all(m == "flows" or m.startswith("flows.core") for m in new), new
