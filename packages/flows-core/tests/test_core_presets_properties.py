"""Properties every preset has: densities consistent with samples, gradients, round trips.

Each preset is rebuilt from its recorded ``arguments`` and its state_dict, which must give the
same densities (random orders and masks included).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from flows.core.presets import GF, GMM, IAF, MAF, NICE, Planar, Radial, RealNVP, Sylvester

H = {"hidden_features": [16, 16]}

CASES: dict[str, tuple[Callable[[], nn.Module], int, int]] = {
    "maf": (lambda: MAF(3, transforms=2, **H), 3, 0),
    "maf-context": (lambda: MAF(3, 2, transforms=2, **H), 3, 2),
    "maf-passes-2": (lambda: MAF(4, 2, transforms=2, passes=2, **H), 4, 2),
    "maf-randperm": (lambda: MAF(4, transforms=3, randperm=True, **H), 4, 0),
    "maf-one-feature": (lambda: MAF(1, transforms=2, **H), 1, 0),
    "iaf": (lambda: IAF(3, transforms=2, **H), 3, 0),
    "iaf-context-passes-2": (lambda: IAF(4, 2, transforms=2, passes=2, **H), 4, 2),
    "iaf-randperm": (lambda: IAF(4, transforms=3, randperm=True, **H), 4, 0),
    "planar": (lambda: Planar(3, transforms=3), 3, 0),
    "planar-context": (lambda: Planar(2, 2, transforms=2, **H), 2, 2),
    "radial": (lambda: Radial(3, transforms=3), 3, 0),
    "radial-context": (lambda: Radial(3, 1, transforms=2, **H), 3, 1),
    "sylvester": (lambda: Sylvester(3, transforms=2), 3, 0),
    "sylvester-rank-2-context": (lambda: Sylvester(3, 2, transforms=2, rank=2, **H), 3, 2),
    "nice": (lambda: NICE(4, transforms=3, **H), 4, 0),
    "nice-context": (lambda: NICE(3, 2, transforms=2, randmask=True, **H), 3, 2),
    "realnvp": (lambda: RealNVP(4, transforms=3, randmask=True, **H), 4, 0),
    "realnvp-context": (lambda: RealNVP(3, 2, transforms=2, **H), 3, 2),
    "gf": (lambda: GF(3, transforms=2, components=4), 3, 0),
    "gf-context": (lambda: GF(2, 3, transforms=2, components=3, **H), 2, 3),
    "gmm-full": (lambda: GMM(3, components=3), 3, 0),
    "gmm-tied-context": (lambda: GMM(3, 2, components=2, covariance_type="tied", **H), 3, 2),
    "gmm-diagonal": (lambda: GMM(2, components=3, covariance_type="diagonal"), 2, 0),
    "gmm-spherical-context": (
        lambda: GMM(2, 1, components=2, covariance_type="spherical", **H),
        2,
        1,
    ),
}
FLOWS = sorted(name for name in CASES if not name.startswith("gmm"))
CONDITIONAL = sorted(name for name, (_, _, context) in CASES.items() if context > 0)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-7, "rtol": 1e-6}


def build(name: str, dtype: torch.dtype, device: torch.device):
    factory, features, context = CASES[name]
    torch.manual_seed(0)
    flow = factory()
    with torch.no_grad():  # away from the near-identity start
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    flow = flow.to(dtype=dtype, device=device)
    c = torch.randn(context, dtype=dtype, device=device) if context else None
    return flow, features, context, c


@pytest.fixture(params=sorted(CASES))
def case(request, dtype, device):
    return build(request.param, dtype, device)


def test_samples_have_the_event_shape_and_finite_density(case, dtype, device):
    flow, features, _, c = case
    x = flow(c).sample((6,))
    assert x.shape == (6, features) and x.dtype == dtype and x.device.type == device.type
    log_p = flow(c).log_prob(x)
    assert log_p.shape == (6,) and torch.isfinite(log_p).all()


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
def test_empty_batches_give_empty_results(case, gradients, dtype, device):
    flow, features, _, c = case
    with torch.set_grad_enabled(gradients):
        x = flow(c).sample((0,))
        log_p = flow(c).log_prob(torch.randn(0, features, dtype=dtype, device=device))
    assert x.shape == (0, features) and log_p.shape == (0,)
    if gradients:
        log_p.sum().backward()  # an empty graph still backpropagates


@pytest.mark.parametrize("name", FLOWS)
def test_sample_log_prob_is_consistent_with_log_prob(name, dtype, device):
    flow, _, _, c = build(name, dtype, device)
    x, log_p = flow(c).rsample_and_log_prob((8,))
    torch.testing.assert_close(flow(c).log_prob(x), log_p, **tolerance(dtype))


@pytest.mark.parametrize("name", FLOWS)
def test_transform_inverse_and_ladj_against_autograd(name, dtype, device):
    flow, features, _, c = build(name, dtype, device)
    f = flow(c).transform
    x = torch.randn(features, dtype=dtype, device=device)
    torch.testing.assert_close(f.inv(f(x)), x, **tolerance(dtype))
    jacobian = torch.autograd.functional.jacobian(f, x)
    ladj = f.log_abs_det_jacobian(x, f(x))
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jacobian).logabsdet, **tolerance(dtype))


def test_gradients_reach_every_parameter(case, dtype, device):
    flow, features, _, c = case
    x = torch.randn(16, features, dtype=dtype, device=device)
    flow(c).log_prob(x).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_eval_equals_train(case, dtype, device):
    flow, features, _, c = case
    x = torch.randn(5, features, dtype=dtype, device=device)
    expected = flow.train()(c).log_prob(x)
    torch.testing.assert_close(flow.eval()(c).log_prob(x), expected, atol=0.0, rtol=0.0)


def test_rebuilt_from_arguments_and_state_dict_gives_identical_density(case, dtype, device):
    flow, features, _, c = case
    x = torch.randn(5, features, dtype=dtype, device=device)
    expected = flow(c).log_prob(x)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # other random orders, masks and weights
    rebuilt = type(flow)(**flow.arguments).to(dtype=dtype, device=device)
    rebuilt.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(rebuilt(c).log_prob(x), expected, atol=0.0, rtol=0.0)


def test_deepcopy_and_whole_module_save(case, dtype, device):
    flow, features, _, c = case
    x = torch.randn(5, features, dtype=dtype, device=device)
    expected = flow(c).log_prob(x)
    torch.testing.assert_close(copy.deepcopy(flow)(c).log_prob(x), expected, atol=0.0, rtol=0.0)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded(c).log_prob(x), expected, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_batched_context_gives_batched_distribution(name, dtype, device):
    flow, features, context, _ = build(name, dtype, device)
    c = torch.randn(5, context, dtype=dtype, device=device)
    dist = flow(c)
    assert dist.batch_shape == (5,)
    x = dist.sample()
    assert x.shape == (5, features)
    log_p = dist.log_prob(x)
    for i in range(5):
        torch.testing.assert_close(flow(c[i]).log_prob(x[i]), log_p[i], **tolerance(dtype))


def test_x_of_another_width_is_refused_not_broadcast(case):
    flow, features, _, c = case
    dist = flow(c)
    for width in (features - 1, features + 1):  # a single column would broadcast to every one
        if width < 1:
            continue
        reference = next(flow.parameters())
        x = torch.zeros(5, width, dtype=reference.dtype, device=reference.device)
        with pytest.raises(ValueError, match=rf"x must have shape \(\*, {features}\)"):
            dist.log_prob(x)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_a_missing_or_misshapen_context_is_named(name, dtype, device):
    flow, _, context, _ = build(name, dtype, device)
    wrong = torch.randn(4, context + 1, dtype=dtype, device=device)
    for c, got in ((None, "None"), (wrong, rf"shape \(4, {context + 1}\)")):
        with pytest.raises(
            ValueError, match=rf"context={context}: .* \(\*, {context}\) is required, got {got}"
        ):
            flow(c).sample()


def test_arguments_record_the_keyword_arguments():
    flow = MAF(3, 2, transforms=4, randperm=True, passes=2, hidden_features=[8])
    assert flow.arguments == {
        "features": 3,
        "context": 2,
        "transforms": 4,
        "randperm": True,
        "passes": 2,
        "hidden_features": [8],
    }
    assert GMM(2, components=3).arguments == {
        "features": 2,
        "context": 0,
        "components": 3,
        "covariance_type": "full",
    }
    assert NICE(4).arguments["randmask"] is False
    assert GF(2).arguments["components"] == 8
