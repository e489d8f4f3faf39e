r"""Constant folding of a traced graph: what depends on the weights alone is computed once.

A flow's forward pass recomputes, at every call, quantities that do not depend on the data: the
masked weights of its networks (:math:`W \odot M`), a rotation's matrix exponential, the
softmax of free parameters. In a traced graph whose weights are constants, these are constants
too: :func:`fold_constants` evaluates them once and stores the results in the graph, so the
exported model neither repeats them nor needs an operator for them (ONNX has no matrix
exponential).

Only pure operations are folded (no in-place write, no random draw), and no constant that an
in-place operation of the graph writes, nor anything it is computed from: folding those would
freeze a value the graph changes.

Example:
    >>> import torch
    >>> from torch.fx.experimental.proxy_tensor import make_fx
    >>> weight = torch.randn(3, 3)
    >>> graph = make_fx(lambda x: x @ torch.linalg.matrix_exp(weight - weight.T))(torch.ones(2, 3))
    >>> "linalg_matrix_exp" in str(graph.code)
    True
    >>> fold_constants(graph)  # the transpose, the subtraction, the exponential
    3
    >>> "linalg_matrix_exp" in str(graph.code)
    False
"""

from __future__ import annotations

__all__ = ["fold_constants"]

import operator
from typing import Any

import torch
from torch import Tensor, fx, nn

_FOLDED = "_folded_constant"


def _pure(node: fx.Node) -> bool:
    """Whether ``node`` computes a value from its inputs alone, writing nothing."""
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return True
    if not isinstance(target, torch._ops.OpOverload):
        return False
    if torch.Tag.nondeterministic_seeded in target.tags:
        return False
    schema = target._schema
    return not schema.is_mutable and not any(
        argument.alias_info is not None and argument.alias_info.is_write
        for argument in schema.arguments
    )


def _written(node: fx.Node) -> list[fx.Node]:
    """The nodes an in-place (or ``out=``) operation writes to."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return []
    written = []
    for i, argument in enumerate(target._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
        written += [n for n in _input_nodes(value)]
    return written


def _input_nodes(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def _constant_nodes(graph: fx.Graph, excluded: set[fx.Node]) -> set[fx.Node]:
    constant: set[fx.Node] = set()
    for node in graph.nodes:
        if node in excluded:
            continue
        if node.op == "get_attr" or (
            _pure(node) and all(n in constant for n in node.all_input_nodes)
        ):
            constant.add(node)
    return constant


def _ancestors(node: fx.Node, within: set[fx.Node]) -> set[fx.Node]:
    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current in within and current not in found:
            found.add(current)
            stack += current.all_input_nodes
    return found


def _attribute(module: torch.nn.Module, target: str) -> Any:
    value: Any = module
    for name in target.split("."):
        value = getattr(value, name)
    return value


def fold_constants(graph_module: fx.GraphModule) -> int:
    """Replace the weight-only computations of a traced graph by their values, in place.

    Arguments:
        graph_module: A graph traced with its weights as attributes (``get_attr`` nodes), such
            as :func:`torch.fx.experimental.proxy_tensor.make_fx` records them.

    Returns:
        The number of operations folded away.
    """
    graph = graph_module.graph
    excluded: set[fx.Node] = set()
    while True:
        constant = _constant_nodes(graph, excluded)
        written = [n for node in graph.nodes for n in _written(node) if n in constant]
        if not written:
            break
        for node in written:
            excluded |= {n for n in _ancestors(node, constant) if n.op != "get_attr"}
            excluded.add(node)

    values: dict[fx.Node, Any] = {}
    folded = 0
    for node in graph.nodes:
        if node not in constant:
            continue
        if node.op == "get_attr":
            values[node] = _attribute(graph_module, str(node.target))
            continue
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
        values[node] = node.target(*args, **kwargs)
        folded += 1

    # Only the constants that computed nodes read become attributes; the rest disappear.
    count = 0
    for node in list(graph.nodes):
        if node not in constant or node.op == "get_attr":
            continue
        users = [user for user in node.users if user not in constant]
        value = values[node]
        if not users or not isinstance(value, torch.Tensor):
            continue
        name = f"{_FOLDED}_{count}"
        while hasattr(graph_module, name):
            count += 1
            name = f"{_FOLDED}_{count}"
        count += 1
        # A copy: a view would keep (and save) the whole tensor it views.
        setattr(graph_module, name, value.detach().clone(memory_format=torch.contiguous_format))
        with graph.inserting_before(node):
            # A plain tensor attribute, as the tracer records constants (not a buffer).
            replacement = graph.create_node("get_attr", name)
        replacement.meta = dict(node.meta)
        for user in users:
            user.replace_input_with(node, replacement)
    graph.eliminate_dead_code()
    _drop_unused_attributes(graph_module)
    graph_module.recompile()
    return folded


def _drop_unused_attributes(graph_module: fx.GraphModule) -> None:
    """Delete the tensors the graph no longer reads; give those it reads storage of their own.

    A view (a transposed mask, a row of the index pairs) would otherwise be saved as the
    tensor it views, or share it with another constant.
    """
    used = {str(node.target) for node in graph_module.graph.nodes if node.op == "get_attr"}
    tensors: dict[str, Tensor] = dict(graph_module.named_parameters(recurse=False))
    tensors.update(graph_module.named_buffers(recurse=False))
    tensors.update(
        (name, value) for name, value in vars(graph_module).items() if isinstance(value, Tensor)
    )
    for name, value in tensors.items():
        if name not in used:
            delattr(graph_module, name)
        elif not _owns_storage(value):
            copy = value.detach().clone(memory_format=torch.contiguous_format)
            if isinstance(value, nn.Parameter):
                copy = nn.Parameter(copy, requires_grad=False)
            delattr(graph_module, name)
            setattr(graph_module, name, copy)


def _owns_storage(tensor: Tensor) -> bool:
    """Whether ``tensor`` is the whole of its storage, contiguous (no view of another)."""
    whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return whole and tensor.storage_offset() == 0 and tensor.is_contiguous()
