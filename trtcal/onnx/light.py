"""A weight-free view of an ONNX model, for the work that needs the graph but not the weights:
shape inference and the checker.

ONNX's shape inference and checker take a ``ModelProto`` and serialise all of it, weights
included; on a 90 MB transformer that is about a second a call, and writing one Q/DQ model
called them five times. :func:`light_view` is the same graph with every initializer of more than
:data:`LARGE` elements declared as a graph input of the same type and shape instead (the small
ones, which shape computation may read, stay as they are), so inference and checking cost what
the graph costs. What differs: the checker does not look at the large initializers' data (whose
size and type the view still states), and shape inference cannot read a large initializer's
values (no shape is ever computed from a weight).

:func:`inferred_values` is what the graph's tensors are, by inference on that view.

An adapter over ``onnx`` protos; the model passed in is never modified.
"""

from __future__ import annotations

import math

#: Initializers with more elements than this are declared as inputs in the view.
LARGE = 1024


def _elements(tensor) -> int:
    return math.prod(int(d) for d in tensor.dims)


def light_view(model, *, large: int = LARGE):
    """A new ``ModelProto``: ``model`` without the data of its initializers of more than ``large``
    elements, each declared as a graph input (same element type and dims) instead."""
    import onnx

    view = onnx.ModelProto()
    view.ir_version = model.ir_version
    view.opset_import.extend(model.opset_import)
    view.functions.extend(model.functions)
    src, g = model.graph, view.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    declared = {vi.name for vi in src.input}
    for t in src.initializer:
        if _elements(t) <= large:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return view


def inferred_values(model, *, large: int = LARGE) -> dict:
    """Tensor name -> ``ValueInfoProto`` (element type and shape) for the graph's inputs, outputs
    and inner tensors: ONNX shape inference (not strict) on :func:`light_view`, or what the model
    declares where inference fails. Large initializers appear as the view declares them."""
    import onnx

    view = light_view(model, large=large)
    try:
        graph = onnx.shape_inference.infer_shapes(view, strict_mode=False).graph
    except Exception:  # inference is best effort: what the model declares
        graph = view.graph
    return {vi.name: vi for vi in list(graph.input) + list(graph.value_info) + list(graph.output)}
