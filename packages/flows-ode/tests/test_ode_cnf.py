"""FFJTransform and the CNF preset: contexts, densities, training, rebuilding."""

from __future__ import annotations

import pytest
import torch

from flows.ode import CNF, FFJTransform, FreeFormJacobianTransform

SMALL = {"hidden_features": (16, 16)}
# Loose tolerances where a test checks shapes, gradients or training, not accuracy.
FAST = {"hidden_features": (16, 16), "atol": 1e-4, "rtol": 1e-4}


def tight(dtype: torch.dtype) -> dict[str, float]:
    """Solver tolerances tight enough for the checks below, loose enough to stay fast."""
    return {"atol": 1e-7, "rtol": 1e-6} if dtype == torch.float64 else {"atol": 1e-6, "rtol": 1e-5}


def bound(dtype: torch.dtype) -> float:
    """What a solve at ``tight`` tolerances may be off by: a margin for accumulation."""
    atol, rtol = tight(dtype).values()
    return 100 * (atol + rtol * 3)


def test_ffj_transform_builds_a_free_form_jacobian_transform(dtype, device):
    lazy = FFJTransform(3, context=2, **SMALL, **tight(dtype)).to(dtype=dtype, device=device)
    c = torch.randn(2, dtype=dtype, device=device)

    transform = lazy(c)

    assert isinstance(transform, FreeFormJacobianTransform)
    assert transform.exact and transform.atol == tight(dtype)["atol"]
    names = {id(p) for p in lazy.parameters()}
    assert names <= {id(p) for p in transform.phi}


def test_ffj_transform_inverse_with_batched_context(dtype, device):
    torch.manual_seed(0)
    lazy = FFJTransform(3, context=2, **SMALL, **tight(dtype)).to(dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    x = torch.randn(5, 3, dtype=dtype, device=device)

    with torch.no_grad():
        y, ladj = lazy(c).call_and_ladj(x)
        x_back, inverse_ladj = lazy(c).inverse_and_ladj(y)
        x_via_lazy_inverse = lazy.inv(c)(y)

    torch.testing.assert_close(x_back, x, atol=bound(dtype), rtol=0)
    torch.testing.assert_close(x_via_lazy_inverse, x, atol=bound(dtype), rtol=0)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=bound(dtype), rtol=0)


def test_batched_context_equals_one_context_at_a_time(dtype, device):
    torch.manual_seed(1)
    lazy = FFJTransform(2, context=3, **SMALL, **tight(dtype)).to(dtype=dtype, device=device)
    c = torch.randn(4, 3, dtype=dtype, device=device)
    x = torch.randn(4, 2, dtype=dtype, device=device)

    with torch.no_grad():
        y, ladj = lazy(c).call_and_ladj(x)
        one_by_one = [lazy(ci).call_and_ladj(xi) for ci, xi in zip(c, x, strict=True)]

    torch.testing.assert_close(
        y, torch.stack([yi for yi, _ in one_by_one]), atol=bound(dtype), rtol=0
    )
    torch.testing.assert_close(
        ladj, torch.stack([li for _, li in one_by_one]), atol=bound(dtype), rtol=0
    )
    # The context matters: another context moves the points elsewhere.
    with torch.no_grad():
        assert (lazy(c.flip(0))(x) - y).abs().max() > 1e-3


def test_context_batch_broadcasts_the_input(dtype, device):
    lazy = FFJTransform(2, context=1, **FAST).to(dtype=dtype, device=device)
    c = torch.randn(6, 1, dtype=dtype, device=device)
    x = torch.randn(2, dtype=dtype, device=device)

    with torch.no_grad():
        y, ladj = lazy(c).call_and_ladj(x)

    assert y.shape == (6, 2) and ladj.shape == (6,)


def test_cnf_sample_and_log_prob_shapes(dtype, device):
    torch.manual_seed(2)
    flow = CNF(3, context=2, transforms=2, **FAST).to(dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)

    with torch.no_grad():
        x = flow(c).sample((4,))
        log_p = flow(c).log_prob(x)
        unconditional = CNF(3, **FAST).to(dtype=dtype, device=device)
        z = unconditional().sample((7,))

    assert x.shape == (4, 5, 3) and x.dtype == dtype
    assert log_p.shape == (4, 5) and torch.isfinite(log_p).all()
    assert z.shape == (7, 3) and unconditional().log_prob(z).shape == (7,)


def test_cnf_empty_batches_give_empty_results(dtype, device):
    # The solver's step-size control cannot run on an empty state: nothing is integrated.
    flow = CNF(3, context=2, **FAST).to(dtype=dtype, device=device)
    c = torch.randn(2, dtype=dtype, device=device)
    with torch.no_grad():
        x, log_q = flow(c).rsample_and_log_prob((0,))
    log_p = flow(c).log_prob(torch.randn(0, 3, dtype=dtype, device=device))
    assert x.shape == (0, 3) and log_q.shape == (0,) and log_p.shape == (0,)


def test_cnf_density_integrates_to_one(dtype, device):
    torch.manual_seed(3)
    flow = CNF(1, hidden_features=(8,), atol=1e-6, rtol=1e-5).to(dtype=dtype, device=device)
    grid = torch.linspace(-12.0, 12.0, 2001, dtype=dtype, device=device)

    with torch.no_grad():
        density = flow().log_prob(grid.unsqueeze(-1)).exp()

    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_cnf_log_prob_is_base_log_prob_plus_log_determinant(dtype, device):
    torch.manual_seed(4)
    flow = CNF(2, transforms=2, **SMALL, **tight(dtype)).to(dtype=dtype, device=device)
    x = torch.randn(8, 2, dtype=dtype, device=device)

    with torch.no_grad():
        z, ladj = flow.transform().call_and_ladj(x)
        log_p = flow().log_prob(x)

    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + ladj
    torch.testing.assert_close(log_p, expected, atol=bound(dtype), rtol=0)


def test_gradients_reach_every_parameter_and_the_context(dtype, device):
    torch.manual_seed(5)
    flow = CNF(2, context=3, transforms=2, **FAST).to(dtype=dtype, device=device)
    c = torch.randn(4, 3, dtype=dtype, device=device, requires_grad=True)
    x = torch.randn(4, 2, dtype=dtype, device=device)

    flow(c).log_prob(x).mean().backward()

    for name, parameter in flow.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
    assert c.grad is not None and torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0


def test_rsample_is_differentiable(dtype, device):
    torch.manual_seed(6)
    flow = CNF(2, **FAST).to(dtype=dtype, device=device)

    flow().rsample((8,)).square().sum().backward()

    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def mixture(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Two Gaussian blobs at (-2, 0) and (2, 0), standard deviation 0.5."""
    sign = torch.randint(0, 2, (n, 1), device=device).to(dtype) * 2 - 1
    centers = torch.cat((2 * sign, torch.zeros_like(sign)), dim=-1)
    return centers + 0.5 * torch.randn(n, 2, dtype=dtype, device=device)


def test_short_fit_lowers_nll_on_a_mixture(dtype, device):
    torch.manual_seed(7)
    flow = CNF(2, **FAST).to(dtype=dtype, device=device)
    held_out = mixture(512, dtype, device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-2)

    with torch.no_grad():
        before = -flow().log_prob(held_out).mean()
    for _ in range(20):
        loss = -flow().log_prob(mixture(64, dtype, device)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = -flow().log_prob(held_out).mean()

    assert torch.isfinite(after)
    assert after < before - 0.5, (before.item(), after.item())  # about 3.7 -> 2.8


def test_hutchinson_cnf_trains(dtype, device):
    torch.manual_seed(8)
    flow = CNF(2, exact=False, **FAST).to(dtype=dtype, device=device)
    x = mixture(64, dtype, device)

    loss = -flow().log_prob(x).mean()
    loss.backward()

    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def test_arguments_rebuild_the_same_architecture(dtype, device):
    flow = CNF(3, context=2, transforms=2, freqs=2, hidden_features=(8, 8), exact=False)
    assert flow.arguments == {
        "features": 3,
        "context": 2,
        "transforms": 2,
        "freqs": 2,
        "hidden_features": (8, 8),
        "exact": False,
    }

    rebuilt = type(flow)(**flow.arguments)
    rebuilt.load_state_dict(flow.state_dict())  # strict: the same parameters and buffers
    flow, rebuilt = flow.to(dtype=dtype, device=device), rebuilt.to(dtype=dtype, device=device)

    c = torch.randn(2, dtype=dtype, device=device)
    x = torch.randn(3, dtype=dtype, device=device)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = flow(c).log_prob(x)
        torch.manual_seed(0)
        assert torch.equal(rebuilt(c).log_prob(x), expected)


class Recorder(torch.nn.Module):
    """Stands in for the MLP: records what the vector field feeds it."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.inputs = inputs
        return inputs[..., :2]


def test_vector_field_reads_state_time_embedding_and_context():
    lazy = FFJTransform(2, context=1, freqs=4, hidden_features=(8,))
    lazy.ode = Recorder()
    x, c = torch.randn(3, 2), torch.randn(3, 1)

    lazy.f(torch.tensor(0.25), x, c)

    phases = torch.pi * 0.25 * torch.arange(1.0, 5.0)
    embedding = torch.cat((phases.cos(), phases.sin())).expand(3, 8)
    torch.testing.assert_close(lazy.ode.inputs, torch.cat((x, embedding, c), dim=-1))
    assert "frequencies" not in lazy.state_dict()  # derived from the arguments


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: FFJTransform(0),
            ValueError,
            "^FFJTransform: features must be an int >= 1, got 0$",
        ),
        (lambda: FFJTransform(2, context=-1), ValueError, "context must be an int >= 0, got -1$"),
        (lambda: FFJTransform(2, freqs=1.5), TypeError, "freqs must be an int >= 0, got 1.5$"),
        (lambda: FFJTransform(2, freqs=True), TypeError, "freqs must be an int >= 0, got True$"),
        (lambda: FFJTransform(2, atol=0), ValueError, "atol must be a positive number, got 0$"),
        (lambda: FFJTransform(2, rtol="1"), TypeError, "rtol must be a positive number, got '1'$"),
        (lambda: CNF(2, transforms=0), ValueError, "^CNF: transforms must be an int >= 1, got 0$"),
    ],
)
def test_bad_arguments_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_context_of_the_wrong_width_is_refused():
    lazy = FFJTransform(2, context=3, hidden_features=(8,))
    with pytest.raises(ValueError, match=r"c must be a tensor of shape \(\*, 3\) .* got \(5, 2\)"):
        lazy(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"c must be a tensor of shape \(\*, 3\) .* got NoneType"):
        lazy()


def test_context_without_context_features_is_refused():
    lazy = FFJTransform(2, hidden_features=(8,))
    with pytest.raises(ValueError, match=r"c must be None .* \(context=0\), got a Tensor"):
        lazy(torch.randn(3))
