r"""The inverse autoregressive flow (IAF) preset: MAF turned around, for variational inference."""

from __future__ import annotations

from typing import Any

from flows.core.lazy import Flow, LazyInverse
from flows.core.presets.base import Preset
from flows.core.presets.maf import masked_layers, standard_normal_base
from flows.core.validation import check_count

__all__ = ["IAF"]


class IAF(Preset, Flow):
    r"""An inverse autoregressive flow (IAF): masked autoregressive transforms, inverted.

    Each layer is a :class:`~flows.core.layers.MaskedAutoregressiveTransform` :math:`g`
    applied in the sampling direction: a sample is :math:`x = g_T(\cdots g_2(g_1(z)))` with
    :math:`z \sim \mathcal{N}(0, I)`, one network call per layer, so
    :meth:`~flows.core.distributions.NormalizingFlow.rsample_and_log_prob` returns samples and
    their exact :math:`\log q(x)` in a single pass. This is what variational inference needs,
    where every step draws from :math:`q` and scores its own draws. Scoring an arbitrary point
    (``log_prob``) inverts each layer, one group of features per pass, with the masked
    network's stepwise inverse (:mod:`flows.core.layers.stepwise`): exact after as many passes
    as the layer has groups (:math:`F`, or ``passes``), not iterative. MAF is the other way
    around, one pass to score and :math:`F` to sample, which suits density estimation.

    The orders alternate as in :class:`~flows.core.presets.maf.MAF`, and with a MAF's layers
    (in reverse module order) the flow's transform is exactly the inverse of the MAF's. Unlike
    MAF, each layer starts near the identity, so :math:`q` starts near the base, where
    variational fits usually start.

    The masked networks use ReLU, as MAF's and Pyro's ``AutoIAFNormal``'s do. ELU, the IAF
    paper's activation, is one argument away (``activation=torch.nn.ELU``) but is not the
    default: in the variational-inference benchmark (``BENCHMARKS.md``) it fitted a
    50-dimensional correlated Gaussian closer, and a banana, an 8-mode ring and Neal's funnel
    worse. It suits targets close to a Gaussian.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        randperm: Whether each layer takes a random order of the features.
        kwargs: Passed to :class:`~flows.core.layers.MaskedAutoregressiveTransform`:
            ``passes``, ``order``, ``adjacency``, ``univariate`` and its hyper-parameters,
            ``hidden_features``, ``activation``, ``residual``.

    References:
        Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016),
        https://arxiv.org/abs/1606.04934

    Example:
        >>> import torch
        >>> flow = IAF(features=3, context=2, transforms=2, hidden_features=[16, 16])
        >>> c = torch.randn(2)
        >>> x, log_q = flow(c).rsample_and_log_prob((5,))
        >>> x.shape, log_q.shape
        (torch.Size([5, 3]), torch.Size([5]))
        >>> torch.allclose(flow(c).log_prob(x), log_q, atol=1e-5)
        True
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        check_count("transforms", transforms, owner=name)
        check_count("features", features, owner=name)
        layers = masked_layers(features, context, transforms, randperm, kwargs)
        # Sampling runs the layers in MAF's scoring order: with MAF's weights, the exact inverse.
        inverted = [LazyInverse(layer) for layer in reversed(layers)]
        super().__init__(inverted, standard_normal_base(features))
