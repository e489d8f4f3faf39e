"""flows-image's registry entry: the ``glow`` and ``realnvp-image`` presets.

Like every hook module, this one imports no torch: the constructors are named by import path.
"""

from __future__ import annotations

from flows.core.plugins import PresetSpec, hookimpl

__all__ = ["flows_register_presets"]


@hookimpl
def flows_register_presets() -> list[PresetSpec]:
    return [
        PresetSpec(
            name="glow",
            constructor="flows.image.presets:Glow",
            summary="Glow: multi-scale image flow (actnorm, invertible 1x1 conv, coupling)",
        ),
        PresetSpec(
            name="realnvp-image",
            constructor="flows.image.presets:RealNVPImage",
            summary="RealNVP for images: checkerboard and channel couplings, multi-scale",
        ),
    ]
