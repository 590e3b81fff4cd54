"""The weight-free view of a model: shape inference on it gives what inference on the whole model
gives, the checker still rejects a broken graph, and the model passed in is left as it was."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from transformer_models import encoder_block

from trtcal.onnx.light import LARGE, inferred_values, light_view


def _conv_reshape_model() -> onnx.ModelProto:
    """Conv with a large weight, then a Reshape whose target shape is a small initializer (shape
    inference must read its values) and a MatMul by a large initializer."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w")  # 1152 > LARGE
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    m = numpy_helper.from_array(rng.standard_normal((16 * 6 * 6, 64)).astype(np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "m"], ["y"], name="mm"),
             helper.make_node("Shape", ["y"], ["s"], name="shape_of")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64]),
                               helper.make_tensor_value_info("s", TensorProto.INT64, [2])], [w, shape, m])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _full_inference(model) -> dict[str, onnx.TypeProto]:
    """The reference: ONNX shape inference on the whole model, weights and all."""
    g = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    return {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}


@pytest.mark.parametrize("make, large", [(_conv_reshape_model, LARGE), (encoder_block, 100)], ids=["conv", "encoder"])
def test_inference_on_the_view_matches_the_whole_model(make, large):
    model = make()
    before = model.SerializeToString()
    got = inferred_values(model, large=large)
    want = _full_inference(model)
    assert model.SerializeToString() == before  # not modified
    for name, t in want.items():  # every tensor inference types on the whole model, typed the same
        assert got[name].type == t, name
    big = {t.name for t in model.graph.initializer if np.prod(t.dims) > large}
    assert big  # the case is exercised
    for name in big:  # declared as the initializer is
        init = next(t for t in model.graph.initializer if t.name == name)
        tt = got[name].type.tensor_type
        assert tt.elem_type == init.data_type and [d.dim_value for d in tt.shape.dim] == list(init.dims)


def test_the_view_drops_large_data_and_keeps_small():
    model = _conv_reshape_model()
    view = light_view(model)
    kept = {t.name for t in view.graph.initializer}
    assert kept == {"shape"}
    assert {"w", "m"} <= {vi.name for vi in view.graph.input}
    assert view.ByteSize() < model.ByteSize() / 10
    assert inferred_values(model)["r"].type.tensor_type.shape.dim[1].dim_value == 16 * 6 * 6  # read the small one
    onnx.checker.check_model(view, full_check=True)


def test_the_checker_still_rejects_a_broken_graph_on_the_view():
    model = _conv_reshape_model()
    model.graph.node[2].input[0] = "nowhere"  # MatMul's input made by no node
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(light_view(model), full_check=False)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=False)  # as the whole model is
