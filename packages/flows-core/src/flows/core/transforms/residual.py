r"""Residual transforms of variational inference: planar, radial and Sylvester maps.

Each maps :math:`z` to :math:`x = z + \text{(a small residual)}`, the direction in which a
variational flow samples, with its log-determinant in the same pass. The constraints that make
each map invertible are built into the parameterization, so any real parameters (what a
network or an optimizer gives) define a bijection. The inverse is closed-form for the radial
map; the planar and Sylvester maps are inverted numerically, by scalar root solves
(:func:`solve_tanh_equation`), which state their tolerance.

Example:
    >>> import torch
    >>> t = PlanarTransform(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), torch.tensor(0.0))
    >>> z = torch.tensor([0.3, -1.0])
    >>> x, ladj = t.call_and_ladj(z)
    >>> torch.allclose(t.inv(x), z, atol=1e-6)
    True
"""

from __future__ import annotations

__all__ = [
    "MAX_ITERATIONS",
    "STEP_EPSILONS",
    "PlanarTransform",
    "RadialTransform",
    "SylvesterTransform",
    "solve_tanh_equation",
]

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms.base import OnePassTransform

#: At most this many iterations of a scalar root solve (bisection alone needs about 70 to go
#: from a bracket of width 1e6 to float64 precision).
MAX_ITERATIONS = 100
#: A root solve stops when every step is below this many machine epsilons of ``1 + |v|``.
STEP_EPSILONS = 16
# Convergence is checked every few iterations only: each check synchronizes with the device.
_CHECK_EVERY = 8


def _minus_one_plus_softplus(a: Tensor) -> Tensor:
    # m(a) = -1 + log(1 + e^a) > -1: the constraint of planar and Sylvester maps. Where the
    # softplus underflows, -1 + eps keeps it strict, so the log-determinant stays finite.
    return (F.softplus(a) - 1).clamp_min(-1 + torch.finfo(a.dtype).eps)


def solve_tanh_equation(p: Tensor, q: Tensor, c: Tensor, s: Tensor) -> Tensor:
    r"""Solve :math:`v + p \tanh(q v + c) = s` for :math:`v`, element-wise, given :math:`pq > -1`.

    The left side is strictly increasing in :math:`v` (its derivative
    :math:`1 + pq (1 - \tanh^2) > 0` when :math:`pq > -1`), and the root lies in
    :math:`[s - |p|, s + |p|]`. Newton steps are taken inside that bracket, a bisection where a
    step would leave it or would not be under half the step before the last (Newton alone can
    cycle between the two tails of the hyperbolic tangent when :math:`pq` is large), until
    every step (a bisection's is half the bracket) is below :data:`STEP_EPSILONS` machine
    epsilons of :math:`1 + |v|` (at most :data:`MAX_ITERATIONS` iterations), without
    gradients; under ``torch.compile``, the same iterations and stops run as a
    ``torch.while_loop`` in the graph, with the same roots. A last Newton step with gradients
    makes the root differentiable in :math:`p, q, c, s` (the implicit function theorem), at the
    cost of one evaluation.

    This is a numerical solve: the residual is at the level of round-off, and the error in
    :math:`v` is that divided by the derivative, large only where the map is nearly flat
    (:math:`pq` near :math:`-1`).

    Arguments:
        p: The scale of the hyperbolic tangent, any shape broadcasting with the others.
        q: The slope inside it, with :math:`pq > -1`.
        c: The offset inside it.
        s: The right side.

    Returns:
        The root :math:`v`, of the broadcast shape.

    Example:
        >>> p, q, c = torch.tensor(2.0), torch.tensor(1.0), torch.tensor(0.5)
        >>> v = solve_tanh_equation(p, q, c, torch.tensor(1.0))
        >>> (v + p * torch.tanh(q * v + c)).item()
        1.0
    """
    with torch.no_grad():
        p0, q0, c0, s0 = torch.broadcast_tensors(p, q, c, s)
        pq = p0 * q0
        lo, hi = s0 - p0.abs(), s0 + p0.abs()
        v = s0 - p0 * torch.tanh(q0 * s0 + c0)  # one fixed-point step, inside the bracket
        tolerance = STEP_EPSILONS * torch.finfo(v.dtype).eps
        # The root, its bracket and the sizes of the last two steps.
        state: tuple[Tensor, ...] = (v, lo, hi, hi - lo, hi - lo)

        def iterate(
            state: tuple[Tensor, ...], steps: int = _CHECK_EVERY
        ) -> tuple[tuple[Tensor, ...], Tensor]:
            # A few steps, then whether the last was converged everywhere.
            v, lo, hi, last, before_last = state
            for _ in range(steps):
                t = torch.tanh(q0 * v + c0)
                f = v + p0 * t - s0
                lo = torch.where(f < 0, v, lo)
                hi = torch.where(f > 0, v, hi)
                newton = v - f / (1 + pq * (1 - t * t))
                size = (newton - v).abs()
                fast = (newton > lo) & (newton < hi) & (2 * size <= before_last)
                # A bisection's size is half the bracket, not how far v moves to its middle.
                half = (hi - lo) / 2
                before_last, last = last, torch.where(fast, size, half)
                v = torch.where(fast, newton, lo + half)
            return (v, lo, hi, last, before_last), (last <= tolerance * (1 + v.abs())).all()

        whole, rest = divmod(MAX_ITERATIONS, _CHECK_EVERY)
        if torch.compiler.is_compiling():
            # The same iterations and stops, as one loop in the graph: a Python test of the
            # stop would break it.
            def body(i: Tensor, stop: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
                state, stop = iterate(state)
                return i + _CHECK_EVERY, stop, *state

            def running(i: Tensor, stop: Tensor, *state: Tensor) -> Tensor:
                return (i < whole * _CHECK_EVERY) & ~stop

            start = torch.zeros((), dtype=torch.long, device=v.device)
            _, stop, *looped = torch.while_loop(running, body, (start, start.bool(), *state))
            v = looped[0]
            if rest:
                v = torch.where(stop, v, iterate(tuple(looped), rest)[0][0])
        else:
            for chunk in range(whole + (rest > 0)):
                state, converged = iterate(state, _CHECK_EVERY if chunk < whole else rest)
                if bool(converged):
                    break
            v = state[0]
    t = torch.tanh(q * v + c)
    return v - (v + p * t - s) / (1 + p * q * (1 - t * t))


class PlanarTransform(OnePassTransform):
    r"""The planar map :math:`x = z + \hat{u} \tanh(w^\top z + b)`, invertible for any parameters.

    The map is invertible when :math:`w^\top \hat{u} \geq -1` (Rezende & Mohamed, 2015), which
    the parameterization guarantees, strictly (:math:`\geq -1 + \epsilon`, the machine
    epsilon): :math:`u` is replaced by

    .. math:: \hat{u} = u + \left( m(w^\top u) - w^\top u \right) \frac{w}{\|w\|^2},
        \qquad m(a) = -1 + \log(1 + e^a) ,

    so that :math:`w^\top \hat{u} = m(w^\top u) > -1`. The log-determinant is
    :math:`\log (1 + (1 - \tanh^2(w^\top z + b)) \, w^\top \hat{u})`.

    The inverse is numerical: along :math:`w`, :math:`a = w^\top z + b` solves the scalar
    equation :math:`a + w^\top \hat{u} \tanh(a) = w^\top x + b` (:func:`solve_tanh_equation`),
    then :math:`z = x - \hat{u} \tanh(a)`. A round trip :math:`x \to z \to x` is within
    round-off (tested: :math:`10^{-5}` in float32, :math:`10^{-10}` in float64, relative to
    :math:`1 + |x|`, plus the round-off of evaluating the map at :math:`z`, a few
    :math:`\epsilon (|z| + |J| |z|)`, which dominates only where a large :math:`z` is mapped
    onto a small :math:`x`).

    Arguments:
        w: The normal of the plane, of shape :math:`(*, D)`.
        u: The unconstrained direction of the residual, of shape :math:`(*, D)`.
        b: The offset, of shape :math:`(*)`.

    Example:
        >>> t = PlanarTransform(torch.ones(2), -5 * torch.ones(2), torch.tensor(0.0))
        >>> t.w @ t.u_hat > -1
        tensor(True)
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, w: Tensor, u: Tensor, b: Tensor) -> None:
        super().__init__()
        self.w, self.b = w, b
        wu = (w * u).sum(dim=-1, keepdim=True)
        squared = (w * w).sum(dim=-1, keepdim=True)
        m = _minus_one_plus_softplus(wu)
        # A null w (or one whose square underflows) leaves u as it is: the map is then a shift
        # of null log-determinant, and nothing is divided by zero.
        null = squared == 0
        self.u_hat = torch.where(null, u, u + (m - wu) * w / torch.where(null, 1, squared))
        #: The constrained :math:`w^\top \hat{u} > -1`.
        self.wu_hat = torch.where(null, wu, m).squeeze(-1)

    def _call(self, z: Tensor) -> Tensor:
        return z + self.u_hat * torch.tanh((z * self.w).sum(dim=-1) + self.b).unsqueeze(-1)

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh((z * self.w).sum(dim=-1) + self.b)
        x = z + self.u_hat * h.unsqueeze(-1)
        return x, torch.log1p(self.wu_hat * (1 - h * h))

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = (x * self.w).sum(dim=-1) + self.b
        a = solve_tanh_equation(self.wu_hat, torch.ones_like(s), torch.zeros_like(s), s)
        h = torch.tanh(a)
        return x - self.u_hat * h.unsqueeze(-1), -torch.log1p(self.wu_hat * (1 - h * h))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={self.w.shape[-1]})"


class RadialTransform(OnePassTransform):
    r"""The radial map :math:`x = z + \beta h(r) (z - z_0)`, invertible for any parameters.

    With :math:`r = \|z - z_0\|` and :math:`h(r) = 1 / (\alpha + r)`, the map is invertible
    when :math:`\beta \geq -\alpha` (Rezende & Mohamed, 2015), which the parameterization
    guarantees: :math:`\alpha = \log(1 + e^a)` and :math:`\beta = -\alpha + \log(1 + e^b)`
    from real :math:`a, b`. In :math:`D` dimensions the log-determinant is

    .. math:: (D - 1) \log (1 + \beta h(r)) + \log (1 + \beta h(r) + \beta h'(r) r) .

    The inverse is closed-form: the radius :math:`\rho = \|x - z_0\| = r (1 + \beta h(r))`
    gives :math:`r` as the non-negative root of :math:`r^2 + (\alpha + \beta - \rho) r -
    \alpha \rho = 0`, then :math:`z - z_0 = (x - z_0) / (1 + \beta h(r))`.

    Arguments:
        z0: The centre :math:`z_0`, of shape :math:`(*, D)`.
        alpha: The unconstrained :math:`a`, of shape :math:`(*)`.
        beta: The unconstrained :math:`b`, of shape :math:`(*)`.

    Example:
        >>> t = RadialTransform(torch.zeros(2), torch.tensor(0.0), torch.tensor(-30.0))
        >>> bool(t.beta >= -t.alpha)
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, z0: Tensor, alpha: Tensor, beta: Tensor) -> None:
        super().__init__()
        self.z0 = z0
        self.alpha = F.softplus(alpha)
        self.beta = F.softplus(beta) - self.alpha

    def _scaled(self, d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r = torch.linalg.vector_norm(d, dim=-1)
        beta_h = self.beta / (self.alpha + r)
        return r, beta_h, d * (1 + beta_h).unsqueeze(-1)

    def _ladj(self, r: Tensor, beta_h: Tensor) -> Tensor:
        # 1 + beta h + beta h' r = 1 + beta alpha / (alpha + r)^2.
        last = torch.log1p(self.beta * self.alpha / (self.alpha + r) ** 2)
        return (self.z0.shape[-1] - 1) * torch.log1p(beta_h) + last

    def _call(self, z: Tensor) -> Tensor:
        return self.z0 + self._scaled(z - self.z0)[2]

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r, beta_h, d = self._scaled(z - self.z0)
        return self.z0 + d, self._ladj(r, beta_h)

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        d = x - self.z0
        rho = torch.linalg.vector_norm(d, dim=-1)
        alpha, beta = self.alpha, self.beta
        # The positive root of r^2 + k r - alpha rho = 0, written for each sign of k so that
        # no two close numbers are subtracted.
        k = alpha + beta - rho
        root = torch.sqrt(k * k + 4 * alpha * rho)
        r = torch.where(k > 0, 2 * alpha * rho / (k + root), (root - k) / 2)
        beta_h = beta / (alpha + r)
        return self.z0 + d / (1 + beta_h).unsqueeze(-1), -self._ladj(r, beta_h)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={self.z0.shape[-1]})"


class SylvesterTransform(OnePassTransform):
    r"""The Sylvester map :math:`x = z + Q R \tanh(\tilde{R} Q^\top z + b)`.

    :math:`Q` (:math:`D \times M`) has orthonormal columns and :math:`R, \tilde{R}`
    (:math:`M \times M`) are upper triangular (Berg et al., 2018). By Sylvester's determinant
    identity, :math:`\log |\det J| = \sum_i \log (1 + (1 - \tanh^2 a_i) \, r_{ii}
    \tilde{r}_{ii})` with :math:`a = \tilde{R} Q^\top z + b`, and the map is invertible when
    every :math:`r_{ii} \tilde{r}_{ii} > -1`. The parameterization guarantees both for any real
    parameters: :math:`Q` is the orthonormal factor of the QR decomposition of ``q``; the
    strict upper triangles of :math:`R` and :math:`\tilde{R}` are those of ``r`` and
    ``r_tilde`` (their lower triangles are not read); their diagonals are
    :math:`r_{ii} = e^{r[i, i]}` and :math:`\tilde{r}_{ii} = m(\tilde{r}[i, i]) / r_{ii}`, with
    :math:`m(a) = -1 + \log(1 + e^a) > -1`.

    The inverse is numerical. The part of :math:`x` orthogonal to :math:`Q` is that of
    :math:`z`; in :math:`v = Q^\top z`, the map :math:`v \mapsto v + R \tanh(\tilde{R} v + b)`
    is triangular (component :math:`i` reads :math:`v_i, \dots, v_M`), so :math:`v` is solved
    by back-substitution, one scalar equation
    :math:`v_i + r_{ii} \tanh(\tilde{r}_{ii} v_i + c_i) = s_i` per component
    (:func:`solve_tanh_equation`). A round trip :math:`x \to z \to x` is within round-off
    (tested: :math:`10^{-5}` in float32, :math:`10^{-10}` in float64, relative to
    :math:`1 + |x|`, plus the round-off of evaluating the map at :math:`z`, a few
    :math:`\epsilon (|z| + |J| |z|)`, which dominates only where a large :math:`z` is mapped
    onto a small :math:`x`).

    Arguments:
        q: The unconstrained :math:`Q`, of shape :math:`(*, D, M)` with :math:`M \leq D`.
        r: The unconstrained :math:`R`, of shape :math:`(*, M, M)`.
        r_tilde: The unconstrained :math:`\tilde{R}`, of shape :math:`(*, M, M)`.
        b: The offset, of shape :math:`(*, M)`.

    Example:
        >>> t = SylvesterTransform(
        ...     torch.randn(3, 2), torch.randn(2, 2), -9 * torch.ones(2, 2), torch.zeros(2)
        ... )
        >>> bool((t.R.diagonal() * t.R_tilde.diagonal() > -1).all())
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, q: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor) -> None:
        super().__init__()
        if q.shape[-2] < q.shape[-1]:
            raise ValueError(
                "SylvesterTransform: q must have shape (*, D, M) with M <= D, "
                f"got {tuple(q.shape)}"
            )
        self.Q = torch.linalg.qr(q).Q
        scale = r.diagonal(dim1=-2, dim2=-1).exp()
        self.diagonal = _minus_one_plus_softplus(r_tilde.diagonal(dim1=-2, dim2=-1))
        self.R = r.triu(1) + torch.diag_embed(scale)
        self.R_tilde = r_tilde.triu(1) + torch.diag_embed(self.diagonal / scale)
        self.b = b

    def _preactivation(self, z: Tensor) -> Tensor:
        v = (z.unsqueeze(-2) @ self.Q).squeeze(-2)
        return (self.R_tilde @ v.unsqueeze(-1)).squeeze(-1) + self.b

    def _residual(self, h: Tensor) -> Tensor:
        return (self.Q @ (self.R @ h.unsqueeze(-1))).squeeze(-1)

    def _ladj(self, h: Tensor) -> Tensor:
        return torch.log1p((1 - h * h) * self.diagonal).sum(dim=-1)

    def _call(self, z: Tensor) -> Tensor:
        return z + self._residual(torch.tanh(self._preactivation(z)))

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self._preactivation(z))
        return z + self._residual(h), self._ladj(h)

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        Q, R, R_tilde, b = self.Q, self.R, self.R_tilde, self.b
        target = (x.unsqueeze(-2) @ Q).squeeze(-2)  # Q^T x = v + R tanh(a)
        orthogonal = x - (Q @ target.unsqueeze(-1)).squeeze(-1)
        M = target.shape[-1]
        v: list[Tensor] = [target[..., 0]] * M
        h: list[Tensor] = [target[..., 0]] * M
        for i in reversed(range(M)):
            # a_i = r~_ii v_i + c_i and s_i = v_i + r_ii tanh(a_i), from the known v_j, j > i.
            c, s = b[..., i], target[..., i]
            for j in range(i + 1, M):
                c = c + R_tilde[..., i, j] * v[j]
                s = s - R[..., i, j] * h[j]
            v[i] = solve_tanh_equation(R[..., i, i], R_tilde[..., i, i], c, s)
            h[i] = torch.tanh(R_tilde[..., i, i] * v[i] + c)
        tanh = torch.stack(h, dim=-1)
        z = orthogonal + (Q @ torch.stack(v, dim=-1).unsqueeze(-1)).squeeze(-1)
        return z, -self._ladj(tanh)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={self.Q.shape[-2]}, rank={self.Q.shape[-1]})"
