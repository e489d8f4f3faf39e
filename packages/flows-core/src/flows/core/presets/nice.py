r"""The NICE preset: additive (volume-preserving) coupling transforms."""

from __future__ import annotations

from flows.core.presets.coupling import CouplingFlow

__all__ = ["NICE"]


class NICE(CouplingFlow):
    r"""A NICE flow: additive coupling transforms :math:`y_b = x_b + t(x_a, c)` on a Gaussian.

    Consecutive layers keep complementary halves of the features (even and odd features, or
    random halves with ``randmask``). Additive coupling preserves volume: the log-determinant
    is zero.

    Arguments:
        features: The number of features :math:`F` (at least 2).
        context: The number of context features :math:`C`.
        transforms: The number of coupling transforms.
        randmask: Whether the kept halves are random rather than even/odd features.
        kwargs: ``norm``, the normalization between consecutive layers: ``None`` (the
            default), ``"act"`` (:class:`~flows.core.ActNorm`) or ``"batch"``
            (:class:`~flows.core.BatchNorm`) (which then
            no longer preserves volume). The rest is passed to
            :class:`GeneralCouplingTransform`: ``univariate`` (default ``"additive"``) and its
            hyper-parameters, ``hidden_features``, ``activation``, ``normalize``.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014),
        https://arxiv.org/abs/1410.8516

    Example:
        >>> flow = NICE(features=4, transforms=2, hidden_features=[32])
        >>> x = flow().sample((5,))
        >>> flow().log_prob(x).shape
        torch.Size([5])
    """

    default_univariate = "additive"
