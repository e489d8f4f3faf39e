r"""The neural autoregressive flow (NAF) and unconstrained NAF (UNAF) presets."""

from __future__ import annotations

__all__ = [
    "NAF",
    "UNAF",
    "NeuralAutoregressiveTransform",
    "UnconstrainedNeuralAutoregressiveTransform",
]

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.lazy import Flow, LazyTransform, UnconditionalTransform
from flows.core.presets import Preset
from flows.core.presets.maf import alternating_orders, standard_normal_base
from flows.core.validation import check_count
from flows.splines.monotonic import MonotonicTransform
from flows.splines.unconstrained import UnconstrainedMonotonicTransform


def _with_signal(x: Tensor, signal: Tensor) -> Tensor:
    """Stack each scalar of ``x`` with its signal vector: shape ``(*, 1 + S)``."""
    batch = torch.broadcast_shapes(x.shape, signal.shape[:-1])
    return torch.cat((x.expand(batch).unsqueeze(-1), signal.expand(*batch, -1)), dim=-1)


class NeuralAutoregressiveTransform(MaskedAutoregressiveTransform):
    r"""A masked autoregressive transform whose univariate is a monotonic network.

    Feature :math:`i` goes through :math:`y_i = g(x_i, s_i)`, a
    :class:`flows.nn.MonotonicMLP` shared by all features and conditioned by a signal
    :math:`s_i` that the masked hyper-network predicts from :math:`x_{<i}` and the context.
    The inverse is found by bisection on :math:`[-B, B]` (:class:`MonotonicTransform`).

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        signal: The number of signal features :math:`S`.
        network: Keyword arguments of the monotonic network (``hidden_features``...).
        bound: The half-width of the search interval of the inverse.
        eps: The tolerance of the inverse.
        kwargs: Passed to :class:`flows.core.MaskedAutoregressiveTransform`.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        signal: int = 16,
        network: dict[str, Any] | None = None,
        bound: float = 10.0,
        eps: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        from flows.nn import MonotonicMLP

        super().__init__(
            features, context, univariate=self._univariate, shapes=[(signal,)], **kwargs
        )
        self.network = MonotonicMLP(1 + signal, 1, **(network or {}))
        self.bound = bound
        self.eps = eps

    def _univariate(self, signal: Tensor) -> MonotonicTransform:
        def f(x: Tensor) -> Tensor:
            return self.network(_with_signal(x, signal)).squeeze(-1)

        def f_and_derivative(x: Tensor) -> tuple[Tensor, Tensor]:
            # Forward-mode: the derivative in x (input 0), the signal held fixed.
            y, dydx = self.network.forward_and_derivative(_with_signal(x, signal), feature=0)
            return y.squeeze(-1), dydx.squeeze(-1)

        phi = (signal, *self.network.parameters())
        return MonotonicTransform(
            f, phi, bound=self.bound, eps=self.eps, f_and_derivative=f_and_derivative
        )


class UnconstrainedNeuralAutoregressiveTransform(MaskedAutoregressiveTransform):
    r"""A masked autoregressive transform whose univariate integrates a positive network.

    Feature :math:`i` goes through :math:`y_i = \int_0^{x_i} g(t, s_i) dt + C_i` where
    :math:`g > 0` is an MLP (followed by :math:`\text{ELU} + 1`) conditioned by the signal
    :math:`s_i`; signal and constant come from the masked hyper-network
    (:class:`UnconstrainedMonotonicTransform`).

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        signal: The number of signal features :math:`S`.
        network: Keyword arguments of the network :math:`g` (``hidden_features``...).
        bound: The half-width of the search interval of the inverse.
        eps: The tolerance of the inverse.
        nodes: The number of quadrature nodes.
        kwargs: Passed to :class:`flows.core.MaskedAutoregressiveTransform`.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        signal: int = 16,
        network: dict[str, Any] | None = None,
        bound: float = 10.0,
        eps: float = 1e-6,
        nodes: int = 32,
        **kwargs: Any,
    ) -> None:
        from flows.nn import MLP

        super().__init__(
            features, context, univariate=self._univariate, shapes=[(signal,), ()], **kwargs
        )
        self.network = MLP(1 + signal, 1, **(network or {}))
        self.bound = bound
        self.eps = eps
        self.nodes = nodes

    def _univariate(self, signal: Tensor, constant: Tensor) -> UnconstrainedMonotonicTransform:
        def g(x: Tensor) -> Tensor:
            # ELU + 1 is positive, and linear (not exponential) for large inputs.
            return F.elu(self.network(_with_signal(x, signal)).squeeze(-1)) + 1.0 + 1e-3

        phi = (signal, *self.network.parameters())
        return UnconstrainedMonotonicTransform(
            g, constant, phi, bound=self.bound, eps=self.eps, nodes=self.nodes
        )


def _interleave_softclip(layers: Sequence[LazyTransform], bound: float) -> list[LazyTransform]:
    from flows.core.transforms import SoftclipTransform

    # Between layers, values are squashed into (-bound, bound): the next layer's bisection
    # interval covers them, and sampling stays finite.
    out: list[LazyTransform] = []
    for i, layer in enumerate(layers):
        out.append(layer)
        if i < len(layers) - 1:
            out.append(UnconditionalTransform(SoftclipTransform, bound=bound))
    return out


class _NeuralAutoregressiveFlow(Preset, Flow):
    """Autoregressive layers of ``layer`` separated by soft clips, on a standard Gaussian."""

    layer: ClassVar[type[LazyTransform]]

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        signal: int = 16,
        network: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_count("transforms", transforms, owner=type(self).__name__)
        layers = [
            self.layer(features, context, signal=signal, network=network, order=order, **kwargs)
            for order in alternating_orders(features, transforms, randperm)
        ]
        super().__init__(_interleave_softclip(layers, 11.0), standard_normal_base(features))


class NAF(_NeuralAutoregressiveFlow):
    r"""A neural autoregressive flow: monotonic networks conditioned autoregressively.

    Layers of :class:`NeuralAutoregressiveTransform` are separated by soft clips onto
    :math:`(-11, 11)`, within reach of the inverse's bisection on :math:`[-10, 10]`, on a
    standard Gaussian base.

    Sampling inverts each layer by bisection (the spec says ``inverse="numerical"``), and a
    layer maps the interval the bisection searches onto a bounded range only: a base draw
    beyond it has no preimage there and is clamped to the interval's end, whose density
    ``rsample_and_log_prob`` then reports in the draw's place. Variational fits
    (:func:`flows.core.fit_to_target`, ``flows.pyro.FlowGuide``) read that density and can
    learn to exploit it; for them prefer a flow that samples exactly, such as ``iaf`` or
    ``nsf``.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        randperm: Whether each layer takes a random order of the features.
        signal: The number of signal features of the monotonic network.
        network: Keyword arguments of the monotonic network (``hidden_features``...).
        kwargs: Passed to :class:`flows.core.MaskedAutoregressiveTransform`.

    Example:
        >>> flow = NAF(features=2, transforms=2, signal=4, network={"hidden_features": [8]})
        >>> flow().sample((5,)).shape
        torch.Size([5, 2])

    References:
        | Neural Autoregressive Flows (Huang et al., 2018)
        | https://arxiv.org/abs/1804.00779
    """

    layer = NeuralAutoregressiveTransform


class UNAF(_NeuralAutoregressiveFlow):
    r"""An unconstrained neural autoregressive flow: integrals of positive networks.

    Layers of :class:`UnconstrainedNeuralAutoregressiveTransform` are separated by soft clips
    onto :math:`(-11, 11)`, on a standard Gaussian base.

    Sampling bisects as :class:`NAF`'s does, with the same caveat for variational fits.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        randperm: Whether each layer takes a random order of the features.
        signal: The number of signal features of the network.
        network: Keyword arguments of the positive network (``hidden_features``...).
        kwargs: Passed to :class:`flows.core.MaskedAutoregressiveTransform`.

    Example:
        >>> flow = UNAF(features=2, transforms=2, signal=4, network={"hidden_features": [8]})
        >>> flow().sample((5,)).shape
        torch.Size([5, 2])

    References:
        | Unconstrained Monotonic Neural Networks (Wehenkel et al., 2019)
        | https://arxiv.org/abs/1908.05164
    """

    layer = UnconstrainedNeuralAutoregressiveTransform
