r"""Linear transforms of the feature vector: permutation, rotation and learned LU map."""

from __future__ import annotations

__all__ = ["LULinearTransform", "PermutationTransform", "RotationTransform"]

import torch
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms.base import OnePassTransform


def _matvec(matrix: Tensor, x: Tensor) -> Tensor:
    return (matrix @ x.unsqueeze(-1)).squeeze(-1)


def _check_square(name: str, matrix: object) -> Tensor:
    if not isinstance(matrix, Tensor) or matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        got = (
            f"shape {tuple(matrix.shape)}" if isinstance(matrix, Tensor) else type(matrix).__name__
        )
        raise ValueError(
            f"{name} must be a (batch of) square matrix of shape (*, D, D), got {got}"
        )
    return matrix


class PermutationTransform(OnePassTransform):
    r"""The permutation :math:`y = x_{\sigma}` of the features, with a null log-determinant.

    Arguments:
        order: The permutation :math:`\sigma` of :math:`(0, \dots, D - 1)`, a 1-D integer
            tensor. It is not checked, to stay free of device synchronization.

    Example:
        >>> t = PermutationTransform(torch.tensor([2, 0, 1]))
        >>> y = t(torch.tensor([10.0, 20.0, 30.0]))
        >>> y
        tensor([30., 10., 20.])
        >>> t.inv(y)
        tensor([10., 20., 30.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, order: Tensor) -> None:
        super().__init__()
        if (
            not isinstance(order, Tensor)
            or order.dim() != 1
            or order.dtype.is_floating_point
            or order.dtype.is_complex
            or order.dtype is torch.bool
        ):
            got = (
                f"{order.dtype} tensor of shape {tuple(order.shape)}"
                if isinstance(order, Tensor)
                else repr(order)
            )
            raise TypeError(f"order must be a 1-D integer tensor (a permutation), got {got}")
        self.order = order
        self._inverse_order: Tensor | None = None

    @property
    def inverse_order(self) -> Tensor:
        r"""The inverse permutation :math:`\sigma^{-1}`."""
        if self._inverse_order is None:
            self._inverse_order = torch.argsort(self.order)
        return self._inverse_order

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return x.index_select(-1, self.order)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.index_select(-1, self.inverse_order)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._call(x), x.new_zeros(x.shape[:-1])

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._inverse(y), y.new_zeros(y.shape[:-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order.tolist()})"


class RotationTransform(OnePassTransform):
    r"""The rotation :math:`y = R x` with :math:`R = \exp(A - A^\top)`, orthogonal.

    The matrix exponential of a skew-symmetric matrix is a rotation (determinant 1), so
    every square :math:`A` gives one and the log-determinant is null.

    Arguments:
        A: An unconstrained square matrix, or a batch of them, of shape :math:`(*, D, D)`.

    Example:
        >>> t = RotationTransform(torch.tensor([[0.0, 0.7854], [0.0, 0.0]]))
        >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 0.0]))
        >>> y.round(decimals=4), ladj
        (tensor([ 0.7071, -0.7071]), tensor(0.))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        A = _check_square("A", A)
        self.rotation = torch.linalg.matrix_exp(A - A.mT)

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return _matvec(self.rotation, x)

    def _inverse(self, y: Tensor) -> Tensor:
        return _matvec(self.rotation.mT, y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return y.new_zeros(y.shape[:-1])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, y.new_zeros(y.shape[:-1])

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, x.new_zeros(x.shape[:-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={self.rotation.shape[-1]})"


class LULinearTransform(OnePassTransform):
    r"""The learned linear map :math:`y = L U x` in LU form.

    The strictly lower triangle of ``LU`` fills the unit lower-triangular :math:`L`; its upper
    triangle fills :math:`U`, whose diagonal is :math:`\exp(\text{LU}_{ii})` so that the map is
    always invertible. Hence :math:`\log |\det J| = \sum_i \text{LU}_{ii}`, and the inverse is
    two exact triangular solves. A zero ``LU`` is the identity.

    Arguments:
        LU: An unconstrained square matrix, or a batch of them, of shape :math:`(*, D, D)`.

    Example:
        >>> LU = torch.tensor(
        ...     [[0.0, 1.0], [2.0, 0.0]]
        ... )  # L = [[1, 0], [2, 1]], U = [[1, 1], [0, 1]]
        >>> t = LULinearTransform(LU)
        >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 1.0]))
        >>> y, ladj
        (tensor([2., 5.]), tensor(0.))
        >>> t.inv(y)
        tensor([1., 1.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, LU: Tensor) -> None:
        super().__init__()
        LU = _check_square("LU", LU)
        eye = torch.eye(LU.shape[-1], dtype=LU.dtype, device=LU.device)
        self.diagonal = LU.diagonal(dim1=-2, dim2=-1)
        self.lower = LU.tril(-1) + eye
        self.upper = LU.triu(1) + torch.diag_embed(self.diagonal.exp())

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return _matvec(self.lower, _matvec(self.upper, x))

    def _inverse(self, y: Tensor) -> Tensor:
        y = y.unsqueeze(-1)
        batch = torch.broadcast_shapes(y.shape[:-2], self.lower.shape[:-2])
        lower = self.lower.expand(*batch, *self.lower.shape[-2:])
        upper = self.upper.expand(*batch, *self.upper.shape[-2:])
        y = y.expand(*batch, *y.shape[-2:])
        z = torch.linalg.solve_triangular(lower, y, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, z, upper=True).squeeze(-1)

    def _ladj(self, batch: torch.Size) -> Tensor:
        ladj = self.diagonal.sum(-1)
        return ladj.expand(torch.broadcast_shapes(batch, ladj.shape))

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._ladj(y.shape[:-1])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, self._ladj(y.shape[:-1])

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, -self._ladj(x.shape[:-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={self.lower.shape[-1]})"
