r"""Unconstrained monotonic transform: the integral of a positive function, by quadrature."""

from __future__ import annotations

__all__ = ["UnconstrainedMonotonicTransform", "gauss_legendre", "integrate"]

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flows.core.transforms.base import UnivariateTransform
from flows.splines.bisection import bisection_inverse, bisection_steps


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    # Golub-Welsch: the nodes are the eigenvalues of the Jacobi matrix of the Legendre
    # recurrence; the weights come from the first components of its eigenvectors.
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / torch.sqrt(4 * k * k - 1)
    jacobi = torch.diag(off, 1) + torch.diag(off, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    return nodes, 2 * vectors[0] ** 2


def gauss_legendre(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    r"""Nodes :math:`t_i \in (-1, 1)` and weights :math:`w_i` of ``n``-point Gauss-Legendre.

    Example:
        >>> t, w = gauss_legendre(3, torch.float64, torch.device("cpu"))
        >>> (w * t**2).sum()  # the integral of t^2 over [-1, 1]
        tensor(0.6667, dtype=torch.float64)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"nodes must be a positive int, got {n!r}")
    nodes, weights = _gauss_legendre(n)
    return nodes.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def _quadrature(
    g: Callable[[Tensor], Tensor], x: Tensor, nodes: Tensor, weights: Tensor
) -> Tensor:
    # Nodes along a new leading dimension, so g broadcasts its parameters as it does for x.
    shape = (-1,) + (1,) * x.dim()
    t = x * (1 + nodes.view(shape)) / 2
    return x * torch.tensordot(weights, g(t), dims=1) / 2


class _Integral(torch.autograd.Function):
    r"""The integral :math:`\int_0^x g(t) dt`, differentiated as the exact integral.

    The derivative with respect to :math:`x` is :math:`g(x)` (fundamental theorem of
    calculus), consistent with the log-determinant :math:`\log g(x)`; the gradient with
    respect to the parameters of :math:`g` is the quadrature of :math:`\partial g / \partial
    \theta`.
    """

    @staticmethod
    def forward(ctx, g, x, nodes, weights, *phi):
        ctx.g = g
        ctx.save_for_backward(x, nodes, weights, *phi)
        with torch.no_grad():
            return _quadrature(g, x, nodes, weights)

    @staticmethod
    def backward(ctx, grad):
        x, nodes, weights, *phi = ctx.saved_tensors
        grad_x = grad * ctx.g(x) if ctx.needs_input_grad[1] else None
        grad_phi: list[Tensor | None] = [None] * len(phi)
        wanted = [p for p, need in zip(phi, ctx.needs_input_grad[4:], strict=True) if need]
        if wanted:
            with torch.enable_grad():
                value = _quadrature(ctx.g, x.detach(), nodes, weights)
                grads = iter(
                    torch.autograd.grad(value, wanted, grad, retain_graph=True, allow_unused=True)
                )
            grad_phi = [next(grads) if need else None for need in ctx.needs_input_grad[4:]]
        return (None, grad_x, None, None, *grad_phi)


def integrate(
    g: Callable[[Tensor], Tensor],
    x: Tensor,
    phi: Sequence[Tensor] = (),
    nodes: int = 32,
    batch: torch.Size | None = None,
) -> Tensor:
    r"""The integral :math:`\int_0^x g(t) \, dt` by ``nodes``-point Gauss-Legendre quadrature.

    It is differentiated as the exact integral: its derivative in :math:`x` is :math:`g(x)`,
    and gradients reach the tensors ``phi`` that ``g`` depends on. Under ``torch.compile``
    it is written without a custom backward (whose ``torch.autograd.grad`` breaks the graph),
    with the same value and gradients; gradients then reach whatever ``g`` depends on.
    ``batch`` is the batch shape of ``g``'s parameters, when it may be larger than ``x``'s
    (one point under a batch of contexts): the quadrature puts its nodes in front of ``x``,
    where they would meet the batch's dimensions, so ``x`` is broadcast to it first.

    Example:
        >>> integrate(lambda t: 3 * t**2, torch.tensor([1.0, 2.0])).round(decimals=4)
        tensor([1., 8.])
    """
    if batch is not None:
        batch = torch.broadcast_shapes(x.shape, batch)
        if x.shape != batch:
            x = x.expand(batch)
    points, weights = gauss_legendre(nodes, x.dtype, x.device)
    if torch.compiler.is_compiling():
        # The same value and gradients without the custom backward's torch.autograd.grad,
        # which breaks the graph: autograd differentiates the quadrature in the parameters
        # (what the backward does), and the term (x - x) g(x), null, gives the exact
        # derivative g(x) in x.
        fixed = x.detach()
        return _quadrature(g, fixed, points, weights) + (x - fixed) * g(fixed).detach()
    return _Integral.apply(g, x, points, weights, *phi)


class UnconstrainedMonotonicTransform(UnivariateTransform):
    r"""The transform :math:`y = \int_0^x g(t) \, dt + C` of a positive function :math:`g`.

    The integral is computed by ``nodes``-point Gauss-Legendre quadrature and differentiated
    as the exact integral, so the log-derivative is :math:`\log g(x)`. The inverse is found by
    bisection on :math:`[-B, B]`, within ``eps`` for :math:`y \in [f(-B), f(B)]`, with
    gradients by the implicit function theorem.

    Arguments:
        g: A positive element-wise function (e.g. a network followed by a softplus).
        C: The integration constant :math:`C`, with the batch shape of the parameters of
            :math:`g`, against which inputs are broadcast.
        phi: The tensors ``g`` depends on, that receive gradients.
        bound: The half-width :math:`B` of the search interval of the inverse.
        eps: The tolerance of the inverse on :math:`x`.
        nodes: The number of quadrature nodes.

    Example:
        >>> t = UnconstrainedMonotonicTransform(lambda t: 1 + 3 * t**2, torch.tensor(1.0))
        >>> y, ladj = t.call_and_ladj(torch.tensor([0.5, 2.0]))
        >>> y, ladj
        (tensor([ 1.6250, 11.0000]), tensor([0.5596, 2.5649]))
        >>> t.inv(y).round(decimals=4)
        tensor([0.5000, 2.0000])

    References:
        | Unconstrained Monotonic Neural Networks (Wehenkel et al., 2019)
        | https://arxiv.org/abs/1908.05164
    """

    def __init__(
        self,
        g: Callable[[Tensor], Tensor],
        C: Tensor,
        phi: Sequence[Tensor] = (),
        bound: float = 10.0,
        eps: float = 1e-6,
        nodes: int = 32,
    ) -> None:
        super().__init__()
        if not callable(g):
            raise TypeError(f"g must be callable, got {type(g).__name__}")
        if not isinstance(bound, (int, float)) or not bound > 0:
            raise ValueError(f"bound must be a positive float, got {bound!r}")
        if not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be a positive int, got {nodes!r}")
        bisection_steps(2 * bound, eps)  # validates eps
        self.g = g
        self.C = torch.as_tensor(C)
        self.phi = (self.C, *phi)
        self.bound = float(bound)
        self.eps = float(eps)
        self.nodes = nodes

    def _f(self, x: Tensor) -> Tensor:
        return integrate(self.g, x, self.phi[1:], self.nodes, batch=self.C.shape) + self.C

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._f(x), self.g(x).log()

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, -self.g(x).log()

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return self._f(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return bisection_inverse(
            self._f, y, -self.bound, self.bound, self.eps, self.phi, derivative=self.g
        )

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.g(x).log()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bound={self.bound:g}, nodes={self.nodes})"
