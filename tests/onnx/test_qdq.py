"""``trtcal.onnx.qdq``: placement, scales, numerics against a numpy fake-quant reference, round trip, TensorRT-RTX.

References are independent of the writer: weights are quantized here channel by channel in plain
loops, activations by ``clip(rint(x / s), -128, 127) * s``, and a model's expected output is the
FP32 model run on fake-quantized inputs with fake-quantized weights put in its initializers (or,
for the demo CNN, a numpy implementation of the whole network).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

import trtcal
from trtcal.cache.format import CalibrationCache, scale_bits_from_amax
from trtcal.core.errors import TrtcalError
from trtcal.core.ranges import Range, from_thresholds
from trtcal.onnx.qdq import per_channel_int8, read_qdq_scales, write_qdq

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"
CALIB = EXAMPLES / "fashion_calib.npz"
EVAL = EXAMPLES / "fashion_eval.npz"
RNG = np.random.default_rng(7)


# ---------------------------------------------------------------------- helpers


def make_model(nodes, inputs, outputs, inits=(), opset=17, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model, full_check=True)
    return model


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def run(model, feeds):
    # No graph optimisation: DequantizeLinear then the float op, exactly the fake quantization the
    # references compute. Optimised, ONNX Runtime fuses Q/DQ into integer kernels whose results
    # depend on the CPU (u8s8 products saturate in 16 bits on AVX2 machines without VNNI).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fq(x, scale, lo=-128, hi=127):
    """Fake quantization of activations: round half to even, clamp, dequantize (float32)."""
    s = np.float32(scale)
    return (np.clip(np.rint(np.asarray(x, np.float32) / s), lo, hi) * s).astype(np.float32)


def ref_weight(w, axis):
    """Per-channel symmetric int8 fake quantization, one channel at a time."""
    w = np.asarray(w, np.float32)
    out = np.empty_like(w)
    for c in range(w.shape[axis]):
        sl = [slice(None)] * w.ndim
        sl[axis] = c
        ch = w[tuple(sl)]
        m = float(np.abs(ch).max())
        s = np.float32(m / 127) if m > 0 else np.float32(1)
        out[tuple(sl)] = np.clip(np.rint(ch / s), -127, 127) * s
    return out


def with_weights(model, **arrays):
    """A copy of ``model`` whose initializers ``name=array`` are replaced."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in arrays:
            t.CopyFrom(init(t.name, arrays[t.name]))
    return m


def ops(model):
    return [n.op_type for n in model.graph.node]


def consumers(model, name):
    return [n for n in model.graph.node if name in n.input]


def dq_of(model, node_name, k):
    """The DequantizeLinear node feeding input ``k`` of the node ``node_name``."""
    node = next(n for n in model.graph.node if n.name == node_name)
    return next((n for n in model.graph.node if n.output and n.output[0] == node.input[k]
                 and n.op_type == "DequantizeLinear"), None)


def inits_of(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def is_topological(model) -> bool:
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    for n in model.graph.node:
        if any(i not in known for i in n.input):
            return False
        known.update(n.output)
    return True


def channel_scaled(shape, axis, spread=10.0):
    """Weights whose magnitude differs by channel along ``axis`` (a wrong axis shows)."""
    w = RNG.standard_normal(shape).astype(np.float32)
    scale = spread ** np.linspace(-1, 1, shape[axis])
    sh = [1] * len(shape)
    sh[axis] = -1
    return (w * scale.reshape(sh)).astype(np.float32)


# ---------------------------------------------------------------------- weights


def test_per_channel_int8_matches_a_loop_reference():
    for shape, axis in [((4, 3, 3, 3), 0), ((3, 5, 2, 2), 1), ((6, 7), 0), ((6, 7), 1), ((2, 5, 7), 2)]:
        w = channel_scaled(shape, axis)
        q, s, zero = per_channel_int8(w, axis)
        assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (shape[axis],) and zero == 0
        bshape = [1] * len(shape)
        bshape[axis] = -1
        np.testing.assert_array_equal(q.astype(np.float32) * s.reshape(bshape), ref_weight(w, axis))
        assert np.abs(q).max() == 127
    w = np.zeros((3, 2), np.float32)
    w[1] = [0.5, -1.0]
    q, s, zero = per_channel_int8(w, 0)
    assert zero == 2 and s[0] == s[2] == 1.0 and np.all(q[[0, 2]] == 0) and list(q[1]) == [64, -127]  # 63.5 -> 64


# ---------------------------------------------------------------------- one node at a time


def check_single(model, feeds, ranges, expected_axes, weights_axes, **kw):
    """Write Q/DQ; check the DQ axis per weight, the int8 weights, and the output against the FP32
    model run on fake-quantized inputs with fake-quantized weights."""
    res = write_qdq(model, ranges, **kw)
    out = res.model
    onnx.checker.check_model(out, full_check=True)
    assert is_topological(out)
    for name, axis in expected_axes.items():
        dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(name))
        got = [a.i for a in dq.attribute if a.name == "axis"]
        assert got == ([] if axis is None else [axis]), (name, got)
        assert inits_of(out)[dq.input[0]].dtype == np.int8 and not np.any(inits_of(out)[dq.input[2]])
    weights = {n: ref_weight(inits_of(model)[n], a) for n, a in weights_axes.items()}
    ref = run(with_weights(model, **weights), {k: fq(v, ranges[k] / 127) for k, v in feeds.items()})
    got = run(out, feeds)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()))
    fp32 = run(model, feeds)
    assert not np.allclose(got[0], fp32[0], rtol=1e-6, atol=0)  # quantization did something
    return res


def test_conv_weights_per_output_channel_axis_0():
    w = channel_scaled((4, 3, 3, 3), 0)
    model = make_model([helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       [vi("x", [2, 3, 6, 6])], [vi("y", [2, 4, 6, 6])], [init("W", w), init("B", RNG.standard_normal(4))])
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    res = check_single(model, {"x": x}, {"x": float(np.abs(x).max()) * 0.8}, {"W": 0}, {"W": 0})
    assert ops(res.model) == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv"]
    assert [n.name for n in res.model.graph.node][-1] == "conv"
    conv = res.model.graph.node[-1]
    assert conv.input[2] == "B" and "B" in inits_of(res.model)  # the bias stays float
    assert inits_of(res.model)["B"].dtype == np.float32 and "W" not in inits_of(res.model)
    assert [q.name for q in res.activations] == ["x"] and res.weights[0].axis == 0 and res.weights[0].channels == 4


def test_conv_transpose_weights_axis_1():
    w = channel_scaled((3, 5, 2, 2), 1)  # [C_in, C_out, kh, kw]
    model = make_model([helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv", strides=[2, 2])],
                       [vi("x", [1, 3, 4, 4])], [vi("y", [1, 5, 8, 8])], [init("W", w)])
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    check_single(model, {"x": x}, {"x": float(np.abs(x).max())}, {"W": 1}, {"W": 1})


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_weights_axis_follows_trans_b(trans_b):
    k, n = 6, 5
    axis = 0 if trans_b else 1  # the N axis: B is [N, K] with transB=1, else [K, N]
    w = channel_scaled((n, k) if trans_b else (k, n), axis)
    model = make_model([helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc", transB=trans_b)],
                       [vi("x", [3, k])], [vi("y", [3, n])], [init("W", w), init("C", RNG.standard_normal(n))])
    x = RNG.standard_normal((3, k)).astype(np.float32)
    check_single(model, {"x": x}, {"x": 2.0}, {"W": axis}, {"W": axis})


def test_matmul_with_constant_b_uses_the_last_axis():
    w = channel_scaled((6, 5), 1)  # [K, N]
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                       [vi("x", [2, 3, 6])], [vi("y", [2, 3, 5])], [init("W", w)])
    x = RNG.standard_normal((2, 3, 6)).astype(np.float32)
    check_single(model, {"x": x}, {"x": 2.5}, {"W": 1}, {"W": 1})


def test_matmul_of_two_activations_quantizes_both_per_tensor():
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                       [vi("a", [2, 4, 6]), vi("b", [2, 6, 3])], [vi("y", [2, 4, 3])])
    a = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    b = RNG.standard_normal((2, 6, 3)).astype(np.float32) * 3
    res = check_single(model, {"a": a, "b": b}, {"a": 1.5, "b": 7.0}, {}, {})
    assert sorted(q.name for q in res.activations) == ["a", "b"] and not res.weights
    assert ops(res.model).count("QuantizeLinear") == 2 and ops(res.model).count("DequantizeLinear") == 2


def test_a_weight_from_a_constant_node_is_quantized_and_the_constant_dropped():
    w = channel_scaled((4, 3, 1, 1), 0)
    const = helper.make_node("Constant", [], ["W"], name="w_const", value=numpy_helper.from_array(w, "W"))
    model = make_model([const, helper.make_node("Conv", ["x", "W"], ["y"], name="conv")],
                       [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4])])
    res = write_qdq(model, {"x": 2.0})
    assert "Constant" not in ops(res.model) and res.weights[0].axis == 0
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    ref = make_model([helper.make_node("Conv", ["x", "W"], ["y"])], [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4])],
                     [init("W", ref_weight(w, 0))])
    np.testing.assert_allclose(run(res.model, {"x": x})[0], run(ref, {"x": fq(x, 2 / 127)})[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- graph-level placement


def residual_model(bn: bool = False, downsample: bool = False):
    """x -> Conv1 -> Relu -> Conv2 [-> BN] -> Add(., x or Conv3(x)) -> Relu -> y."""
    c = 4
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1])]
    inits = [init("W1", channel_scaled((c, c, 3, 3), 0)), init("W2", channel_scaled((c, c, 3, 3), 0))]
    main = "c2"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["c2", "g", "b", "m", "v"], ["bn"], name="bn"))
        inits += [init("g", RNG.uniform(0.5, 2, c)), init("b", RNG.standard_normal(c)), init("m", RNG.standard_normal(c)),
                  init("v", RNG.uniform(0.5, 2, c))]
        main = "bn"
    skip = "x"
    if downsample:
        nodes.append(helper.make_node("Conv", ["x", "W3"], ["c3"], name="conv3"))
        inits.append(init("W3", channel_scaled((c, c, 1, 1), 0)))
        skip = "c3"
    nodes += [helper.make_node("Add", [main, skip], ["s"], name="add"), helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    return make_model(nodes, [vi("x", [1, c, 8, 8])], [vi("y", [1, c, 8, 8])], inits)


def test_residual_add_input_after_a_quantized_conv_is_quantized_with_the_shared_q():
    model = residual_model()
    ranges = {"x": 3.0, "r1": 4.0, "c1": 5.0, "c2": 6.0, "s": 7.0, "y": 7.0}
    res = write_qdq(model, ranges)
    out = res.model
    assert is_topological(out)
    # x feeds conv1 and the add: one Q, one DQ, read by both
    assert [n.name for n in consumers(out, "x")] == ["x_QuantizeLinear"]
    dq = dq_of(out, "conv1", 0)
    assert dq is not None and dq_of(out, "add", 1) is dq
    assert next(n for n in out.graph.node if n.name == "add").input[0] == "c2"  # the conv output stays float
    xq = next(q for q in res.activations if q.name == "x")
    assert xq.consumers == ["conv1", "add (residual)"]
    assert sorted(q.name for q in res.activations) == ["r1", "x"]  # no output of any node but the inputs
    assert ops(out).count("QuantizeLinear") == 2 and ops(out).count("DequantizeLinear") == 4
    # numerics: Q/DQ on x also feeds the add
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
    w = inits_of(model)
    # reference with r1 fake-quantized too: run conv1 by hand through a sub-model
    head = make_model([helper.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"])],
                      [vi("x", [1, 4, 8, 8])], [vi("r1", [1, 4, 8, 8])], [init("W1", ref_weight(w["W1"], 0))])
    xq_ = fq(x, 3 / 127)
    r1 = fq(run(head, {"x": xq_})[0], 4 / 127)
    tail = make_model([helper.make_node("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 1, 1]),
                       helper.make_node("Add", ["c2", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                      [vi("r1", [1, 4, 8, 8]), vi("x", [1, 4, 8, 8])], [vi("y", [1, 4, 8, 8])],
                      [init("W2", ref_weight(w["W2"], 0))])
    expected = run(tail, {"r1": r1, "x": xq_})[0]
    np.testing.assert_allclose(run(out, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


def test_residual_through_batchnorm_and_with_a_downsample_conv():
    res = write_qdq(residual_model(bn=True), {"x": 3.0, "r1": 4.0})
    assert dq_of(res.model, "add", 1) is dq_of(res.model, "conv1", 0)
    # both add inputs come from quantized convs: the earlier one (conv2's, via the BN? no: conv3 runs last)
    res = write_qdq(residual_model(downsample=True), {"x": 3.0, "r1": 4.0, "c2": 6.0, "c3": 5.0})
    add = next(n for n in res.model.graph.node if n.name == "add")
    assert dq_of(res.model, "add", 0) is not None and add.input[1] == "c3"  # c2 comes first: it is the residual
    assert next(q for q in res.activations if q.name == "c2").consumers == ["add (residual)"]
    # no range for the residual: the add stays float, listed
    res = write_qdq(residual_model(downsample=True), {"x": 3.0, "r1": 4.0})
    assert res.float_tensors == {"c2": "no range"} and "add" in res.float_nodes
    # Add excluded: no residual quantization
    res = write_qdq(residual_model(), {"x": 3.0, "r1": 4.0}, exclude_ops=["Add"])
    assert next(q for q in res.activations if q.name == "x").consumers == ["conv1"]
    assert next(n for n in res.model.graph.node if n.name == "add").input[1] == "x"


def test_an_add_without_a_quantized_conv_or_with_a_constant_is_left_alone():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "W"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "bias"], ["y"], name="addbias")]
    model = make_model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 3, 4, 4])],
                       [init("W", channel_scaled((3, 2, 1, 1), 0)), init("bias", RNG.standard_normal((1, 3, 1, 1)))])
    res = write_qdq(model, {"x": 1.0, "r": 1.0, "s": 2.0, "c": 3.0})
    assert [q.name for q in res.activations] == ["s"]
    assert next(n for n in res.model.graph.node if n.name == "addbias").input[1] == "bias"


def bias_nodes(kind: str, c: int):
    """Nodes and initializers computing a conv bias ``b`` [1, C, 1, 1] from constants only, as
    exporters write it (paddle2onnx: ``Reshape(Constant)``), and the bias values."""
    b = RNG.standard_normal(c).astype(np.float32)
    if kind == "reshape_constant":
        return ([helper.make_node("Constant", [], ["bc"], value=numpy_helper.from_array(b, "bc")),
                 helper.make_node("Reshape", ["bc", "bshape"], ["b"])],
                [numpy_helper.from_array(np.array([1, c, 1, 1], np.int64), "bshape")], b)
    if kind == "unsqueeze_init":
        return ([helper.make_node("Unsqueeze", ["b1", "baxes"], ["b"])],
                [init("b1", b), numpy_helper.from_array(np.array([0, 2, 3], np.int64), "baxes")], b)
    if kind == "cast_identity":  # a float64 initializer, Identity, then Cast to float32
        return ([helper.make_node("Identity", ["b64"], ["bi"]), helper.make_node("Cast", ["bi"], ["b"], to=TensorProto.FLOAT)],
                [numpy_helper.from_array(b.astype(np.float64).reshape(1, c, 1, 1), "b64")], b)
    if kind == "mul_of_constants":  # Mul(initializer, Constant): still constant
        return ([helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.float32), "two")),
                 helper.make_node("Mul", ["bhalf", "two"], ["b"])],
                [init("bhalf", (b / 2).reshape(1, c, 1, 1))], b)
    raise ValueError(kind)


BIAS_KINDS = ["reshape_constant", "unsqueeze_init", "cast_identity", "mul_of_constants"]


@pytest.mark.parametrize("kind", BIAS_KINDS)
def test_a_conv_bias_computed_from_constants_is_never_quantized(kind):
    c = 4
    w = channel_scaled((c, 3, 3, 3), 0)
    more, inits, b = bias_nodes(kind, c)
    nodes = more + [helper.make_node("Conv", ["x", "W"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["conv", "b"], ["s"], name="addbias"),
                    helper.make_node("Relu", ["s"], ["y"], name="relu")]
    model = make_model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", [1, c, 6, 6])], [init("W", w)] + inits)
    # a calibrator records the bias tensor too (it is a layer output): the range must not be used
    res = write_qdq(model, {"x": 2.0, "b": 0.5, "conv": 3.0, "s": 3.0})
    out = res.model
    assert [q.name for q in res.activations] == ["x"] and res.activations[0].consumers == ["conv"]
    assert next(n for n in out.graph.node if n.name == "addbias").input[:] == ["conv", "b"]
    assert not [n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "b"]
    assert ops(out).count("QuantizeLinear") == 1 and ops(out).count("DequantizeLinear") == 2
    # numerics: conv of the fake-quantized input with fake-quantized weights, plus the exact bias
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32) * 2
    ref = make_model([helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
                     [vi("x", [1, 3, 6, 6])], [vi("y", [1, c, 6, 6])], [init("W", ref_weight(w, 0)), init("B", b)])
    np.testing.assert_allclose(run(out, {"x": x})[0], run(ref, {"x": fq(x, 2 / 127)})[0], rtol=1e-5, atol=1e-5)


def test_a_random_tensor_is_no_constant_and_a_residual_after_a_biased_conv_is_quantized():
    c = 4
    more, inits, _b = bias_nodes("reshape_constant", c)
    # RandomUniformLike of an initializer is not constant: quantized as the add's residual
    nodes = [helper.make_node("Conv", ["x", "W"], ["conv"], name="conv"),
             helper.make_node("RandomUniformLike", ["noise_shape"], ["noise"], name="rand"),
             helper.make_node("Add", ["conv", "noise"], ["y"], name="add")]
    model = make_model(nodes, [vi("x", [1, c, 4, 4])], [vi("y", [1, c, 4, 4])],
                       [init("W", channel_scaled((c, c, 1, 1), 0)), init("noise_shape", np.zeros((1, c, 4, 4)))])
    res = write_qdq(model, {"x": 1.0, "noise": 1.0})
    assert next(q for q in res.activations if q.name == "noise").consumers == ["add (residual)"]
    # x -> Conv -> Add(bias) -> Add(., x): the biased conv takes the residual add, x is the residual
    # (and a Mul/Add by constants, a folded BatchNormalization as paddle2onnx writes it, alike)
    for affine in (False, True):
        chain = more + [helper.make_node("Conv", ["x", "W"], ["conv"], name="conv"),
                        helper.make_node("Add", ["conv", "b"], ["biased"], name="addbias")]
        last = "biased"
        if affine:
            chain += [helper.make_node("Mul", ["gamma", "biased"], ["scaled"], name="scale"),
                      helper.make_node("Add", ["scaled", "beta"], ["shifted"], name="shift")]
            last = "shifted"
        chain += [helper.make_node("Add", [last, "x"], ["s"], name="add"), helper.make_node("Relu", ["s"], ["y"])]
        extra = [init("gamma", RNG.uniform(0.5, 2, (1, c, 1, 1))), init("beta", RNG.standard_normal((1, c, 1, 1)))]
        model = make_model(chain, [vi("x", [1, c, 4, 4])], [vi("y", [1, c, 4, 4])],
                           [init("W", channel_scaled((c, c, 1, 1), 0))] + inits + (extra if affine else []))
        res = write_qdq(model, {"x": 1.0, "b": 0.3, "biased": 2.0, "beta": 1.0, "scaled": 2.0})
        assert [(q.name, q.consumers) for q in res.activations] == [("x", ["conv", "add (residual)"])], affine
        assert dq_of(res.model, "add", 1) is dq_of(res.model, "conv", 0)


def test_an_addend_computed_from_the_conv_output_is_no_residual():
    """x + gate(x) with x a conv output (a squeeze-excitation block as in PP-OCR's detector): the
    add cannot be fused into the conv, whose output it needs first, so nothing is quantized for it."""
    c = 4
    nodes = [helper.make_node("Conv", ["x", "W"], ["conv"], name="conv"),
             helper.make_node("GlobalAveragePool", ["conv"], ["gap"], name="gap"),
             helper.make_node("Sigmoid", ["gap"], ["gate"], name="sigmoid"),
             helper.make_node("Mul", ["conv", "gate"], ["m"], name="mul"),
             helper.make_node("Add", ["conv", "m"], ["y"], name="add")]
    model = make_model(nodes, [vi("x", [1, c, 4, 4])], [vi("y", [1, c, 4, 4])], [init("W", channel_scaled((c, c, 1, 1), 0))])
    res = write_qdq(model, {"x": 1.0, "conv": 2.0, "gap": 1.0, "gate": 1.0, "m": 2.0})
    assert [(q.name, q.consumers) for q in res.activations] == [("x", ["conv"])]
    assert next(n for n in res.model.graph.node if n.name == "add").input[:] == ["conv", "m"]


def pool_concat_model():
    """x -> conv_a -> Relu -> MaxPool -> conv_b \\
       x -> conv_c ------------------------------ Concat -> conv_d -> GlobalAveragePool -> Flatten -> Gemm."""
    nodes = [helper.make_node("Conv", ["x", "Wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             helper.make_node("MaxPool", ["ra"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "Wb"], ["b"], name="conv_b"),
             helper.make_node("Conv", ["x", "Wc"], ["c"], name="conv_c", strides=[2, 2]),
             helper.make_node("Concat", ["b", "c"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "Wd"], ["d"], name="conv_d"),
             helper.make_node("GlobalAveragePool", ["d"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "Wf"], ["y"], name="fc", transB=1)]
    inits = [init("Wa", channel_scaled((4, 3, 3, 3), 0)), init("Wb", channel_scaled((4, 4, 1, 1), 0)),
             init("Wc", channel_scaled((4, 3, 1, 1), 0)), init("Wd", channel_scaled((6, 8, 1, 1), 0)),
             init("Wf", channel_scaled((5, 6), 0))]
    return make_model(nodes, [vi("x", [2, 3, 8, 8])], [vi("y", [2, 5])], inits)


POOL_CONCAT_RANGES = {t: 3.0 for t in ("x", "a", "ra", "p", "b", "c", "cat", "d", "gap", "f", "y")}


def test_pooling_and_concat_are_quantized_only_where_a_weighted_op_reads_them():
    res = write_qdq(pool_concat_model(), POOL_CONCAT_RANGES)
    out = res.model
    # pool and concat outputs feeding a conv or gemm get the Q/DQ; their inputs stay float
    assert {q.name: q.consumers for q in res.activations} == {
        "x": ["conv_a", "conv_c"], "p": ["conv_b"], "cat": ["conv_d"], "f": ["fc"]}
    assert next(n for n in out.graph.node if n.name == "pool").input[:] == ["ra"]
    assert next(n for n in out.graph.node if n.name == "cat").input[:] == ["b", "c"]
    assert next(n for n in out.graph.node if n.name == "gap").input[:] == ["d"]
    assert res.quantized_nodes == ["conv_a", "conv_b", "conv_c", "conv_d", "fc"]


def test_axes_sharing_a_dimension_name_get_distinct_names():
    w = channel_scaled((2, 3, 1, 1), 0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="cx"), helper.make_node("Conv", ["z", "W"], ["u"], name="cz")]
    dims = helper.make_tensor_value_info
    model = make_model(nodes, [dims("x", TensorProto.FLOAT, ["N", 3, "?", "?"]), dims("z", TensorProto.FLOAT, ["N", 3, "size", "size"])],
                       [dims("y", TensorProto.FLOAT, ["N", 2, "?", "?"]), dims("u", TensorProto.FLOAT, ["N", 2, "size", "size"])],
                       [init("W", w)])
    res = write_qdq(model, {"x": 1.0, "z": 1.0})

    def shape(m, name):
        vi_ = next(v for v in m.graph.input if v.name == name)
        return [d.dim_param or d.dim_value for d in vi_.type.tensor_type.shape.dim]

    assert shape(res.model, "x") == ["N", 3, "x_dim2", "x_dim3"]  # 'N' is shared by both inputs: kept
    assert shape(res.model, "z") == ["N", 3, "z_dim2", "z_dim3"]
    assert shape(model, "x") == ["N", 3, "?", "?"]  # the input model is untouched
    assert sum("gave its dynamic axes distinct names" in w for w in res.warnings) == 2
    x = RNG.standard_normal((1, 3, 2, 5)).astype(np.float32)
    assert run(res.model, {"x": x, "z": x})[0].shape == (1, 2, 2, 5)


def test_a_shared_input_gets_one_q_and_one_dq_and_float_consumers_keep_the_float_tensor():
    nodes = [helper.make_node("Conv", ["x", "Wa"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "Wb"], ["b"], name="conv_b"),
             helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[1, 1]),
             helper.make_node("Concat", ["a", "b", "p"], ["y"], name="cat", axis=1)]
    w = channel_scaled((2, 3, 1, 1), 0)
    model = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 7, 4, 4])], [init("Wa", w), init("Wb", w * 2)])
    res = write_qdq(model, {"x": 2.0})
    out = res.model
    assert ops(out).count("QuantizeLinear") == 1 and ops(out).count("DequantizeLinear") == 3  # x once, 2 weights
    assert dq_of(out, "conv_a", 0) is dq_of(out, "conv_b", 0)
    assert next(n for n in out.graph.node if n.name == "pool").input[0] == "x"
    assert res.activations[0].consumers == ["conv_a", "conv_b"]
    x = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32) * 3
    y, y0 = run(out, {"x": x})[0], run(model, {"x": x})[0]
    np.testing.assert_array_equal(y[:, 4:], y0[:, 4:])  # the pool read the float x


def test_shared_weights_get_one_dq():
    w = channel_scaled((5, 4), 1)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"), helper.make_node("MatMul", ["x2", "W"], ["b"], name="mm2")]
    model = make_model(nodes, [vi("x", [2, 4]), vi("x2", [2, 4])], [vi("a", [2, 5]), vi("b", [2, 5])], [init("W", w.T.copy())])
    res = write_qdq(model, {"x": 1.0, "x2": 1.0})
    assert len(res.weights) == 1 and res.weights[0].consumers == ["mm1", "mm2"]
    assert dq_of(res.model, "mm1", 1) is dq_of(res.model, "mm2", 1)


def test_a_graph_output_feeding_a_quantized_op_stays_float_as_output():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Gemm", ["r", "W"], ["y"], name="fc", transB=1)]
    model = make_model(nodes, [vi("x", [2, 4])], [vi("r", [2, 4]), vi("y", [2, 3])], [init("W", channel_scaled((3, 4), 0))])
    res = write_qdq(model, {"x": 1.0, "r": 1.0, "y": 5.0})
    assert [o.name for o in res.model.graph.output] == ["r", "y"]
    assert [q.name for q in res.activations] == ["r"]  # y is an output of a quantized op: never quantized
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], np.maximum(x, 0))  # r itself is not quantized


def test_fashion_cnn_placement(fashion_cache):
    res = write_qdq(MODEL, fashion_cache)
    out = res.model
    assert [q.name for q in res.activations] == ["images", "/pool1/MaxPool_output_0", "/flatten/Flatten_output_0",
                                                 "/relu3/Relu_output_0"]
    assert {q.name: q.axis for q in res.weights} == {"conv1.weight": 0, "conv2.weight": 0, "fc1.weight": 0, "fc2.weight": 0}
    assert res.quantized_nodes == ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"]
    assert not res.float_tensors and not res.float_nodes
    original = onnx.load(str(MODEL))
    names = [n.name for n in out.graph.node]
    assert [n for n in names if n in {m.name for m in original.graph.node}] == [m.name for m in original.graph.node]
    assert len(set(names)) == len(names) and is_topological(out)
    assert all(b in inits_of(out) and inits_of(out)[b].dtype == np.float32 for b in ("conv1.bias", "fc2.bias"))
    zps = [inits_of(out)[n.input[2]] for n in out.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert all(z.dtype == np.int8 and not z.any() for z in zps)
    assert [o.name for o in out.graph.output] == ["logits"]
    onnx.checker.check_model(out, full_check=True)


# ---------------------------------------------------------------------- ranges that cannot be used


def test_missing_and_degenerate_ranges_leave_nodes_in_float_with_reasons():
    nodes = [helper.make_node("Gemm", [f"x{i}", f"W{i}"], [f"y{i}"], name=f"fc{i}", transB=1) for i in range(7)]
    model = make_model(nodes, [vi(f"x{i}", [2, 4]) for i in range(7)], [vi(f"y{i}", [2, 3]) for i in range(7)],
                       [init(f"W{i}", channel_scaled((3, 4), 0)) for i in range(7)])
    ranges = {"x0": 2.0, "x1": 0.0, "x2": float("inf"), "x3": float("nan"), "x4": 1e-40, "x5": 1e-50}
    res = write_qdq(model, ranges)
    assert res.float_tensors == {"x1": "range is zero", "x2": "range is infinite", "x3": "range is NaN",
                                 "x4": "scale 7.8753e-43 is denormal in float32 (GPUs flush it to 0)",
                                 "x5": "range 1e-50 is too small: its scale underflows to 0 in float32", "x6": "no range"}
    assert res.float_nodes == {f"fc{i}": f"input 'x{i}': {res.float_tensors[f'x{i}']}" for i in range(1, 7)}
    assert res.quantized_nodes == ["fc0"] and [w.name for w in res.weights] == ["W0"]
    feeds = {f"x{i}": RNG.standard_normal((2, 4)).astype(np.float32) for i in range(7)}
    got, fp32 = run(res.model, feeds), run(model, feeds)
    for i in range(1, 7):
        np.testing.assert_array_equal(got[i], fp32[i])  # float nodes are untouched, weights included
    # a cache with the same problems (0, inf, NaN scales)
    cache = CalibrationCache.from_amaxes({"x0": 2.0})
    cache.set_bits("x1", 0)
    cache.set_bits("x2", 0x7F800000)
    cache.set_bits("x3", 0x7FC00000)
    cache.set_bits("x4", 0x80000001)  # negative
    res = write_qdq(model, cache)
    assert res.float_tensors["x1"] == "range is zero" and res.float_tensors["x2"] == "range is infinite"
    assert res.float_tensors["x3"] == "range is NaN" and res.float_tensors["x4"].startswith("range is negative")


def test_nonfinite_weights_and_all_zero_channels():
    w = channel_scaled((3, 4), 0)
    w[1] = 0
    bad = w.copy()
    bad[0, 0] = np.nan
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="ok", transB=1),
             helper.make_node("Gemm", ["x", "Bad"], ["z"], name="bad", transB=1)]
    model = make_model(nodes, [vi("x", [2, 4])], [vi("y", [2, 3]), vi("z", [2, 3])], [init("W", w), init("Bad", bad)])
    res = write_qdq(model, {"x": 2.0})
    assert res.float_nodes == {"bad": "weights 'Bad' hold NaN or Inf"} and res.weights[0].zero_channels == 1
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    assert np.all(run(res.model, {"x": x})[0][:, 1] == 0)


def test_float16_tensors_stay_float():
    nodes = [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc16", transB=1),
             helper.make_node("Cast", ["y"], ["y32"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["y32", "W2"], ["z"], name="fc32", transB=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])], [vi("z", [2, 3])],
                       [numpy_helper.from_array(np.ones((3, 4), np.float16), "W"), init("W2", channel_scaled((3, 3), 0))])
    res = write_qdq(model, {"x": 1.0, "y32": 2.0})
    assert res.float_nodes == {"fc16": "input 'x': float16 tensor (only float32 models are supported)"}
    assert res.quantized_nodes == ["fc32"]


def test_exclusions():
    model = residual_model()
    res = write_qdq(model, {"x": 3.0, "r1": 4.0}, exclude_nodes=["conv2"])
    assert res.float_nodes == {"conv2": "excluded by node pattern 'conv2'"} and [q.name for q in res.activations] == ["x"]
    with pytest.raises(TrtcalError, match="nothing to quantize.*conv1: excluded by node pattern 'conv\\*'"):
        write_qdq(model, {"x": 3.0, "r1": 4.0}, exclude_nodes=["conv*"])
    res = write_qdq(MODEL, {"images": 2.0, "/relu3/Relu_output_0": 10.0}, exclude_ops=["Conv"])
    assert res.quantized_nodes == ["/fc2/Gemm"] and res.float_nodes["/conv1/Conv"] == "excluded op type Conv"
    with pytest.raises(TrtcalError, match="exclude nodes 'nope\\*' matches no node"):
        write_qdq(model, {"x": 3.0}, exclude_nodes=["nope*"])
    with pytest.raises(TrtcalError, match="exclude op 'Relu'"):
        write_qdq(model, {"x": 3.0}, exclude_ops=["Relu"])


def test_bad_ranges_and_models():
    with pytest.raises(TrtcalError, match="name no tensor of the model"):
        write_qdq(MODEL, CalibrationCache.from_amaxes({"foo": 1.0, "bar": 2.0}))
    with pytest.raises(TrtcalError, match="no ranges"):
        write_qdq(MODEL, {})
    with pytest.raises(TrtcalError, match="target 'dla'"):
        write_qdq(MODEL, {"images": 1.0}, target="dla")
    with pytest.raises(TrtcalError, match="nothing to quantize"):
        write_qdq(MODEL, {"logits": 1.0})
    with pytest.raises(TrtcalError, match="no such model"):
        write_qdq(EXAMPLES / "missing.onnx", {"images": 1.0})
    res = write_qdq(MODEL, {"images": 2.0})
    with pytest.raises(TrtcalError, match="already quantized \\(DequantizeLinear, QuantizeLinear present\\); give the FP32 model"):
        write_qdq(res.model, {"images": 2.0})
    res = write_qdq(MODEL, {"images": 2.0, "ONNXTRT_Broadcast_1": 1.0})
    assert res.unknown_ranges == ["ONNXTRT_Broadcast_1"] and "1 range name(s)" in res.warnings[0]


# ---------------------------------------------------------------------- opsets


def test_an_opset_11_model_is_converted_to_13():
    old = onnx.load(str(MODEL))  # its ops mean the same at opset 11 (later versions only added types)
    old.opset_import[0].version = 11
    old.ir_version = 6
    onnx.checker.check_model(old, full_check=True)
    res = write_qdq(old, {"images": 2.0, "/pool1/MaxPool_output_0": 3.0})
    assert res.converted_from == 11 and res.opset == 13 and "opset 11 to 13" in res.warnings[0]
    onnx.checker.check_model(res.model, full_check=True)
    axis = [a.i for n in res.model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "axis"]
    assert axis == [0, 0]
    x = np.load(EVAL)["images"][:8]
    assert run(res.model, {"images": x})[0].shape == (8, 10)


def test_an_old_model_the_converter_cannot_convert_is_refused():
    nodes = [helper.make_node("ImageScaler", ["x"], ["u"], name="scale", scale=0.5),
             helper.make_node("Conv", ["u", "W"], ["y"], name="conv")]
    model = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 2, 4, 4])], [init("W", channel_scaled((2, 3, 1, 1), 0))],
                       opset=9, ir=4)
    with pytest.raises(TrtcalError, match=r"opset 9 has no per-channel Q/DQ \(needs opset 13\).*version converter "
                                          r"cannot convert it.*ImageScaler.*export the model at opset 13"):
        write_qdq(model, {"u": 1.0})


# ---------------------------------------------------------------------- the demo CNN: accuracy and round trip


@pytest.fixture(scope="module")
def fashion_calibration():
    return trtcal.calibrate(MODEL, CALIB, progress=False)


@pytest.fixture(scope="module")
def fashion_cache(fashion_calibration):
    return fashion_calibration.cache


@pytest.fixture(scope="module")
def fashion_eval():
    data = np.load(EVAL)
    return data["images"], data["labels"]


def _conv2d(x, w, b):
    """3x3 convolution, stride 1, pad 1, NCHW, in float64 (im2col)."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=2)  # n c 9 h w
    cols = cols.reshape(n, c * 9, h * wd)
    return (np.einsum("kc,ncp->nkp", w.reshape(k, c * 9).astype(np.float64), cols) + b[None, :, None]).reshape(n, k, h, wd)


def _pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def numpy_fashion(x, weights, scales=None, unsigned=()):
    """The demo CNN in numpy; with ``scales`` (per quantized tensor), its fake-quantized version
    (``unsigned`` tensors over the codes 0..255)."""
    W = dict(weights)

    def q(name, v):
        if not scales:
            return v
        return fq(v, scales[name], 0, 255) if name in unsigned else fq(v, scales[name])

    if scales:
        for name, axis in (("conv1.weight", 0), ("conv2.weight", 0), ("fc1.weight", 0), ("fc2.weight", 0)):
            W[name] = ref_weight(W[name], axis)
    h = q("images", x).astype(np.float64)
    h = _pool(np.maximum(_conv2d(h, W["conv1.weight"], W["conv1.bias"]), 0)).astype(np.float32)
    h = q("/pool1/MaxPool_output_0", h).astype(np.float64)
    h = _pool(np.maximum(_conv2d(h, W["conv2.weight"], W["conv2.bias"]), 0)).astype(np.float32)
    h = q("/flatten/Flatten_output_0", h.reshape(len(h), -1)).astype(np.float64)
    h = np.maximum(h @ W["fc1.weight"].T.astype(np.float64) + W["fc1.bias"], 0).astype(np.float32)
    h = q("/relu3/Relu_output_0", h).astype(np.float64)
    return (h @ W["fc2.weight"].T.astype(np.float64) + W["fc2.bias"]).astype(np.float32)


def test_fashion_qdq_matches_a_numpy_fake_quant_reference(fashion_cache, fashion_eval):
    x, _ = fashion_eval
    x = x[:300]
    weights = inits_of(onnx.load(str(MODEL)))
    fp32 = run(onnx.load(str(MODEL)), {"images": x})[0]
    np.testing.assert_allclose(numpy_fashion(x, weights), fp32, rtol=1e-4, atol=1e-4)  # the reference network is right
    res = write_qdq(MODEL, fashion_cache)
    scales = {q.name: q.scale for q in res.activations}
    assert scales == {n: fashion_cache.scale(n) for n in scales}
    expected = numpy_fashion(x, weights, scales)
    got = run(res.model, {"images": x})[0]
    # Most images agree to float32 rounding (1e-7). In the others, float32 (ONNX Runtime) and float64
    # (numpy) sums put a value or two on either side of a rounding boundary: one code, about 1e-3 of
    # the logits. A 1% error in one scale, or per-tensor weights, moves the median to 5e-3 and more.
    err = np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)
    assert np.median(err) < 1e-5 and np.mean(err < 1e-5) > 0.6 and np.percentile(err, 99) < 1e-2, \
        np.percentile(err, [50, 90, 99])
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.99


def _top1(model, x, y):
    return float((run(model, {"images": x})[0].argmax(1) == y).mean())


def test_fashion_accuracy_close_to_fp32(fashion_eval):
    """MinMax and percentile caches keep top-1 within a point of FP32 (90.7% on the 1000 images).
    (The default entropy2 cache clips the input pixels hard and gives about 86%: the cache's
    doing, checked against the numpy reference above.)"""
    x, y = fashion_eval
    fp32 = _top1(onnx.load(str(MODEL)), x, y)
    for algorithm in ("minmax", "percentile"):
        cache = trtcal.calibrate(MODEL, CALIB, algorithm=algorithm, progress=False).cache
        int8 = _top1(write_qdq(MODEL, cache).model, x, y)
        assert abs(int8 - fp32) <= 0.01, (algorithm, int8, fp32)


def test_round_trip_gives_back_the_cache(fashion_cache):
    res = write_qdq(MODEL, fashion_cache)
    back = read_qdq_scales(res.model)
    assert back.header_line == fashion_cache.header_line
    names = [q.name for q in res.activations]
    assert back.names() == names
    for name in names:
        assert back.entry(name).bits == fashion_cache.entry(name).bits  # float32 bit for bit
    # from a file, and from plain amaxes (scale = amax / 127 rounded once)
    amaxes = {"images": 2.0227, "/pool1/MaxPool_output_0": 3.3, "/flatten/Flatten_output_0": 1 / 3, "/relu3/Relu_output_0": 7}
    back = read_qdq_scales(write_qdq(MODEL, amaxes).model)
    assert {e.name: e.bits for e in back} == {n: scale_bits_from_amax(a) for n, a in amaxes.items()}


def test_read_qdq_scales_of_other_tools_models(tmp_path):
    """ONNX Runtime's quantize_static output: uint8 activations with zero points, read as amax."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq")]
    for z, dtype, amax in [(0, np.uint8, 255 * 0.5), (128, np.uint8, 128 * 0.5), (10, np.int8, 138 * 0.5)]:
        model = make_model(nodes, [vi("x", [2])], [vi("y", [2])],
                           [init("s", 0.5), numpy_helper.from_array(np.array(z, dtype), "z")])
        back = read_qdq_scales(model)
        assert back.names() == ["x"] and back.entry("x").bits == scale_bits_from_amax(amax)
    path = tmp_path / "m.onnx"
    onnx.save(write_qdq(MODEL, {"images": 2.0}).model, str(path))
    assert read_qdq_scales(path).names() == ["images"]


# ---------------------------------------------------------------------- ONNX Runtime target: uint8 for one-sided tensors


@pytest.fixture(scope="module")
def minmax_calibration():
    return trtcal.calibrate(MODEL, CALIB, algorithm="minmax", progress=False)


def test_onnxruntime_target_uses_uint8_for_one_sided_tensors(minmax_calibration, fashion_eval):
    cal = minmax_calibration
    ranges = from_thresholds(cal.thresholds, cal.histograms)
    assert ranges["images"].low < 0 and ranges["/relu3/Relu_output_0"] == Range(0.0, cal.thresholds["/relu3/Relu_output_0"].amax, 8, "stats")
    ort_res = write_qdq(MODEL, ranges, target="onnxruntime")
    trt_res = write_qdq(MODEL, ranges, target="tensorrt")
    kinds = {q.name: q.dtype for q in ort_res.activations}
    assert kinds == {"images": "int8", "/pool1/MaxPool_output_0": "uint8", "/flatten/Flatten_output_0": "uint8",
                     "/relu3/Relu_output_0": "uint8"}
    assert {q.dtype for q in trt_res.activations} == {"int8"}
    inits = inits_of(ort_res.model)
    for n in ort_res.model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] != "images":
            assert inits[n.input[2]].dtype == np.uint8 and inits[n.input[2]] == 0
            assert inits[n.input[1]] == np.float32(ranges[n.input[0]].high / 255)
    x, y = fashion_eval
    x = x[:300]
    weights = inits_of(onnx.load(str(MODEL)))
    fp32 = numpy_fashion(x, weights)
    # the uint8 reference: fake quantization over 0..255 for the one-sided tensors
    scales = {q.name: q.scale for q in ort_res.activations}
    expected = numpy_fashion(x, weights, scales, unsigned={n for n, k in kinds.items() if k == "uint8"})
    got = run(ort_res.model, {"images": x})[0]
    err = np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)
    assert np.median(err) < 1e-5 and np.percentile(err, 99) < 1e-2 and (got.argmax(1) == expected.argmax(1)).mean() > 0.99

    def sqnr(out):
        return 10 * np.log10((fp32.astype(np.float64) ** 2).sum() / ((fp32 - out).astype(np.float64) ** 2).sum())

    trt_out = run(trt_res.model, {"images": x})[0]
    assert sqnr(got) > sqnr(trt_out) + 1.0  # twice the codes on three tensors


def test_tensorrt_target_refuses_unsigned():
    with pytest.raises(TrtcalError, match="symmetric int8 only"):
        write_qdq(MODEL, {"images": 1.0}, target="tensorrt", unsigned=True)


# ---------------------------------------------------------------------- the command


def test_cli_from_a_cache_and_from_stats(tmp_path):
    cache, stats = tmp_path / "f.cache", tmp_path / "f.stats.npz"
    rc, _, err = run_cli("calibrate", MODEL, "--data", CALIB, "-o", cache, "--stats", stats, "-q")
    assert rc == 0, err
    out = tmp_path / "f.qdq.onnx"
    rc, stdout, err = run_cli("qdq", MODEL, "--cache", cache, "-o", out)
    assert rc == 0, err
    assert "tensorrt: 4 nodes quantized (int8, zero point 0): 4 activations, 4 weight tensors" in stdout
    assert "conv1.weight (weights, per channel, axis 0, 16 channels) -> /conv1/Conv" in stdout
    assert f"wrote {out} (opset 17)" in stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert read_qdq_scales(out).names() == ["images", "/pool1/MaxPool_output_0", "/flatten/Flatten_output_0",
                                            "/relu3/Relu_output_0"]
    out2 = tmp_path / "f.ort.onnx"
    rc, stdout, err = run_cli("qdq", MODEL, "--stats", stats, "--algorithm", "percentile", "--percentile", "99.99",
                              "--target", "onnxruntime", "--exclude-nodes", "/fc2/*", "-o", out2, "--json")
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["target"] == "onnxruntime" and doc["float_nodes"] == {"/fc2/Gemm": "excluded by node pattern '/fc2/*'"}
    assert {q["name"]: q["dtype"] for q in doc["quantized"] if q["kind"] == "activation"} == {
        "images": "int8", "/pool1/MaxPool_output_0": "uint8", "/flatten/Flatten_output_0": "uint8"}
    rc, stdout, err = run_cli("qdq", MODEL, "--cache", EXAMPLES / "tiny_cnn.cache", "-o", tmp_path / "t.onnx",
                              "--exclude-ops", "Gemm,MatMul")
    assert rc == 0, err
    assert "left in float: 1 tensor(s)" in stdout and "/conv2/Conv: input '/pool1/MaxPool_output_0': no range" in stdout
    assert "3 range name(s) are not tensors of the model" in err


def test_cli_onnxruntime_target_from_a_cache_says_it_needs_stats_for_uint8(tmp_path):
    cache, stats = tmp_path / "f.cache", tmp_path / "f.stats.npz"
    rc, _, err = run_cli("calibrate", MODEL, "--data", CALIB, "-o", cache, "--stats", stats, "-q")
    assert rc == 0, err
    rc, stdout, err = run_cli("qdq", MODEL, "--cache", cache, "--target", "onnxruntime", "-o", tmp_path / "a.onnx")
    assert rc == 0, err
    assert "holds no sign information" in err and "--stats" in err
    assert " uint8 " not in stdout  # every activation int8
    rc, stdout, err = run_cli("qdq", MODEL, "--cache", cache, "--target", "onnxruntime", "-o", tmp_path / "b.onnx", "--json")
    assert rc == 0, err
    assert any("--stats" in w for w in json.loads(stdout)["warnings"])
    rc, stdout, err = run_cli("qdq", MODEL, "--stats", stats, "--target", "onnxruntime", "-o", tmp_path / "c.onnx")
    assert rc == 0, err
    assert "sign information" not in err and " uint8 " in stdout
    rc, _, err = run_cli("qdq", MODEL, "--cache", cache, "-o", tmp_path / "d.onnx")  # tensorrt: int8 anyway
    assert rc == 0, err
    assert "sign information" not in err


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    foreign = tmp_path / "foreign.cache"
    CalibrationCache.from_amaxes({"foo": 1.0, "bar": 2.0}).write(foreign)
    exists = tmp_path / "exists.onnx"
    exists.write_bytes(b"x")
    old = tmp_path / "old.onnx"
    nodes = [helper.make_node("ImageScaler", ["x"], ["u"], scale=0.5), helper.make_node("Conv", ["u", "W"], ["y"])]
    onnx.save(make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 2, 4, 4])], [init("W", np.ones((2, 3, 1, 1)))],
                         opset=9, ir=4), str(old))
    cache = tmp_path / "ok.cache"
    CalibrationCache.from_amaxes({"images": 2.0, "/pool1/MaxPool_output_0": 1.0, "u": 1.0}).write(cache)
    cases = [
        (["qdq", MODEL, "--cache", foreign, "-o", tmp_path / "a.onnx"], "has ranges for 0 of the 4 activations"),
        (["qdq", old, "--cache", cache, "-o", tmp_path / "b.onnx"], "opset 9 has no per-channel Q/DQ"),
        (["qdq", tmp_path / "missing.onnx", "--cache", cache, "-o", exists], "missing.onnx: no such model file"),
        (["qdq", MODEL, "--cache", cache, "-o", exists], "already exists; pass --force"),
        (["qdq", MODEL, "--cache", cache, "--algorithm", "minmax", "-o", tmp_path / "c.onnx"], "--algorithm applies to --stats"),
        (["qdq", MODEL, "--cache", tmp_path / "nope.cache", "-o", tmp_path / "d.onnx"], "nope.cache"),
        (["qdq", MODEL, "--cache", cache, "--exclude-nodes", "zzz", "-o", tmp_path / "e.onnx"], "matches no node"),
        (["qdq", MODEL, "--cache", cache, "--exclude-ops", "Relu", "-o", tmp_path / "f.onnx"], "exclude op 'Relu'"),
        (["qdq", MODEL, "--cache", cache, "-o", MODEL, "--force"], "is also an input"),
        (["qdq", MODEL, "-o", tmp_path / "g.onnx"], "one of the arguments --cache --stats is required"),
    ]
    for argv, message in cases:
        rc, stdout, err = run_cli(*argv)
        assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)
        assert stdout == ""
    assert exists.read_bytes() == b"x" and not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()
    rc, _, err = run_cli("qdq", MODEL, "--cache", cache, "-o", exists, "--force")
    assert rc == 0, err


# ---------------------------------------------------------------------- TensorRT-RTX, for real


def rtx_build(path, shapes=None):
    """Parse with TensorRT-RTX's ONNX parser into a strongly typed network and build an engine
    ahead of time; return (layer type counts, warnings, engine size)."""
    trt = pytest.importorskip("tensorrt_rtx")

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, msg):
            self.messages.append((str(severity), str(msg)))

    logger = Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    kinds: dict[str, int] = {}
    for i in range(network.num_layers):
        k = network.get_layer(i).type.name
        kinds[k] = kinds.get(k, 0) + 1
    config = builder.create_builder_config()
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, [m for m in logger.messages if "ERROR" in m[0]]
    warnings = [m for s, m in logger.messages if "WARNING" in s]
    return kinds, warnings, blob.nbytes


FASHION_SHAPES = {"images": ((1, 1, 28, 28), (8, 1, 28, 28), (32, 1, 28, 28))}


@pytest.mark.rtx
def test_rtx_parses_and_builds_the_fashion_qdq_model(tmp_path, fashion_cache):
    pytest.importorskip("tensorrt_rtx")
    path = tmp_path / "fashion.qdq.onnx"
    write_qdq(MODEL, fashion_cache).save(path)
    kinds, warnings, size = rtx_build(path, FASHION_SHAPES)
    assert kinds["QUANTIZE"] == 4 and kinds["DEQUANTIZE"] == 8 and kinds["CONVOLUTION"] == 2
    assert size > 100_000 and not [w for w in warnings if "uint8" in w.lower() or "quantiz" in w.lower()]


@pytest.mark.rtx
def test_rtx_parses_and_builds_residual_models(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    for i, model in enumerate([residual_model(), residual_model(bn=True), residual_model(downsample=True)]):
        path = tmp_path / f"res{i}.onnx"
        res = write_qdq(model, {"x": 3.0, "r1": 4.0, "c2": 6.0})
        res.save(path)
        kinds, _, size = rtx_build(path)
        assert kinds["QUANTIZE"] == len(res.activations) and kinds["CONVOLUTION"] == (3 if i == 2 else 2)
        assert size > 10_000


@pytest.mark.rtx
def test_rtx_parses_and_builds_gemm_matmul_and_conv_transpose(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    nodes = [helper.make_node("ConvTranspose", ["x", "Wt"], ["d"], name="deconv", strides=[2, 2]),
             helper.make_node("Flatten", ["d"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "Wg"], ["g"], name="fc", transB=1),
             helper.make_node("MatMul", ["g", "Wm"], ["m"], name="mm"),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Transpose", ["m"], ["mT"], name="tr"),
             helper.make_node("MatMul", ["r", "mT"], ["y"], name="mm2")]  # two activations
    model = make_model(nodes, [vi("x", [4, 3, 4, 4])], [vi("y", [4, 4])],
                       [init("Wt", channel_scaled((3, 2, 2, 2), 1)), init("Wg", channel_scaled((8, 128), 0)),
                        init("Wm", channel_scaled((8, 4), 1))])
    res = write_qdq(model, {"x": 2.0, "f": 3.0, "g": 5.0, "r": 5.0, "mT": 5.0})
    assert res.quantized_nodes == ["deconv", "fc", "mm", "mm2"]
    path = tmp_path / "mixed.onnx"
    res.save(path)
    kinds, _, _ = rtx_build(path)
    assert kinds["QUANTIZE"] == 5 and kinds["DEQUANTIZE"] == 8


@pytest.mark.rtx
def test_rtx_parses_and_builds_bias_pool_concat_and_gate_models(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    c = 4
    more, inits, _b = bias_nodes("reshape_constant", c)
    biased = make_model(more + [helper.make_node("Conv", ["x", "W"], ["conv"], name="conv"),
                                helper.make_node("Add", ["conv", "b"], ["s"], name="addbias"),
                                helper.make_node("Add", ["s", "x"], ["y"], name="add")],
                        [vi("x", [1, c, 4, 4])], [vi("y", [1, c, 4, 4])], [init("W", channel_scaled((c, c, 1, 1), 0))] + inits)
    gate = make_model([helper.make_node("Conv", ["x", "W"], ["conv"], name="conv"),
                       helper.make_node("GlobalAveragePool", ["conv"], ["gap"]), helper.make_node("Sigmoid", ["gap"], ["g"]),
                       helper.make_node("Mul", ["conv", "g"], ["m"]), helper.make_node("Add", ["conv", "m"], ["y"])],
                      [vi("x", [1, c, 4, 4])], [vi("y", [1, c, 4, 4])], [init("W", channel_scaled((c, c, 1, 1), 0))])
    cases = [(biased, {"x": 1.0, "b": 0.3, "s": 2.0}, 1), (gate, {"x": 1.0, "m": 2.0}, 1),
             (pool_concat_model(), POOL_CONCAT_RANGES, 4)]
    for i, (model, ranges, n_q) in enumerate(cases):
        res = write_qdq(model, ranges)
        assert len(res.activations) == n_q
        path = tmp_path / f"m{i}.onnx"
        res.save(path)
        kinds, _, size = rtx_build(path)
        assert kinds["QUANTIZE"] == n_q and size > 1_000


@pytest.mark.rtx
def test_rtx_builds_h_unequal_w_only_once_the_writer_renamed_the_axes(tmp_path):
    """paddle2onnx's [-1, 3, ?, ?]: TensorRT takes both '?' for one dimension."""
    from trtcal.trt.builder import build

    pytest.importorskip("tensorrt_rtx")
    w = channel_scaled((2, 3, 3, 3), 0)
    dims = helper.make_tensor_value_info
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       [dims("x", TensorProto.FLOAT, [-1, 3, "?", "?"])], [dims("y", TensorProto.FLOAT, [-1, 2, "?", "?"])],
                       [init("W", w)])
    fp32, qdq = tmp_path / "m.onnx", tmp_path / "m.qdq.onnx"
    onnx.save(model, str(fp32))
    write_qdq(model, {"x": 1.0}).save(qdq)
    shapes = {"x": ((1, 3, 48, 96), (4, 3, 48, 192), (8, 3, 48, 320))}
    with pytest.raises(TrtcalError, match=r"axes 2 and 3 share the dimension name '\?'.*48/48/48, axis 3 96/192/320"):
        build(fp32, tmp_path / "a.engine", shapes=shapes, backend="rtx")
    assert not (tmp_path / "a.engine").exists()
    result = build(qdq, tmp_path / "b.engine", shapes=shapes, backend="rtx")
    assert result.record["mode"] == "explicit-qdq" and result.record["profiles"]["x"]["max"] == [8, 3, 48, 320]
    # the same file through rtx_build's own profile, as a user's script would set it
    kinds, _, size = rtx_build(qdq, shapes)
    assert kinds["QUANTIZE"] == 1 and size > 1_000


@pytest.mark.rtx
def test_rtx_would_read_uint8_as_int8_so_the_tensorrt_target_never_writes_it(tmp_path, minmax_calibration):
    pytest.importorskip("tensorrt_rtx")
    cal = minmax_calibration
    path = tmp_path / "ort.onnx"
    write_qdq(MODEL, from_thresholds(cal.thresholds, cal.histograms), target="onnxruntime").save(path)
    _, warnings, _ = rtx_build(path, FASHION_SHAPES)
    assert any("UINT8" in w and "Defaulting to INT8" in w for w in warnings)


# ---------------------------------------------------------------------- 4- and 16-bit activations (ONNX Runtime)


@pytest.mark.parametrize(("bits", "qmin", "qmax", "dtype"), [(16, -32768, 32767, "int16"), (4, -8, 7, "int4")])
def test_narrow_and_wide_activations_for_onnxruntime(bits, qmin, qmax, dtype):
    w = channel_scaled((4, 3, 3, 3), 0)
    model = make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       [vi("x", [2, 3, 6, 6])], [vi("y", [2, 4, 6, 6])], [init("W", w)])
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    amax = float(np.abs(x).max()) * 0.7
    res = write_qdq(model, {"x": Range.symmetric(amax, bits=bits)}, target="onnxruntime")
    assert res.opset == 21 and res.converted_from == 17 and any("opset 17 to 21" in w for w in res.warnings)
    (act,) = res.activations
    scale = np.float32(amax / (2 ** (bits - 1) - 1))
    assert act.dtype == dtype and np.float32(act.scale) == scale
    q = next(n for n in res.model.graph.node if n.op_type == "QuantizeLinear")
    zp = next(t for t in res.model.graph.initializer if t.name == q.input[2])
    assert zp.data_type == {16: TensorProto.INT16, 4: TensorProto.INT4}[bits]
    # the reference: the FP32 conv on the input fake-quantized over the type's codes, int8 weights
    ref = run(with_weights(model, W=ref_weight(w, 0)), {"x": fq(x, scale, qmin, qmax)})[0]
    got = run(res.model, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    back = read_qdq_scales(res.model).entry("x")
    assert back.amax == pytest.approx(float(scale) * qmax, rel=1e-6)  # symmetric: amax = qmax * scale


def test_one_sided_16_bit_is_uint16_and_tensorrt_refuses_other_widths():
    model = onnx.load(str(MODEL))
    r = Range(0.0, 5.0, 16, "test")
    pool = "/pool1/MaxPool_output_0"  # the input of conv2
    res = write_qdq(model, {"images": 2.0, pool: r}, target="onnxruntime")
    acts = {q.name: q for q in res.activations}
    assert acts[pool].dtype == "uint16" and acts["images"].dtype == "int8"
    assert acts[pool].scale == pytest.approx(5.0 / 65535, rel=1e-7)
    assert read_qdq_scales(res.model).entry(pool).amax == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(TrtcalError, match=r"16-bit range; TensorRT's Q/DQ is int8 only"):
        write_qdq(model, {"images": Range.symmetric(2.0, bits=16)})
    with pytest.raises(TrtcalError, match=r"6-bit range; target onnxruntime stores 4, 8, 16-bit"):
        write_qdq(model, {"images": Range.symmetric(2.0, bits=6)}, target="onnxruntime")
