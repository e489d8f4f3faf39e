r"""Fit a flow to an unnormalized density by variational inference (reverse KL).

:func:`fit_to_target` trains :math:`q_\phi` so that it approaches :math:`p(x) \propto
\exp(\log \tilde{p}(x))`, given only the function :math:`\log \tilde{p}`, by maximizing a
Monte-Carlo bound on :math:`\log Z = \log \int \tilde{p}(x) \, dx` estimated from reparameterized
draws :math:`x_k = f_\phi^{-1}(z_k)` and their log-densities, both from one
``rsample_and_log_prob`` pass. With the log weights :math:`\log w_k = \log \tilde{p}(x_k) -
\log q_\phi(x_k)` of :math:`K` draws:

- ``"elbo"``: :math:`\frac{1}{K} \sum_k \log w_k`, whose maximization minimizes
  :math:`\mathrm{KL}(q_\phi \| p)`;
- ``"stl"`` (sticking the landing): the same value, but :math:`\log q` evaluated with the
  parameters held fixed, so the gradient flows through the draws only; the score term, whose
  mean is zero, is dropped, and the gradient vanishes when :math:`q_\phi = p`;
- ``"iwae"``: :math:`\log \frac{1}{K} \sum_k w_k`, tighter as :math:`K` grows;
- ``"renyi"``: :math:`\frac{1}{1 - \alpha} \log \frac{1}{K} \sum_k w_k^{1 - \alpha}`, the
  variational Rényi bound: ``"iwae"`` at :math:`\alpha = 0`, ``"elbo"`` as :math:`\alpha \to 1`,
  mass-covering for :math:`\alpha < 1`.

A conditional flow is fitted to amortized targets :math:`\log \tilde{p}(x \mid c)` over a set
of contexts, a batch of them per step. The result reports the ELBO, the importance-sampling
effective sample size per draw and the Pareto :math:`\hat{k}` of the weights
(:mod:`flows.core.diagnostics`).

References:
    | Sticking the Landing: Simple, Lower-Variance Gradient Estimators for Variational
    | Inference (Roeder et al., 2017)
    | https://arxiv.org/abs/1703.09194

    | Importance Weighted Autoencoders (Burda et al., 2016)
    | https://arxiv.org/abs/1509.00519

    | Rényi Divergence Variational Inference (Li and Turner, 2016)
    | https://arxiv.org/abs/1602.02311
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from flows.core._substitution import substituted
from flows.core.diagnostics import importance_diagnostics
from flows.core.optimizer import make_adam, plateau_halving
from flows.core.training import (
    BestWeights,
    FitDivergedError,
    RunningLoss,
    as_rows,
    check_rows_fit_flow,
    epoch_batches,
)
from flows.core.validation import check_choice, check_count, check_positive

__all__ = [
    "ESTIMATORS",
    "OutsideSupportError",
    "VariationalProgress",
    "VariationalResult",
    "fit_to_target",
]

#: The names :func:`fit_to_target` takes as ``estimator``.
ESTIMATORS = ("elbo", "stl", "iwae", "renyi")

#: Draws per forward pass when the final diagnostics are measured over many contexts.
_EVAL_DRAWS_PER_PASS = 2**16


class OutsideSupportError(FitDivergedError):
    """The flow drew points where ``log_density`` is -inf, so the loss is infinite.

    Two causes give the same -inf: draws outside the target's support, where a lower learning
    rate does not help but a flow whose samples stay inside the support does (the presets of
    :mod:`flows.core` take ``support=(low, high)``); or draws so far out, after the flow ran
    away, that ``log_density`` underflows there, where a lower learning rate does help. The
    largest coordinate of those draws tells them apart, and the message gives it.

    Arguments:
        step: The optimizer step whose loss (or the ELBO measured after it) was not finite.
        loss: The loss or ELBO that was not finite.
        what: What was measured: ``"loss"`` or ``"ELBO"``.
        name: The target function's name, as the message shows it.
        outside: How many draws of that step (or measure) had ``log_density`` -inf.
        draws: How many draws ``log_density`` was called on at that step.
        largest: The largest coordinate, in magnitude, of that step's draws where
            ``log_density`` was -inf; ``None`` where it is not known.

    Example:
        >>> error = OutsideSupportError(1, float("inf"), "loss", "'log_density'", 12, 64, 1.5)
        >>> isinstance(error, FitDivergedError), error.outside, error.largest
        (True, 12, 1.5)
    """

    def __init__(
        self,
        step: int,
        loss: float,
        what: str,
        name: str,
        outside: int,
        draws: int,
        largest: float | None = None,
    ) -> None:
        super().__init__(step, loss, what)
        reach = "" if largest is None else f", coordinates up to {largest:.3g} in magnitude"
        self.args = (
            f"log_density {name} returned -inf at {outside} of the {draws} draws of the flow at "
            f"step {step} ({what} {loss}; the flow keeps its best finite weights){reach}: where "
            "they lie outside the target's support, give the flow that support, e.g. "
            "MAF(features, support=(low, high)) (every flows.core preset takes support=); "
            "where the target is finite but underflowed that far out, a lower lr keeps the "
            "flow from running away",
        )
        self.name, self.outside, self.draws, self.largest = name, outside, draws, largest

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.step, self.loss, self.what, self.name, self.outside, self.draws, self.largest),
        )


@dataclasses.dataclass(frozen=True)
class VariationalProgress:
    """What :func:`fit_to_target` tells its ``callback`` after every optimizer step.

    Arguments:
        step: The number of optimizer steps taken so far.
        total_steps: The number of steps planned (fewer are taken if training stops early).
        epoch: The current pass over the contexts, counted from 1 (the step, without contexts).
        loss: The negated bound of the last step (the negative ELBO for ``"elbo"``).
        elbo: The ELBO measured after this step, else ``None``.
        best_elbo: The best ELBO measured so far (``None`` before the first measure).
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    elbo: float | None
    best_elbo: float | None


@dataclasses.dataclass
class VariationalResult:
    r"""The outcome of :func:`fit_to_target`; ``print(result)`` shows its diagnostics.

    Arguments:
        flow: The trained flow, holding the best weights found (the same object passed in).
        history: One entry per measure: ``{"step", "epoch", "loss", "elbo", "lr"}``, ``loss``
            being the mean training loss since the previous measure and ``lr`` the rate of the
            steps before it.
        elbo: The ELBO :math:`\mathbb{E}_q[\log \tilde{p}(x) - \log q(x)]` of the final
            weights, averaged over the contexts; it is :math:`\log Z - \mathrm{KL}(q \| p)`.
        ess: The effective sample size per draw of the importance weights, in
            :math:`[1/S, 1]` (the mean over contexts).
        khat: The Pareto :math:`\hat{k}` of the importance weights (the largest over
            contexts): below 0.7, importance-weighted estimates from the flow are reliable.
        log_weights: The log weights the diagnostics were computed from, of shape
            :math:`(S,)`, or :math:`(S, M)` for :math:`M` contexts, on the CPU.
        steps: The number of optimizer steps taken.
        seconds: Wall time of the whole fit.
        best_step: The step whose weights were kept.
    """

    flow: nn.Module
    history: list[dict[str, float]]
    elbo: float
    ess: float
    khat: float
    log_weights: Tensor
    steps: int
    seconds: float
    best_step: int

    def __str__(self) -> str:
        verdict = "reliable" if self.khat < 0.7 else "unreliable"
        return (
            f"ELBO {self.elbo:.4f}, ESS/sample {self.ess:.3f}, k-hat {self.khat:.2f} "
            f"({verdict} importance weights) after {self.steps} steps"
        )


def _describe(function: Callable[..., Any]) -> str:
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return repr(name)


def _draws(distribution: Any, samples: int) -> tuple[Tensor, Tensor]:
    """``samples`` reparameterized draws and their log-densities, in one pass if possible."""
    if hasattr(distribution, "rsample_and_log_prob"):
        return distribution.rsample_and_log_prob((samples,))
    x = distribution.rsample((samples,))
    return x, distribution.log_prob(x)


@dataclasses.dataclass
class _Tally:
    """The draws of one step (or measure) at which the target was -inf, counted on the device."""

    outside: Tensor
    reach: Tensor  # the largest coordinate of those draws, in magnitude
    draws: int

    def add(self, outside: Tensor, reach: Tensor, draws: int) -> None:
        self.outside = self.outside + outside
        # fmax: NaN draws of a flow that blew up do not erase the reach.
        self.reach = torch.fmax(self.reach, reach)
        self.draws += draws


class _Target:
    """``log_density`` called on draws (with their contexts), its first answer checked."""

    def __init__(self, log_density: Callable[..., Tensor], conditional: bool) -> None:
        if not callable(log_density):
            raise TypeError(
                f"log_density must be a callable returning log-densities, "
                f"got {type(log_density).__name__}"
            )
        self.log_density = log_density
        self.conditional = conditional
        self.checked = False
        # The draws at which the target was -inf, tallied on the device per training step or
        # measure (read only when the fit has diverged, to say why): no sync per step.
        self.tallies: dict[tuple[str, int], _Tally] = {}
        self.label = ("loss", 1)

    def tally_as(self, what: str, step: int) -> None:
        """Tally the next calls' -inf draws under ``what`` (``"loss"``, ``"ELBO"``) at ``step``."""
        self.label = (what, step)

    def forget(self) -> None:
        """Drop the tallies: every step and measure so far was finite."""
        self.tallies.clear()

    def __call__(self, x: Tensor, c: Tensor | None) -> Tensor:
        if c is None:
            value = self.log_density(x)
        else:
            value = self.log_density(x, c.expand(*x.shape[:-1], c.shape[-1]))
        if not self.checked:
            self._check(x, value)
            self.checked = True
        below = torch.isneginf(value.detach())
        # The largest coordinate, in magnitude, of those draws: -inf from draws near the
        # flow's others is a support, from draws far out a flow that ran away.
        reach = torch.where(below.unsqueeze(-1), x.detach().abs(), 0.0).amax()
        tally = self.tallies.get(self.label)
        if tally is None:
            self.tallies[self.label] = _Tally(below.sum(), reach, value.numel())
        else:
            tally.add(below.sum(), reach, value.numel())
        return value

    def diverged(self, step: int, loss: float, what: str) -> FitDivergedError:
        """The error of a fit whose ``what`` at ``step`` was not finite:
        :class:`OutsideSupportError` if it is infinite and the target was -inf at some of that
        step's draws (the cause: a NaN comes from elsewhere), else :class:`FitDivergedError`."""
        tally = self.tallies.get((what, step))
        if tally is None or math.isnan(loss) or int(tally.outside) == 0:
            return FitDivergedError(step, loss, what)
        outside, reach = int(tally.outside), float(tally.reach)
        name = _describe(self.log_density)
        return OutsideSupportError(step, loss, what, name, outside, tally.draws, reach)

    def _check(self, x: Tensor, value: Any) -> None:
        """Refuse a first answer that is not one differentiable number per draw."""
        name = _describe(self.log_density)
        call = "log_density(x, c)" if self.conditional else "log_density(x)"
        if not isinstance(value, Tensor):
            raise TypeError(
                f"log_density {name} returned a {type(value).__name__}; {call} must return a "
                f"tensor of shape {tuple(x.shape[:-1])}, one log-density per draw"
            )
        if value.shape != x.shape[:-1]:
            raise ValueError(
                f"log_density {name} returned shape {tuple(value.shape)} for draws x of shape "
                f"{tuple(x.shape)}; {call} must return shape {tuple(x.shape[:-1])}, one "
                "log-density per draw"
            )
        nan = torch.isnan(value)
        if bool(nan.any()):
            raise ValueError(
                f"log_density {name} returned NaN for {int(nan.sum())} of {value.numel()} "
                f"draws x of shape {tuple(x.shape)}; it must return a number or -inf for "
                "every draw"
            )
        if x.requires_grad:
            gradient = None
            if value.requires_grad:
                (gradient,) = torch.autograd.grad(
                    value.sum(), x, retain_graph=True, allow_unused=True
                )
            if gradient is None:
                raise ValueError(
                    f"log_density {name} returned shape {tuple(value.shape)} with no gradient "
                    "with respect to x: reparameterized training needs it computed from x by "
                    "torch operations (not detached, not through numpy or .item())"
                )


def _bound(log_weights: Tensor, estimator: str, alpha: float) -> Tensor:
    """The estimator's bound on ``log Z`` from ``(K, *)`` log weights, averaged over ``*``."""
    if estimator in ("elbo", "stl") or (estimator == "renyi" and alpha == 1):
        return log_weights.mean()
    samples = log_weights.shape[0]
    scale = 1.0 if estimator == "iwae" else 1 - alpha
    bound = (torch.logsumexp(scale * log_weights, dim=0) - math.log(samples)) / scale
    return bound.mean()


def _log_weights(
    flow: nn.Module,
    target: _Target,
    c: Tensor | None,
    samples: int,
    path_only: bool,
    params: dict[str, nn.Parameter],
) -> Tensor:
    """``(samples, *)`` log weights of draws from ``flow(c)``; with ``path_only``, ``log q``
    is evaluated with the parameters detached (sticking the landing)."""
    distribution = flow() if c is None else flow(c)
    if not getattr(distribution, "has_rsample", False):
        raise TypeError(
            f"flow builds a {type(distribution).__name__}, which has no reparameterized "
            "samples (rsample); fit_to_target needs a flow whose draws are differentiable"
        )
    if path_only:
        x = distribution.rsample((samples,))
        with substituted(flow, {name: p.detach() for name, p in params.items()}):
            detached = flow() if c is None else flow(c)
            log_q = detached.log_prob(x)
    else:
        x, log_q = _draws(distribution, samples)
    return target(x, c) - log_q


def _check_arguments(
    steps: Any,
    samples: Any,
    estimator: Any,
    alpha: Any,
    batch_size: Any,
    lr: Any,
    patience: Any,
    clip_grad: Any,
    eval_every: Any,
    eval_samples: Any,
) -> None:
    check_count("steps", steps)
    check_count("samples", samples)
    check_choice("estimator", estimator, ESTIMATORS)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise TypeError(f"alpha must be a finite number, got {alpha!r}")
    if estimator == "renyi" and alpha < 0:
        raise ValueError(f"alpha must be >= 0 for the renyi estimator, got {alpha!r}")
    check_count("batch_size", batch_size)
    check_positive("lr", lr, finite=True)
    check_count("patience", patience, optional=True)
    check_positive("clip_grad", clip_grad, optional=True)
    check_count("eval_every", eval_every, optional=True)
    check_count("eval_samples", eval_samples)
    if estimator in ("iwae", "renyi") and samples < 2:
        raise ValueError(f"the {estimator} estimator needs samples >= 2, got {samples}")


@torch.no_grad()
def _measure(flow: nn.Module, target: _Target, contexts: Tensor | None, draws: int) -> Tensor:
    """Log weights of ``draws`` draws per context, ``(draws,)`` or ``(draws, M)``."""
    if contexts is None:
        return _log_weights(flow, target, None, draws, False, {})
    per_pass = max(1, _EVAL_DRAWS_PER_PASS // draws)
    parts = [
        _log_weights(flow, target, contexts[start : start + per_pass], draws, False, {})
        for start in range(0, contexts.shape[0], per_pass)
    ]
    return torch.cat(parts, dim=1)


def fit_to_target(
    flow: nn.Module,
    log_density: Callable[..., Tensor],
    context: Tensor | None = None,
    *,
    steps: int = 1000,
    samples: int = 64,
    estimator: str = "elbo",
    alpha: float = 0.5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int | None = 10,
    lr_patience: int | None = None,
    clip_grad: float | None = None,
    eval_every: int | None = None,
    eval_samples: int = 1024,
    callback: Callable[[VariationalProgress], bool | None] | None = None,
    seed: int | None = None,
) -> VariationalResult:
    r"""Train ``flow`` toward the density :math:`\propto \exp(\text{log\_density})` (reverse KL).

    Each step draws ``samples`` reparameterized points per context from the flow, evaluates
    the estimator's bound on :math:`\log Z` (see :mod:`flows.core.variational`) and takes one
    Adam step on its negation. Every ``eval_every`` steps the ELBO is measured on
    ``eval_samples`` draws per context, the same base draws each time (common random numbers,
    so measures compare weights, not noise); when it has not improved for ``patience``
    measures training stops, and the weights of the best ELBO are restored at the end. The
    diagnostics of the result come from a last ``eval_samples`` draws per context.

    Arguments:
        flow: A lazy distribution whose ``flow()`` (or ``flow(c)`` with a ``(B, C)`` context)
            has reparameterized samples: every preset whose distribution is a normalizing flow.
            Its weights are updated in place.
        log_density: The unnormalized target, differentiable in ``x``: ``log_density(x)`` maps
            draws of shape ``(K, D)`` to shape ``(K,)``; with ``context``, ``log_density(x,
            c)`` maps draws ``(K, B, D)`` and their contexts ``(K, B, C)`` to ``(K, B)``.
        context: The contexts, of shape ``(M, C)``, to fit an amortized (conditional) target
            over; ``None`` for an unconditional target.
        steps: Optimizer steps.
        samples: Draws :math:`K` per context and step (the :math:`K` of ``"iwae"``).
        estimator: ``"elbo"``, ``"stl"``, ``"iwae"`` or ``"renyi"``.
        alpha: The order :math:`\alpha \ge 0` of the ``"renyi"`` bound (ignored otherwise).
        batch_size: Contexts per step (ignored without ``context``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        patience: ELBO measures without improvement before stopping; ``None`` never stops.
        lr_patience: ELBO measures without improvement that the learning rate outlasts: the
            next one without improvement halves it; ``None`` keeps it constant (as
            :func:`flows.core.fit`'s).
        clip_grad: If given, clip the gradient norm to this value.
        eval_every: Steps between ELBO measures (default ``min(steps, 100)``).
        eval_samples: Draws per context of each measure and of the final diagnostics.
        callback: Called after every step with a :class:`VariationalProgress`; returning
            ``True`` stops training.
        seed: Seed of the draws and of the context order; torch's global random state is
            left as it was. ``None`` draws one from torch's global generator.

    Returns:
        A :class:`VariationalResult`; ``result.flow`` is ``flow``.

    Raises:
        TypeError: ``log_density`` is not callable or returns no tensor, or the flow's
            distribution has no reparameterized samples.
        ValueError: An argument is out of range, ``context`` is badly shaped or not finite, or
            the first answer of ``log_density`` has the wrong shape, holds NaN or has no
            gradient with respect to ``x`` (the message names the function and the shapes).
        FitDivergedError: A training loss or a measured ELBO was NaN or infinite; training
            stopped there and the flow holds the best finite weights seen. It is an
            :class:`OutsideSupportError` when ``log_density`` was -inf at some of the flow's
            draws (a target with bounded support, a flow without it).

    Example:
        >>> import torch
        >>> from flows.core import MAF, fit_to_target
        >>> _ = torch.manual_seed(0)
        >>> scale = torch.tensor([1.0, 3.0])
        >>> def log_density(x):  # an unnormalized Gaussian: log Z = log(2 pi * 3) = 2.94
        ...     return -0.5 * ((x / scale) ** 2).sum(-1)
        >>> flow = MAF(features=2, transforms=1)
        >>> result = fit_to_target(flow, log_density, steps=100, lr=3e-2, seed=0)
        >>> abs(result.elbo - 2.94) < 0.05, result.khat < 0.7
        (True, True)
    """
    _check_arguments(
        steps, samples, estimator, alpha, batch_size, lr, patience, clip_grad, eval_every,
        eval_samples,
    )  # fmt: skip
    check_count("lr_patience", lr_patience, minimum=0, optional=True)
    started = time.perf_counter()
    params = {name: p for name, p in flow.named_parameters() if p.requires_grad}
    reference = next(iter(flow.parameters()), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else torch.device("cpu")
    if context is not None:
        context = as_rows("context", context, None, device, dtype)
    check_rows_fit_flow(flow, None, context)
    target = _Target(log_density, conditional=context is not None)
    if seed is None:
        seed = int(torch.randint(2**62, ()))
    generator = torch.Generator().manual_seed(seed)
    rows = 1 if context is None else context.shape[0]
    every = eval_every if eval_every is not None else min(steps, 100)
    path_only = estimator == "stl"

    optimizer = make_adam(list(params.values()), lr, weight_decay)
    plateau = plateau_halving(optimizer, lr_patience)
    was_training = flow.training
    best = BestWeights(flow, patience)
    devices = [device] if device.type == "cuda" else []

    def diverged(step: int, loss: float, what: str = "loss") -> FitDivergedError:
        best.fallback()
        flow.train(was_training)
        return target.diverged(step, loss, what)

    def measure(draws: int) -> Tensor:
        # The same base draws at every measure: differences are the weights' own.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((seed + 1) % 2**63)
            return _measure(flow, target, context, draws)

    history: list[dict[str, float]] = []
    running = RunningLoss(device)
    step = 0
    # The draws come from torch's global generator: seeded here, restored after.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        batches = epoch_batches(rows, min(batch_size, rows), steps, generator, device)
        for epoch, batch in batches:
            flow.train()
            optimizer.zero_grad(set_to_none=True)
            c = None if context is None else context[batch]
            target.tally_as("loss", step + 1)
            log_weights = _log_weights(flow, target, c, samples, path_only, params)
            loss = -_bound(log_weights, estimator, alpha)
            loss.backward()
            if clip_grad is not None:
                nn.utils.clip_grad_norm_(list(params.values()), clip_grad)
            optimizer.step()
            step += 1
            loss = loss.detach()
            running.add(loss)
            stop = False

            elbo: float | None = None
            if step % every == 0 or step == steps:
                flow.eval()
                mean_loss = running.mean()
                if not math.isfinite(mean_loss):
                    first = running.first_non_finite(step)
                    raise diverged(*(first or (step, mean_loss))) from None
                running.clear()
                target.tally_as("ELBO", step)
                elbo = float(measure(eval_samples).mean())
                if not math.isfinite(elbo):
                    raise diverged(step, elbo, "ELBO") from None
                target.forget()
                stop = best.update(-elbo, step)
                rate = optimizer.param_groups[0]["lr"]
                history.append(
                    {"step": step, "epoch": epoch, "loss": mean_loss, "elbo": elbo, "lr": rate}
                )
                if plateau is not None:
                    plateau.step(-elbo)
            if callback is not None:
                value = float(loss)
                if not math.isfinite(value):
                    raise diverged(step, value) from None
                best_elbo = None if best.value is None else -best.value
                if callback(VariationalProgress(step, steps, epoch, value, elbo, best_elbo)):
                    stop = True
            if stop:
                break

        best.restore()
        flow.eval()
        target.forget()
        target.tally_as("ELBO", step)
        log_weights = measure(eval_samples)
        elbo_final = float(log_weights.mean())
        if not math.isfinite(elbo_final):
            raise diverged(step, elbo_final, "ELBO") from None
    flow.train(was_training)

    ess, khat = importance_diagnostics(log_weights)
    if isinstance(ess, Tensor):
        ess, khat = float(ess.mean()), float(torch.as_tensor(khat).max())
    return VariationalResult(
        flow=flow,
        history=history,
        elbo=elbo_final,
        ess=float(ess),
        khat=float(khat),
        log_weights=log_weights.detach().cpu(),
        steps=step,
        seconds=time.perf_counter() - started,
        best_step=best.step if best.state is not None else step,
    )
