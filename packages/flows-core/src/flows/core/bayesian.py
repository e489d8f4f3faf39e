r"""Bayesian flows: a mean-field Gaussian posterior over the weights of a flow's networks.

:class:`BayesianFlow` wraps any lazy flow (every preset, a custom :class:`~flows.core.Flow`)
and places on each weight and bias :math:`w` of its linear layers (:class:`torch.nn.Linear`,
:class:`flows.nn.Linear`, :class:`flows.nn.MaskedLinear` and their subclasses) the posterior

.. math:: q(w) = \mathcal{N}(w \mid \mu, \sigma^2), \qquad p(w) = \mathcal{N}(w \mid 0, s^2),

the means :math:`\mu` being the flow's own parameters (so its ``state_dict`` and checkpoint
are those of the posterior mean) and :math:`\log \sigma` new parameters, one per weight.
:func:`fit_bayesian` maximizes the evidence lower bound on the data :math:`x_{1:N}`,

.. math:: \mathcal{L} = \mathbb{E}_{q(w)} \Big[ \sum_{i=1}^N \log p(x_i \mid c_i, w) \Big]
    - \mathrm{KL}(q(w) \| p(w)),

one weight draw per step (the reparameterization :math:`w = \mu + \sigma \epsilon`). The
predictive density averages over weight draws, :math:`p(x \mid c) \approx \frac{1}{S}
\sum_s p(x \mid c, w_s)`; the draws disagree more where the data said less, so their spread
measures the flow's uncertainty about its own density.

The flow's modules read the drawn weights in place of their parameters, which stay registered
(see ``flows.core._substitution``): no layer is replaced, every fast path of the presets still
applies, and a distribution returned by a call keeps reading its draw when ``log_prob`` calls
the networks later.

References:
    | Weight Uncertainty in Neural Networks (Blundell et al., 2015)
    | https://arxiv.org/abs/1505.05424
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from flows.core._substitution import owner_of, substitute, substituted, unsubstitute
from flows.core.lazy import LazyDistribution
from flows.core.training import FitResult, fit
from flows.core.validation import check_count, check_positive

__all__ = ["BayesianFlow", "fit_bayesian", "is_linear"]

#: The key of a checkpoint's ``extra`` that holds the posterior scales.
_EXTRA_KEY = "bayesian"


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a linear layer whose ``weight`` and ``bias`` get a posterior.

    Example:
        >>> from flows.nn import MLP
        >>> [is_linear(m) for m in MLP(2, 1, hidden_features=[4])]
        [True, False, True]
    """
    from flows.nn import Linear, MaskedLinear

    return isinstance(module, (nn.Linear, Linear, MaskedLinear))


class BayesianFlow(LazyDistribution):
    r"""A lazy flow whose linear layers' weights have a mean-field Gaussian posterior.

    ``bayesian(c)`` draws new weights and returns the flow's distribution :math:`p(X \mid c,
    w)` for them; within ``with bayesian.sampled():`` every call uses one draw, and within
    ``with bayesian.posterior_mean():`` the means.

    Arguments:
        flow: The lazy flow whose networks become Bayesian; its parameters become the
            posterior means (its current values are the initial means).
        prior_scale: The scale :math:`s` of the prior :math:`\mathcal{N}(0, s^2)` of every
            weight.
        init_scale: The initial posterior scale :math:`\sigma` of every weight.
        layers: Which modules are linear layers to make Bayesian (default :func:`is_linear`):
            their trainable ``weight`` and ``bias`` parameters get a posterior, the others
            (bases, element-wise parameters) stay point estimates.
        names: Instead of ``layers``, the dotted names of the parameters that get a
            posterior, e.g. another posterior's :attr:`names` (how :meth:`load` rebuilds one).

    Raises:
        ValueError: The flow has no trainable linear layers, a name is not one of its
            parameters, or a scale is not positive.
        TypeError: Both ``layers`` and ``names`` are given.

    Example:
        >>> import torch
        >>> from flows.core import MAF, BayesianFlow
        >>> _ = torch.manual_seed(0)
        >>> bayesian = BayesianFlow(MAF(features=2, transforms=1), prior_scale=1.0)
        >>> x = torch.randn(3, 2)
        >>> bayesian().log_prob(x).shape, len(bayesian.names)
        (torch.Size([3]), 6)
        >>> with bayesian.sampled():  # one draw of the weights for the whole block
        ...     torch.equal(bayesian().log_prob(x), bayesian().log_prob(x))
        True
        >>> bayesian.predictive_log_prob(x, samples=8).shape
        torch.Size([3])
    """

    def __init__(
        self,
        flow: nn.Module,
        prior_scale: float = 1.0,
        init_scale: float = 1e-3,
        layers: Callable[[nn.Module], bool] | None = None,
        *,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(flow, nn.Module):
            raise TypeError(f"flow must be a lazy flow (a torch.nn.Module), got {type(flow)}")
        self.prior_scale = check_positive("prior_scale", prior_scale, finite=True)
        self.init_scale = check_positive("init_scale", init_scale, finite=True)
        if names is None:
            names = _linear_parameter_names(flow, layers if layers is not None else is_linear)
        elif layers is not None:
            raise TypeError("give layers or names, not both")
        else:
            names = _checked_names(flow, names)
        self.flow = flow
        #: The dotted names of the parameters that have a posterior, in ``log_scales`` order.
        self.names: tuple[str, ...] = tuple(names)
        means = self._means()
        self.log_scales = nn.ParameterList(
            nn.Parameter(torch.full_like(mean, math.log(self.init_scale))) for mean in means
        )
        self._held = False

    def _means(self) -> list[Tensor]:
        # From the registry, not by attribute: an attribute may read a draw.
        means = []
        for name in self.names:
            owner, leaf = owner_of(self.flow, name)
            means.append(cast(Tensor, owner._parameters[leaf]))  # checked in __init__
        return means

    def _masks(self) -> list[Tensor | None]:
        """Each weight's mask where its layer multiplies it by one (masked entries do nothing
        and have no posterior)."""
        masks = []
        for name in self.names:
            owner, leaf = owner_of(self.flow, name)
            mask = getattr(owner, "mask", None) if leaf == "weight" else None
            weight = owner._parameters[leaf]
            fits = isinstance(mask, Tensor) and weight is not None and mask.shape == weight.shape
            masks.append(mask if fits else None)
        return masks

    def draw(self) -> dict[str, Tensor]:
        r"""Draw weights :math:`w = \mu + \sigma \epsilon`, differentiable in :math:`\mu` and
        :math:`\sigma`, by dotted parameter name."""
        return {
            name: mean + log_scale.exp() * torch.randn_like(mean)
            for name, mean, log_scale in zip(
                self.names, self._means(), self.log_scales, strict=True
            )
        }

    @contextlib.contextmanager
    def sampled(self) -> Iterator[dict[str, Tensor]]:
        """Within the block, every call uses one draw of the weights (yielded by name)."""
        weights = self.draw()
        held, self._held = self._held, True
        try:
            with substituted(self.flow, weights):
                yield weights
        finally:
            self._held = held

    @contextlib.contextmanager
    def posterior_mean(self) -> Iterator[None]:
        """Within the block, every call uses the posterior means of the weights."""
        held, self._held = self._held, True
        try:
            with substituted(self.flow, dict(zip(self.names, self._means(), strict=True))):
                yield
        finally:
            self._held = held

    def forward(self, c: Tensor | None = None) -> Distribution:
        r"""Return :math:`p(X \mid c, w)` for new weights :math:`w \sim q` (or the block's).

        Outside a block, the drawn weights stay in place until the next draw, so the returned
        distribution reads them whenever its ``log_prob`` or ``sample`` runs the networks.
        """
        if not self._held:
            for name, weight in self.draw().items():
                substitute(*owner_of(self.flow, name), weight)
        return self.flow() if c is None else self.flow(c)

    def release(self) -> None:
        """Let the flow read its parameters (the posterior means) again after a call."""
        for name in self.names:
            unsubstitute(*owner_of(self.flow, name))

    def __getstate__(self) -> dict[str, Any]:
        # A draw left by a call is part of a graph, which copies and pickles cannot hold.
        if not self._held:
            self.release()
        return self.__dict__.copy()

    def kl(self) -> Tensor:
        r"""The divergence :math:`\mathrm{KL}(q(w) \| p(w))` summed over the weights.

        .. math:: \sum_j \log \frac{s}{\sigma_j} + \frac{\sigma_j^2 + \mu_j^2}{2 s^2}
            - \frac{1}{2}

        Weights that a layer's mask zeroes are left out.
        """
        s = self.prior_scale
        total = torch.zeros((), dtype=self.log_scales[0].dtype, device=self.log_scales[0].device)
        for mean, log_scale, mask in zip(
            self._means(), self.log_scales, self._masks(), strict=True
        ):
            terms = math.log(s) - log_scale + ((2 * log_scale).exp() + mean**2) / (2 * s**2) - 0.5
            total = total + (terms.sum() if mask is None else (terms * (mask != 0)).sum())
        return total

    def log_probs(self, x: Tensor, c: Tensor | None = None, samples: int = 32) -> Tensor:
        r"""The log-densities :math:`\log p(x \mid c, w_s)` under ``samples`` weight draws,
        of shape ``(samples, *batch)``."""
        check_count("samples", samples)
        values = []
        for _ in range(samples):
            with self.sampled():
                values.append((self.flow() if c is None else self.flow(c)).log_prob(x))
        return torch.stack(values)

    def predictive_log_prob(self, x: Tensor, c: Tensor | None = None, samples: int = 32) -> Tensor:
        r"""The predictive log-density :math:`\log \frac{1}{S} \sum_s p(x \mid c, w_s)` over
        :math:`S` = ``samples`` weight draws."""
        return torch.logsumexp(self.log_probs(x, c, samples), dim=0) - math.log(samples)

    def save(
        self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Write the posterior with :func:`flows.core.save`: the flow (a preset) holds the
        means, ``extra["bayesian"]`` the scales, the prior and the names.

        Raises:
            CheckpointError: As :func:`flows.core.save`, or ``extra`` has a key ``"bayesian"``.
        """
        from flows.core.checkpoint import CheckpointError, save

        extra = dict(extra or {})
        if _EXTRA_KEY in extra:
            raise CheckpointError(
                f"extra must not have the key {_EXTRA_KEY!r}: it holds the posterior"
            )
        extra[_EXTRA_KEY] = {
            "prior_scale": self.prior_scale,
            "init_scale": self.init_scale,
            "names": list(self.names),
            "log_scales": [p.detach().cpu() for p in self.log_scales],
        }
        save(self.flow, path, extra=extra)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, map_location: str | torch.device | None = None
    ) -> tuple[BayesianFlow, dict[str, Any]]:
        """Read a posterior written by :meth:`save`; return it and the rest of ``extra``.

        Raises:
            CheckpointError: As :func:`flows.core.load`, or the file holds no posterior, or
                one whose names or shapes are not those of the flow's linear layers.
        """
        from flows.core.checkpoint import CheckpointError, load

        flow, extra = load(path, map_location=map_location)
        stored = extra.pop(_EXTRA_KEY, None)
        where = repr(str(path))
        if not isinstance(stored, dict):
            raise CheckpointError(f"{where} holds a flow but no Bayesian posterior")
        try:
            bayesian = cls(
                flow,
                prior_scale=stored["prior_scale"],
                init_scale=stored["init_scale"],
                names=stored["names"],
            )
            scales = stored["log_scales"]
            if not isinstance(scales, (list, tuple)) or len(scales) != len(bayesian.names):
                raise ValueError("it does not hold one tensor of scales per weight name")
            with torch.no_grad():
                for name, target, value in zip(
                    bayesian.names, bayesian.log_scales, scales, strict=True
                ):
                    if not isinstance(value, Tensor) or value.shape != target.shape:
                        raise ValueError(f"the scales of {name!r} do not have its shape")
                    if bool(torch.isnan(value).any()):
                        raise ValueError(f"the scales of {name!r} hold NaN")
                    target.copy_(value)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{where} holds an invalid Bayesian posterior: {error}"
            ) from None
        return bayesian, extra

    def extra_repr(self) -> str:
        return f"prior_scale={self.prior_scale}, weights={len(self.names)}"


def _linear_parameter_names(flow: nn.Module, chosen: Callable[[nn.Module], bool]) -> list[str]:
    """The dotted names of the trainable weights and biases of the ``chosen`` modules."""
    names = []
    for prefix, module in flow.named_modules():
        if not chosen(module):
            continue
        for leaf in ("weight", "bias"):
            parameter = module._parameters.get(leaf)
            if parameter is not None and parameter.requires_grad:
                names.append(f"{prefix}.{leaf}" if prefix else leaf)
    if not names:
        raise ValueError(
            f"flow {type(flow).__name__} has no trainable linear layer whose weights could "
            "have a posterior"
        )
    return names


def _checked_names(flow: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` as a list, each once and each a floating-point parameter of ``flow``."""
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not all(isinstance(name, str) for name in names)
    ):
        raise TypeError(f"names must be a sequence of dotted parameter names, got {names!r}")
    names = list(names)
    if not names:
        raise ValueError("names must name at least one parameter, got none")
    parameters = dict(flow.named_parameters())
    for name in names:
        if name not in parameters or not parameters[name].is_floating_point():
            raise ValueError(
                f"names: {name!r} is not a floating-point parameter of flow {type(flow).__name__}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"names must name each parameter once, got {names}")
    return names


class _Penalized(Distribution):
    """A distribution whose ``log_prob`` is another's minus a constant ``penalty`` per row."""

    def __init__(self, base: Distribution, penalty: Tensor) -> None:
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)
        self.base = base
        self.penalty = penalty

    def log_prob(self, value: Tensor) -> Tensor:
        return self.base.log_prob(value) - self.penalty


class _Objective(LazyDistribution):
    """What :func:`fit` trains for :func:`fit_bayesian`: per row, the negative ELBO share
    ``-log p(x | c, w) + KL / N`` under one draw while training, the posterior mean's NLL
    when measured (evaluation mode)."""

    def __init__(self, bayesian: BayesianFlow, rows: int, kl_weight: float) -> None:
        super().__init__()
        self.bayesian = bayesian
        self.rows = rows
        self.kl_weight = kl_weight

    def forward(self, c: Tensor | None = None) -> Distribution:
        if not self.training:
            with self.bayesian.posterior_mean():
                return self.bayesian.flow() if c is None else self.bayesian.flow(c)
        distribution = self.bayesian(c)
        return _Penalized(distribution, self.kl_weight * self.bayesian.kl() / self.rows)


def _training_rows(rows: int, validation: float) -> int:
    """The rows :func:`fit` trains on out of ``rows``, holding out ``validation`` of them."""
    held = round(validation * rows)
    if validation > 0 and held == 0:
        held = 1
    return max(rows - held, 1)


def fit_bayesian(
    bayesian: BayesianFlow,
    x: Tensor,
    context: Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    **options: Any,
) -> FitResult:
    r"""Train a :class:`BayesianFlow` on the rows of ``x`` by maximizing the ELBO.

    Each step of :func:`flows.core.fit` draws one set of weights and takes an Adam step on the
    mean over its batch of :math:`-\log p(x_i \mid c_i, w) + \beta \, \mathrm{KL}(q \| p) / N`,
    :math:`N` being the number of training rows and :math:`\beta` = ``kl_weight``: over an
    epoch, the negative ELBO divided by :math:`N`. The held-out NLL that early stopping
    watches (and the result reports) is that of the posterior mean weights.

    Arguments:
        bayesian: The Bayesian flow; its means and scales are updated in place.
        x: The data, of shape ``(N, D)``.
        context: The conditioning rows, of shape ``(N, C)``, or ``None``.
        kl_weight: The factor :math:`\beta` of the KL term (1 for the ELBO).
        options: The keyword arguments of :func:`flows.core.fit` (``epochs``, ``steps``,
            ``batch_size``, ``lr``, ``validation``, ``patience``, ``callback``, ``seed``, ...).

    Returns:
        :func:`flows.core.fit`'s :class:`~flows.core.FitResult`, its ``flow`` being
        ``bayesian``; ``history``'s ``train_nll`` is the per-row negative ELBO.

    Raises:
        TypeError: ``bayesian`` is not a :class:`BayesianFlow`.
        ValueError: ``kl_weight`` is negative, or as :func:`flows.core.fit`.
        FitDivergedError: As :func:`flows.core.fit`.

    Example:
        >>> import torch
        >>> from flows.core import MAF, BayesianFlow, fit_bayesian
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 2)
        >>> bayesian = BayesianFlow(MAF(features=2, transforms=1), prior_scale=1.0)
        >>> result = fit_bayesian(bayesian, x, epochs=5, batch_size=64, seed=0)
        >>> result.flow is bayesian, result.steps
        (True, 20)
    """
    if isinstance(kl_weight, bool) or not isinstance(kl_weight, (int, float)) or kl_weight < 0:
        raise ValueError(f"kl_weight must be a number >= 0, got {kl_weight!r}")
    if not isinstance(bayesian, BayesianFlow):
        raise TypeError(f"bayesian must be a BayesianFlow, got {type(bayesian).__name__}")
    rows = torch.as_tensor(x).shape[0] if torch.as_tensor(x).ndim >= 1 else 1
    validation = options.get("validation", 0.1)
    objective = _Objective(bayesian, _training_rows(rows, validation), float(kl_weight))
    try:
        result = fit(objective, x, context, **options)
    finally:
        bayesian.release()
    return dataclasses.replace(result, flow=bayesian)
