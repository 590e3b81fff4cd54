"""Reading tensor names and types from ONNX models."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from trtcal.core.errors import TrtcalError
from trtcal.onnx.model import load_model, model_tensors


def test_groups_tensors(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
        helper.make_node("Mul", ["r", "c"], ["m"]),
        helper.make_node("Add", ["m", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    t = model_tensors(load_model(path))
    assert t.activations == ["x", "r", "m", "y"]
    assert t.non_float == ["s"]
    assert sorted(t.initializers) == ["c", "w"]


def test_bad_models(tmp_path):
    with pytest.raises(TrtcalError, match="no such model"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(TrtcalError, match="is a directory"):
        load_model(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 definitely not protobuf" * 10)
    with pytest.raises(TrtcalError, match="junk.onnx: not an ONNX model"):
        load_model(junk)
