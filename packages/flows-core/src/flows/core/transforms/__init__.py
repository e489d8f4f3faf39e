r"""Transforms with a one-pass value and log-determinant (``call_and_ladj``).

Every transform here is a :class:`torch.distributions.Transform`; ours (subclasses of
:class:`Transform`) also compute :math:`(y, \log |\det J|)` in one pass. Torch's own transforms
are re-exported so that one import gives them all.
"""

from torch.distributions.transforms import (
    AbsTransform,
    AffineTransform,
    CatTransform,
    CumulativeDistributionTransform,
    ExpTransform,
    IndependentTransform,
    LowerCholeskyTransform,
    PowerTransform,
    ReshapeTransform,
    SigmoidTransform,
    SoftmaxTransform,
    SoftplusTransform,
    StackTransform,
    StickBreakingTransform,
    TanhTransform,
)

from flows.core.transforms.affine import AdditiveTransform, MonotonicAffineTransform
from flows.core.transforms.autoregressive import AutoregressiveTransform
from flows.core.transforms.base import (
    ComposedTransform,
    DependentTransform,
    IdentityTransform,
    InverseTransform,
    OnePassTransform,
    Transform,
    UnivariateTransform,
    call_and_ladj,
    inverse_and_ladj,
    sum_rightmost,
)
from flows.core.transforms.bounded import (
    CircularShiftTransform,
    CosTransform,
    SinTransform,
    SoftclipTransform,
)
from flows.core.transforms.coupling import CouplingTransform
from flows.core.transforms.gaussianization import GaussianizationTransform
from flows.core.transforms.linear import (
    LULinearTransform,
    PermutationTransform,
    RotationTransform,
)
from flows.core.transforms.power import SignedPowerTransform
from flows.core.transforms.residual import (
    PlanarTransform,
    RadialTransform,
    SylvesterTransform,
)
from flows.core.transforms.support import SupportTransform

__all__ = [
    "AbsTransform",
    "AdditiveTransform",
    "AffineTransform",
    "AutoregressiveTransform",
    "CatTransform",
    "CircularShiftTransform",
    "ComposedTransform",
    "CosTransform",
    "CouplingTransform",
    "CumulativeDistributionTransform",
    "DependentTransform",
    "ExpTransform",
    "GaussianizationTransform",
    "IdentityTransform",
    "IndependentTransform",
    "InverseTransform",
    "LULinearTransform",
    "LowerCholeskyTransform",
    "MonotonicAffineTransform",
    "OnePassTransform",
    "PermutationTransform",
    "PlanarTransform",
    "PowerTransform",
    "RadialTransform",
    "ReshapeTransform",
    "RotationTransform",
    "SigmoidTransform",
    "SignedPowerTransform",
    "SinTransform",
    "SoftclipTransform",
    "SoftmaxTransform",
    "SoftplusTransform",
    "StackTransform",
    "StickBreakingTransform",
    "SupportTransform",
    "SylvesterTransform",
    "TanhTransform",
    "Transform",
    "UnivariateTransform",
    "call_and_ladj",
    "inverse_and_ladj",
    "sum_rightmost",
]
