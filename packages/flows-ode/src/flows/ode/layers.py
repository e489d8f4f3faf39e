r"""The lazy free-form Jacobian transform: a vector field :math:`f(t, x | c)` from an MLP."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor, nn

from flows.core.lazy import LazyTransform
from flows.core.validation import check_count, check_positive
from flows.nn import MLP
from flows.ode.ffj import FreeFormJacobianTransform

__all__ = ["FFJTransform"]


class FFJTransform(LazyTransform):
    r"""A lazy free-form Jacobian transform, whose vector field is a multi-layer perceptron.

    The field :math:`f(t, x | c)` reads :math:`x`, the context :math:`c` and the time
    embedding :math:`(\cos(k \pi t), \sin(k \pi t))_{k = 1, \dots, K}`, and the transform
    integrates it from :math:`t = 0` to :math:`t = 1`
    (see :class:`~flows.ode.ffj.FreeFormJacobianTransform`).

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features :math:`C`.
        freqs: The number of time frequencies :math:`K`.
        atol: The absolute tolerance of the adaptive solver.
        rtol: The relative tolerance of the adaptive solver.
        exact: Whether the log-determinant is exact or a Hutchinson estimate.
        network: Keyword arguments of :class:`flows.nn.MLP` (``hidden_features``,
            ``activation``, ...); the activation defaults to :class:`torch.nn.ELU`, whose
            derivative is continuous, which suits adaptive solvers.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = FFJTransform(3, context=4, hidden_features=(16, 16))
        >>> x, c = torch.randn(3), torch.randn(4)
        >>> y, ladj = t(c).call_and_ladj(x)
        >>> y.shape, ladj.shape
        (torch.Size([3]), torch.Size([]))
        >>> torch.allclose(t(c).inv(y), x, atol=1e-3)  # the solver's tolerance, accumulated
        True
    """

    frequencies: Tensor

    def __init__(
        self,
        features: int,
        context: int = 0,
        freqs: int = 3,
        atol: float = 1e-6,
        rtol: float = 1e-5,
        exact: bool = True,
        **network: Any,
    ) -> None:
        super().__init__()
        owner = "FFJTransform"
        self.features = check_count("features", features, owner=owner)
        self.context = check_count("context", context, minimum=0, owner=owner)
        self.freqs = check_count("freqs", freqs, minimum=0, owner=owner)
        self.atol = float(check_positive("atol", atol, owner=owner))
        self.rtol = float(check_positive("rtol", rtol, owner=owner))
        self.exact = bool(exact)

        # The frequencies follow from the arguments: a buffer, to follow .to(), not state.
        frequencies = math.pi * torch.arange(1, freqs + 1, dtype=torch.get_default_dtype())
        self.register_buffer("frequencies", frequencies, persistent=False)
        network.setdefault("activation", nn.ELU)
        self.ode = MLP(features + 2 * freqs + context, features, **network)

    def f(self, t: Tensor, x: Tensor, c: Tensor | None = None) -> Tensor:
        r"""The vector field :math:`f(t, x | c)`.

        Arguments:
            t: The time, a scalar tensor.
            x: The state, of shape :math:`(*, D)`.
            c: The context, of shape :math:`(*, C)` broadcastable to the state's batch, or
                ``None``.

        Returns:
            The time derivative :math:`dx/dt`, of shape :math:`(*, D)`.
        """
        phases = self.frequencies.to(x.dtype) * t
        batch = x.shape[:-1]
        inputs = [x, torch.cat((phases.cos(), phases.sin())).expand(*batch, 2 * self.freqs)]
        if c is not None:
            inputs.append(c.expand(*batch, self.context))
        return self.ode(torch.cat(inputs, dim=-1))

    def forward(self, c: Tensor | None = None) -> FreeFormJacobianTransform:
        r"""Return the transform :math:`y = x(1)`, with :math:`x(0) = x` and
        :math:`dx/dt = f(t, x | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, or ``None`` when :math:`C = 0`.
        """
        if self.context == 0:
            if c is not None:
                raise ValueError(
                    "c must be None for a transform without context (context=0), "
                    f"got a {type(c).__name__}"
                )
            batch_shape: tuple[int, ...] = ()
        else:
            if not isinstance(c, Tensor) or c.dim() < 1 or c.shape[-1] != self.context:
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(
                    f"c must be a tensor of shape (*, {self.context}) (context={self.context}), "
                    f"got {shape}"
                )
            batch_shape = tuple(c.shape[:-1])

        # The adjoint method differentiates with respect to phi only: the network's
        # parameters and, when it needs a gradient, the context the field closes over.
        phi: tuple[Tensor, ...] = tuple(self.parameters())
        if c is not None and c.requires_grad:
            phi = (*phi, c)
        return FreeFormJacobianTransform(
            functools.partial(self.f, c=c),
            t0=0.0,
            t1=1.0,
            phi=phi,
            atol=self.atol,
            rtol=self.rtol,
            exact=self.exact,
            batch_shape=batch_shape,
        )

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context}, freqs={self.freqs}, " + (
            f"atol={self.atol}, rtol={self.rtol}, exact={self.exact}"
        )
