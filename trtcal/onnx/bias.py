"""Adding per-channel constants to a weighted layer's bias (graph work only: onnx protos and numpy).

:func:`add_to_bias` contract, for a node of ``model`` (edited in place) and ``delta`` (one value per
output channel):

- Conv and Gemm with a constant bias or none: input 2 becomes a new initializer, the old bias plus
  ``delta`` (Gemm: divided by ``beta``, which scales it; a ``C`` of shape ``[N]``, ``[1, N]``,
  ``[M, N]`` or a scalar takes it broadcast over its rows), or ``delta`` alone where the node has
  no bias; the old initializer is left as it is (another node may share it). With a computed
  bias, an ``Add`` after the node carries ``delta`` (on a Conv's channel axis).
- MatMul: where its output is read by exactly one node, an ``Add`` of a constant initializer of
  ``N`` values (shape ``[N]`` or ones then ``N``), and is no graph output, that constant becomes a
  new one plus ``delta``; else an ``Add`` of ``delta`` is inserted after it (the MatMul's output
  renamed, the Add writing the old name), placed by the caller (``after``: node index -> nodes to
  insert after it; :func:`insert_nodes` does so).
"""

from __future__ import annotations

import numpy as np

from trtcal.onnx.model import Names, node_attr


def _bias_add(model, node, inits: dict):
    """The Add after a MatMul that adds a constant of ``N`` values, or None (module doc)."""
    from onnx import numpy_helper

    out = node.output[0]
    if out in {o.name for o in model.graph.output}:
        return None
    readers = [n for n in model.graph.node if out in n.input]
    if len(readers) != 1 or readers[0].op_type != "Add" or len(readers[0].input) != 2:
        return None
    add = readers[0]
    other = add.input[1] if add.input[0] == out else add.input[0]
    if other not in inits or other == out:
        return None
    shape = tuple(inits[other].dims)
    n = numpy_helper.to_array(inits[node.input[1]]).shape[-1] if node.input[1] in inits else None
    if not shape or shape[-1] != n or any(d != 1 for d in shape[:-1]):
        return None
    return add, other


def add_to_bias(model, node, index: int, delta: np.ndarray, inits: dict, names: Names, after: dict) -> None:
    """Add ``delta`` to ``node``'s bias (module doc). ``inits``: name -> initializer (kept up to
    date); ``names``: the model's :class:`trtcal.onnx.model.Names`; ``index``: the node's index,
    where an inserted Add goes."""
    from onnx import numpy_helper

    graph = model.graph
    delta = np.asarray(delta, np.float64).reshape(-1)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if node.op_type in ("Gemm", "Conv") and (bias is None or bias in inits):  # input 2 (Gemm's C is scaled by beta)
        delta = delta / (float(node_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0)
        if bias is not None:  # a new initializer: the old may be shared
            # a Gemm's C may be [N], [1, N], [M, N] or a scalar: the delta broadcasts over its rows
            new, name = numpy_helper.to_array(inits[bias]).astype(np.float64) + delta, names.fresh(f"{bias}_adjusted")
        else:
            new, name = delta, names.fresh(f"{node.output[0]}_bias")
        graph.initializer.append(numpy_helper.from_array(new.astype(np.float32), name))
        inits[name] = graph.initializer[-1]
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)  # a Gemm or Conv has inputs 0 and 1 here: the bias is the third
        return
    if node.op_type == "Conv":  # a computed bias: an Add after the Conv, on the channel axis
        spatial = numpy_helper.to_array(inits[node.input[1]]).ndim - 2 if node.input[1] in inits else 2
        _add_after(model, node, index, delta.reshape([-1] + [1] * spatial), inits, names, after)
        return
    if node.op_type == "Gemm":  # a computed C: an Add after the Gemm
        _add_after(model, node, index, delta, inits, names, after)
        return
    found = _bias_add(model, node, inits)
    if found is not None:  # MatMul followed by its bias Add: the Add's constant takes the delta
        add, const = found
        b = numpy_helper.to_array(inits[const]).astype(np.float64)
        name = names.fresh(f"{const}_adjusted")
        graph.initializer.append(numpy_helper.from_array((b + delta.reshape(b.shape)).astype(np.float32), name))
        inits[name] = graph.initializer[-1]
        add.input[list(add.input).index(const)] = name
        return
    _add_after(model, node, index, delta, inits, names, after)  # MatMul: an Add after it carries the bias


def _add_after(model, node, index: int, delta: np.ndarray, inits: dict, names: Names, after: dict) -> None:
    """An ``Add`` of ``delta`` after ``node``: its output renamed, the Add writing the old name."""
    from onnx import helper, numpy_helper

    out = node.output[0]
    name = names.fresh(f"{out}_bias")
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(delta, np.float32), name))
    inits[name] = model.graph.initializer[-1]
    raw = names.fresh(f"{out}_unbiased")
    node.output[0] = raw
    after.setdefault(index, []).append(helper.make_node("Add", [raw, name], [out], name=names.fresh(f"{out}_Add")))


def insert_nodes(model, before: dict | None = None, after: dict | None = None) -> None:
    """Insert nodes around existing ones, in order: ``before`` / ``after``, node index -> nodes."""
    before, after = before or {}, after or {}
    if not before and not after:
        return
    order = []
    for i, node in enumerate(model.graph.node):
        order += before.get(i, []) + [node] + after.get(i, [])
    del model.graph.node[:]
    model.graph.node.extend(order)


def add_to_biases(model, deltas: dict[int, np.ndarray]):
    """A copy of ``model`` with ``deltas`` (node index -> one value per output channel) added to
    those Conv, Gemm and MatMul nodes' biases (module doc)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    names, after = Names(m), {}
    for index, delta in deltas.items():
        add_to_bias(m, m.graph.node[index], index, delta, inits, names, after)
    insert_nodes(m, after=after)
    return m
