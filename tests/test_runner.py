"""The ONNX Runtime runner: which tensors it exposes, and what it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtcal.errors import TrtcalError
from trtcal.runner import Runner


def save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def vi(name, elem=TensorProto.FLOAT, shape=("N", 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_exposes_every_float_tensor_and_values_match_numpy(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, -2.0, 3.0, -4.0])
    path = save(tmp_path, [
        helper.make_node("Mul", ["x", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=-1),
    ], [vi("x")], [vi("y")], [w])
    runner = Runner(path)
    assert runner.plan.calibrated == ["x", "m", "r", "y"]
    assert runner.plan.skipped == {"s": "not a float tensor"}
    x = np.array([[1, 1, 1, 1], [-1, 0.5, 2, 0]], np.float32)
    got = dict(runner.run({"x": x}))
    m = x * np.array([1, -2, 3, -4], np.float32)
    np.testing.assert_allclose(got["m"], m)
    np.testing.assert_allclose(got["r"], np.maximum(m, 0))
    assert set(got) == {"x", "m", "r", "y"}


def test_refuses_quantized_models(tmp_path):
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    path = save(tmp_path, [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ], [vi("x")], [vi("y")], [s, z])
    with pytest.raises(TrtcalError, match="already quantized \\(DequantizeLinear, QuantizeLinear"):
        Runner(path)


def test_notes_control_flow(tmp_path):
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e")])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    path = save(tmp_path, [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)],
                [vi("x")], [vi("y")], [cond])
    runner = Runner(path)
    assert any("If node 'branch'" in n for n in runner.plan.notes)
    got = dict(runner.run({"x": np.ones((2, 4), np.float32)}))
    assert set(got) == {"x", "y"}


def test_model_that_does_not_load(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 5)
    with pytest.raises(TrtcalError, match="bad.onnx"):
        Runner(bad)
