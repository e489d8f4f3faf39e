"""flows-splines' transforms and presets, registered with the flows plugin registry.

Like every hook module, this one imports no torch: constructors are named by import path.
"""

from __future__ import annotations

__all__ = ["flows_register_presets", "flows_register_transforms"]

from flows.core.plugins import PresetSpec, TransformSpec, hookimpl
from flows.core.validation import check_count


def _rqs_shapes(bins: int = 8) -> list[tuple[int, ...]]:
    bins = check_count("bins", bins, owner="rqs")
    return [(bins,), (bins,), (bins - 1,)]


def _circular_shapes(bins: int = 8) -> list[tuple[int, ...]]:
    bins = check_count("bins", bins, owner="circular-rqs")
    return [(bins,), (bins,), (bins,)]


def _sos_shapes(degree: int = 3, polynomials: int = 2) -> list[tuple[int, ...]]:
    degree = check_count("degree", degree, minimum=0, owner="sos")
    polynomials = check_count("polynomials", polynomials, owner="sos")
    return [(polynomials, degree + 1), ()]


def _bernstein_shapes(degree: int = 16) -> list[tuple[int, ...]]:
    return [(check_count("degree", degree, owner="bernstein") + 1,)]


def _bounded_bernstein_shapes(degree: int = 16) -> list[tuple[int, ...]]:
    return [(check_count("degree", degree, minimum=3, owner="bounded-bernstein") - 2,)]


def _network_shapes(units: int = 8) -> list[tuple[int, ...]]:
    units = check_count("units", units, owner="monotonic")
    return [(units,), (units,), (units,)]


def _integrated_network_shapes(units: int = 8) -> list[tuple[int, ...]]:
    units = check_count("units", units, owner="umnn")
    return [(units,), (units,), (units,), ()]


@hookimpl
def flows_register_transforms() -> list[TransformSpec]:
    return [
        TransformSpec(
            name="rqs",
            constructor="flows.splines.rqs:MonotonicRQSTransform",
            shapes=_rqs_shapes,
            summary="Monotonic rational-quadratic spline on [-bound, bound], identity outside",
            shape_defaults={"bins": 8},
            options={"bound": 5.0, "slope": 1e-3},
        ),
        TransformSpec(
            name="circular-rqs",
            constructor="flows.splines.circular:CircularRQSTransform",
            shapes=_circular_shapes,
            summary="Circular rational-quadratic spline on [-pi, pi], 2pi-periodic equivariant",
            shape_defaults={"bins": 8},
            options={"slope": 1e-3},
            domain="circle",
        ),
        TransformSpec(
            name="monotonic",
            constructor="flows.splines.neural:MonotonicNetworkTransform",
            shapes=_network_shapes,
            summary="Monotonic network (sum of increasing tanh units) per feature, linear outside",
            shape_defaults={"units": 8},
            options={"bound": 5.0, "slope": 1e-3, "eps": 1e-6},
        ),
        TransformSpec(
            name="umnn",
            constructor="flows.splines.neural:IntegratedPositiveNetworkTransform",
            shapes=_integrated_network_shapes,
            summary="Integral of a positive network per feature (quadrature), linear outside",
            shape_defaults={"units": 8},
            options={"bound": 5.0, "slope": 1e-3, "eps": 1e-6, "nodes": 16},
        ),
        TransformSpec(
            name="sos",
            constructor="flows.splines.sos:SOSPolynomialTransform",
            shapes=_sos_shapes,
            summary="Sum-of-squares polynomial on [-bound, bound], linear outside",
            shape_defaults={"degree": 3, "polynomials": 2},
            options={"bound": 5.0, "slope": 1e-3, "eps": 1e-6},
        ),
        TransformSpec(
            name="bernstein",
            constructor="flows.splines.bernstein:BernsteinTransform",
            shapes=_bernstein_shapes,
            summary="Bernstein polynomial with increasing coefficients, linear outside the bound",
            shape_defaults={"degree": 16},
            options={"bound": 5.0, "slope": 1e-3, "eps": 1e-6},
        ),
        TransformSpec(
            name="bounded-bernstein",
            constructor="flows.splines.bernstein:BoundedBernsteinTransform",
            shapes=_bounded_bernstein_shapes,
            summary="Bernstein polynomial onto [-bound, bound], identity outside",
            shape_defaults={"degree": 16},
            options={"bound": 5.0, "slope": 1e-3, "eps": 1e-6},
        ),
    ]


@hookimpl
def flows_register_presets() -> list[PresetSpec]:
    return [
        PresetSpec("nsf", "flows.splines.presets:NSF", "Neural spline flow", ("rqs",)),
        PresetSpec(
            "ncsf", "flows.splines.presets:NCSF", "Neural circular spline flow", ("circular-rqs",)
        ),
        # Sampling these bisects within a tolerance: a numerical inverse.
        PresetSpec(
            "naf", "flows.splines.presets:NAF", "Neural autoregressive flow", inverse="numerical"
        ),
        PresetSpec(
            "unaf",
            "flows.splines.presets:UNAF",
            "Unconstrained neural autoregressive flow",
            inverse="numerical",
        ),
        PresetSpec(
            "sospf",
            "flows.splines.presets:SOSPF",
            "Sum-of-squares polynomial flow",
            ("sos",),
            inverse="numerical",
        ),
        PresetSpec(
            "bpf",
            "flows.splines.presets:BPF",
            "Bernstein polynomial flow",
            ("bernstein",),
            inverse="numerical",
        ),
    ]
