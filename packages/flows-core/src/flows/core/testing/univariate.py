r"""The univariate contract: checks every univariate transform of flows must pass.

Third-party authors run it on their own transforms, in their own tests:

    >>> import torch
    >>> from flows.core.testing import check_univariate
    >>> from flows.core.transforms import MonotonicAffineTransform
    >>> check_univariate(MonotonicAffineTransform, [(), ()])
    >>> check_univariate("affine", dtype=torch.float32)

It imports only torch and flows.core.
"""

from __future__ import annotations

__all__ = ["check_univariate"]

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import constraints

from flows.core.layers.univariate import _from_rows
from flows.core.transforms.base import call_and_ladj, inverse_and_ladj

_DEFAULT_ATOL = {torch.float64: 1e-6, torch.float32: 1e-3}


class _Checker:
    """Runs named checks; a failure raises an AssertionError naming the check."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, check: str, detail: str) -> None:
        raise AssertionError(f"check_univariate({self.name}) failed the {check!r} check: {detail}")

    def close(self, check: str, actual: Tensor, expected: Tensor, tol: float) -> None:
        if actual.shape != expected.shape:
            self.fail(check, f"shape {tuple(actual.shape)} differs from {tuple(expected.shape)}")
        error = (actual - expected).abs() / (1 + expected.abs())
        error = torch.where(torch.isnan(error), torch.full_like(error, math.inf), error)
        worst = error.max().item() if error.numel() else 0.0
        if not worst <= tol:
            index = int(error.flatten().argmax())
            self.fail(
                check,
                f"largest relative error {worst:.3g} > tolerance {tol:.3g} "
                f"(got {actual.flatten()[index].item()!r}, "
                f"expected {expected.flatten()[index].item()!r})",
            )

    def finite(self, check: str, what: str, value: Tensor | None) -> None:
        if value is None:
            self.fail(check, f"{what} is None (no gradient reached it)")
            return
        if not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            self.fail(check, f"{what} has {count} non-finite value(s) out of {value.numel()}")


def _bounds(domain: constraints.Constraint) -> tuple[float, float]:
    """The bounds of a univariate domain, infinite where there are none."""
    while isinstance(domain, constraints.independent):
        domain = domain.base_constraint
    lower = getattr(domain, "lower_bound", -math.inf)
    upper = getattr(domain, "upper_bound", math.inf)
    if isinstance(lower, Tensor) or isinstance(upper, Tensor):
        raise TypeError(f"check_univariate needs a domain with scalar bounds, got {domain!r}")
    return float(lower), float(upper)


def _draw(
    bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """Points inside the domain: normal on the line, uniform inside an interval."""
    lower, upper = bounds
    if math.isinf(lower) and math.isinf(upper):
        return 2 * torch.randn(shape, generator=generator, dtype=torch.float64)
    if math.isinf(upper):
        return lower + torch.randn(shape, generator=generator, dtype=torch.float64).exp()
    if math.isinf(lower):
        return upper - torch.randn(shape, generator=generator, dtype=torch.float64).exp()
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return lower + (upper - lower) * (0.01 + 0.98 * u)


def _extremes(bounds: tuple[float, float], extreme: float, dtype: torch.dtype) -> Tensor:
    """Inputs at the edges: up to ``extreme`` on the line, near the ends of an interval."""
    lower, upper = bounds
    magnitudes = torch.logspace(0, math.log10(extreme), 9, dtype=torch.float64)
    if math.isinf(lower) and math.isinf(upper):
        return torch.cat([-magnitudes.flip(0), torch.zeros(1, dtype=torch.float64), magnitudes])
    if math.isinf(upper):
        return lower + torch.cat([1 / magnitudes, magnitudes])
    if math.isinf(lower):
        return upper - torch.cat([1 / magnitudes, magnitudes])
    gap = (upper - lower) * max(1e3 * torch.finfo(dtype).eps, 1e-6)
    return torch.tensor([lower + gap, (lower + upper) / 2, upper - gap], dtype=torch.float64)


def _resolve(
    transform: str | Callable[..., Any],
    shapes: Sequence[Sequence[int]] | None,
    hyper: dict[str, Any] | None,
) -> tuple[str, Callable[..., Any], list[tuple[int, ...]]]:
    hyper = dict(hyper or {})
    if isinstance(transform, str):
        from flows.core.plugins import transform_spec

        constructor, resolved = transform_spec(transform).spec.resolve(**hyper)
        return repr(transform), constructor, [tuple(s) for s in resolved]
    if not callable(transform):
        raise TypeError(
            f"transform must be a registered name or a constructor, got {type(transform).__name__}"
        )
    if shapes is None:
        raise TypeError(
            "shapes must be given with a constructor: the parameter shapes, e.g. [(), ()]"
        )
    name = getattr(transform, "__name__", repr(transform))
    if hyper:
        transform = functools.partial(transform, **hyper)
    return name, transform, [tuple(s) for s in shapes]


def check_univariate(
    transform: str | Callable[..., Any],
    shapes: Sequence[Sequence[int]] | None = None,
    *,
    hyper: dict[str, Any] | None = None,
    batch: tuple[int, ...] = (64,),
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    atol: float | None = None,
    iterative: bool = False,
    extreme: float = 1e4,
    param_scale: float = 1e3,
    seed: int = 0,
) -> None:
    r"""Check that a univariate (element-wise) transform honours the flows contract.

    With random parameters of the right shapes, it checks, each check named in the error:

    * ``shape``: :math:`y` and the log-determinant have the shape, dtype and device of :math:`x`;
    * ``call_and_ladj``: it agrees with ``t(x)`` and ``t.log_abs_det_jacobian(x, y)``;
    * ``inverse``: :math:`f^{-1}(f(x)) \approx x` and :math:`f(f^{-1}(y)) \approx y`;
    * ``inverse_and_ladj``: the inverse's log-determinant is minus the forward one;
    * ``ladj``: the log-determinant matches :math:`\log |dy/dx|` from autograd;
    * ``extreme``: outputs, log-determinants, inverses and gradients stay finite at inputs up
      to ``extreme`` in magnitude (near the ends of a bounded domain) with parameters scaled
      by up to ``param_scale``;
    * ``gradients``: gradients reach every parameter tensor, finite;
    * ``from_rows``: for a constructor that also takes its parameters as one block laid out
      parameters first (a ``from_rows`` class method, see
      :meth:`~flows.core.layers.univariate.UnivariateLayout.build_parameters_first`), the
      block gives the same values, inverse and gradients as the separate tensors.

    Tolerances are relative, :math:`|a - b| \leq \text{atol} (1 + |b|)`, with ``atol``
    :math:`10^{-6}` in float64 and :math:`10^{-3}` in float32 by default, ten times looser
    for an ``iterative`` inverse (bisection, fixed-point).

    Arguments:
        transform: A registered transform name (``"affine"``), resolved with ``hyper``, or a
            constructor taking the parameter tensors positionally.
        shapes: The parameter shapes, with a constructor (``[(8,), (8,), (7,)]``).
        hyper: Hyper-parameters: of the registered name (``{"bins": 4}``), or keyword
            arguments of the constructor.
        batch: The batch shape of the inputs and parameters.
        dtype: The floating point type.
        device: The device.
        atol: The tolerance; ``None`` for the default of ``dtype``.
        iterative: Whether the inverse is iterative (looser tolerance).
        extreme: The largest input magnitude of the ``extreme`` check.
        param_scale: The largest parameter scale of the ``extreme`` check.
        seed: The seed of the random inputs and parameters (the global RNG is untouched).

    Raises:
        AssertionError: A check failed; the message names it and shows the worst value.
    """
    name, constructor, param_shapes = _resolve(transform, shapes, hyper)
    device = torch.device(device)
    tol = atol if atol is not None else _DEFAULT_ATOL.get(dtype, 1e-2)
    if iterative:
        tol = 10 * tol
    checker = _Checker(name)
    generator = torch.Generator().manual_seed(seed)

    def parameters(scale: float) -> list[Tensor]:
        return [
            (scale * torch.randn((*batch, *shape), generator=generator, dtype=torch.float64))
            .to(dtype=dtype, device=device)
            .requires_grad_()
            for shape in param_shapes
        ]

    params = parameters(1.0)
    t = constructor(*params)
    domain, codomain = _bounds(t.domain), _bounds(t.codomain)
    x = _draw(domain, batch, generator).to(dtype=dtype, device=device).requires_grad_()

    # shape, dtype, device
    y, ladj = call_and_ladj(t, x)
    for what, value in (("y", y), ("ladj", ladj)):
        if value.shape != x.shape:
            checker.fail("shape", f"{what} has shape {tuple(value.shape)}, x has {tuple(x.shape)}")
        if value.dtype != dtype or value.device.type != device.type:
            checker.fail(
                "shape", f"{what} is {value.dtype} on {value.device}, x is {dtype} on {device}"
            )

    # call_and_ladj against the separate calls
    checker.close("call_and_ladj", y, t(x), tol)
    checker.close("call_and_ladj", ladj, t.log_abs_det_jacobian(x, y), tol)

    # inverse both ways
    checker.close("inverse", t.inv(y), x, tol)
    y_drawn = _draw(codomain, batch, generator).to(dtype=dtype, device=device)
    checker.close("inverse", t(t.inv(y_drawn)), y_drawn, tol)

    # inverse_and_ladj
    x_back, ladj_back = inverse_and_ladj(t, y)
    checker.close("inverse_and_ladj", x_back, x, tol)
    checker.close("inverse_and_ladj", ladj_back, -ladj, tol)
    x_inv, ladj_inv = call_and_ladj(t.inv, y)
    checker.close("inverse_and_ladj", x_inv, x, tol)
    checker.close("inverse_and_ladj", ladj_inv, -ladj, tol)

    # ladj against autograd: the Jacobian of an element-wise map is diagonal
    (dy_dx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    checker.close("ladj", ladj, dy_dx.abs().log(), 10 * tol)

    # gradients reach every parameter
    grads = torch.autograd.grad(y.sum() + ladj.sum(), params, allow_unused=True) if params else ()
    for i, grad in enumerate(grads):
        checker.finite("gradients", f"the gradient of parameter {i}", grad)
        if not (grad != 0).any():
            checker.fail("gradients", f"the gradient of parameter {i} is zero everywhere")

    from_rows = _from_rows(constructor)
    if from_rows is not None:
        _check_from_rows(checker, from_rows, params, param_shapes, batch, x, y, ladj, grads, tol)

    # extreme inputs and parameters
    points = _extremes(domain, extreme, dtype)
    for scale in (1.0, math.sqrt(param_scale), param_scale):
        params = parameters(scale)
        t = constructor(*params)
        x_ext = points.reshape(-1, *(1,) * len(batch)).expand(-1, *batch)
        x_ext = x_ext.to(dtype=dtype, device=device).requires_grad_()
        y_ext, ladj_ext = call_and_ladj(t, x_ext)
        where = f"(parameter scale {scale:g})"
        checker.finite("extreme", f"y {where}", y_ext)
        checker.finite("extreme", f"ladj {where}", ladj_ext)
        x_round, _ = inverse_and_ladj(t, y_ext.detach())
        checker.finite("extreme", f"the inverse {where}", x_round)
        grads = torch.autograd.grad(
            y_ext.sum() + ladj_ext.sum(), [x_ext, *params], allow_unused=True
        )
        checker.finite("extreme", f"the gradient of x {where}", grads[0])
        for i, grad in enumerate(grads[1:]):
            if grad is not None:
                checker.finite("extreme", f"the gradient of parameter {i} {where}", grad)


def _check_from_rows(
    checker: _Checker,
    from_rows: Callable[..., Any],
    params: list[Tensor],
    shapes: list[tuple[int, ...]],
    batch: tuple[int, ...],
    x: Tensor,
    y: Tensor,
    ladj: Tensor,
    grads: Sequence[Tensor | None],
    tol: float,
) -> None:
    """The ``from_rows`` check: one feature, the batch as the samples of the block."""
    samples = math.prod(batch)
    flat = [
        p.detach().reshape(samples, math.prod(shape))
        for p, shape in zip(params, shapes, strict=True)
    ]
    rows = torch.cat(flat, dim=-1).T.unsqueeze(1).contiguous().requires_grad_()
    t = from_rows(rows, batch)
    y_rows, ladj_rows = call_and_ladj(t, x.detach().unsqueeze(-1))
    checker.close("from_rows", y_rows.squeeze(-1), y, tol)
    checker.close("from_rows", ladj_rows.squeeze(-1), ladj, tol)
    x_rows, _ = inverse_and_ladj(t, y.detach().unsqueeze(-1))
    checker.close("from_rows", x_rows.squeeze(-1), x, tol)
    (grad_rows,) = torch.autograd.grad(y_rows.sum() + ladj_rows.sum(), rows)
    expected = [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
    ]
    expected_rows = torch.cat([g.reshape(samples, -1) for g in expected], dim=-1).T
    checker.close("from_rows", grad_rows.squeeze(1), expected_rows, tol)
