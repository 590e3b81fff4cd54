"""GPTQ rounding of ONNX layers (trtcal.ort.weight_rounding): the rounded weights survive the Q/DQ
writer as exactly their codes, and the output errors it reports equal running the layer in ONNX
Runtime with those weights, on small Conv, Gemm and MatMul models built here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.core.errors import TrtcalError
from trtcal.onnx.qdq import write_qdq
from trtcal.ort.layers import fake_quant
from trtcal.ort.runner import cpu_session
from trtcal.ort.weight_rounding import round_weights


def build(nodes, inits, rank, out="y"):
    dims = [f"d{i}" for i in range(rank)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"o{i}" for i in range(rank)])],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def weight(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


CASES = {
    "conv 3x3 pads strides": (lambda: build([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1],
                                                               strides=[2, 1])],
                                            {"w": weight(8, 3, 3, 3), "b": weight(8, seed=1)}, 4), (6, 3, 10, 9)),
    "depthwise": (lambda: build([helper.make_node("Conv", ["x", "w"], ["y"], group=6, pads=[1, 1, 1, 1])],
                                {"w": weight(6, 1, 3, 3)}, 4), (5, 6, 8, 8)),
    "conv groups": (lambda: build([helper.make_node("Conv", ["x", "w"], ["y"], group=2)],
                                  {"w": weight(6, 2, 3, 3)}, 4), (5, 4, 7, 7)),
    "gemm transB alpha": (lambda: build([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5)],
                                        {"w": weight(7, 24), "c": weight(7, seed=2)}, 2), (200, 24)),
    "gemm": (lambda: build([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": weight(16, 5)}, 2), (120, 16)),
    "matmul 3-d": (lambda: build([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": weight(20, 9)}, 3), (4, 30, 20)),
}


def inputs(shape, seed=7):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(shape[-1], shape[-1])).astype(np.float32) if len(shape) in (2, 3) else None
    x = rng.normal(size=shape).astype(np.float32)
    # correlated features, as real activations are; neighbouring pixels correlated, as in images
    x = x @ mix if mix is not None else np.cumsum(x, axis=-1) + np.cumsum(x, axis=-2)
    return np.maximum(x, -0.5 * np.abs(x).max())  # skewed, like a post-activation


def run_layer(model, x, w):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), "w"))
    return cpu_session(m, "test").run(None, {"x": x})[0].astype(np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_codes_survive_the_writer_and_errors_match_onnxruntime(case, tmp_path):
    make, shape = CASES[case]
    model = make()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = inputs(shape)
    amax = float(np.abs(x).max())
    found = round_weights(path, {"x": amax}, [{"x": x}])
    assert set(found.values) == {"w"} and not found.skipped
    values = found.values["w"]
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    assert values.shape == w.shape and values.dtype == np.float32

    # the Q/DQ writer stores exactly these values: codes * scale, codes within [-127, 127]
    qdq = write_qdq(model, {"x": amax}, weight_values=found.values).model
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and inits[n.input[0]].shape == w.shape)
    codes, scale = inits[dq.input[0]].astype(np.float32), inits[dq.input[1]]
    axis = next(a.i for a in dq.attribute if a.name == "axis")
    shaped = scale.reshape([-1 if i == axis else 1 for i in range(w.ndim)])
    np.testing.assert_array_equal(codes * shaped, values)
    assert np.abs(codes).max() <= 127
    nearest = write_qdq(model, {"x": amax}).model
    near_codes = next(numpy_helper.to_array(i) for i in nearest.graph.initializer if i.name == dq.input[0])
    assert (near_codes != codes).any()  # GPTQ moved some codes

    # the reported output errors are the layer's, run in ONNX Runtime on the quantized input
    xq = fake_quant(x, np.float32(amax / 127))
    ref = run_layer(model, xq, w)
    err_gptq = ((run_layer(model, xq, values) - ref) ** 2).sum()
    err_near = ((run_layer(model, xq, near_codes.astype(np.float32) * shaped) - ref) ** 2).sum()
    nearest_err, gptq_err = found.errors["w"]
    assert gptq_err == pytest.approx(err_gptq, rel=1e-3)
    assert nearest_err == pytest.approx(err_near, rel=1e-3)
    assert err_gptq < err_near

    # and the Q/DQ model runs them: its output is the layer's on the quantized input and rounded weights
    got = cpu_session(qdq, "test").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, run_layer(model, xq, values), rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_given_grids_and_shared_weights(tmp_path):
    w = weight(12, 6)
    model = build([helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("MatMul", ["x", "v"], ["b"]),
                   helper.make_node("MatMul", ["a", "w2"], ["c"]), helper.make_node("Add", ["b", "c"], ["y"])],
                  {"w": w, "v": weight(12, 6, seed=3), "w2": weight(6, 6, seed=4)}, 2)
    # "w" read twice would need one rounding for two inputs: build a second reader of "v" instead
    model.graph.node.insert(2, helper.make_node("MatMul", ["x", "v"], ["b2"]))
    model.graph.node[-1].input[0] = "b"
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = inputs((64, 12))
    a = x @ w
    amaxes = {"x": float(np.abs(x).max()), "a": float(np.abs(a).max())}
    scales = {"w": (np.abs(w).max(0) / 127 * 0.8).astype(np.float32)}
    by_max = round_weights(path, amaxes, [{"x": x}])
    by_given = round_weights(path, amaxes, [{"x": x}], weight_scales=scales)
    assert by_max.skipped == by_given.skipped == {"v": "read by 2 layers"}
    assert set(by_max.values) == {"w", "w2"}
    for found, s in ((by_max, np.abs(w).max(0) / 127), (by_given, scales["w"])):
        codes = found.values["w"] / np.float32(s)
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-4)  # on the grid
        assert np.abs(np.rint(codes)).max() <= 127


def test_writer_refuses_bad_values():
    model, _shape = CASES["gemm"][0](), None
    with pytest.raises(TrtcalError, match="shape"):
        write_qdq(model, {"x": 1.0}, weight_values={"w": np.zeros((3, 3), np.float32)})
    with pytest.raises(TrtcalError, match="finite"):
        write_qdq(model, {"x": 1.0}, weight_values={"w": np.full((16, 5), np.nan, np.float32)})
    with pytest.raises(TrtcalError, match="weight values"):
        write_qdq(model, {"x": 1.0}, weight_values={"nope": np.zeros(1, np.float32)})
