"""Shifting one-sided activations into their readers' biases (trtcal.onnx.shift): the rewritten
model equals the original in float, run in ONNX Runtime, on small Gemm, MatMul and Conv models
built here; with quantized weights its INT8 model is the numpy reference of the shifted rounding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.core.errors import TrtcalError
from trtcal.onnx.qdq import write_qdq
from trtcal.onnx.shift import apply_shift, shiftable
from trtcal.ort.layers import fake_quant
from trtcal.ort.runner import cpu_session


def model_of(nodes, inits, x_shape, y_rank=2):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), *nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [f"d{i}" for i in range(len(x_shape))])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"o{i}" for i in range(y_rank)])],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def w(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


CASES = {
    "gemm transB bias alpha beta": (lambda: model_of(
        [helper.make_node("Gemm", ["r", "w", "b"], ["y"], transB=1, alpha=0.7, beta=1.5)],
        {"w": w(5, 8), "b": w(5, seed=1)}, (6, 8)), (6, 8)),
    "gemm no bias": (lambda: model_of([helper.make_node("Gemm", ["r", "w"], ["y"])], {"w": w(8, 4)}, (6, 8)), (6, 8)),
    "gemm transA, row bias": (lambda: model_of(
        [helper.make_node("Gemm", ["r", "w", "b"], ["y"], transA=1)], {"w": w(8, 3), "b": w(1, 3, seed=2)}, (8, 6)),
        (8, 6)),
    "matmul 3-d, two readers": (lambda: model_of(
        [helper.make_node("MatMul", ["r", "w"], ["a"]), helper.make_node("MatMul", ["r", "v"], ["c"]),
         helper.make_node("Add", ["a", "c"], ["y"])], {"w": w(8, 4), "v": w(8, 4, seed=3)}, (2, 5, 8), 3),
        (2, 5, 8)),
    "conv 1x1 grouped": (lambda: model_of(
        [helper.make_node("Conv", ["r", "w", "b"], ["y"], group=2)], {"w": w(6, 2, 1, 1), "b": w(6, seed=4)},
        (2, 4, 5, 5), 4), (2, 4, 5, 5)),
    "conv 3x3 valid, no bias": (lambda: model_of(
        [helper.make_node("Conv", ["r", "w"], ["y"], strides=[2, 2])], {"w": w(3, 4, 3, 3)}, (2, 4, 9, 9), 4),
        (2, 4, 9, 9)),
}


def run(model, x):
    return cpu_session(model, "test", int8_kernels=False).run(None, {"x": x})[0].astype(np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_the_shifted_model_equals_the_original_in_float(case):
    make, shape = CASES[case]
    model = make()
    x = np.random.default_rng(9).normal(size=shape).astype(np.float32)
    assert shiftable(model, ["r"])
    shifted = apply_shift(model, {"r": 1.75})
    assert shifted.tensors == {"r": "r_shifted"} and shifted.shifts == {"r": 1.75}
    onnx.checker.check_model(shifted.model, full_check=True)
    ref, got = run(model, x), run(shifted.model, x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert any(n.op_type == "Sub" for n in shifted.model.graph.node)
    assert not any(n.op_type == "Sub" for n in model.graph.node)  # the input model is not modified


def test_the_int8_model_rounds_the_shifted_values():
    """Gemm y = W x + b, x = relu(.) in [0, a]: the Q/DQ model of the shifted model (bias from the
    quantized weights) computes W_q (fq(x - a/2, a/2) + a/2) + b: the shifted rounding, nothing else."""
    model = CASES["gemm transB bias alpha beta"][0]()
    x = np.random.default_rng(5).normal(size=(64, 8)).astype(np.float32)
    r = np.maximum(x, 0)
    a = float(r.max())
    weight = numpy_helper.to_array(model.graph.initializer[0])
    scale = np.abs(weight).max(1) / 127
    wq = (np.clip(np.rint(weight / scale[:, None]), -127, 127) * scale[:, None]).astype(np.float32)
    shifted = apply_shift(model, {"r": a / 2}, weights={"w": wq})
    qdq = write_qdq(shifted.model, {"r_shifted": a / 2}, check_onnxruntime=False).model
    got = run(qdq, x)
    xq = fake_quant(r - np.float32(a / 2), np.float32(a / 2 / 127)) + np.float32(a / 2)
    b = numpy_helper.to_array(model.graph.initializer[1])
    expected = 0.7 * xq.astype(np.float64) @ wq.T.astype(np.float64) + 1.5 * b
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # and its rounding error is a quarter of the unshifted one's (one bit more), on the same clipping
    unshifted = fake_quant(r, np.float32(a / 127))
    assert ((xq - r) ** 2).mean() < 0.3 * ((unshifted - r) ** 2).mean()


def test_what_cannot_be_shifted():
    padded = model_of([helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1])], {"w": w(3, 4, 3, 3)},
                      (2, 4, 9, 9), 4)
    same = model_of([helper.make_node("Conv", ["r", "w"], ["y"], auto_pad="SAME_UPPER")], {"w": w(3, 4, 3, 3)},
                    (2, 4, 9, 9), 4)
    also_relu = model_of([helper.make_node("Gemm", ["r", "w"], ["a"]), helper.make_node("Relu", ["r"], ["c"]),
                          helper.make_node("Sum", ["a"], ["y"])], {"w": w(8, 8)}, (6, 8))
    beta0 = model_of([helper.make_node("Gemm", ["r", "w", "b"], ["y"], beta=0.0)], {"w": w(8, 4), "b": w(4)}, (6, 8))
    matmul_out = model_of([helper.make_node("MatMul", ["r", "w"], ["y"])], {"w": w(8, 4)}, (6, 8))
    for m in (padded, same, also_relu, beta0, matmul_out):
        assert shiftable(m, ["r"]) == {}
        with pytest.raises(TrtcalError, match="cannot shift 'r'"):
            apply_shift(m, {"r": 1.0})
    ok = CASES["gemm no bias"][0]()
    with pytest.raises(TrtcalError, match="not a finite number"):
        apply_shift(ok, {"r": float("nan")})
