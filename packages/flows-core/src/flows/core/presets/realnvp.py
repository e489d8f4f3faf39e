r"""The RealNVP preset: affine coupling transforms."""

from __future__ import annotations

from flows.core.presets.coupling import CouplingFlow

__all__ = ["RealNVP"]


class RealNVP(CouplingFlow):
    r"""A RealNVP flow: affine coupling transforms on a Gaussian.

    Each layer keeps half of the features, :math:`y_a = x_a`, and maps the others by a
    monotonic affine transform :math:`y_b = x_b \exp(s(x_a, c)) + t(x_a, c)`. Consecutive layers
    keep complementary halves (even and odd features, or random halves with ``randmask``).

    Arguments:
        features: The number of features :math:`F` (at least 2).
        context: The number of context features :math:`C`.
        transforms: The number of coupling transforms.
        randmask: Whether the kept halves are random rather than even/odd features.
        kwargs: ``norm``, the normalization between consecutive layers: ``None`` (the
            default), ``"act"`` (:class:`~flows.core.ActNorm`) or ``"batch"``
            (:class:`~flows.core.BatchNorm`). The rest is passed to
            :class:`GeneralCouplingTransform`: ``univariate`` (default ``"affine"``) and its
            hyper-parameters, ``hidden_features``, ``activation``, ``normalize``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016),
        https://arxiv.org/abs/1605.08803

    Example:
        >>> import torch
        >>> flow = RealNVP(features=4, context=2, transforms=2, hidden_features=[32])
        >>> flow(torch.randn(7, 2)).sample().shape
        torch.Size([7, 4])
    """

    default_univariate = "affine"
