"""Test helper: a model's initializers moved into Constant nodes, as paddle2onnx writes its weights."""

from __future__ import annotations

import onnx
from onnx import helper


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers are Constant nodes of the same names, before the graph's nodes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in out.graph.initializer]
    del out.graph.initializer[:]
    body = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes + body)
    return out
