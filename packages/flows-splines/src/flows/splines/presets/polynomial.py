r"""The sum-of-squares polynomial flow (SOSPF) and Bernstein polynomial flow (BPF) presets."""

from __future__ import annotations

__all__ = ["BPF", "SOSPF"]

from typing import Any

from flows.core.presets import MAF


class SOSPF(MAF):
    r"""A sum-of-squares polynomial flow: masked autoregressive SOS polynomials on a Gaussian.

    The univariate transforms are :class:`flows.splines.SOSPolynomialTransform` (linear
    beyond :math:`[-B, B]`, so sampling is finite for any base draw).

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        degree: The degree :math:`L` of the squared polynomials.
        polynomials: The number :math:`K` of squared polynomials.
        bound: The half-width :math:`B` of the polynomial part.
        kwargs: Passed to :class:`flows.core.presets.MAF`.

    Example:
        >>> flow = SOSPF(features=2, transforms=2, hidden_features=[16])
        >>> flow().sample((5,)).shape
        torch.Size([5, 2])

    References:
        | Sum-of-Squares Polynomial Flow (Jaini et al., 2019)
        | https://arxiv.org/abs/1905.02325
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        degree: int = 3,
        polynomials: int = 2,
        bound: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features,
            context,
            transforms,
            univariate="sos",
            degree=degree,
            polynomials=polynomials,
            bound=bound,
            **kwargs,
        )


class BPF(MAF):
    r"""A Bernstein polynomial flow: masked autoregressive Bernstein polynomials on a Gaussian.

    The univariate transforms are :class:`flows.splines.BernsteinTransform` of ``degree``
    (linear beyond :math:`[-B, B]`).

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        degree: The degree :math:`M` of the polynomials.
        bound: The half-width :math:`B` of the polynomial part.
        kwargs: Passed to :class:`flows.core.presets.MAF`.

    Example:
        >>> flow = BPF(features=2, transforms=2, degree=8, hidden_features=[16])
        >>> flow().sample((5,)).shape
        torch.Size([5, 2])

    References:
        | Short-Term Density Forecasting of Low-Voltage Load using Bernstein-Polynomial
        | Normalizing Flows (Arpogaus et al., 2022)
        | https://arxiv.org/abs/2204.13939
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        degree: int = 16,
        bound: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features,
            context,
            transforms,
            univariate="bernstein",
            degree=degree,
            bound=bound,
            **kwargs,
        )
