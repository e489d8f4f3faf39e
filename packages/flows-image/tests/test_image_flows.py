"""Glow and RealNVP for images: shapes across scales, exact inverses, densities, ActNorm's start,
conditional variants, checkpoints, compile-cleanliness, and the errors bad images get."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import flows.core
from flows.core.testing import assert_no_graph_breaks, check_compiled_flow, flow_loss
from flows.image import Glow, RealNVPImage, SqueezeTransform

PRESETS = {
    "glow": lambda shape, **kw: Glow(shape, depth=1, hidden_channels=8, **kw),
    "realnvp-image": lambda shape, **kw: RealNVPImage(shape, depth=2, hidden_channels=8, **kw),
}


def test_latent_shapes_halve_the_resolution_and_keep_half_the_channels_per_scale():
    flow = Glow((3, 16, 16), scales=3, depth=1, hidden_channels=4)
    assert flow.stage_shapes == [(12, 8, 8), (24, 4, 4), (48, 2, 2)]
    assert flow.latent_shapes == [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    distribution = flow()
    assert distribution.base.shapes == [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    assert sum(distribution.base.sizes) == 3 * 16 * 16


@pytest.mark.parametrize("name", list(PRESETS))
def test_log_prob_and_sample_shapes(name, dtype, device):
    flow = PRESETS[name]((2, 8, 4), scales=2).to(dtype=dtype, device=device)
    x = torch.rand(5, 2, 8, 4, dtype=dtype, device=device)
    distribution = flow()

    assert distribution.event_shape == (2, 8, 4)
    assert distribution.log_prob(x).shape == (5,)
    assert distribution.sample().shape == (2, 8, 4)
    assert distribution.sample((3, 2)).shape == (3, 2, 2, 8, 4)
    assert flow().base.sample((7,)).shape == (7, 64)


@pytest.mark.parametrize("name", list(PRESETS))
def test_flow_inverse_is_exact_and_log_prob_is_the_change_of_variables(
    name, dtype, device, tolerance, perturb, autograd_ladj
):
    torch.manual_seed(0)
    flow = perturb(PRESETS[name]((1, 4, 4), scales=2)).to(dtype=dtype, device=device).eval()
    x = torch.randn(3, 1, 4, 4, dtype=dtype, device=device)
    distribution = flow()
    z, ladj = distribution.transform.call_and_ladj(x)

    torch.testing.assert_close(
        distribution.transform.inv(z), x, atol=tolerance(dtype), rtol=tolerance(dtype)
    )
    torch.testing.assert_close(
        ladj.detach(),
        autograd_ladj(distribution.transform, x),
        atol=10 * tolerance(dtype),
        rtol=tolerance(dtype),
    )
    standard = Normal(0.0, 1.0).log_prob(z.double()).sum(-1).to(dtype)
    torch.testing.assert_close(
        distribution.log_prob(x), standard + ladj, atol=tolerance(dtype), rtol=tolerance(dtype)
    )


def test_glow_rsample_and_log_prob_agree_with_log_prob(dtype, device, tolerance, perturb):
    torch.manual_seed(0)
    flow = perturb(Glow((1, 4, 4), scales=2, depth=2, hidden_channels=8))
    flow = flow.to(dtype=dtype, device=device).eval()
    x, log_p = flow().rsample_and_log_prob((4,))
    torch.testing.assert_close(
        log_p, flow().log_prob(x), atol=100 * tolerance(dtype), rtol=tolerance(dtype)
    )


def test_glow_actnorm_outputs_zero_mean_unit_variance_per_channel_on_the_first_batch(
    dtype, device, tolerance
):
    torch.manual_seed(0)
    flow = Glow((2, 8, 8), scales=1, depth=1, hidden_channels=8).to(dtype=dtype, device=device)
    x = 3.0 * torch.rand(64, 2, 8, 8, dtype=dtype, device=device) - 1.0
    flow.train()
    flow().log_prob(x)  # the first training batch initialises every ActNorm

    actnorm = flow.stages[0][1]
    assert isinstance(actnorm, flows.core.ActNorm)
    assert bool(actnorm.initialized)
    y = actnorm()(SqueezeTransform()(x)).detach()
    mean = y.mean(dim=(0, 2, 3))
    var = y.var(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=tolerance(dtype), rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=tolerance(dtype), rtol=0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_class_conditional_flow_depends_on_the_class(name, dtype, device, tolerance, perturb):
    torch.manual_seed(0)
    flow = perturb(PRESETS[name]((1, 4, 4), scales=2, context=3)).to(dtype=dtype, device=device)
    flow.eval()
    labels = torch.eye(3, dtype=dtype, device=device)
    x = torch.randn(3, 1, 4, 4, dtype=dtype, device=device)

    log_p = flow(labels).log_prob(x)
    assert log_p.shape == (3,)
    one = flow(labels[0]).log_prob(x)  # one class, broadcast over the images
    assert not torch.allclose(log_p, one)
    torch.testing.assert_close(log_p[0], one[0])
    samples = flow(labels).sample((5,))
    assert samples.shape == (5, 3, 1, 4, 4)
    z, _ = flow(labels).transform.call_and_ladj(samples)
    torch.testing.assert_close(
        flow(labels).transform.inv(z), samples, atol=tolerance(dtype), rtol=tolerance(dtype)
    )


def test_image_conditional_glow_reads_the_context_image(dtype, device, perturb):
    torch.manual_seed(0)
    flow = perturb(Glow((1, 4, 4), context=(2, 8, 8), scales=2, depth=1, hidden_channels=8))
    flow = flow.to(dtype=dtype, device=device).eval()
    c = torch.randn(4, 2, 8, 8, dtype=dtype, device=device)
    x = torch.randn(4, 1, 4, 4, dtype=dtype, device=device)
    log_p = flow(c).log_prob(x)
    assert log_p.shape == (4,)
    assert not torch.allclose(log_p, flow(c.flip(0)).log_prob(x))
    assert flow(c).sample().shape == (4, 1, 4, 4)


def test_images_of_the_wrong_shape_or_rank_get_one_clear_error(dtype, device):
    flow = Glow((1, 8, 8), scales=2, depth=1, hidden_channels=4).to(dtype=dtype, device=device)
    for shape in [(5, 64), (5, 8, 8), (5, 3, 8, 8)]:
        with pytest.raises(ValueError) as error:
            flow().log_prob(torch.zeros(shape, dtype=dtype, device=device))
        assert str(error.value) == (
            f"x must have shape (*, 1, 8, 8), the distribution's event shape, got {shape}"
        )


def test_sizes_the_scales_cannot_halve_name_the_shape_and_what_would_work():
    with pytest.raises(ValueError) as error:
        Glow((1, 6, 8), scales=2)
    assert str(error.value) == (
        "Glow: images of shape (C, H, W) = (1, 6, 8) cannot go through 2 scale(s): each "
        "squeezes H and W by half, so both must be multiples of 2**2 = 4; crop or pad them "
        "(e.g. to (1, 4, 8)) or use fewer scales"
    )
    with pytest.raises(ValueError, match=r"shape must be an image shape \(C, H, W\)"):
        RealNVPImage((8, 8))


def test_conditional_flow_without_its_context_is_refused():
    flow = Glow((1, 4, 4), context=10, scales=1, depth=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"c must have shape \(\*, 10\), got None"):
        flow()
    with pytest.raises(ValueError, match="Glow is unconditional; got a context c"):
        Glow((1, 4, 4), scales=1, depth=1, hidden_channels=4)(torch.zeros(3))


@pytest.mark.parametrize("name", list(PRESETS))
def test_checkpoint_round_trip_keeps_weights_and_actnorm_state(
    name, tmp_path, dtype, device, perturb
):
    torch.manual_seed(0)
    flow = PRESETS[name]((1, 4, 4), scales=2).to(dtype=dtype, device=device)
    x = torch.rand(16, 1, 4, 4, dtype=dtype, device=device)
    flow().log_prob(x)  # initialises ActNorm
    perturb(flow)
    flow.eval()
    flows.core.save(flow, tmp_path / "flow.pt")
    again = flows.core.load(tmp_path / "flow.pt").flow.to(dtype=dtype, device=device)

    assert type(again) is type(flow)
    assert again.arguments == flow.arguments
    # load() builds the flow in float32, which the stored weights are cast to.
    torch.testing.assert_close(again().log_prob(x), flow().log_prob(x), atol=1e-4, rtol=1e-5)
    assert all(bool(m.initialized) for m in again.modules() if isinstance(m, flows.core.ActNorm))


def test_glow_log_prob_and_training_loss_compile_into_one_graph(dtype, device, perturb):
    # One test for both variants: each trace costs seconds on a small CPU.
    torch._dynamo.reset()
    for context in (0, 3):
        torch.manual_seed(0)
        flow = Glow((1, 4, 4), context=context, scales=2, depth=1, hidden_channels=4)
        flow = flow.to(dtype=dtype, device=device)
        x = torch.rand(6, 1, 4, 4, dtype=dtype, device=device)
        c = torch.eye(3, dtype=dtype, device=device)[[0, 1, 2, 0, 1, 2]] if context else None
        flow(c).log_prob(x)  # ActNorm's data-dependent start happens once, eagerly
        # The training loss's graph holds log_prob's: no break in either.
        assert_no_graph_breaks(flow_loss(flow, training=True), x, c)
    check_compiled_flow(perturb(flow), x, c, backend="eager")
    torch._dynamo.reset()


def test_glow_density_integrates_like_a_density_of_its_latents(dtype, device):
    # log p(x) = log N(f(x)) + log|det J|: at the identity start, the flow is N(0, I).
    flow = Glow((1, 4, 4), scales=2, depth=1, hidden_channels=4).to(dtype=dtype, device=device)
    flow.eval()
    with torch.no_grad():
        for p in flow.modules():
            if isinstance(p, flows.image.InvertibleConv1x1):
                p.lower.zero_(), p.upper.zero_(), p.log_diagonal.zero_()
                p.permutation.copy_(torch.eye(len(p.sign))), p.sign.fill_(1.0)
    x = torch.zeros(1, 1, 4, 4, dtype=dtype, device=device)
    expected = torch.tensor([-8 * math.log(2 * math.pi)], dtype=dtype, device=device)
    torch.testing.assert_close(flow().log_prob(x), expected)


@pytest.mark.parametrize("prior", ["diagonal", "standard"])
def test_glow_other_priors_keep_inverse_and_density(
    prior, dtype, device, perturb, tolerance, autograd_ladj
):
    torch.manual_seed(0)
    flow = perturb(Glow((1, 4, 4), scales=2, depth=1, hidden_channels=4, prior=prior))
    flow = flow.to(dtype=dtype, device=device).eval()
    x = torch.randn(3, 1, 4, 4, dtype=dtype, device=device)
    z, ladj = flow().transform.call_and_ladj(x)
    torch.testing.assert_close(
        flow().transform.inv(z), x, atol=tolerance(dtype), rtol=tolerance(dtype)
    )
    torch.testing.assert_close(
        ladj.detach(),
        autograd_ladj(flow().transform, x),
        atol=10 * tolerance(dtype),
        rtol=tolerance(dtype),
    )
    x, log_p = flow().rsample_and_log_prob((4,))
    torch.testing.assert_close(
        log_p, flow().log_prob(x), atol=100 * tolerance(dtype), rtol=tolerance(dtype)
    )
    with pytest.raises(ValueError, match="prior must be one of conditional, diagonal, standard"):
        Glow((1, 4, 4), prior="learned")


def test_standard_latents_log_prob_is_the_sum_of_the_parts_normals(dtype, device, tolerance):
    # The standard base reads the flat latents at once; it must equal the per-part normals,
    # batched (as under a batch of contexts) or not.
    from torch.distributions import Independent, Normal

    from flows.image import FactoredLatents

    shapes = [(2, 4, 4), (8, 2, 2)]
    base = FactoredLatents.standard(shapes, dtype, device)
    z = torch.randn(5, 64, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    parts = [Independent(Normal(zero.expand(s), (zero + 1).expand(s)), 3) for s in shapes]
    expected = sum(p.log_prob(x) for p, x in zip(parts, base.split(z), strict=True))
    torch.testing.assert_close(
        base.log_prob(z), expected, atol=tolerance(dtype), rtol=tolerance(dtype)
    )
    batched = base.expand((4, 5))
    assert batched.is_standard
    assert batched.log_prob(z).shape == (4, 5)
    torch.testing.assert_close(
        batched.log_prob(z)[2], expected, atol=tolerance(dtype), rtol=tolerance(dtype)
    )
