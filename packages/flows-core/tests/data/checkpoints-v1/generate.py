"""Write the version-1 checkpoints that the tests load: one small file per preset.

The files freeze what ``flows.core.save`` wrote before presets recorded their arguments through
:class:`flows.core.presets.Preset` (commit b33c621), so that later code is tested against them.
Each file's ``extra`` holds the constructor call that built the flow (``call``), inputs ``x``
and ``c`` in float64, and the ``log_prob`` that code gave for them, in float64, from the saved
float32 weights. Run it with that code first on the path, e.g.::

    PYTHONPATH=<old>/packages/flows-nn/src:<old>/packages/flows-core/src:\
<old>/packages/flows-splines/src:<old>/packages/flows-ode/src python generate.py

It writes the core presets here and the others into ``tests/data/checkpoints-v1`` of
flows-splines and flows-ode, whose tests load them (core's isolated session has neither).
"""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from typing import Any

import torch

from flows.core import save

HERE = Path(__file__).resolve().parent
PACKAGES = HERE.parents[3]

# name: (package, class path, positional arguments, keyword arguments, context features)
CALLS: dict[str, tuple[str, str, tuple[Any, ...], dict[str, Any], int]] = {
    "maf": (
        "flows-core",
        "flows.core.presets:MAF",
        (3, 2),
        {"transforms": 2, "randperm": True, "hidden_features": [8, 8]},
        2,
    ),
    "nice": (
        "flows-core",
        "flows.core.presets:NICE",
        (4,),
        {"transforms": 2, "randmask": True, "hidden_features": (8,)},
        0,
    ),
    "realnvp": (
        "flows-core",
        "flows.core.presets:RealNVP",
        (),
        {"features": 3, "context": 1, "transforms": 2, "hidden_features": [8]},
        1,
    ),
    "gmm": (
        "flows-core",
        "flows.core.presets:GMM",
        (2, 1),
        {"components": 2, "covariance_type": "tied", "hidden_features": [8]},
        1,
    ),
    "gf": ("flows-core", "flows.core.presets:GF", (2,), {"transforms": 2, "components": 3}, 0),
    "nsf": (
        "flows-splines",
        "flows.splines.presets:NSF",
        (3,),
        {"context": 2, "transforms": 2, "bins": 4, "passes": 2, "hidden_features": [8]},
        2,
    ),
    "ncsf": (
        "flows-splines",
        "flows.splines.presets:NCSF",
        (2,),
        {"transforms": 2, "bins": 4, "randperm": True, "hidden_features": (8,)},
        0,
    ),
    "naf": (
        "flows-splines",
        "flows.splines.presets:NAF",
        (2,),
        {
            "transforms": 2,
            "signal": 4,
            "network": {"hidden_features": (8,)},
            "hidden_features": [8],
        },
        0,
    ),
    "unaf": (
        "flows-splines",
        "flows.splines.presets:UNAF",
        (2, 1),
        {
            "transforms": 2,
            "signal": 3,
            "network": {"hidden_features": [8]},
            "hidden_features": (8,),
        },
        1,
    ),
    "sospf": (
        "flows-splines",
        "flows.splines.presets:SOSPF",
        (2,),
        {"transforms": 2, "degree": 2, "polynomials": 2, "hidden_features": [8]},
        0,
    ),
    "bpf": (
        "flows-splines",
        "flows.splines.presets:BPF",
        (2,),
        {"transforms": 2, "degree": 5, "bound": 4.0, "hidden_features": [8]},
        0,
    ),
    "cnf": (
        "flows-ode",
        "flows.ode.presets:CNF",
        (2,),
        {"context": 1, "freqs": 2, "hidden_features": (8,)},
        1,
    ),
}


def main() -> None:
    for seed, (name, (package, path, args, kwargs, context)) in enumerate(CALLS.items()):
        module, attribute = path.split(":")
        constructor = getattr(importlib.import_module(module), attribute)
        torch.manual_seed(seed)
        flow = constructor(*args, **copy.deepcopy(kwargs))
        with torch.no_grad():  # away from the near-identity start, so the weights matter
            for p in flow.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        features = flow.arguments["features"]
        if name == "ncsf":  # on the torus
            x = (torch.rand(4, features, dtype=torch.float64) * 2 - 1) * (math.pi - 0.1)
        else:
            x = torch.randn(4, features, dtype=torch.float64)
        c = torch.randn(4, context, dtype=torch.float64) if context else None
        probe = copy.deepcopy(flow).double()
        log_prob = (probe() if c is None else probe(c)).log_prob(x).detach()
        assert torch.isfinite(log_prob).all(), (name, log_prob)
        folder = PACKAGES / package / "tests" / "data" / "checkpoints-v1"
        extra = {
            "call": {"args": args, "kwargs": kwargs},
            "x": x,
            "c": c,
            "log_prob": log_prob,
        }
        save(flow, folder / f"{name}.ckpt", extra=extra)
        print(name, flow.arguments, log_prob.tolist())


if __name__ == "__main__":
    main()
