r"""Normalization layers: activation normalization (ActNorm) and batch normalization.

Both are affine maps :math:`y = (x - \mu) / \sigma` per channel, made invertible by keeping
:math:`\mu` and :math:`\sigma` fixed within a transform, with the exact log-determinant of that
map. Their parameters have a shape that broadcasts against the event: ``(F,)`` for vectors of
``F`` features, ``(C, 1, 1)`` for images of event shape :math:`(C, H, W)`, one scale and shift
per channel. Statistics are taken over the batch and every broadcast position, and each
parameter counts once per broadcast position in the log-determinant, :math:`H W` times for
``(C, 1, 1)``.

* :class:`ActNorm` (Glow) learns :math:`\mu` and :math:`\log \sigma`, which it sets from the
  first batch it transforms, so that the data leave it with zero mean and unit variance.
* :class:`BatchNorm` (MAF) normalizes each batch by its own statistics in training mode and by
  running averages of them in evaluation mode, then applies a learned scale and shift.

Example:
    >>> import torch
    >>> norm = ActNorm(2)
    >>> x = torch.randn(256, 2) * 3.0 + 1.0
    >>> y = norm()(x).detach()  # the first batch, in training mode: initialises
    >>> y.mean(0).abs().max() < 1e-5, (y.std(0, correction=0) - 1).abs().max() < 1e-5
    (tensor(True), tensor(True))
"""

from __future__ import annotations

__all__ = ["ActNorm", "ActNormTransform", "BatchNorm", "BatchNormTransform"]

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from flows.core.lazy import LazyTransform
from flows.core.transforms.base import Transform
from flows.core.validation import check_count, check_fraction, check_positive

#: The smallest standard deviation ActNorm divides by: a constant channel is not blown up.
_MIN_STD = 1e-6


def _parameter_shape(owner: str, shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple: an int ``F`` is ``(F,)``."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        return (check_count("shape", shape, owner=owner),)
    if isinstance(shape, torch.Size) or (
        isinstance(shape, Sequence) and not isinstance(shape, (str, bytes))
    ):
        if len(shape) > 0 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape
        ):
            return tuple(shape)
        raise ValueError(
            f"{owner}: shape must be an int >= 1 or a non-empty tuple of ints >= 1, got {shape!r}"
        )
    raise TypeError(
        f"{owner}: shape must be an int >= 1 or a non-empty tuple of ints >= 1, got {shape!r}"
    )


class _Layout:
    """Where a parameter of shape ``shape`` sits on ``x``: the reduced dims and the counts."""

    def __init__(self, owner: str, shape: tuple[int, ...], x: Tensor) -> None:
        k = len(shape)
        event = tuple(x.shape[x.dim() - k :]) if x.dim() >= k else None
        if event is None or any(p != 1 and p != e for p, e in zip(shape, event, strict=True)):
            raise ValueError(
                f"{owner}: x must end with an event shape that a parameter of shape "
                f"{shape} broadcasts against (each size equal, or 1 in the parameter), "
                f"got x of shape {tuple(x.shape)}"
            )
        first = x.dim() - k
        self.batch = x.shape[:first]
        #: The dims averaged over: the batch's and the event's broadcast ones.
        self.dims = tuple(range(first)) + tuple(first + i for i, p in enumerate(shape) if p == 1)
        #: How many times each parameter is used per event.
        self.positions = math.prod(event) // math.prod(shape)
        #: How many values each statistic is taken over.
        self.count = x.numel() // max(math.prod(shape), 1)

    def statistics(self, x: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The mean and the (biased) variance of ``x`` per parameter, of shape ``shape``."""
        var, mean = torch.var_mean(x, dim=self.dims, correction=0)
        return mean.reshape(shape), var.reshape(shape)

    def ladj(self, log_scale: Tensor) -> Tensor:
        r"""The log-determinant, :math:`\sum \log |\text{scale}|` per position, per event."""
        return (log_scale.sum() * self.positions).expand(self.batch)


class ActNorm(LazyTransform):
    r"""Activation normalization :math:`y = (x - \mu) \exp(-s)`, initialised from the data.

    The shift :math:`\mu` and log-scale :math:`s` are parameters of shape ``shape``, trained
    like any other. They start at zero (the identity) and are set, on the first batch the
    layer transforms in the data-to-latent direction while in training mode, to that batch's
    mean and log standard deviation (biased, at least ``1e-6``), without gradient: that batch
    leaves the layer with zero mean and unit variance per channel. The buffer ``initialized``
    records it, so a module loaded from a state dict is not initialised again. A batch of fewer
    than two values per channel carries no scale and does not initialise. Until initialised,
    the layer is the identity both ways: sampling from a flow that has seen no data works and
    ignores it.

    The log-determinant is :math:`-\sum s` per event, each :math:`s` counted once per broadcast
    position (:math:`-H W \sum_c s_c` for ``shape=(C, 1, 1)`` on events :math:`(C, H, W)`).
    The context is ignored.

    Arguments:
        shape: The parameter shape: an int :math:`F` for vectors of :math:`F` features, or a
            tuple that broadcasts against the event shape, e.g. ``(C, 1, 1)`` for
            :math:`(C, H, W)` images, whose statistics then pool the :math:`H W` positions.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018),
        https://arxiv.org/abs/1807.03039

    Example:
        >>> norm = ActNorm((3, 1, 1))
        >>> x = torch.randn(8, 3, 4, 4) * 2.0 - 5.0
        >>> y, ladj = norm().call_and_ladj(x)
        >>> y.mean(dim=(0, 2, 3)).abs().max() < 1e-5, ladj.shape
        (tensor(True), torch.Size([8]))
        >>> bool(norm.initialized)
        True
        >>> torch.allclose(norm().inv(y), x, atol=1e-5)
        True
    """

    initialized: Tensor

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__()
        self.shape = _parameter_shape("ActNorm", shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self.register_buffer("initialized", torch.tensor(False))
        # The buffer's value as a Python bool: reading the tensor at every call would
        # synchronize with the device and break compiled graphs.
        self._initialized = False

    def forward(self, c: Any | None = None) -> ActNormTransform:
        r"""Return the transform :math:`y = (x - \mu) \exp(-s)`; the context is ignored."""
        return ActNormTransform(self)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        r"""Set :math:`\mu` and :math:`s` so that ``x`` leaves with zero mean, unit variance.

        Arguments:
            x: A batch whose events end with a shape ``shape`` broadcasts against.
        """
        layout = _Layout("ActNorm", self.shape, x)
        mean, var = layout.statistics(x.detach(), self.shape)
        self.loc.copy_(mean)
        self.log_scale.copy_(var.sqrt().clamp_min(_MIN_STD).log())
        self.initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._initialized = bool(self.initialized)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class _LayerTransform(Transform):
    """The transform of a normalization layer: it applies the layer's parameters to events of
    the layer's rank."""

    bijective = True
    sign = +1
    layer: ActNorm | BatchNorm

    def __init__(self, layer: ActNorm | BatchNorm) -> None:
        super().__init__()
        self.layer = layer

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.layer.shape))

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.layer.shape))


class ActNormTransform(_LayerTransform):
    r"""The transform of an :class:`ActNorm` layer, reading (and initialising) its parameters.

    Arguments:
        layer: The layer whose :math:`\mu` and :math:`s` it applies.
    """

    layer: ActNorm

    def _prepared(self, x: Tensor) -> _Layout:
        layer = self.layer
        layout = _Layout("ActNorm", layer.shape, x)
        if not layer._initialized and layer.training and layout.count >= 2:
            layer.initialize(x)
        return layout

    def _call(self, x: Tensor) -> Tensor:
        self._prepared(x)
        return (x - self.layer.loc) * torch.exp(-self.layer.log_scale)

    def _inverse(self, y: Tensor) -> Tensor:
        _Layout("ActNorm", self.layer.shape, y)  # refuses an event the parameters do not fit
        return y * torch.exp(self.layer.log_scale) + self.layer.loc

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return _Layout("ActNorm", self.layer.shape, x).ladj(-self.layer.log_scale)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        layout = self._prepared(x)
        log_scale = self.layer.log_scale
        return (x - self.layer.loc) * torch.exp(-log_scale), layout.ladj(-log_scale)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        layout = _Layout("ActNorm", self.layer.shape, y)
        log_scale = self.layer.log_scale
        return y * torch.exp(log_scale) + self.layer.loc, layout.ladj(log_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.layer.shape})"


class BatchNorm(LazyTransform):
    r"""Batch normalization :math:`y = (x - m) / \sqrt{v + \epsilon} \exp(s) + b`, as in MAF.

    In training mode, :math:`m` and :math:`v` are the mean and the (biased) variance of the
    batch being transformed, taken over the batch and every broadcast position; the running
    averages ``running_mean`` and ``running_var`` (buffers, the latter of the unbiased
    variance) then move towards them,
    :math:`\bar m \leftarrow (1 - \text{momentum}) \bar m + \text{momentum}\, m`.
    In evaluation mode, and for the inverse (sampling) in either mode, :math:`m` and :math:`v`
    are the running averages. A training batch of a single value per channel has no
    statistics of its own: it is normalized by the running ones, which it leaves unchanged.

    The log-determinant
    :math:`\sum (s - \tfrac{1}{2} \log (v + \epsilon))` per event (each term counted once per
    broadcast position) is exact in both modes. In training mode it treats the batch
    statistics as constants of the transform for that batch, as in the MAF paper: it is the
    log-determinant of the per-sample map with :math:`m` and :math:`v` fixed, not of the map
    from the whole batch to the whole batch; gradients do flow through :math:`m` and
    :math:`v`. Hence, in training mode, the inverse (running statistics) undoes the forward
    (batch statistics) only as far as the two agree; in evaluation mode it is exact.

    The context is ignored.

    Arguments:
        shape: The parameter shape: an int :math:`F` for vectors of :math:`F` features, or a
            tuple that broadcasts against the event shape, e.g. ``(C, 1, 1)`` for
            :math:`(C, H, W)` images.
        momentum: The weight of each batch in the running averages, in :math:`[0, 1]`.
        eps: The :math:`\epsilon` added to the variance, positive.

    References:
        Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
        https://arxiv.org/abs/1705.07057

    Example:
        >>> norm = BatchNorm(2, momentum=0.5)
        >>> x = torch.randn(64, 2) + 3.0
        >>> y, ladj = norm().call_and_ladj(x)  # training mode: the batch's statistics
        >>> y.mean(0).abs().max() < 1e-5, ladj.shape
        (tensor(True), torch.Size([64]))
        >>> torch.allclose(norm.running_mean, x.mean(0) / 2)  # halfway to the batch mean
        True
        >>> _ = norm.eval()
        >>> torch.allclose(norm().inv(norm()(x)), x, atol=1e-5)
        True
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self, shape: int | Sequence[int], momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.shape = _parameter_shape("BatchNorm", shape)
        self.momentum = float(check_fraction("momentum", momentum, owner="BatchNorm"))
        self.eps = float(check_positive("eps", eps, finite=True, owner="BatchNorm"))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self.shift = nn.Parameter(torch.zeros(self.shape))
        self.register_buffer("running_mean", torch.zeros(self.shape))
        self.register_buffer("running_var", torch.ones(self.shape))

    def forward(self, c: Any | None = None) -> BatchNormTransform:
        r"""Return the transform of the current mode; the context is ignored."""
        return BatchNormTransform(self)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, momentum={self.momentum:g}, eps={self.eps:g}"


class BatchNormTransform(_LayerTransform):
    r"""The transform of a :class:`BatchNorm` layer, in the layer's current mode.

    ``_call`` and ``call_and_ladj`` update the layer's running statistics in training mode;
    ``log_abs_det_jacobian``, which torch calls after ``_call`` on the same batch, does not.

    Arguments:
        layer: The layer whose parameters and statistics it applies.
    """

    layer: BatchNorm

    def _statistics(self, x: Tensor, update: bool) -> tuple[_Layout, Tensor, Tensor]:
        """The layout of ``x`` and the mean and variance that normalize it."""
        layer = self.layer
        layout = _Layout("BatchNorm", layer.shape, x)
        if not layer.training or layout.count < 2:
            return layout, layer.running_mean, layer.running_var
        mean, var = layout.statistics(x, layer.shape)
        if update:
            with torch.no_grad():
                unbiased = var.detach() * (layout.count / (layout.count - 1))
                layer.running_mean.lerp_(mean.detach(), layer.momentum)
                layer.running_var.lerp_(unbiased, layer.momentum)
        return layout, mean, var

    def _forward(self, x: Tensor, update: bool) -> tuple[Tensor, Tensor]:
        layer = self.layer
        layout, mean, var = self._statistics(x, update)
        log_scale = layer.log_scale - 0.5 * torch.log(var + layer.eps)
        return (x - mean) * torch.exp(log_scale) + layer.shift, layout.ladj(log_scale)

    def _backward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.layer
        layout = _Layout("BatchNorm", layer.shape, y)
        log_scale = layer.log_scale - 0.5 * torch.log(layer.running_var + layer.eps)
        return (y - layer.shift) * torch.exp(-log_scale) + layer.running_mean, layout.ladj(
            -log_scale
        )

    def _call(self, x: Tensor) -> Tensor:
        return self._forward(x, update=True)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self._backward(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._forward(x, update=False)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._forward(x, update=True)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._backward(y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.layer.shape}, training={self.layer.training})"
