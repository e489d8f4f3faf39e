r"""The free-form Jacobian transform: a bijection defined by an ordinary differential equation.

The transform maps :math:`x = x(t_0)` to :math:`y = x(t_1)`, the solution at :math:`t_1` of

.. math:: \frac{dx(t)}{dt} = f_\phi(t, x(t)),

and its log-determinant follows the instantaneous change of variables

.. math:: \log \left| \det \frac{\partial y}{\partial x} \right|
    = \int_{t_0}^{t_1} \operatorname{tr} \left( \frac{\partial f_\phi(t, x(t))}{\partial x(t)}
    \right) dt .

Both are integrated together, in one adaptive solve (Dormand-Prince, ``dopri5``) of
torchdiffeq; gradients come from the adjoint method, which integrates backwards instead of
storing the solver's steps. When the solver's step size underflows (inputs far outside the
range a flow was trained on, or diverged weights), :class:`SolverUnderflowError` says which.

References:
    | Neural Ordinary Differential Equations (Chen et al., 2018)
    | https://arxiv.org/abs/1806.07366

    | FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models
      (Grathwohl et al., 2018)
    | https://arxiv.org/abs/1810.01367
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Size, Tensor
from torch.distributions import constraints
from torchdiffeq import odeint_adjoint

from flows.core.transforms.base import Transform

__all__ = [
    "FreeFormJacobianTransform",
    "SolverUnderflowError",
    "trace_exact",
    "trace_hutchinson",
]

#: The noise distributions of the Hutchinson trace estimator.
NOISES = ("rademacher", "gaussian")


#: Inputs or weights at least this large are named as the likely cause of an underflow.
_LARGE = 1e3


class SolverUnderflowError(RuntimeError, FloatingPointError):
    r"""The adaptive ODE solver's step size underflowed: the dynamics cannot be integrated.

    The solver shrinks its step until the local error is within tolerance; when even a step
    too small to move the time is not enough, it gives up. For a trained flow this means its
    input is far outside the range it was trained on, or its weights diverged (they hold NaN or
    inf, or huge values); the message says which it looks like. It is a
    :class:`FloatingPointError` too, which :func:`flows.core.training.fit` reports as a
    diverged fit when it happens after the first step.

    Example:
        >>> t = FreeFormJacobianTransform(lambda t, x: -x, t0=0.0, t1=1.0)
        >>> try:
        ...     t(torch.tensor([float("nan")]))
        ... except SolverUnderflowError as error:
        ...     print(str(error).replace(": ", ":\n"))
        the ODE solver's step size underflowed to zero while integrating:
        the input holds NaN or inf
    """


def _underflow(x: Tensor, phi: tuple[Tensor, ...], where: str) -> SolverUnderflowError:
    """The error for an underflow while integrating from ``x``, its likely cause named."""
    x = x.detach()
    weights = [p.detach() for p in phi if p.is_floating_point() and p.numel() > 0]
    if not all(bool(torch.isfinite(w).all()) for w in weights):
        cause = "the weights (or context) hold NaN or inf, likely from a diverged fit"
    elif not bool(torch.isfinite(x).all()):
        cause = "the input holds NaN or inf"
    else:
        largest_x = float(x.abs().max()) if x.numel() > 0 else 0.0
        largest_w = max((float(w.abs().max()) for w in weights), default=0.0)
        sizes = f"largest |x| = {largest_x:.3g}, largest |weight| = {largest_w:.3g}"
        if largest_x >= _LARGE and largest_x >= largest_w:
            cause = f"the input is likely far outside the range the flow was trained on ({sizes})"
        elif largest_w >= _LARGE:
            cause = f"the weights likely diverged ({sizes})"
        else:
            cause = (
                "the usual causes are inputs far outside the range the flow was trained on "
                f"and diverged weights ({sizes})"
            )
    return SolverUnderflowError(f"the ODE solver's step size underflowed to zero {where}: {cause}")


def trace_exact(dx: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    r"""The trace of the Jacobian :math:`\partial\, dx / \partial x`, one per batch element.

    The Jacobian's rows come from one batch of vector-Jacobian products, one product per
    feature, so the cost is that of :math:`D` backward passes run as one vectorized pass. Batch
    elements must be independent (``dx[i]`` depends on ``x[i]`` only).

    Arguments:
        dx: The output, of shape :math:`(*, D)`, computed from ``x`` with autograd recording.
        x: The input, of shape :math:`(*, D)`.
        create_graph: Whether the trace itself must be differentiable.

    Returns:
        The traces, of shape :math:`(*)`.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> trace_exact(x**2, x, create_graph=False)
        tensor([6.])
    """
    features = x.shape[-1]
    eye = torch.eye(features, dtype=x.dtype, device=x.device)
    basis = eye.reshape(features, *(1,) * (x.dim() - 1), features).expand(features, *x.shape)
    (rows,) = torch.autograd.grad(
        dx, x, basis, create_graph=create_graph, is_grads_batched=True, allow_unused=True
    )
    if rows is None:  # dx does not depend on x
        return x.new_zeros(x.shape[:-1])
    # rows[i, ..., j] = d dx_i / d x_j: the trace is the sum of its diagonal over (i, j).
    return torch.diagonal(rows, dim1=0, dim2=-1).sum(dim=-1)


def trace_hutchinson(dx: Tensor, x: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
    r"""Hutchinson's unbiased estimate :math:`\epsilon^T (\partial\, dx / \partial x) \epsilon`.

    With :math:`\mathbb{E}[\epsilon \epsilon^T] = I` (Rademacher or standard Gaussian noise),
    the estimate's expectation is the trace, at the cost of one backward pass.

    Arguments:
        dx: The output, of shape :math:`(*, D)`, computed from ``x`` with autograd recording.
        x: The input, of shape :math:`(*, D)`.
        noise: The noise :math:`\epsilon`, of shape :math:`(*, D)`.
        create_graph: Whether the estimate itself must be differentiable.

    Returns:
        The estimates, of shape :math:`(*)`.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> trace_hutchinson(x**2, x, torch.tensor([[1.0, -1.0]]), create_graph=False)
        tensor([6.])
    """
    (product,) = torch.autograd.grad(
        dx, x, noise, create_graph=create_graph, allow_unused=True
    )  # epsilon^T J
    if product is None:  # dx does not depend on x
        return x.new_zeros(x.shape[:-1])
    return (product * noise).sum(dim=-1)


class FreeFormJacobianTransform(Transform):
    r"""The transform :math:`y = x(t_1)` with :math:`x(t_0) = x` and :math:`dx/dt = f(t, x)`.

    The log-determinant :math:`\int_{t_0}^{t_1} \operatorname{tr}(\partial f / \partial x)\, dt`
    is integrated with the state, either exactly (one vector-Jacobian product per feature,
    vectorized) or with Hutchinson's unbiased estimator (one product, the same noise
    :math:`\epsilon` throughout one solve). The inverse integrates from :math:`t_1` back to
    :math:`t_0`. Gradients flow by the adjoint method to the input and to the tensors ``phi``:
    pass there every tensor ``f`` depends on that needs a gradient (a module's parameters and
    any context it closes over).

    The vector field must treat batch elements independently: ``f(t, x)[i]`` may depend on
    ``x[i]`` only.

    Arguments:
        f: The vector field :math:`f(t, x)`, taking a scalar time tensor and :math:`x` of shape
            :math:`(*, D)`, returning a tensor of the same shape.
        t0: The initial time :math:`t_0`.
        t1: The final time :math:`t_1 \neq t_0`.
        phi: The tensors :math:`\phi` that ``f`` depends on, for the adjoint method.
        atol: The absolute tolerance of the adaptive solver.
        rtol: The relative tolerance of the adaptive solver.
        exact: Whether the trace is exact or a Hutchinson estimate.
        noise: The noise of the Hutchinson estimate, ``"rademacher"`` or ``"gaussian"``.
        batch_shape: A batch shape inputs are broadcast to before solving (for example that of
            a context ``f`` closes over), so that the state has the shape ``f`` returns.

    Example:
        >>> t = FreeFormJacobianTransform(lambda t, x: -x, t0=0.0, t1=1.0)
        >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 2.0]))
        >>> y  # x exp(-1)
        tensor([0.3679, 0.7358])
        >>> ladj  # -2
        tensor(-2.)
        >>> t.inv(y)
        tensor([1.0000, 2.0000])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1  # the flow of an ODE preserves orientation

    def __init__(
        self,
        f: Callable[[Tensor, Tensor], Tensor],
        t0: float = 0.0,
        t1: float = 1.0,
        phi: Iterable[Tensor] = (),
        atol: float = 1e-6,
        rtol: float = 1e-5,
        exact: bool = True,
        *,
        noise: str = "rademacher",
        batch_shape: Iterable[int] = (),
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be a callable f(t, x), got {type(f).__name__}")
        for name, value in (("t0", t0), ("t1", t1)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"{name} must be a real number, got {value!r}")
        if t0 == t1:
            raise ValueError(f"t1 must differ from t0, got t0 = t1 = {t0!r}")
        for name, value in (("atol", atol), ("rtol", rtol)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(map(repr, NOISES))}, got {noise!r}")
        phi = tuple(phi)
        for i, tensor in enumerate(phi):
            if not isinstance(tensor, Tensor):
                raise TypeError(f"phi[{i}] must be a tensor, got {type(tensor).__name__}")

        self.f = f
        self.t0 = float(t0)
        self.t1 = float(t1)
        self.phi = phi
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.exact = bool(exact)
        self.noise = noise
        self.batch_shape = Size(batch_shape)

    def _times(self, x: Tensor, forward: bool) -> Tensor:
        times = (self.t0, self.t1) if forward else (self.t1, self.t0)
        return torch.tensor(times, dtype=x.dtype, device=x.device)

    def _broadcast(self, x: Tensor) -> Tensor:
        if x.dim() < 1:
            raise ValueError(
                f"x must have at least one dimension (the features), got shape {tuple(x.shape)}"
            )
        batch = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        return x.expand(*batch, x.shape[-1])

    def _solve(self, func: Callable[..., Any], state: Any, times: Tensor) -> Any:
        """Integrate ``func`` (a function of ours, which this annotates) from ``state``."""
        states = state if isinstance(state, tuple) else (state,)
        if states[0].numel() == 0:
            # Nothing moves (and the solver's step-size control fails on an empty state).
            path = tuple(s.expand(len(times), *s.shape) for s in states)
            return path if isinstance(state, tuple) else path[0]
        x, phi = states[0], self.phi

        def check_step(t0: Tensor, y0: Any, dt: Tensor) -> None:
            # torchdiffeq calls this before each step of the adjoint's backward solve, just
            # before it would assert the same thing (its time runs negated when decreasing).
            if bool(t0 + dt == t0) and bool(t0 - dt == t0):
                raise _underflow(x, phi, "while computing gradients (the adjoint solve)")

        func.callback_step_adjoint = check_step  # type: ignore[attr-defined]
        try:
            # The seminorm leaves the parameters' adjoints out of the backward solve's error
            # control: they never feed back into the dynamics, and controlling them only adds
            # steps.
            return odeint_adjoint(
                func,
                state,
                times,
                rtol=self.rtol,
                atol=self.atol,
                method="dopri5",
                adjoint_params=phi,
                adjoint_options={"norm": "seminorm"},
            )
        except AssertionError as error:
            if not str(error).startswith("underflow in dt"):
                raise
            raise _underflow(x, phi, "while integrating") from None

    def _integrate(self, x: Tensor, forward: bool) -> Tensor:
        x = self._broadcast(x)
        f = self.f  # wrapped: the caller's function is not ours to annotate
        return self._solve(lambda t, x: f(t, x), x, self._times(x, forward))[-1]

    def _integrate_with_ladj(self, x: Tensor, forward: bool) -> tuple[Tensor, Tensor]:
        x = self._broadcast(x)
        if self.exact:
            epsilon = None
        elif self.noise == "rademacher":
            epsilon = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        else:
            epsilon = torch.randn_like(x)
        f = self.f

        def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            # During the forward solve gradients are off; the adjoint's backward solve turns
            # them on and differentiates through the trace, which then needs its own graph.
            create_graph = torch.is_grad_enabled()
            x = state[0]
            with torch.enable_grad():
                if not x.requires_grad:
                    x = x.detach().requires_grad_()
                dx = f(t, x)
                if not dx.requires_grad:  # f ignores x and has no parameters
                    trace = x.new_zeros(x.shape[:-1])
                elif epsilon is None:
                    trace = trace_exact(dx, x, create_graph)
                else:
                    trace = trace_hutchinson(dx, x, epsilon, create_graph)
            if not create_graph:
                dx, trace = dx.detach(), trace.detach()
            return dx, trace

        ladj = x.new_zeros(x.shape[:-1])
        xs, ladjs = self._solve(dynamics, (x, ladj), self._times(x, forward))
        return xs[-1], ladjs[-1]

    def _call(self, x: Tensor) -> Tensor:
        return self._integrate(x, forward=True)

    def _inverse(self, y: Tensor) -> Tensor:
        return self._integrate(y, forward=False)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._integrate_with_ladj(x, forward=True)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._integrate_with_ladj(y, forward=False)

    def __repr__(self) -> str:
        trace = "exact" if self.exact else f"hutchinson-{self.noise}"
        return (
            f"{type(self).__name__}(t0={self.t0}, t1={self.t1}, atol={self.atol}, "
            f"rtol={self.rtol}, trace={trace})"
        )
