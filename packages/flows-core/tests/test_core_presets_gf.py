"""GF: Gaussianization layers alternated with rotations."""

from __future__ import annotations

import torch

from flows.core.layers import ElementWiseTransform
from flows.core.lazy import UnconditionalTransform
from flows.core.presets import GF
from flows.core.transforms import RotationTransform


def test_layers_alternate_gaussianization_and_rotation():
    flow = GF(3, transforms=3, components=5)
    kinds = [type(t) for t in flow.transform.transforms]
    assert kinds == [
        ElementWiseTransform,
        UnconditionalTransform,
        ElementWiseTransform,
        UnconditionalTransform,
        ElementWiseTransform,
    ]
    assert isinstance(flow.transform.transforms[1](), RotationTransform)
    assert flow.transform.transforms[0].phi.shape == (3, 10)


def test_components_start_spread_out():
    torch.manual_seed(0)
    flow = GF(2, transforms=1, components=6)
    shifts = flow.transform.transforms[0].phi[:, :6]
    assert (shifts.std(dim=1) > 0.3).all()


def test_conditional_gf_depends_on_context():
    flow = GF(2, 3, transforms=2, components=3, hidden_features=[8])
    x = torch.randn(2)
    c1, c2 = torch.randn(2, 3)
    assert flow(c1).log_prob(x) != flow(c2).log_prob(x)
