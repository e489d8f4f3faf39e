r"""Planar, radial and Sylvester flows: small residual maps for variational inference.

Each preset stacks residual maps :math:`g_1, \dots, g_T` (:mod:`flows.core.transforms.residual`)
on :math:`\mathcal{N}(0, I)` in the sampling direction, :math:`x = g_T(\cdots g_1(z))`, so
:meth:`~flows.core.distributions.NormalizingFlow.rsample_and_log_prob` draws and scores in one
pass, the direction variational inference uses. ``log_prob`` of an arbitrary point inverts
every map: closed-form for the radial flow, numerical (scalar root solves within round-off)
for the planar and Sylvester flows. With ``context``, a network maps the context to every
map's parameters, as amortized inference does.
"""

from __future__ import annotations

__all__ = ["Planar", "Radial", "Sylvester"]

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from flows.core.layers.univariate import checked_context, init_near_zero
from flows.core.lazy import Flow, LazyInverse, LazyTransform
from flows.core.presets.base import Preset
from flows.core.presets.maf import standard_normal_base
from flows.core.transforms.residual import PlanarTransform, RadialTransform, SylvesterTransform
from flows.core.validation import check_count

# The raw value whose m(a) = -1 + softplus(a) is 0: planar and Sylvester maps start there.
_NEUTRAL = math.log(math.e - 1)


class _ResidualLayer(LazyTransform):
    r"""A residual map :math:`g(z | c)` whose parameters are free or computed from the context.

    Arguments:
        owner: The preset's name, for error messages.
        build: Builds the transform from the parameter tensors, each of shape
            :math:`(*, *\text{shape})`.
        initial: The initial parameters, their shapes those of the parameters.
        context: The number of context features :math:`C`; with :math:`C > 0`, an MLP maps
            the context to the parameters, its output starting at ``initial``.
        network: The MLP's arguments (``hidden_features``, ``activation``, ``normalize``).
    """

    def __init__(
        self,
        owner: str,
        build: Callable[..., Transform],
        initial: list[Tensor],
        context: int,
        **network: Any,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.build = build
        self.context = context
        self.shapes = [tuple(t.shape) for t in initial]
        self.sizes = [t.numel() for t in initial]
        if context == 0:
            self.phi = nn.ParameterList([nn.Parameter(t) for t in initial])
        else:
            from flows.nn import MLP

            self.hyper = MLP(context, sum(self.sizes), **network)
            init_near_zero(self.hyper)
            with torch.no_grad():
                bias = cast(Tensor, self.hyper[-1].bias)
                bias.copy_(torch.cat([t.flatten() for t in initial]))

    def forward(self, c: Tensor | None = None) -> Transform:
        r"""Return the map :math:`x = g(z | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, required when ``context > 0``.
        """
        c = checked_context(self.owner, self.context, c)
        if c is None:
            return self.build(*self.phi)
        flat = self.hyper(c)
        batch = flat.shape[:-1]
        params = [
            part.reshape(batch + shape)
            for part, shape in zip(flat.split(self.sizes, dim=-1), self.shapes, strict=True)
        ]
        return self.build(*params)

    def extra_repr(self) -> str:
        return f"context={self.context}"


def _check(owner: str, features: int, context: int, transforms: int, network: dict) -> None:
    check_count("features", features, owner=owner)
    check_count("context", context, minimum=0, owner=owner)
    check_count("transforms", transforms, owner=owner)
    if network and context == 0:
        raise TypeError(
            f"{owner}: {', '.join(sorted(network))} configure(s) the network of the context, "
            "which a flow without context (context=0) does not have"
        )


def _inverted(layers: list[_ResidualLayer]) -> list[LazyTransform]:
    # The flow's transform goes from data to base: the maps inverted, the last one first.
    return [LazyInverse(layer) for layer in reversed(layers)]


class Planar(Preset, Flow):
    r"""A planar flow: planar maps :math:`x = z + \hat{u} \tanh(w^\top z + b)` on a Gaussian.

    Each :class:`~flows.core.transforms.PlanarTransform` keeps :math:`w^\top \hat{u} > -1`
    for any parameters, so it is invertible (Rezende & Mohamed, 2015). Sampling and
    ``rsample_and_log_prob`` take one pass; ``log_prob`` of an arbitrary point solves one
    scalar equation per map, numerically, within round-off (the preset's spec says
    ``inverse="numerical"``). Each map starts near the identity (:math:`w^\top \hat{u} = 0`,
    a small :math:`\hat{u}`).

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features :math:`C`; with :math:`C > 0`, an MLP maps
            the context to the parameters of every map.
        transforms: The number of planar maps.
        kwargs: With context, passed to the MLP: ``hidden_features``, ``activation``,
            ``normalize``.

    References:
        Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015),
        https://arxiv.org/abs/1505.05770

    Example:
        >>> import torch
        >>> flow = Planar(features=2, transforms=4)
        >>> x, log_q = flow().rsample_and_log_prob((3,))
        >>> torch.allclose(flow().log_prob(x), log_q, atol=1e-5)
        True
    """

    def __init__(
        self, features: int, context: int = 0, transforms: int = 8, **kwargs: Any
    ) -> None:
        _check("Planar", features, context, transforms, kwargs)
        layers = []
        for _ in range(transforms):
            w = torch.randn(features) / math.sqrt(features)
            # u along w gives w^T u_hat = m(neutral) = 0; a small part across w.
            u = _NEUTRAL * w / w.square().sum() + 1e-2 * torch.randn(features)
            initial = [w, u, torch.zeros(())]
            layers.append(_ResidualLayer("Planar", PlanarTransform, initial, context, **kwargs))
        super().__init__(_inverted(layers), standard_normal_base(features))


class Radial(Preset, Flow):
    r"""A radial flow: radial maps :math:`x = z + \beta (z - z_0) / (\alpha + \|z - z_0\|)`.

    Each :class:`~flows.core.transforms.RadialTransform` keeps :math:`\alpha > 0` and
    :math:`\beta \geq -\alpha` for any parameters, so it is invertible (Rezende & Mohamed,
    2015), and its inverse is closed-form (a quadratic in the radius): sampling,
    ``rsample_and_log_prob`` and ``log_prob`` each take one pass. Each map starts near the
    identity (:math:`\beta` near 0) around a random centre :math:`z_0`.

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features :math:`C`; with :math:`C > 0`, an MLP maps
            the context to the parameters of every map.
        transforms: The number of radial maps.
        kwargs: With context, passed to the MLP: ``hidden_features``, ``activation``,
            ``normalize``.

    References:
        Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015),
        https://arxiv.org/abs/1505.05770

    Example:
        >>> import torch
        >>> flow = Radial(features=2, transforms=4)
        >>> x, log_q = flow().rsample_and_log_prob((3,))
        >>> torch.allclose(flow().log_prob(x), log_q, atol=1e-5)
        True
    """

    def __init__(
        self, features: int, context: int = 0, transforms: int = 8, **kwargs: Any
    ) -> None:
        _check("Radial", features, context, transforms, kwargs)
        layers = []
        for _ in range(transforms):
            alpha = torch.zeros(())
            # beta = softplus(b) - softplus(a): near 0 when b is near a.
            initial = [torch.randn(features), alpha, alpha + 1e-2 * torch.randn(())]
            layers.append(_ResidualLayer("Radial", RadialTransform, initial, context, **kwargs))
        super().__init__(_inverted(layers), standard_normal_base(features))


def _sylvester(q: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor) -> SylvesterTransform:
    """A Sylvester map from packed upper triangles ``r`` and ``r_tilde`` (row by row)."""
    rank = b.shape[-1]
    rows, cols = torch.triu_indices(rank, rank, device=r.device)

    def unpack(packed: Tensor) -> Tensor:
        full = packed.new_zeros(*packed.shape[:-1], rank, rank)
        full[..., rows, cols] = packed
        return full

    return SylvesterTransform(q, unpack(r), unpack(r_tilde), b)


class Sylvester(Preset, Flow):
    r"""A Sylvester flow: maps :math:`x = z + Q R \tanh(\tilde{R} Q^\top z + b)` on a Gaussian.

    Each :class:`~flows.core.transforms.SylvesterTransform` has a :math:`Q` with orthonormal
    columns (the QR factor of a free matrix) and upper triangular :math:`R, \tilde{R}` whose
    diagonals keep :math:`r_{ii} \tilde{r}_{ii} > -1` for any parameters, so it is invertible
    (Berg et al., 2018). Sampling and ``rsample_and_log_prob`` take one pass; ``log_prob``
    of an arbitrary point inverts each map numerically, by back-substitution of scalar root
    solves within round-off (the preset's spec says ``inverse="numerical"``). Each map starts
    near the identity (:math:`\tilde{R}` with a null diagonal and small other entries).

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features :math:`C`; with :math:`C > 0`, an MLP maps
            the context to the parameters of every map.
        transforms: The number of Sylvester maps.
        rank: The number of columns :math:`M \leq D` of :math:`Q`; ``None`` for :math:`D`.
        kwargs: With context, passed to the MLP: ``hidden_features``, ``activation``,
            ``normalize``.

    References:
        Sylvester Normalizing Flows for Variational Inference (van den Berg et al., 2018),
        https://arxiv.org/abs/1803.05649

    Example:
        >>> import torch
        >>> flow = Sylvester(features=3, transforms=2, rank=2)
        >>> x, log_q = flow().rsample_and_log_prob((3,))
        >>> torch.allclose(flow().log_prob(x), log_q, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 4,
        rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check("Sylvester", features, context, transforms, kwargs)
        rank = features if rank is None else rank
        check_count("rank", rank, owner="Sylvester")
        if rank > features:
            raise ValueError(
                f"Sylvester: rank must be an int <= features ({features}), got {rank}"
            )
        packed = rank * (rank + 1) // 2
        diagonal = torch.tensor([i * rank - i * (i - 1) // 2 for i in range(rank)])
        layers = []
        for _ in range(transforms):
            r = 1e-2 * torch.randn(packed)
            r[diagonal] = 0.0  # r_ii = e^0 = 1
            r_tilde = 1e-2 * torch.randn(packed)
            r_tilde[diagonal] = _NEUTRAL  # r~_ii = m(neutral) / r_ii = 0
            initial = [torch.randn(features, rank), r, r_tilde, torch.zeros(rank)]
            layers.append(_ResidualLayer("Sylvester", _sylvester, initial, context, **kwargs))
        super().__init__(_inverted(layers), standard_normal_base(features))
