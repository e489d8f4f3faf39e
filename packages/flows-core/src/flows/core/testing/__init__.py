r"""The contract kit: checks that our packages and third-party plugins run on their own code.

* :func:`check_univariate`: inverse, log-determinant against autograd, shapes, dtypes,
  extreme inputs and gradients of a univariate transform.
* :func:`check_elementwise`: inverse, element-wise Jacobian, outputs strictly inside the
  codomain and finite values and gradients at its edges, of a fixed bijection onto per-feature
  bounds (:class:`~flows.core.transforms.SupportTransform`).
* :func:`assert_no_graph_breaks` and :func:`check_compiled_flow`: a flow traces into one
  ``torch.compile`` graph and its compiled results equal the eager ones.

It imports only torch and flows.core.

Example:
    >>> from flows.core.testing import check_univariate
    >>> check_univariate("affine")
"""

from flows.core.testing.compile import assert_no_graph_breaks, check_compiled_flow, flow_loss
from flows.core.testing.elementwise import check_elementwise
from flows.core.testing.univariate import check_univariate

__all__ = [
    "assert_no_graph_breaks",
    "check_compiled_flow",
    "check_elementwise",
    "check_univariate",
    "flow_loss",
]
