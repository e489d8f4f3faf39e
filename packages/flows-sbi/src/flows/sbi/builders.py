r"""Builders that sbi's ``NPE(prior, density_estimator=...)`` and ``NLE(...)`` accept.

sbi calls a builder once, with the first round's simulations, ``builder(batch_theta,
batch_x)``, and trains what it returns. Ours read the shapes and the standardization from
those batches and build any preset of the registry (or a constructor) with the embedded
condition as its context, inside a :class:`flows.sbi.FlowEstimator`.

sbi's own option names are understood too, so that sbi's tutorials run with only the builder
swapped: ``num_transforms`` is the preset's ``transforms``, ``num_bins`` its ``bins``,
``tail_bound`` a spline preset's ``bound``, and an integer ``hidden_features`` is two hidden
layers of that width.

A bounded prior: pass its support, ``support=prior.support`` (a box such as
``BoxUniform``'s, a half-line such as ``LogNormal``'s, or sbi's ``MultipleIndependent`` of
them), or ``(low, high)``. The estimator then lives on that support, so every sample is inside
it and sbi's rejection of samples outside it (leakage) accepts all of them. On a box, the flow
models the scaled logit of the standardized box
(:class:`~flows.core.transforms.SupportTransform`), on which the prior has unit variance and a
spline's default :math:`[-5, 5]` covers all but :math:`10^{-4}` of the box at either end.
"""

from __future__ import annotations

__all__ = ["likelihood_nn", "posterior_nn"]

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from flows.core.lazy import LazyDistribution
from flows.core.support import normalize_support
from flows.sbi.estimator import FlowEstimator, Standardize

_Z_SCORES = ("independent", "structured", "none", None)

# sbi's spelling -> ours.
_ALIASES = {"num_transforms": "transforms", "num_bins": "bins", "tail_bound": "bound"}


def posterior_nn(
    model: str | Callable[..., LazyDistribution] = "nsf",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **preset_kwargs: Any,
) -> Callable[[Tensor, Tensor], FlowEstimator]:
    r"""A builder of posterior estimators :math:`q(\theta | x)` for sbi's ``NPE``.

    Arguments:
        model: A preset's registered name (``"maf"``, ``"nsf"``, ``"naf"``, ``"gf"``,
            ``"cnf"``, ``"realnvp"``, a plugin's) or a constructor called as
            ``model(features=..., context=..., **preset_kwargs)`` that returns a lazy flow.
        z_score_theta: How :math:`\theta` is standardized before the flow:
            ``"independent"`` (each element by its mean and standard deviation over the
            simulations), ``"structured"`` (one mean and deviation for all elements) or
            ``"none"``.
        z_score_x: The same for :math:`x`, before the embedding network. With ``"none"``,
            :math:`x` may hold NaN (sbi's padding of missing iid trials) for an
            ``embedding_net`` that handles it; otherwise simulations must be finite.
        embedding_net: A network from :math:`x` (a batch) to features the flow reads as its
            context; ``None`` is the identity.
        preset_kwargs: The preset's arguments (``transforms=5``, ``hidden_features=(50, 50)``,
            ``bins=10``, ...), sbi's spellings of them, and ``support``: the prior's support
            (``prior.support``: an interval, a half-line, ``independent(...)`` of one, or a
            ``constraints.cat`` of them as sbi's ``MultipleIndependent`` has; or
            ``(low, high)``, ``-inf`` or ``inf`` for an open side), which bounds the flow to
            it.

    Returns:
        The builder, ``builder(batch_theta, batch_x) -> FlowEstimator``.

    Raises:
        RegistryError: ``model`` is not a registered name; the message says which package
            provides it, if one of ours does.
        TypeError: ``model`` is neither a name nor callable.
        ValueError: An unknown ``z_score_theta`` or ``z_score_x``, or a bad ``support``.

    Example:
        >>> import torch
        >>> build = posterior_nn("maf", transforms=2, hidden_features=(16, 16))
        >>> theta, x = torch.randn(100, 2), torch.randn(100, 3)
        >>> estimator = build(theta, x)
        >>> estimator.input_shape, estimator.condition_shape
        (torch.Size([2]), torch.Size([3]))
        >>> estimator.sample((10,), x[:4]).shape
        torch.Size([10, 4, 2])
    """
    return _Builder(model, z_score_theta, z_score_x, embedding_net, False, preset_kwargs)


def likelihood_nn(
    model: str | Callable[..., LazyDistribution] = "nsf",
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    **preset_kwargs: Any,
) -> Callable[[Tensor, Tensor], FlowEstimator]:
    r"""A builder of likelihood estimators :math:`q(x | \theta)` for sbi's ``NLE``.

    The arguments are those of :func:`posterior_nn`, with the roles swapped: the flow is over
    :math:`x` (standardized as ``z_score_x`` says; ``support`` bounds :math:`x`), its context
    is :math:`\theta` (standardized as ``z_score_theta`` says, then through
    ``embedding_net``).

    Example:
        >>> import torch
        >>> build = likelihood_nn("maf", transforms=1, hidden_features=(16,))
        >>> estimator = build(torch.randn(100, 2), torch.randn(100, 3))
        >>> estimator.input_shape, estimator.condition_shape
        (torch.Size([3]), torch.Size([2]))
    """
    return _Builder(model, z_score_x, z_score_theta, embedding_net, True, preset_kwargs)


class _Builder:
    """The callable sbi keeps; a plain object (not a closure), so that it pickles."""

    def __init__(
        self,
        model: str | Callable[..., LazyDistribution],
        z_score_input: str | None,
        z_score_condition: str | None,
        embedding_net: nn.Module | None,
        swap: bool,
        preset_kwargs: dict[str, Any],
    ) -> None:
        names = ("z_score_x", "z_score_theta") if swap else ("z_score_theta", "z_score_x")
        for name, value in zip(names, (z_score_input, z_score_condition), strict=True):
            _check_z_score(name, value)
        if embedding_net is not None and not isinstance(embedding_net, nn.Module):
            raise TypeError(
                f"embedding_net must be a torch.nn.Module or None, got {type(embedding_net)}"
            )
        self.model = model
        self.constructor = _constructor(model)  # an unknown name fails now, not after simulating
        self.z_score_input = z_score_input
        self.z_score_condition = z_score_condition
        self.embedding_net = embedding_net
        self.swap = swap
        self.support = preset_kwargs.pop("support", None)
        self.preset_kwargs = _translate(preset_kwargs)

    def __call__(self, batch_theta: Tensor, batch_x: Tensor) -> FlowEstimator:
        named = (("batch_x", batch_x), ("batch_theta", batch_theta))
        (input_name, inputs), (condition_name, conditions) = named if self.swap else named[::-1]
        _check_batch(input_name, inputs, finite=True)
        # Without statistics to compute, the condition may hold NaN for the embedding net to
        # handle: sbi's pattern for a varying number of iid trials pads the missing ones.
        standardized = self.z_score_condition not in ("none", None)
        _check_batch(condition_name, conditions, finite=standardized)
        input_shape, condition_shape = inputs.shape[1:], conditions.shape[1:]
        features = math.prod(input_shape)
        shift, scale = _statistics(inputs, self.z_score_input)
        embedding = nn.Sequential()
        if standardized:
            embedding.append(Standardize(*_statistics(conditions, self.z_score_condition)))
        if self.embedding_net is not None:
            embedding.append(self.embedding_net)
        # sbi builds on the CPU and moves the estimator where it trains: the embedding net
        # goes where the simulations are, as the rest of the estimator does.
        embedding.to(conditions.device)
        with torch.no_grad():
            context = embedding(conditions[:1]).reshape(1, -1).shape[1]
        # The estimator restricts the flow to the support, in the flow's standardized units.
        bounds = None if self.support is None else _bounds(self.support, input_shape, inputs)
        flow = self._build(features, context)
        return FlowEstimator(
            flow.to(inputs.device),
            input_shape,
            condition_shape,
            embedding_net=embedding,
            input_shift=shift,
            input_scale=scale,
            bounds=bounds,
        )

    def _build(self, features: int, context: int) -> LazyDistribution:
        flow = self.constructor(features=features, context=context, **self.preset_kwargs)
        if not isinstance(flow, LazyDistribution):
            raise TypeError(
                f"model {self.model!r} must build a flows LazyDistribution, "
                f"got {type(flow).__name__}"
            )
        return flow


def _constructor(model: object) -> Callable[..., LazyDistribution]:
    if isinstance(model, str):
        from flows.core.plugins import get_preset

        return get_preset(model)
    if callable(model):
        return model
    raise TypeError(
        f"model must be a preset name or a constructor of lazy flows, got {type(model).__name__}"
    )


def _check_z_score(name: str, value: object) -> None:
    if value == "transform_to_unconstrained":
        raise ValueError(
            f"{name}='transform_to_unconstrained' is not needed here: pass the prior's "
            "support, support=prior.support, and the flow lives on it"
        )
    if value not in _Z_SCORES:
        raise ValueError(f"{name} must be 'independent', 'structured' or 'none', got {value!r}")


def _translate(kwargs: dict[str, Any]) -> dict[str, Any]:
    """sbi's option names in ours."""
    out = dict(kwargs)
    for theirs, ours in _ALIASES.items():
        if theirs in out:
            if ours in out:
                raise ValueError(f"pass {ours}= or {theirs}=, not both")
            out[ours] = out.pop(theirs)
    hidden = out.get("hidden_features")
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        out["hidden_features"] = (hidden, hidden)
    return out


def _check_batch(name: str, batch: Tensor, finite: bool) -> None:
    """Refuse a batch that is not simulations, or (if ``finite``) one holding NaN or inf.

    A batch whose statistics standardize it must be finite: they would be NaN.
    """
    if not isinstance(batch, Tensor) or batch.dim() < 1:
        raise TypeError(f"{name} must be a tensor of shape (simulations, ...), got {batch!r:.80}")
    if not finite:
        return
    rows = batch.shape[0]
    bad = ~torch.isfinite(batch.detach()).reshape(rows, math.prod(batch.shape[1:])).all(dim=1)
    if bool(bad.any()):
        raise ValueError(
            f"{name} holds NaN or inf in {int(bad.sum())} of {rows} simulations; drop "
            "them first (sbi's append_simulations(..., exclude_invalid_x=True) drops those of x)"
        )


def _statistics(batch: Tensor, mode: str | None) -> tuple[Tensor, Tensor]:
    """The shift and scale of the standardization ``mode`` over a batch's first dimension."""
    shape = batch.shape[1:]
    if mode in ("none", None):
        zeros = torch.zeros(shape, dtype=batch.dtype, device=batch.device)
        return zeros, torch.ones_like(zeros)
    batch = batch.detach()
    if mode == "structured":
        shift, scale = batch.mean().expand(shape), batch.std().expand(shape)
    else:
        shift, scale = batch.mean(0), batch.std(0)
    # A constant element (or a single simulation) is shifted, not scaled: no division by 0.
    scale = torch.where(scale > 1e-14, scale, torch.ones_like(scale))
    return shift.clone(), scale.clone()


def _bounds(support: object, shape: torch.Size, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(low, high)`` of ``support`` (a pair, or a constraint), of ``shape``."""
    if isinstance(support, constraints.Constraint):
        pair = _constraint_bounds(support)
    elif isinstance(support, (tuple, list)) and len(support) == 2:
        pair = tuple(support)
    else:
        raise ValueError(f"support must be {_SUPPORTS}, got {support!r}")
    low, high = (torch.as_tensor(b, dtype=like.dtype).detach().cpu().to(like.device) for b in pair)
    try:
        low, high = low.broadcast_to(shape).clone(), high.broadcast_to(shape).clone()
    except RuntimeError:
        raise ValueError(
            f"support bounds of shapes {tuple(low.shape)} and {tuple(high.shape)} do not fit "
            f"the input's shape {tuple(shape)}"
        ) from None
    if not bool((low < high).all()):
        raise ValueError("support must have low < high in every element")
    return low, high


_SUPPORTS = (
    "(low, high) or a constraint: an interval or half-line (as BoxUniform(...).support or "
    "LogNormal's), independent(...) of one, or sbi's MultipleIndependent(...).support, a "
    "constraints.cat of them"
)


def _constraint_bounds(support: constraints.Constraint) -> tuple[Any, Any]:
    """The bounds of a constraint, along the features when it concatenates several."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, constraints.cat):
        parts = list(zip(map(_constraint_bounds, support.cseq), support.lengths, strict=True))
        low = torch.cat([_repeated(low, n) for (low, _), n in parts])
        high = torch.cat([_repeated(high, n) for (_, high), n in parts])
        return low, high
    if hasattr(support, "lower_bound") and hasattr(support, "upper_bound"):
        # An interval's bounds as they are, tensors of any shape, to broadcast to the input's.
        return support.lower_bound, support.upper_bound
    try:
        return normalize_support(support, name="support")
    except TypeError:
        raise ValueError(f"support must be {_SUPPORTS}, got {support!r}") from None


def _repeated(bound: Any, length: int) -> Tensor:
    """A part's bounds of a concatenation, one per feature it covers: ``(length,)``."""
    bound = torch.as_tensor(bound, dtype=torch.float64).detach().cpu().flatten()
    if bound.numel() == 1:
        return bound.expand(length)
    if bound.numel() != length:
        raise ValueError(
            f"support: a part of the concatenation has {bound.numel()} bounds for {length} "
            "features"
        )
    return bound
