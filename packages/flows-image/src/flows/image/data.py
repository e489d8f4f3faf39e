r"""Image data sets that need no download: scikit-learn's bundled 8x8 digits.

scikit-learn is an optional dependency, the ``digits`` extra: ``pip install
'flows-image[digits]'``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DIGITS_LEVELS", "MissingExtraError", "load_digits"]

#: The 8x8 digits hold counts 0 to 16: 17 levels.
DIGITS_LEVELS = 17


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip command."""


def load_digits() -> tuple[Tensor, int]:
    r"""scikit-learn's bundled 8x8 handwritten digits, as integer images.

    Returns:
        The images, of shape :math:`(1797, 1, 8, 8)` and values in :math:`\{0, \dots, 16\}`
        (``torch.int64``), and their number of levels, 17.

    Raises:
        ImportError: scikit-learn is not installed (``pip install flows-image[digits]``).
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise MissingExtraError(
            "the digits data set needs scikit-learn: pip install 'flows-image[digits]'"
        ) from None
    images = _load().images  # (1797, 8, 8) floats holding integers
    return torch.as_tensor(images).round().long().unsqueeze(1), DIGITS_LEVELS
