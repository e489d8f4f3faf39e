"""Presets of flows-splines: shapes, consistency, context, state, registry, fit quality."""

from __future__ import annotations

import math

import pytest
import torch

from flows.core import MAF
from flows.core.plugins import get_preset, list_presets
from flows.splines import BPF, NAF, NCSF, NSF, SOSPF, UNAF

SMALL = {"hidden_features": (16, 16)}
PRESETS = {
    "nsf": lambda **kw: NSF(transforms=2, bins=4, **SMALL, **kw),
    "nsf-coupling": lambda **kw: NSF(transforms=2, passes=2, **SMALL, **kw),
    "ncsf": lambda **kw: NCSF(transforms=2, bins=4, **SMALL, **kw),
    "naf": lambda **kw: NAF(
        transforms=2, signal=4, network={"hidden_features": (8,)}, **SMALL, **kw
    ),
    "unaf": lambda **kw: UNAF(
        transforms=2, signal=4, network={"hidden_features": (8,)}, **SMALL, **kw
    ),
    "sospf": lambda **kw: SOSPF(transforms=2, **SMALL, **kw),
    "bpf": lambda **kw: BPF(transforms=2, degree=6, **SMALL, **kw),
}


def _move(flow, dtype, device):
    return flow.to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes_and_log_prob_of_samples(name, dtype, device):
    torch.manual_seed(0)
    flow = _move(PRESETS[name](features=3, context=2), dtype, device)
    c = torch.randn(2, dtype=dtype, device=device)
    x = flow(c).sample((7,))
    assert x.shape == (7, 3) and x.dtype == dtype
    log_p = flow(c).log_prob(x)
    assert log_p.shape == (7,) and torch.isfinite(log_p).all()
    # Batched contexts: one flow per context row.
    cs = torch.randn(5, 2, dtype=dtype, device=device)
    assert flow(cs).sample().shape == (5, 3)
    assert flow(cs).log_prob(torch.randn(5, 3, dtype=dtype, device=device)).shape == (5,)


def _elementwise_umnn(**kw):
    from flows.core import ElementWiseTransform, Flow
    from flows.core.presets.maf import standard_normal_base

    transform = ElementWiseTransform(3, kw["context"], univariate="umnn", **SMALL)
    return Flow([transform], standard_normal_base(3))


# The flows whose univariate is differentiated by autograd (NAF) or integrated by quadrature
# (UNAF, "umnn"), where an x broadcast against a batch of contexts once went wrong.
BROADCAST = {
    "naf": PRESETS["naf"],
    "unaf": PRESETS["unaf"],
    "maf-umnn": lambda **kw: MAF(transforms=2, univariate="umnn", **SMALL, **kw),
    "elementwise-umnn": _elementwise_umnn,
}


@pytest.mark.parametrize("name", sorted(BROADCAST))
def test_one_point_under_a_batch_of_contexts_gets_each_contexts_density(name, dtype, device):
    # One observation scored under many contexts (e.g. a likelihood over a batch of
    # parameters) must give, row by row, the density under that row's context. NAF summed
    # f'(x) over the contexts (off by log 4 per feature); UNAF and "umnn" raised.
    torch.manual_seed(0)
    flow = _move(BROADCAST[name](features=3, context=2), dtype, device)
    with torch.no_grad():
        # Away from the initialization, so that each context gives its own density.
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    c = torch.randn(4, 2, dtype=dtype, device=device)
    x = 0.5 * torch.randn(3, dtype=dtype, device=device)
    one_by_one = torch.stack([flow(ci).log_prob(x) for ci in c])
    assert one_by_one.unique().numel() == 4
    torch.testing.assert_close(flow(c).log_prob(x), one_by_one)
    # A point per context, as before.
    xs = 0.5 * torch.randn(4, 3, dtype=dtype, device=device)
    one_by_one = torch.stack([flow(ci).log_prob(xi) for ci, xi in zip(c, xs, strict=True)])
    torch.testing.assert_close(flow(c).log_prob(xs), one_by_one)


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_empty_batches_give_empty_results(name, context, gradients):
    torch.manual_seed(0)
    flow = PRESETS[name](features=3, context=context)
    c = torch.randn(context) if context else None
    with torch.set_grad_enabled(gradients):
        x, log_q = flow(c).rsample_and_log_prob((0,))
        log_p = flow(c).log_prob(torch.randn(0, 3))
    assert x.shape == (0, 3) and log_q.shape == (0,) and log_p.shape == (0,)
    if gradients:
        (log_p.sum() + log_q.sum()).backward()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_transform_inverse_round_trip(name):
    # Sampling applies f^{-1}: it must undo f on data (for NAF/UNAF, within their bisection
    # interval, which standardized data are in).
    torch.manual_seed(1)
    flow = PRESETS[name](features=2).double()
    transform = flow().transform
    x = torch.randn(9, 2, dtype=torch.float64)
    torch.testing.assert_close(transform.inv(transform(x)), x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_log_prob_matches_change_of_variables(name):
    torch.manual_seed(2)
    flow = PRESETS[name](features=2).double()
    dist = flow()
    x = torch.randn(4, 2, dtype=torch.float64)
    jacobian = torch.stack([torch.autograd.functional.jacobian(dist.transform, xi) for xi in x])
    expected = dist.base.log_prob(dist.transform(x)) + torch.linalg.slogdet(jacobian)[1]
    torch.testing.assert_close(dist.log_prob(x), expected)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_state_dict_round_trip(name):
    torch.manual_seed(3)
    flow = PRESETS[name](features=3)
    clone = type(flow)(**flow.arguments)
    clone.load_state_dict(flow.state_dict())
    x = torch.randn(6, 3)
    torch.testing.assert_close(clone().log_prob(x), flow().log_prob(x))


def test_presets_are_registered_by_name():
    ours = {p.spec.name for p in list_presets() if p.distribution == "flows-splines"}
    assert ours == {"nsf", "ncsf", "naf", "unaf", "sospf", "bpf"}
    assert get_preset("nsf") is NSF and get_preset("bpf") is BPF
    flow = get_preset("nsf")(features=2, transforms=1)
    assert flow().sample((3,)).shape == (3, 2)


def test_maf_and_layers_take_rqs_by_name():
    from flows.core import MAF, MaskedAutoregressiveTransform

    flow = MAF(3, univariate="rqs", bins=8)
    assert torch.isfinite(flow().log_prob(torch.randn(4, 3))).all()
    t = MaskedAutoregressiveTransform(features=3, univariate="rqs")(None)
    x = torch.randn(3, dtype=torch.float32)
    torch.testing.assert_close(t.inv(t(x)), x, atol=1e-5, rtol=1e-5)


def test_nsf_records_its_arguments():
    flow = NSF(4, context=1, transforms=2, bins=5, bound=3.0, passes=2, hidden_features=[8])
    assert flow.arguments == {
        "features": 4,
        "context": 1,
        "transforms": 2,
        "bins": 5,
        "bound": 3.0,
        "slope": 1e-3,
        "passes": 2,
        "hidden_features": [8],
    }


def test_ncsf_samples_stay_on_the_torus():
    torch.manual_seed(4)
    flow = NCSF(2, transforms=2, **SMALL)
    x = flow().sample((500,))
    assert (x.abs() <= math.pi + 1e-5).all()


@pytest.mark.parametrize("name", ["nsf", "naf", "unaf", "sospf", "bpf"])
def test_trained_flow_samples_are_finite(name):
    # Heavy-tailed data with outliers pushes the transforms to their extremes.
    torch.manual_seed(5)
    data = torch.distributions.StudentT(1.5).sample((512, 2))
    data[:8] = torch.tensor([1e3, -1e3])
    flow = PRESETS[name](features=2)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(150 if name == "nsf" else 40):
        batch = data[torch.randint(0, 512, (64,))]
        loss = -flow().log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = flow().sample((10_000,))
    assert torch.isfinite(x).all()
    assert torch.isfinite(flow().log_prob(data)).all()


def test_nsf_fits_a_gaussian_mixture():
    # Two Gaussians (std 0.5) at (-2, 0) and (2, 0). KL(p || q) measured about 0.02 after
    # 200 steps; 0.08 leaves room for seeds and platforms.
    torch.manual_seed(0)
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2)),
        torch.distributions.Independent(torch.distributions.Normal(means, 0.5), 1),
    )
    flow = NSF(2, transforms=3, hidden_features=(32, 32))
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(200):
        loss = -flow().log_prob(mixture.sample((256,))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = mixture.sample((8192,))
    with torch.no_grad():
        kl = (mixture.log_prob(x) - flow().log_prob(x)).mean()
    assert kl < 0.08


@pytest.mark.parametrize(
    ("name", "inverse"),
    [
        ("nsf", "exact"),
        ("ncsf", "exact"),
        ("naf", "numerical"),
        ("unaf", "numerical"),
        ("sospf", "numerical"),
        ("bpf", "numerical"),
    ],
)
def test_specs_flag_the_presets_sampled_by_bisection(name, inverse):
    # Their sampling direction bisects to a tolerance; a user choosing a flow for variational
    # inference reads this flag.
    from flows.core.plugins import preset_spec

    assert preset_spec(name).spec.inverse == inverse
