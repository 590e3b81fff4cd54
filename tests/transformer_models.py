"""Transformer-shaped models the tests build: a BERT-style encoder block as the HuggingFace
exporter writes it (Q/K/V projections, heads split by Reshape/Transpose, scaled and masked scores,
Softmax, context, output projection, residual, LayerNorm, GELU feed-forward), its inputs, and
ranges measured by running it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

D, HEADS, S = 16, 2, 8
RNG = np.random.default_rng(3)


def weight(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def encoder_block(batch="batch", seq="seq", mask_cast=False):
    """One encoder layer on x [batch, seq, D] with an additive mask [batch, 1, 1, seq]."""
    inits = {"Wq": weight(D, D), "Wk": weight(D, D), "Wv": weight(D, D), "Wo": weight(D, D), "W1": weight(D, 4 * D), "W2": weight(4 * D, D),
             "bq": np.zeros(D, np.float32), "heads": np.array([0, 0, HEADS, D // HEADS], np.int64),
             "merge": np.array([0, 0, D], np.int64), "scale": np.array(1 / np.sqrt(D // HEADS), np.float32),
             "gamma": np.ones(D, np.float32), "beta": np.zeros(D, np.float32), "sqrt2": np.array(np.sqrt(2), np.float32),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}
    n = helper.make_node
    nodes = [n("MatMul", ["x", "Wq"], ["q0"], name="query"), n("Add", ["bq", "q0"], ["q1"], name="query_bias"),
             n("MatMul", ["x", "Wk"], ["k0"], name="key"), n("MatMul", ["x", "Wv"], ["v0"], name="value"),
             n("Reshape", ["q1", "heads"], ["q2"]), n("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
             n("Reshape", ["k0", "heads"], ["k2"]), n("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
             n("Reshape", ["v0", "heads"], ["v2"]), n("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]),
             n("MatMul", ["q", "kt"], ["scores"], name="bmm1"), n("Mul", ["scores", "scale"], ["scaled"]),
             n("Add", ["scaled", "mask"], ["masked"]), n("Softmax", ["masked"], ["probs"], name="softmax", axis=-1)]
    probs = "probs"
    if mask_cast:
        nodes.append(n("Cast", ["probs"], ["probs_c"], to=TensorProto.FLOAT))
        probs = "probs_c"
    nodes += [n("MatMul", [probs, "v"], ["ctx0"], name="bmm2"), n("Transpose", ["ctx0"], ["ctx1"], perm=[0, 2, 1, 3]),
              n("Reshape", ["ctx1", "merge"], ["ctx"]), n("MatMul", ["ctx", "Wo"], ["att"], name="attn_out"),
              n("Add", ["att", "x"], ["res"], name="residual"),
              n("LayerNormalization", ["res", "gamma", "beta"], ["ln"], name="ln", axis=-1),
              n("MatMul", ["ln", "W1"], ["h"], name="ffn1"), n("Div", ["h", "sqrt2"], ["hd"]), n("Erf", ["hd"], ["he"]),
              n("Add", ["he", "one"], ["h1"]), n("Mul", ["h", "h1"], ["h2"]), n("Mul", ["h2", "half"], ["gelu"]),
              n("MatMul", ["gelu", "W2"], ["y"], name="ffn2")]
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, D]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1, 1, seq])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, seq, D])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def feed(batch=2):
    x = RNG.standard_normal((batch, S, D)).astype(np.float32)
    mask = np.zeros((batch, 1, 1, S), np.float32)
    mask[..., -2:] = -1e4
    return {"x": x, "mask": mask}


def measured_ranges(model, feed):
    """max|x| of every float tensor, measured by running the model (an independent range source)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for node in m.graph.node for o in node.output]
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in names)
    outs = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    ranges = {k: float(np.abs(v).max()) for k, v in zip(names, outs) if v.dtype == np.float32}
    ranges.update({k: float(np.abs(v).max()) for k, v in feed.items()})
    return ranges


def with_outlier_channel(model, channel=3, gain=40.0):
    """Scale one LayerNorm channel up (and the readers' rows down): same function, an outlier channel."""
    inits = {t.name: t for t in model.graph.initializer}
    gamma = numpy_helper.to_array(inits["gamma"]).copy()
    gamma[channel] *= gain
    inits["gamma"].CopyFrom(numpy_helper.from_array(gamma, "gamma"))
    w1 = numpy_helper.to_array(inits["W1"]).copy()
    w1[channel] /= gain
    inits["W1"].CopyFrom(numpy_helper.from_array(w1, "W1"))
    return model
