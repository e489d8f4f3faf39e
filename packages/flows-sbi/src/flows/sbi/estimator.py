r"""A lazy flow as sbi's conditional density estimator :math:`q(\text{input} | \text{condition})`.

sbi trains and queries its estimators through one contract
(:class:`ConditionalDensityEstimator`, in ``sbi.neural_nets.estimators``): ``log_prob``, ``loss``,
``sample``, ``sample_and_log_prob``, ``input_shape`` and ``condition_shape``, with its batch
conventions. :class:`FlowEstimator` honours it for any lazy flow of ours: the input is
standardized by an affine map whose log-determinant is added back, the condition goes through
its own standardization and the user's embedding network, and the flow reads the embedding as
its context,

.. math:: \log q(\theta | x) = \log p_\phi\left(\frac{\theta - m}{s} \,\middle|\,
    e(x)\right) - \sum_i \log s_i .

Built by :func:`flows.sbi.posterior_nn` and :func:`flows.sbi.likelihood_nn`; a user rarely
builds one by hand.
"""

from __future__ import annotations

__all__ = ["FlowEstimator", "Standardize"]

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Size, Tensor, nn
from torch.distributions import Distribution

from flows.core.lazy import LazyDistribution
from flows.core.support import Support
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator


class Standardize(nn.Module):
    r"""The affine map :math:`y = (x - m) / s`, with :math:`m` and :math:`s` as buffers.

    Buffers follow the module through ``.to()`` and ``state_dict``, and broadcast against
    the trailing dimensions of ``x``.

    Arguments:
        shift: The shift :math:`m`.
        scale: The scale :math:`s`, positive.

    Example:
        >>> t = Standardize(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> t(torch.tensor([[3.0, 6.0]]))
        tensor([[1., 1.]])
    """

    shift: Tensor
    scale: Tensor
    _bias: Tensor
    _rscale: Tensor

    def __init__(self, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("scale", scale.detach().clone())
        # y = x / s - m / s in one fused operation, on every training step.
        self.register_buffer("_rscale", 1 / self.scale, persistent=False)
        self.register_buffer("_bias", -self.shift / self.scale, persistent=False)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        # The fused coefficients are not saved: derived from the loaded shift and scale, not
        # kept from the batch this module was built from.
        with torch.no_grad():
            self._rscale.copy_(1 / self.scale)
            self._bias.copy_(-self.shift / self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self._bias, x, self._rscale)


class FlowEstimator(ConditionalDensityEstimator):
    r"""sbi's conditional density estimator, a lazy flow of ours inside.

    Shapes follow sbi: ``input`` is ``(sample, batch, *input_shape)`` or
    ``(batch, *input_shape)``, ``condition`` is ``(batch, *condition_shape)`` or
    ``(sample, batch, *condition_shape)``; the two batch sizes broadcast (equal, or one is 1).
    ``log_prob`` returns ``(sample, batch)``; ``sample(shape, condition)`` returns
    ``(*shape, batch, *input_shape)``.

    Arguments:
        net: A lazy flow over the standardized, flattened input (``features`` the number of
            input elements), whose context is the embedded condition.
        input_shape: The event shape of the input (of samples).
        condition_shape: The event shape of the condition.
        embedding_net: The condition's path to the flow's context: the standardization, then
            the user's embedding network. ``None`` is the identity.
        input_shift: The shift :math:`m` of the input's standardization, of
            ``input_shape`` or broadcastable to it; ``None`` is 0.
        input_scale: Its scale :math:`s`, positive; ``None`` is 1.
        bounds: ``(low, high)`` of the input's support, in its original units (``-inf`` or
            ``inf`` for an open side), or ``None`` for none. Every distribution of ``net`` is
            then restricted to the standardized support,
            :math:`((\text{low} - m) / s, (\text{high} - m) / s)`
            (:func:`flows.core.support.restrict`), and samples are clamped into the support,
            so that rounding in the standardization never puts one outside.

    Example:
        >>> from flows.core import MAF
        >>> estimator = FlowEstimator(MAF(2, context=3, transforms=1), (2,), (3,))
        >>> estimator.sample((5,), torch.randn(4, 3)).shape
        torch.Size([5, 4, 2])
        >>> estimator.log_prob(torch.randn(5, 4, 2), torch.randn(4, 3)).shape
        torch.Size([5, 4])
        >>> estimator.loss(torch.randn(4, 2), torch.randn(4, 3)).shape
        torch.Size([4])
    """

    net: LazyDistribution
    _input_shift: Tensor
    _input_scale: Tensor
    _log_scale: Tensor
    _low: Tensor
    _high: Tensor
    _support: Support

    def __init__(
        self,
        net: LazyDistribution,
        input_shape: Sequence[int],
        condition_shape: Sequence[int],
        embedding_net: nn.Module | None = None,
        input_shift: Tensor | None = None,
        input_scale: Tensor | None = None,
        bounds: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        if not isinstance(net, LazyDistribution):
            raise TypeError(f"net must be a LazyDistribution, got {type(net).__name__}")
        super().__init__(net, Size(input_shape), Size(condition_shape))
        self._embedding_net = nn.Identity() if embedding_net is None else embedding_net
        shape = self.input_shape
        shift = torch.zeros(shape) if input_shift is None else input_shift
        scale = torch.ones(shape) if input_scale is None else input_scale
        shift, scale = (t.detach().broadcast_to(shape).clone() for t in (shift, scale))
        if not bool((scale > 0).all()):
            raise ValueError("input_scale must be positive")
        self.register_buffer("_input_shift", shift)
        self.register_buffer("_input_scale", scale)
        self._standardize = Standardize(shift, scale)
        # The log-determinant of the standardization, summed once here instead of per call.
        self.register_buffer("_log_scale", scale.log().sum())
        self._bounded = bounds is not None
        if bounds is not None:
            low, high = (b.detach().broadcast_to(shape).clone() for b in bounds)
            self.register_buffer("_low", low)
            self.register_buffer("_high", high)
            # The support in the flow's (standardized) units, owned here rather than by the
            # flow, so that loading a state_dict recomputes it from the loaded statistics.
            std_low, std_high = self._standardized_bounds()
            self._support = Support(std_low.tolist(), std_high.tolist()).to(
                device=shift.device, dtype=shift.dtype
            )
            # Support rounds the floats to the default dtype; the exact values of float64
            # statistics are copied in, as a load does.
            self._refresh_support()

    @property
    def embedding_net(self) -> nn.Module:
        """The condition's path to the flow's context (standardization and embedding)."""
        return self._embedding_net

    def _features(self) -> int:
        return math.prod(self.input_shape)

    def _standardized_bounds(self) -> tuple[Tensor, Tensor]:
        """The support's bounds in the flow's units, flattened to its features."""
        return (
            ((self._low - self._input_shift) / self._input_scale).flatten(),
            ((self._high - self._input_shift) / self._input_scale).flatten(),
        )

    def _refresh_support(self) -> None:
        low, high = self._standardized_bounds()
        with torch.no_grad():
            self._support.low.copy_(low)
            self._support.high.copy_(high)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if self._bounded:
            # The support's buffers are not saved (they are derived): recomputed from the
            # loaded statistics and bounds, not kept from the batch this was built from.
            self._refresh_support()

    def _distribution(self, context: Tensor) -> Distribution:
        """The flow's distribution for ``context``, restricted to the support when bounded."""
        distribution = self.net(context)
        return self._support(distribution) if self._bounded else distribution

    def _embed(self, condition: Tensor) -> Tensor:
        """The flow's context for a ``(*batch, *condition_shape)`` condition: ``(*batch, E)``."""
        self._check_condition_shape(condition)
        dims = len(self.condition_shape)
        if dims == 1 and condition.dim() == 2:  # sbi's usual (batch, features): no reshapes
            return self._embedding_net(condition)
        batch = condition.shape[: condition.dim() - dims]
        flat = condition.reshape(-1, *self.condition_shape)
        embedded = self._embedding_net(flat)
        return embedded.reshape(*batch, -1)

    def _to_flow(self, input: Tensor) -> Tensor:
        dims = len(self.input_shape)
        z = self._standardize(input)
        if dims == 1:
            return z
        return z.reshape(*z.shape[: z.dim() - dims], -1)

    def _from_flow(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        theta = z.reshape(*batch, *self.input_shape) * self._input_scale + self._input_shift
        if self._bounded:
            theta = torch.maximum(torch.minimum(theta, self._high), self._low)
        return theta

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: object) -> Tensor:
        r"""The log-density of ``input`` given ``condition``, of shape ``(sample, batch)``.

        Arguments:
            input: ``(sample, batch, *input_shape)`` or ``(batch, *input_shape)``.
            condition: ``(batch, *condition_shape)`` or ``(sample, batch, *condition_shape)``.

        Raises:
            ValueError: A shape that does not end in ``input_shape`` or ``condition_shape``,
                or batch sizes that do not broadcast.
        """
        self._check_input_shape(input)
        self._check_condition_shape(condition)
        in_dims, c_dims = len(self.input_shape), len(self.condition_shape)
        if input.dim() > in_dims + 2 or condition.dim() > c_dims + 2:
            raise ValueError(
                f"input must be (sample, batch, *{tuple(self.input_shape)}) and condition "
                f"(sample, batch, *{tuple(self.condition_shape)}) at most, got "
                f"{tuple(input.shape)} and {tuple(condition.shape)}"
            )
        while input.dim() < in_dims + 2:
            input = input.unsqueeze(0)
        # The condition is embedded before it is expanded: once per condition, not per sample.
        context = self._embed(condition)
        while context.dim() < 3:
            context = context.unsqueeze(0)
        try:
            batch = torch.broadcast_shapes(input.shape[:2], context.shape[:2])
        except RuntimeError:
            raise ValueError(
                f"input of batch shape {tuple(input.shape[:2])} and condition of batch shape "
                f"{tuple(context.shape[:2])} do not broadcast (sizes must match, or be 1)"
            ) from None
        if input.shape[:2] != batch:
            input = input.expand(*batch, *self.input_shape)
        if context.shape[:2] != batch:
            context = context.expand(*batch, context.shape[-1])
        # One flat batch for the flow: its layers handle (N, F) without the copies that extra
        # batch dimensions cost them.
        z = self._to_flow(input).reshape(-1, self._features())
        context = context.reshape(z.shape[0], -1)
        return (self._distribution(context).log_prob(z) - self._log_scale).reshape(batch)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: object) -> Tensor:
        """The negative log-density of each ``(batch, *input_shape)`` input, ``(batch,)``."""
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(self, sample_shape: Sequence[int], condition: Tensor, **kwargs: object) -> Tensor:
        """Samples of shape ``(*sample_shape, batch, *input_shape)``.

        Arguments:
            sample_shape: The leading shape of the samples.
            condition: ``(batch, *condition_shape)``.
        """
        dist = self._distribution(self._embed(condition))
        return self._from_flow(dist.sample(Size(sample_shape)))

    def sample_and_log_prob(
        self, sample_shape: Sequence[int], condition: Tensor, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        """Samples as :meth:`sample` and their log-densities, ``(*sample_shape, batch)``."""
        dist = self._distribution(self._embed(condition))
        paired = getattr(dist, "rsample_and_log_prob", None)
        if paired is not None:
            z, log_p = paired(Size(sample_shape))
        else:
            z = dist.rsample(Size(sample_shape))
            log_p = dist.log_prob(z)
        return self._from_flow(z), log_p - self._log_scale
