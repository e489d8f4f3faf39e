"""flows-ode's registry entry: the ``cnf`` preset.

Like every hook module, this one imports no torch: the constructor is named by import path.
"""

from __future__ import annotations

from flows.core.plugins import PresetSpec, hookimpl

__all__ = ["flows_register_presets"]


@hookimpl
def flows_register_presets() -> list[PresetSpec]:
    return [
        PresetSpec(
            name="cnf",
            constructor="flows.ode.presets:CNF",
            summary="Continuous normalizing flow (free-form Jacobian, ODE)",
        ),
    ]
