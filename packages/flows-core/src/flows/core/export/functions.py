r"""What an export computes: a flow's log-density or its sampling, as a module of plain tensors.

A fitted flow often models standardized data :math:`z = (x - m) / s` (and context
:math:`(c - m_c) / s_c`); given the :class:`Standardization`, the functions here take and return
the data's original units:

.. math:: \log p(x \mid c) = \log p_z\Big(\frac{x - m}{s} \,\Big|\, \frac{c - m_c}{s_c}\Big)
    - \sum_j \log s_j .

* :class:`DensityFunction`: ``(x[, c]) -> log_prob``.
* :class:`SampleFunction`: ``(z[, c]) -> x``, :math:`x = m + s f^{-1}(z \mid c)` for a
  normalizing flow, with :math:`z` a draw of its base distribution (the standard Gaussian of every
  preset shipped) given as an input, so that the function holds no randomness.
* :class:`MixtureSampleFunction`: ``(z, u[, c]) -> x`` for a Gaussian mixture (GMM), whose
  samples are no bijection of Gaussian noise: a uniform :math:`u \in [0, 1)` per row picks the
  component by the inverse of the weights' cumulative distribution (component :math:`k` when
  :math:`\sum_{i < k} w_i \le u < \sum_{i \le k} w_i`) and the standard Gaussian :math:`z` is
  mapped through that component, :math:`x = \mu_k + L_k z` with :math:`\Sigma_k = L_k L_k^\top`.

:func:`export_function` chooses the function for a flow and ``what``. Every input and output has
a leading batch dimension.

Example:
    >>> import torch
    >>> from flows.core import MAF
    >>> flow = MAF(features=2, transforms=1)
    >>> scale = Standardization(mean=[10.0, 0.0], std=[2.0, 1.0])
    >>> density = export_function(flow, "log_prob", standardization=scale)
    >>> density.inputs, density.outputs
    (('x',), ('log_prob',))
    >>> x = torch.tensor([[12.0, 1.0]])
    >>> z = torch.tensor([[1.0, 1.0]])
    >>> torch.allclose(density(x), flow().log_prob(z) - torch.tensor(2.0).log())
    True
    >>> sampler = export_function(flow, "sample", standardization=scale)
    >>> torch.allclose(
    ...     sampler(z),
    ...     flow().transform.inv(z) * torch.tensor([2.0, 1.0]) + torch.tensor([10.0, 0.0]),
    ... )
    True
"""

from __future__ import annotations

__all__ = [
    "WHAT",
    "DensityFunction",
    "ExportFunction",
    "MixtureSampleFunction",
    "SampleFunction",
    "Standardization",
    "export_function",
]

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from flows.core.distributions import Mixture, NormalizingFlow
from flows.core.export.errors import ExportError
from flows.core.validation import check_choice

#: What can be exported: the log-density or sampling.
WHAT = ("log_prob", "sample")


def _numbers(name: str, values: Any) -> tuple[float, ...] | None:
    if values is None:
        return None
    if hasattr(values, "tolist"):
        values = values.tolist()  # a tensor or an array
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"Standardization: {name} must be a sequence of numbers, got {values!r}")
    numbers = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Standardization: {name} must hold numbers, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"Standardization: {name} must hold finite numbers, got {value!r}")
        numbers.append(float(value))
    return tuple(numbers)


@dataclasses.dataclass(frozen=True)
class Standardization:
    r"""The per-column means and standard deviations a flow's data (and context) were scaled by.

    The flow models :math:`(x - m) / s` given :math:`(c - m_c) / s_c`. Either statistic of a
    pair may be left out (``None``): no shift (or no scale) for those columns.

    Arguments:
        mean: The data means :math:`m`, one per feature.
        std: The data standard deviations :math:`s > 0`, one per feature.
        context_mean: The context means :math:`m_c`, one per context feature.
        context_std: The context standard deviations :math:`s_c > 0`.

    Example:
        >>> Standardization(mean=[1.0, 2.0], std=[0.5, 4.0]).log_scale
        0.6931471805599453
        >>> Standardization(std=[0.0])
        Traceback (most recent call last):
            ...
        ValueError: Standardization: std must hold positive numbers, got 0.0
    """

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    context_mean: Sequence[float] | None = None
    context_std: Sequence[float] | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            numbers = _numbers(field.name, getattr(self, field.name))
            if field.name.endswith("std") and numbers is not None:
                for value in numbers:
                    if not value > 0:
                        raise ValueError(
                            f"Standardization: {field.name} must hold positive numbers, "
                            f"got {value!r}"
                        )
            object.__setattr__(self, field.name, numbers)
        for prefix in ("", "context_"):
            mean, std = getattr(self, f"{prefix}mean"), getattr(self, f"{prefix}std")
            if mean is not None and std is not None and len(mean) != len(std):
                raise ValueError(
                    f"Standardization: {prefix}mean and {prefix}std must have one number per "
                    f"column each, got {len(mean)} and {len(std)}"
                )

    @property
    def log_scale(self) -> float:
        r""":math:`\sum_j \log s_j`, what standardizing subtracts from every log-density."""
        return math.fsum(math.log(s) for s in self.std or ())

    def check(self, features: int, context: int) -> None:
        """Raise :class:`ValueError` unless the statistics have ``features`` (``context``)
        numbers."""
        for prefix, width in (("", features), ("context_", context)):
            for name in ("mean", "std"):
                values = getattr(self, prefix + name)
                if values is not None and len(values) != width:
                    what = "context features" if prefix else "features"
                    raise ValueError(
                        f"standardization: {prefix}{name} has {len(values)} number(s) but the "
                        f"flow has {width} {what}"
                    )


def _row(values: tuple[float, ...] | None, like: Tensor | None) -> Tensor | None:
    """The statistics as a row on the flow's device, in its floating dtype (float32 else)."""
    if values is None:
        return None
    if like is None or not like.is_floating_point():
        return torch.tensor(values, dtype=torch.float32)
    return torch.tensor(values, dtype=like.dtype, device=like.device)


class ExportFunction(nn.Module):
    r"""A flow's function of plain tensors, what an export traces: the base of those here.

    Arguments:
        flow: A lazy distribution (a preset); its ``forward(c)`` gives :math:`p(X \mid c)`.
        features: The number of features :math:`F`.
        context: The number of context features :math:`C` (0: unconditional).
        standardization: The statistics of the data and context, or ``None``.
    """

    what: str
    #: The names of the outputs, in order.
    outputs: tuple[str, ...]
    # The inputs before the context.
    _own_inputs: tuple[str, ...] = ()

    mean: Tensor | None
    std: Tensor | None
    context_mean: Tensor | None
    context_std: Tensor | None

    def __init__(
        self,
        flow: nn.Module,
        features: int,
        context: int = 0,
        standardization: Standardization | None = None,
    ) -> None:
        super().__init__()
        scale = standardization or Standardization()
        scale.check(features, context)
        self.flow = flow
        self.features = features
        self.context = context
        self.standardization = scale
        like = next(iter(flow.parameters()), None)
        for name in ("mean", "std", "context_mean", "context_std"):
            self.register_buffer(name, _row(getattr(scale, name), like))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The names of the inputs, in order."""
        return self._own_inputs + (("c",) if self.context else ())

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape after the batch dimension."""
        widths = {"x": (self.features,), "z": (self.features,), "u": (), "c": (self.context,)}
        return {name: widths[name] for name in self.inputs}

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each output's shape after the batch dimension."""
        return {name: (() if name == "log_prob" else (self.features,)) for name in self.outputs}

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        """Standard normal inputs (uniform ``u``) of ``batch`` rows, in float32 on the CPU."""
        generator = torch.Generator().manual_seed(0)
        shapes = self.input_shapes()
        return tuple(
            torch.rand(batch, generator=generator)
            if name == "u"
            else torch.randn(batch, *shapes[name], generator=generator)
            for name in self.inputs
        )

    def probe_inputs(self, rows: int, seed: int = 0) -> tuple[Tensor, ...]:
        """Inputs to compare an export with the flow on, in the data's units, on its device.

        The context is standard normal in the standardized space; noise is standard normal
        (uniform ``u``); the points of a density are the flow's own samples, a quarter of
        them replaced by wide ones (three standard deviations), to reach the tails. The
        global random state is left as it was.
        """
        reference = next(iter(self.flow.parameters()), None)
        device = None if reference is None else reference.device
        generator = torch.Generator().manual_seed(seed)
        c = None
        if self.context:
            c = torch.randn(rows, self.context, generator=generator).to(device)
        noise = torch.randn(rows, self.features, generator=generator).to(device)
        with torch.no_grad():
            first = self._probe_points(noise, c, seed)
            if self.context and c is not None:
                if self.context_std is not None:
                    c = c * self.context_std
                if self.context_mean is not None:
                    c = c + self.context_mean
        if self._own_inputs == ("z", "u"):
            u = torch.rand(rows, generator=generator).to(device)
            return (first, u) if c is None else (first, u, c)
        return (first,) if c is None else (first, c)

    def _probe_points(self, noise: Tensor, c: Tensor | None, seed: int) -> Tensor:
        return noise

    def _standardized_context(self, c: Tensor | None) -> Tensor | None:
        if c is None:
            if self.context:
                raise ValueError(
                    f"the flow has context={self.context}: a context c of shape "
                    f"(N, {self.context}) is required, got None"
                )
            return None
        if self.context_mean is not None:
            c = c - self.context_mean
        if self.context_std is not None:
            c = c / self.context_std
        return c

    def _to_data(self, x: Tensor) -> Tensor:
        if self.std is not None:
            x = x * self.std
        if self.mean is not None:
            x = x + self.mean
        return x

    def extra_repr(self) -> str:
        return f"features={self.features}, context={self.context}"


class DensityFunction(ExportFunction):
    r"""``(x[, c]) -> log_prob``: the log-density :math:`\log p(x \mid c)` in the data's units."""

    what = "log_prob"
    outputs = ("log_prob",)
    _own_inputs = ("x",)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        log_p = self.flow(self._standardized_context(c)).log_prob(x)
        if self.std is not None:
            log_p = log_p - self.standardization.log_scale
        return log_p

    def _probe_points(self, noise: Tensor, c: Tensor | None, seed: int) -> Tensor:
        rows = noise.shape[0]
        with torch.random.fork_rng(devices=[noise.device] if noise.device.type == "cuda" else []):
            torch.manual_seed(seed)
            distribution = self.flow(c)
            x = distribution.sample(() if c is not None else (rows,))
        wide = rows // 4
        x = torch.cat((x[: rows - wide], 3 * noise[rows - wide :]))
        return self._to_data(x)


class SampleFunction(ExportFunction):
    r"""``(z[, c]) -> x``: the sample :math:`x = f^{-1}(z \mid c)` of base noise :math:`z`.

    :math:`z` is a draw of the flow's base distribution (a standard Gaussian for every preset
    shipped), one row per sample (and per context row).
    """

    what = "sample"
    outputs = ("x",)
    _own_inputs = ("z",)

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        distribution = self.flow(self._standardized_context(c))
        return self._to_data(distribution.transform.inv(z))


class MixtureSampleFunction(ExportFunction):
    r"""``(z, u[, c]) -> x``: a sample of a Gaussian mixture from Gaussian and uniform noise.

    The uniform :math:`u \in [0, 1)` of a row picks its component :math:`k` by the inverse
    cumulative distribution of the weights; the standard Gaussian :math:`z` then gives
    :math:`x = \mu_k + L_k z`, :math:`L_k` the Cholesky factor of :math:`\Sigma_k` (the scale,
    for diagonal covariances).
    """

    what = "sample"
    outputs = ("x",)
    _own_inputs = ("z", "u")

    def forward(self, z: Tensor, u: Tensor, c: Tensor | None = None) -> Tensor:
        mixture = self.flow(self._standardized_context(c))
        weights = torch.softmax(mixture.logits, dim=-1)  # (*, K)
        components = weights.shape[-1]
        # Thresholds between components; the last sum (1 up to rounding) is never compared,
        # so every u in [0, 1) picks a component.
        thresholds = weights.cumsum(dim=-1)[..., :-1]
        k = (u.unsqueeze(-1) >= thresholds).sum(dim=-1)
        # One-hot weighted sums rather than gathers: the same graph for any batch of contexts.
        onehot = (k.unsqueeze(-1) == torch.arange(components, device=z.device)).to(z.dtype)
        base = mixture.base
        loc = (onehot.unsqueeze(-1) * base.mean).sum(dim=-2)
        if isinstance(base, MultivariateNormal):
            tril = (onehot[..., None, None] * base.scale_tril).sum(dim=-3)
            x = loc + (tril @ z.unsqueeze(-1)).squeeze(-1)
        else:
            scale = (onehot.unsqueeze(-1) * base.base_dist.scale).sum(dim=-2)
            x = loc + scale * z
        return self._to_data(x)


def _is_diagonal_normal(base: Distribution) -> bool:
    return (
        isinstance(base, Independent)
        and isinstance(base.base_dist, Normal)
        and base.reinterpreted_batch_ndims == 1
    )


def _width(flow: nn.Module, name: str, given: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise TypeError(f"{name} must be an int >= 0, got {given!r}")
        return given
    arguments: dict[str, Any] = getattr(flow, "arguments", None) or {}
    value = arguments.get(name, 0 if name == "context" else None)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"{name}: {type(flow).__name__} does not record its number of {name} (it is not a "
            f"preset); pass {name}=..."
        )
    return value


def export_function(
    flow: nn.Module,
    what: str = "log_prob",
    *,
    features: int | None = None,
    context: int | None = None,
    standardization: Standardization | None = None,
) -> ExportFunction:
    r"""The function of plain tensors that exporting ``flow``'s ``what`` traces.

    The flow is used as given (same device, dtype and weights); :func:`~flows.core.export.
    export_program` traces a CPU float32 copy.

    Arguments:
        flow: A lazy distribution: a preset (MAF, NSF, GMM, ...) or any module whose
            ``forward(c)`` returns a :class:`~flows.core.distributions.NormalizingFlow` or a
            Gaussian :class:`~flows.core.distributions.Mixture`.
        what: ``"log_prob"`` or ``"sample"``.
        features: The number of features; by default the preset's ``arguments["features"]``.
        context: The number of context features; by default the preset's, else 0.
        standardization: The data (and context) statistics to fold in, or ``None``.

    Raises:
        ExportError: ``what="sample"`` for a distribution that is neither a normalizing flow
            nor a Gaussian mixture.
        ValueError: ``what`` is not ``"log_prob"`` or ``"sample"``, the widths are unknown, or
            the standardization does not have one number per column.
    """
    check_choice("what", what, WHAT)
    features = _width(flow, "features", features)
    context = _width(flow, "context", context)
    if standardization is not None and not isinstance(standardization, Standardization):
        raise TypeError(
            f"standardization must be a Standardization or None, got "
            f"{type(standardization).__name__}"
        )
    if what == "log_prob":
        return DensityFunction(flow, features, context, standardization)
    name = type(flow).__name__
    probe = next(iter(flow.parameters()), None) if hasattr(flow, "parameters") else None
    c = torch.zeros(2, context) if context else None
    if c is not None and probe is not None:
        c = c.to(probe)
    with torch.no_grad():
        distribution = flow(c)
    if isinstance(distribution, NormalizingFlow):
        return SampleFunction(flow, features, context, standardization)
    if isinstance(distribution, Mixture):
        base = distribution.base
        if isinstance(base, MultivariateNormal) or _is_diagonal_normal(base):
            return MixtureSampleFunction(flow, features, context, standardization)
        raise ExportError(
            f"cannot export sample of {name}: it is a mixture of {type(base).__name__} "
            "components; only Gaussian components have a sampling map from noise that this "
            "export knows"
        )
    raise ExportError(
        f"cannot export sample of {name}: its distribution is a {type(distribution).__name__}, "
        "neither a normalizing flow (sample = inverse transform of base noise) nor a Gaussian "
        "mixture"
    )
