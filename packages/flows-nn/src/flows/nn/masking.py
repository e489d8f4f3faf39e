r"""Connectivity masks that give a multi-layer perceptron a prescribed Jacobian zero pattern.

This generalizes the degree construction of MADE (Germain et al., 2015) from autoregressive
orders to any adjacency :math:`A \in \{0, 1\}^{M \times N}`. Every hidden unit :math:`k` gets a
receptive set :math:`R_k \subseteq \{1, \dots, N\}`, the inputs it may depend on, and

* input :math:`j` feeds unit :math:`k` of the first hidden layer iff :math:`j \in R_k`;
* unit :math:`k` feeds unit :math:`k'` of the next hidden layer iff :math:`R_k \subseteq R_{k'}`;
* unit :math:`k` of the last hidden layer feeds output :math:`i` iff
  :math:`R_k \subseteq A_i = \{j : A_{ij} = 1\}`.

By induction every unit depends only on inputs of its receptive set, so output :math:`i`
depends only on inputs of :math:`A_i`: the Jacobian is null wherever :math:`A_{ij} = 0`,
whatever the weights.

The receptive sets are the distinct non-empty rows of :math:`A`. A row is *minimal* if it
strictly contains no other row; each row contains a minimal one. The rows are ranked minimal
rows first, then the others, each group ordered by size and then interleaved (van der Corput
order) so that any prefix spreads evenly over the sizes. A hidden layer of width :math:`H`
uses the first :math:`\min(H, D)` ranked rows of the :math:`D` distinct ones, in blocks of
nearly equal size. Hence

* if every hidden width is at least :math:`D`, every row is a receptive set in every layer
  and every allowed dependency :math:`A_{ij} = 1` is realized;
* if every hidden width is at least the number of minimal rows, every output whose row is not
  empty still depends on some inputs (a warning says so otherwise).
"""

from __future__ import annotations

__all__ = ["adjacency_masks", "check_adjacency", "mask_connectivity"]

import itertools
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_hidden_features


def check_adjacency(adjacency: object, name: str = "adjacency") -> Tensor:
    r"""Returns :py:`adjacency` on the CPU if it is a non-empty boolean matrix, or raises an
    error naming the argument :py:`name`.

    Raises:
        TypeError: if :py:`adjacency` is not a boolean tensor.
        ValueError: if :py:`adjacency` is not a matrix with at least one row and one column.
    """

    if not isinstance(adjacency, Tensor):
        raise TypeError(
            f"{name} must be a boolean tensor of shape (M, N), got {type(adjacency).__name__}"
        )
    if adjacency.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a boolean tensor of shape (M, N), got dtype {adjacency.dtype} "
            f"(convert it with {name}.bool())"
        )
    if adjacency.dim() != 2 or adjacency.numel() == 0:
        raise ValueError(
            f"{name} must be a boolean tensor of shape (M, N) with M, N >= 1, "
            f"got shape {tuple(adjacency.shape)}"
        )
    return adjacency.detach().cpu()


def _subset(a: Tensor, b: Tensor) -> Tensor:
    r"""Returns the matrix :math:`S_{pq} = [a_p \subseteq b_q]` of two lists of sets, given as
    boolean indicator matrices of shapes :math:`(P, N)` and :math:`(Q, N)`."""

    # a_p is in b_q iff no element of a_p lies outside b_q; counts are exact in float32 below
    # 2^24 elements, and a matmul is much faster than a (P, Q, N) boolean tensor.
    outside = a.float() @ (~b).float().T
    return outside == 0


def _van_der_corput(n: int) -> Tensor:
    r"""Returns a permutation of :math:`0, \dots, n - 1` whose every prefix is evenly spread
    (the bit-reversal order)."""

    bits = max(1, (n - 1).bit_length())
    k = torch.arange(1 << bits)
    reversed_k = torch.zeros_like(k)
    for b in range(bits):
        reversed_k |= ((k >> b) & 1) << (bits - 1 - b)
    return reversed_k[reversed_k < n]


def _rank(rows: Tensor) -> tuple[Tensor, int]:
    r"""Ranks distinct non-empty rows: minimal rows first, then the others, each group by size
    in van der Corput order.

    Returns:
        The indices of the rows in rank order and the number of minimal rows.
    """

    contains = _subset(rows, rows)  # contains[p, q]: row p is a subset of row q
    minimal = contains.sum(dim=0) == 1  # contains only itself

    ranking = []
    sizes = rows.sum(dim=1)
    for group in (minimal, ~minimal):
        (members,) = torch.nonzero(group, as_tuple=True)
        members = members[torch.argsort(sizes[members], stable=True)]
        ranking.append(members[_van_der_corput(len(members))] if len(members) else members)

    return torch.cat(ranking), int(minimal.sum())


def adjacency_masks(adjacency: Tensor, hidden_features: Sequence[int]) -> list[Tensor]:
    r"""Returns the connectivity masks of a multi-layer perceptron whose Jacobian is null
    wherever the adjacency is.

    See the module documentation for the construction.

    Arguments:
        adjacency: The adjacency matrix :math:`A \in \{0, 1\}^{M \times N}`, a boolean tensor.
        hidden_features: The widths :math:`H_1, \dots, H_L` of the hidden layers.

    Returns:
        The boolean masks of the :math:`L + 1` linear layers, with shapes
        :math:`(H_1, N), (H_2, H_1), \dots, (M, H_L)`, on the CPU.

    Raises:
        ValueError: if :math:`A` has no true entry. Then no output may depend on any input and
            the Jacobian would be identically null.

    Example:
        >>> adjacency = torch.tensor([[False, False], [True, False]])
        >>> masks = adjacency_masks(adjacency, [2])
        >>> [mask.shape for mask in masks]
        [torch.Size([2, 2]), torch.Size([2, 2])]
        >>> mask_connectivity(masks)
        tensor([[False, False],
                [ True, False]])
    """

    adjacency = check_adjacency(adjacency)
    hidden_features = check_hidden_features(hidden_features)

    if not adjacency.any():
        raise ValueError(
            f"adjacency of shape {tuple(adjacency.shape)} has no True entry: no output may "
            "depend on any input, so the Jacobian would be null; "
            "allow at least one dependency"
        )

    if not hidden_features:
        return [adjacency.clone()]

    distinct, inverse = torch.unique(adjacency, dim=0, return_inverse=True)
    rows = distinct[distinct.any(dim=1)]

    # Ranking only matters when some layer cannot hold every row.
    if min(hidden_features) < len(rows):
        order, minimal = _rank(rows)
        rows = rows[order]
    else:
        minimal = len(rows)

    # The receptive set of each hidden unit: a row, in blocks of nearly equal size.
    receptive = []
    for width in hidden_features:
        used = min(width, len(rows))
        receptive.append(rows[torch.arange(width) * used // width])

    masks = [receptive[0]]
    for before, after in itertools.pairwise(receptive):
        masks.append(_subset(before, after).T)
    masks.append(_subset(receptive[-1], distinct)[:, inverse].T)

    # Every non-empty row contains a minimal one, present in every layer at least this wide.
    if min(hidden_features) < minimal:
        lost = adjacency.any(dim=1) & ~mask_connectivity(masks).any(dim=1)
        warnings.warn(
            f"{int(lost.sum())} of {len(adjacency)} outputs lose every dependency because the "
            f"hidden layers {hidden_features} are narrower than the {minimal} minimal rows of "
            f"the adjacency: widen every hidden layer to at least {minimal} features",
            stacklevel=3,
        )

    return masks


def mask_connectivity(masks: Sequence[Tensor]) -> Tensor:
    r"""Returns which outputs are connected to which inputs through a chain of masks.

    Arguments:
        masks: Boolean masks of shapes :math:`(H_1, N), (H_2, H_1), \dots, (M, H_L)`.

    Returns:
        The boolean matrix :math:`C \in \{0, 1\}^{M \times N}`, where :math:`C_{ij}` tells
        whether some path of allowed connections leads from input :math:`j` to output
        :math:`i`.
    """

    connected = masks[0].float()
    for mask in masks[1:]:
        # Clamp path counts to {0, 1} after each step so they never overflow.
        connected = (mask.float() @ connected > 0).float()
    return connected > 0
