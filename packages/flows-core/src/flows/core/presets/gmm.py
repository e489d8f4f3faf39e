r"""The Gaussian mixture model (GMM) preset."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from flows.core.layers.univariate import checked_context, init_near_zero
from flows.core.lazy import LazyDistribution
from flows.core.presets.base import Preset
from flows.core.validation import check_choice, check_count

__all__ = ["GMM"]

COVARIANCE_TYPES = ("full", "diagonal", "spherical", "tied")
_NETWORK_ARGUMENTS = ("activation", "hidden_features", "normalize")


class GMM(Preset, LazyDistribution):
    r"""A Gaussian mixture model :math:`p(X | c) = \sum_k w_k \, \mathcal{N}(X | \mu_k, \Sigma_k)`.

    Without context, the weights, means and covariances are free parameters; with a context,
    an MLP predicts them from :math:`c`. Covariances are parametrized by their Cholesky factor
    :math:`\Sigma_k = L_k L_k^\top`, whose diagonal is :math:`\exp` of a free vector.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        components: The number of components :math:`K`.
        covariance_type: ``"full"`` (one covariance per component), ``"tied"`` (one shared
            full covariance), ``"diagonal"`` (one diagonal covariance per component) or
            ``"spherical"`` (one variance per component).
        kwargs: The MLP's arguments (``hidden_features``, ``activation``, ``normalize``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> gmm = GMM(features=2, components=3, covariance_type="diagonal")
        >>> x = torch.cat([torch.randn(100, 2) - 4, torch.randn(100, 2) + 4])
        >>> gmm.initialize(x)  # k-means
        >>> gmm().log_prob(x).shape
        torch.Size([200])
        >>> GMM(3, context=2)(torch.randn(5, 2)).sample().shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        components: int = 2,
        covariance_type: str = "full",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_count("features", features, owner="GMM")
        check_count("context", context, minimum=0, owner="GMM")
        check_count("components", components, owner="GMM")
        check_choice("covariance_type", covariance_type, COVARIANCE_TYPES, owner="GMM")
        unknown = sorted(set(kwargs) - set(_NETWORK_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"GMM got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; it "
                f"accepts the network arguments {', '.join(_NETWORK_ARGUMENTS)}"
            )
        self.features = features
        self.context = context
        self.components = components
        self.covariance_type = covariance_type

        K, F = components, features
        off = F * (F - 1) // 2
        scales = {"full": K * F, "tied": F, "diagonal": K * F, "spherical": K}[covariance_type]
        offdiagonals = {"full": K * off, "tied": off}.get(covariance_type, 0)
        self.sizes = [K, K * F, scales, offdiagonals]
        rows, cols = torch.tril_indices(F, F, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

        phi = torch.cat([torch.zeros(K), torch.randn(K * F), torch.zeros(scales + offdiagonals)])
        if context > 0:
            from flows.nn import MLP

            self.hyper = MLP(context, phi.numel(), **kwargs)
            self._set_output(phi)
        else:
            self.phi = nn.Parameter(phi)

    def _set_output(self, phi: Tensor) -> None:
        if self.context > 0:
            init_near_zero(self.hyper)
            biases = [getattr(m, "bias", None) for m in self.hyper.modules()]
            last: Tensor = [bias for bias in biases if bias is not None][-1]
            with torch.no_grad():
                last.copy_(phi)
        else:
            with torch.no_grad():
                self.phi.copy_(phi)

    def forward(self, c: Tensor | None = None) -> Distribution:
        r"""Return the mixture :math:`p(X | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, required when ``context > 0``.
        """
        if self.context == 0:
            phi = self.phi
        else:
            phi = self.hyper(checked_context("GMM", self.context, c))
        from flows.core.distributions import DiagNormal, Mixture

        K, F = self.components, self.features
        batch = phi.shape[:-1]
        logits, loc, log_scale, off = phi.split(self.sizes, dim=-1)
        loc = loc.unflatten(-1, (K, F))
        if self.covariance_type in ("diagonal", "spherical"):
            scale = log_scale.unflatten(-1, (K, -1)).exp().expand(*batch, K, F)
            return Mixture(DiagNormal(loc, scale), logits)
        if self.covariance_type == "full":
            log_scale, off = log_scale.unflatten(-1, (K, F)), off.unflatten(-1, (K, -1))
        else:
            log_scale, off = log_scale.unsqueeze(-2), off.unsqueeze(-2)
        tril = loc.new_zeros(*off.shape[:-1], F, F)
        tril[..., self.rows, self.cols] = off
        tril = tril + torch.diag_embed(log_scale.exp())
        tril = tril.expand(*batch, K, F, F)
        return Mixture(MultivariateNormal(loc, scale_tril=tril, validate_args=False), logits)

    @torch.no_grad()
    def initialize(self, x: Tensor, iterations: int = 20) -> None:
        r"""Set the mixture to a k-means clustering of data (k-means++ seeding).

        The weights are the cluster frequencies, the means their centers and the covariances
        their (regularized) covariances, of the chosen type. With a context, the MLP then
        predicts these parameters whatever the context, as a starting point.

        Arguments:
            x: Data of shape :math:`(N, F)`, with :math:`N \geq K`.
            iterations: The number of k-means (Lloyd) iterations.
        """
        K, F = self.components, self.features
        reference = self.phi if self.context == 0 else next(self.hyper.parameters())
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-1] != F:
            raise ValueError(f"GMM.initialize: x must be a tensor of shape (N, {F}), got {x!r}")
        x = x.reshape(-1, F).to(reference)
        if len(x) < K:
            raise ValueError(f"GMM.initialize: x must hold at least {K} points, got {len(x)}")

        centers = x[torch.randint(len(x), (1,), device=x.device)]
        for _ in range(1, K):
            distance = torch.cdist(x, centers).min(dim=1).values.square()
            weights = distance + 1e-12 * (distance.sum() == 0)
            centers = torch.cat([centers, x[torch.multinomial(weights, 1)]])
        for _ in range(iterations):
            onehot = nn.functional.one_hot(torch.cdist(x, centers).argmin(dim=1), K).to(x)
            counts = onehot.sum(dim=0)
            means = onehot.T @ x / counts.clamp(min=1)[:, None]
            centers = torch.where(counts[:, None] > 0, means, centers)
        onehot = nn.functional.one_hot(torch.cdist(x, centers).argmin(dim=1), K).to(x)
        counts = onehot.sum(dim=0).clamp(min=1)
        logits = torch.log(counts / counts.sum())
        diff = x[:, None, :] - centers  # (N, K, F)
        # Regularized so that a cluster of one point still has a proper covariance.
        floor = 1e-3 * x.var(dim=0).mean().clamp(min=1e-6)
        if self.covariance_type in ("diagonal", "spherical"):
            var = torch.einsum("nk,nkf->kf", onehot, diff.square()) / counts[:, None]
            if self.covariance_type == "spherical":
                var = var.mean(dim=-1, keepdim=True)
            scales, off = 0.5 * torch.log(var + floor).flatten(), x.new_zeros(0)
        else:
            cov = torch.einsum("nk,nki,nkj->kij", onehot, diff, diff) / counts[:, None, None]
            if self.covariance_type == "tied":
                cov = (cov * counts[:, None, None]).sum(dim=0, keepdim=True) / counts.sum()
            cov = cov + floor * torch.eye(F, dtype=x.dtype, device=x.device)
            tril = torch.linalg.cholesky(cov)
            scales = tril.diagonal(dim1=-2, dim2=-1).log().flatten()
            off = tril[:, self.rows, self.cols].flatten()
        self._set_output(torch.cat([logits, centers.flatten(), scales, off]))

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, components={self.components}, "
            f"covariance_type={self.covariance_type!r}"
        )
