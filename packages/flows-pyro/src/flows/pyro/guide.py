r"""A normalizing flow as a Pyro guide: one flow over every latent site, in unconstrained space.

Stochastic variational inference fits a guide :math:`q_\phi(z)` to the posterior
:math:`p(z | x)` of a Pyro model by maximizing the evidence lower bound

.. math:: \mathrm{ELBO}(\phi) = \mathbb{E}_{q_\phi} [\log p(x, z) - \log q_\phi(z)] .

``FlowGuide`` maps each continuous latent site :math:`z_s`, whose support may be bounded
(a scale, a probability, a simplex), to the real line with the bijection
:math:`b_s = ` ``biject_to(support)`` that Pyro's automatic guides use, stacks the unconstrained
values into one vector :math:`u = (u_1, \dots, u_S) \in \mathbb{R}^D` and fits a flow
:math:`q_\phi(u)` of any flows preset to it. The site values are :math:`z_s = b_s(u_s)` and
their joint log-density is

.. math:: \log q_\phi(z) = \log q_\phi(u) - \sum_s \log \left| \det
    \frac{\partial b_s(u_s)}{\partial u_s} \right| ,

the flow's log-density corrected by each site's change of variables. The flow draws :math:`u`
and its log-density in one pass, so a training step runs the flow once.
"""

from __future__ import annotations

__all__ = ["FlowGuide", "FlowPosterior"]

# Pyro's objects are named as ``code``, not Sphinx roles: the docs' role resolver links flows'
# objects only, and fails the build on a library it does not know.

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, biject_to

import pyro
from flows.core.lazy import LazyDistribution
from flows.core.validation import check_count
from pyro.distributions import TorchDistribution, constraints
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_feasible
from pyro.params import param_with_module_name


class FlowPosterior(TorchDistribution):
    r"""A flows distribution over :math:`\mathbb{R}^D` as a Pyro distribution.

    Pyro's inference needs ``score_parts``, ``expand`` under plates and the other parts of
    ``pyro.distributions.TorchDistribution``; this wrapper gives them to a flow's
    distribution. A sample is drawn with its log-density in one pass
    (``rsample_and_log_prob``) and the log-density of that same tensor is then read back, not
    recomputed: for an inverse autoregressive flow, whose inverse is sequential, that saves
    :math:`D` passes per step.

    Arguments:
        base: A reparameterizable distribution with event shape :math:`(D,)`, such as the
            flow ``flow()`` of a preset.

    Example:
        >>> from flows.core import MAF
        >>> q = FlowPosterior(MAF(features=3, transforms=1)())
        >>> x = q.rsample((5,))
        >>> x.shape, q.log_prob(x).shape
        (torch.Size([5, 3]), torch.Size([5]))
        >>> q.expand((2,)).sample().shape
        torch.Size([2, 3])
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, base: Distribution) -> None:
        if not isinstance(base, Distribution):
            raise TypeError(
                f"base must be a torch.distributions.Distribution, got {type(base).__name__}"
            )
        if not base.has_rsample:
            raise ValueError(
                f"base must be reparameterizable (has_rsample), got {type(base).__name__}, "
                "whose samples carry no gradient"
            )
        if len(base.event_shape) != 1:
            raise ValueError(
                f"base must have one event dimension, got event_shape {tuple(base.event_shape)}"
            )
        self.base = base
        # The last sample drawn and its log-density, read back by log_prob.
        self._drawn: tuple[Tensor, Tensor] | None = None
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def expand(self, batch_shape: Sequence[int], _instance: object = None) -> FlowPosterior:
        """The distribution with batch shape ``batch_shape`` (Pyro's plates expand it)."""
        return FlowPosterior(self.base.expand(Size(batch_shape)))

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        draw = getattr(self.base, "rsample_and_log_prob", None)
        if draw is None:
            return self.base.rsample(Size(sample_shape))
        x, log_p = draw(tuple(sample_shape))
        self._drawn = (x, log_p)
        return x

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        return self.base.log_prob(value)


def _drop_misfits(name: str, flow: torch.nn.Module) -> None:
    """Drop the values Pyro's store holds under ``name`` unless they fit ``flow``'s parameters.

    A guide of another flow under the same name (re-run with other arguments, in a notebook)
    left them: adopted, they would break the flow, so the flow's own values replace them.
    """
    store = pyro.get_param_store()
    prefix = param_with_module_name(name, "")
    stored = {key: value for key, value in store.items() if key.startswith(prefix)}
    own = {param_with_module_name(name, key): p for key, p in flow.named_parameters()}
    fits = stored.keys() == own.keys() and all(stored[key].shape == own[key].shape for key in own)
    if stored and not fits:
        for key in stored:
            del store[key]


class FlowGuide(AutoContinuous):
    r"""A Pyro guide whose posterior over the model's latent sites is a normalizing flow.

    On its first call the guide runs the model once to find its latent sites, their shapes and
    supports, and builds a flow over :math:`D`, the total size of their unconstrained values.
    Each call then draws one vector from the flow, cuts it into the sites, maps each piece to
    its site's support with ``biject_to(site.support)`` and samples the site at that value, its
    log-density corrected by the bijection's log-determinant (as in the module's formula). The
    flow's parameters live in Pyro's parameter store: values stored under their names that fit
    the flow (a store saved after training and loaded) are the ones the guide uses, and values
    that do not (left by a guide of another flow) are replaced by the flow's. Use
    it wherever Pyro takes a guide: ``pyro.infer.SVI`` (with any ELBO, vectorized particles
    included), ``pyro.infer.Predictive``, an ``AutoGuideList``.

    Arguments:
        model: A Pyro model whose latent sites are continuous.
        flow: The flow: a preset's registered name (``"maf"``, ``"nsf"``, ``"iaf"``, ... as
            :func:`flows.core.plugins.get_preset` finds them), a constructor called as
            ``flow(features=D, **kwargs)``, or a built :class:`flows.core.LazyDistribution`
            (unconditional, of :math:`D` features, used as it is). The default, ``"iaf"``,
            draws a sample and its log-density in one pass per layer. A flow the guide builds is
            moved to the dtype and device of the model's latent values.
        quantile_samples: The number of flow samples from which :meth:`median` and
            :meth:`quantiles` estimate.
        init_loc_fn: Where the model's latent sites are set while the guide inspects it (the
            values only give the shapes: the flow starts where the preset starts).
        kwargs: The preset's keyword arguments (``transforms``, ``hidden_features``, ...).

    Raises:
        TypeError: ``flow`` is none of the above, ``kwargs`` come with a built flow, or the
            constructor returns no lazy distribution.
        ValueError: A built flow's features differ from the model's latent dimension.

    Example:
        >>> import pyro, torch
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> guide = FlowGuide(model, "iaf", transforms=1, hidden_features=(8,))
        >>> svi = pyro.infer.SVI(
        ...     model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
        ... )
        >>> loss = svi.step(torch.tensor([0.5, 1.5]))
        >>> guide.latent_dim, guide.median()["loc"].shape
        (1, torch.Size([]))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        flow: str | Callable[..., LazyDistribution] | LazyDistribution = "iaf",
        *,
        quantile_samples: int = 4096,
        init_loc_fn: Callable[[dict[str, Any]], Tensor] = init_to_feasible,
        **kwargs: Any,
    ) -> None:
        if isinstance(flow, LazyDistribution):
            if kwargs:
                raise TypeError(
                    "kwargs go to the preset FlowGuide builds: with a built flow, got "
                    f"{sorted(kwargs)}"
                )
        elif not isinstance(flow, str) and not callable(flow):
            raise TypeError(
                "flow must be a preset name, a constructor or a LazyDistribution, "
                f"got {type(flow).__name__}"
            )
        quantile_samples = check_count("quantile_samples", quantile_samples, owner="FlowGuide")
        super().__init__(model, init_loc_fn=init_loc_fn)
        self.quantile_samples = quantile_samples
        self._flow_kwargs = kwargs
        # Whether the store's values under the flow's names were checked against the flow.
        self._store_checked = False
        if isinstance(flow, LazyDistribution):
            self.flow: LazyDistribution | None = flow
            self._constructor: str | Callable[..., LazyDistribution] | None = None
        else:
            self.flow = None
            self._constructor = flow

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._setup_prototype(*args, **kwargs)
            self._setup_flow()
            self._store_checked = False
        except BaseException:
            # Unset (Pyro sets it before its own checks), so the next call inspects the model
            # again and raises the same error again.
            self.prototype_trace = None
            raise

    def _setup_flow(self) -> None:
        if self._constructor is None:
            features = self._built_flow()().event_shape
            if features != (self.latent_dim,):
                raise ValueError(
                    f"flow must have {self.latent_dim} features, the size of the model's "
                    f"unconstrained latent sites, got event_shape {tuple(features)}"
                )
            return
        constructor = self._constructor
        if isinstance(constructor, str):
            from flows.core.plugins import get_preset

            constructor = get_preset(constructor)
        flow = constructor(features=self.latent_dim, **self._flow_kwargs)
        if not isinstance(flow, LazyDistribution):
            raise TypeError(
                "flow must build a LazyDistribution when called with features=, got "
                f"{type(flow).__name__}"
            )
        assert self.prototype_trace is not None  # set by _setup_prototype, our only caller
        prototype = next(iter(self.prototype_trace.iter_stochastic_nodes()))[1]["value"]
        self.flow = flow.to(device=prototype.device, dtype=prototype.dtype)

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowPosterior:
        r"""The flow over the unconstrained latent vector, :math:`q_\phi(u)`."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return FlowPosterior(self._built_flow()())

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Sample every latent site of the model (Pyro calls this as the guide)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        if pyro.settings.get("module_local_params"):
            # Module-local parameters: Pyro's attribute hook applies its handlers once.
            getattr(self, "flow")  # noqa: B009
        else:
            # Values already in Pyro's parameter store under the flow's names (a loaded store,
            # an earlier guide's of the same flow) replace the flow's own, as they do for
            # Pyro's PyroParams: else SVI's optimizer would step the stored tensors while the
            # flow samples with its own. Here, inside the guide's call, Pyro knows the guide's
            # full name.
            name, flow = self._pyro_get_fullname("flow"), self._built_flow()
            if not self._store_checked:
                _drop_misfits(name, flow)
                self._store_checked = True
            pyro.module(name, flow, update_module_params=True)
        return super().forward(*args, **kwargs)

    def _built_flow(self) -> LazyDistribution:
        # Read past PyroModule's attribute hook, which registers the module in Pyro's parameter
        # store on every read (a fraction of a millisecond for a small IAF): forward registers
        # it once per call.
        flow = self._modules.get("flow")
        assert isinstance(flow, LazyDistribution)  # built by _setup_prototype
        return flow

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, Tensor]:
        r"""Estimated posterior quantiles of every latent site.

        The quantiles of each coordinate of :math:`u` are estimated from ``quantile_samples``
        draws of the flow, then mapped to each site's support. Where a site's bijection is
        element-wise and increasing (real, positive, interval supports) these are the quantiles
        of the site's marginals; for a simplex or a correlation matrix, a point of the support
        that follows them.

        Arguments:
            quantiles: Levels in :math:`[0, 1]`, e.g. ``[0.05, 0.5, 0.95]``.
            *args: The model's arguments (used only before the first call).
            **kwargs: The model's keyword arguments (likewise).

        Returns:
            Each site's name mapped to a tensor of shape ``(len(quantiles), *site_shape)``.
        """
        posterior = self.get_posterior(*args, **kwargs)
        draws = posterior.sample((self.quantile_samples,))
        levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
        if levels.dim() != 1 or not bool(((levels >= 0) & (levels <= 1)).all()):
            raise ValueError(f"quantiles must be a sequence of levels in [0, 1], got {quantiles}")
        latents = torch.quantile(draws, levels, dim=0)
        result: dict[str, list[Tensor]] = {}
        for latent in latents:
            for site, unconstrained in self._unpack_latent(latent):
                value = biject_to(site["fn"].support)(unconstrained)
                result.setdefault(site["name"], []).append(value)
        return {name: torch.stack(values) for name, values in result.items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Estimated posterior median of every latent site (see :meth:`quantiles`).

        Returns:
            Each site's name mapped to a tensor of the site's shape.
        """
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
