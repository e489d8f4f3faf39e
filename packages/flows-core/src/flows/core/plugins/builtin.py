"""flows-core's own transforms and presets, registered through the same hooks as any plugin.

Like every hook module, this one imports no torch: constructors are named by import path.
"""

from __future__ import annotations

from flows.core.plugins.hookspecs import hookimpl
from flows.core.plugins.specs import PresetSpec, TransformSpec


def _two_scalars() -> list[tuple[int, ...]]:
    return [(), ()]


def _one_scalar() -> list[tuple[int, ...]]:
    return [()]


@hookimpl
def flows_register_transforms() -> list[TransformSpec]:
    return [
        TransformSpec(
            name="affine",
            constructor="flows.core.transforms:MonotonicAffineTransform",
            shapes=_two_scalars,
            summary="Monotonic affine map y = x exp(a) + b, log-scale a soft-bounded",
            options={"slope": 1e-3},
        ),
        TransformSpec(
            name="additive",
            constructor="flows.core.transforms:AdditiveTransform",
            shapes=_one_scalar,
            summary="Shift y = x + b (volume preserving)",
        ),
    ]


@hookimpl
def flows_register_presets() -> list[PresetSpec]:
    return [
        PresetSpec("maf", "flows.core.presets:MAF", "Masked autoregressive flow", ("affine",)),
        PresetSpec("nice", "flows.core.presets:NICE", "Additive coupling flow", ("additive",)),
        PresetSpec("realnvp", "flows.core.presets:RealNVP", "Affine coupling flow", ("affine",)),
        PresetSpec("gmm", "flows.core.presets:GMM", "Gaussian mixture model"),
        PresetSpec("gf", "flows.core.presets:GF", "Gaussianization flow"),
        PresetSpec(
            "iaf",
            "flows.core.presets:IAF",
            "Inverse autoregressive flow: one-pass sampling with log q, for VI",
            ("affine",),
        ),
        PresetSpec(
            "planar",
            "flows.core.presets:Planar",
            "Planar flow for VI: one-pass sampling with log q, log_prob by root solves",
            inverse="numerical",
        ),
        PresetSpec(
            "radial",
            "flows.core.presets:Radial",
            "Radial flow for VI: one-pass sampling with log q, closed-form inverse",
        ),
        PresetSpec(
            "sylvester",
            "flows.core.presets:Sylvester",
            "Sylvester flow for VI: one-pass sampling with log q, log_prob by root solves",
            inverse="numerical",
        ),
    ]
