r"""flows-sbi: any flows preset as a density estimator of sbi's NPE and NLE.

:func:`posterior_nn` and :func:`likelihood_nn` return the builder that
``sbi.inference.NPE(prior, density_estimator=builder)`` and ``NLE(...)`` accept, for any preset
of the registry by name (``"nsf"``, ``"maf"``, a plugin's) or a constructor; the estimator
they build is a :class:`FlowEstimator`. Importing this module imports sbi.

Example:
    >>> import torch
    >>> from flows.sbi import posterior_nn
    >>> build = posterior_nn("maf", transforms=2, hidden_features=(16, 16))
    >>> estimator = build(torch.randn(50, 2), torch.randn(50, 4))
    >>> estimator.sample((3,), torch.randn(1, 4)).shape
    torch.Size([3, 1, 2])
"""

from __future__ import annotations

from flows.sbi.builders import likelihood_nn, posterior_nn
from flows.sbi.estimator import FlowEstimator, Standardize

__version__ = "0.1.0"

__all__ = ["FlowEstimator", "Standardize", "likelihood_nn", "posterior_nn"]
