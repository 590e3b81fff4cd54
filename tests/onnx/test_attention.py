"""Attention blocks, GEMV-shaped products and shape paths in TensorRT's Q/DQ placement.

The models are built here to pin each case: a BERT-style encoder block (Q/K/V projections, heads
split by Reshape/Transpose, scaled and masked scores, Softmax, context, output projection,
residual, LayerNorm, GELU feed-forward) as the HuggingFace exporter writes it; products whose
static shapes make them matrix-vector; and a position MatMul computed from a Shape.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper
from transformer_models import HEADS, D, S, encoder_block, weight
from transformer_models import feed as _feed
from transformer_models import measured_ranges as _ranges

from trtcal.onnx.attention import find_attention
from trtcal.onnx.gemm_shapes import gemv_nodes, product_dims
from trtcal.onnx.qdq import write_qdq


def _q_inputs(model) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_find_attention_names_the_two_batched_matmuls_and_softmax():
    for cast in (False, True):
        blocks = find_attention(encoder_block(mask_cast=cast))
        assert [b.names for b in blocks] == [("bmm1", "softmax", "bmm2")]
    # weighted MatMuls are never attention; a Softmax feeding no MatMul is no block
    model = encoder_block()
    for node in model.graph.node:
        if node.name == "bmm2":
            node.op_type, node.domain = "Add", ""
    assert find_attention(model) == []


def test_int8_attention_quantizes_both_batched_matmuls_inputs_and_the_softmax_output():
    model = encoder_block()
    feed = _feed()
    res = write_qdq(model, _ranges(model, feed))
    quantized = _q_inputs(res.model)
    # BMM1 reads q and kt, BMM2 the Softmax output and v: all four quantized
    assert {"q", "kt", "probs", "v"} <= quantized
    # the scale, mask, Softmax input, LayerNorm and GELU stay float: nothing quantizes them
    assert not quantized & {"scores", "scaled", "masked", "res", "h", "hd", "he", "h1", "h2"}
    assert {"x", "ctx", "ln", "gelu"} <= quantized
    assert res.attention == [{"bmm1": "bmm1", "softmax": "softmax", "bmm2": "bmm2", "placement": "int8"}]
    assert {"bmm1", "bmm2"} <= set(res.quantized_nodes)
    # the Q/DQ model still computes the block (close to FP32 at these ranges)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(res.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()) > 20


def test_float_attention_leaves_both_batched_matmuls_in_float_and_the_rest_int8():
    model = encoder_block()
    res = write_qdq(model, _ranges(model, _feed()), attention="float")
    quantized = _q_inputs(res.model)
    assert not quantized & {"q", "kt", "probs", "v"}
    assert {"x", "ctx", "ln", "gelu"} <= quantized
    assert "attention kept in float" in res.float_nodes["bmm1"] and "attention kept in float" in res.float_nodes["bmm2"]
    assert res.attention[0]["placement"] == "float"
    with pytest.raises(Exception, match="attention 'fp16'"):
        write_qdq(model, _ranges(model, _feed()), attention="fp16")


def test_product_dims_and_gemv_shapes():
    model = encoder_block()
    dims = {model.graph.node[i].name: d for i, d in product_dims(model).items()}
    assert dims["query"] == (None, D, D) and dims["ffn1"] == (None, D, 4 * D) and dims["ffn2"] == (None, 4 * D, D)
    assert dims["bmm1"] == (None, D // HEADS, None)  # [b, h, s, d] @ [b, h, d, s]: M, N are the sequence
    assert gemv_nodes(model) == {}
    # a sequence of one token: every product is a matrix-vector one
    one = encoder_block(seq=1)
    gemv = {one.graph.node[i].name: why for i, why in gemv_nodes(one).items()}
    assert {"query", "key", "value", "attn_out", "ffn1", "ffn2", "bmm1", "bmm2"} == set(gemv)
    assert "M = 1" in gemv["ffn1"] and "N = 1" in gemv["bmm1"]


def test_gemv_products_stay_in_float_with_the_reason():
    n = helper.make_node
    graph = helper.make_graph(
        [n("MatMul", ["x", "W"], ["h"], name="gemm"), n("MatMul", ["h", "w"], ["y"], name="to_vector")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(weight(32, 32), "W"), numpy_helper.from_array(weight(32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    res = write_qdq(model, {"x": 3.0, "h": 3.0})
    assert res.quantized_nodes == ["gemm"]
    assert res.float_nodes["to_vector"].startswith("GEMV-shaped (N = 1")
    assert _q_inputs(res.model) == {"x"}


def test_a_matmul_on_a_shape_path_is_no_activation():
    """Position arithmetic: Shape -> Cast to float -> MatMul with a weight: shape computation."""
    n = helper.make_node
    graph = helper.make_graph(
        [n("Shape", ["x"], ["shape"]), n("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
         n("Concat", ["shape_f", "shape_f"], ["cat"], axis=0), n("Reshape", ["cat", "square"], ["rows"]),
         n("MatMul", ["rows", "P"], ["pos2"], name="positions"), n("ReduceSum", ["pos2", "axis0"], ["pos"], keepdims=0),
         n("MatMul", ["x", "W"], ["h"], name="proj"), n("Add", ["h", "pos"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(weight(2, 16), "P"), numpy_helper.from_array(weight(16, 16), "W"),
         numpy_helper.from_array(np.array([0], np.int64), "axis0"),
         numpy_helper.from_array(np.array([2, 2], np.int64), "square")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    res = write_qdq(model, {"x": 3.0, "h": 3.0})
    assert res.quantized_nodes == ["proj"]
    assert "shape" in res.float_nodes["positions"]
    assert res.float_tensors["rows"].startswith("computed from tensor shapes only")


def test_cli_qdq_attention_float(tmp_path):
    model = encoder_block()
    from trtcal.cache.format import CalibrationCache

    path, ranges = tmp_path / "enc.onnx", tmp_path / "enc.cache"
    onnx.save(model, path)
    CalibrationCache.from_amaxes(_ranges(model, _feed())).write(ranges)
    for mode, placed in (("int8", "int8"), ("float", "float")):
        out = tmp_path / f"enc.{mode}.onnx"
        rc, stdout, err = run_cli("qdq", path, "--cache", ranges, "--attention", mode, "-o", out, "--json")
        assert rc == 0, err
        assert json.loads(stdout)["attention"][0]["placement"] == placed
    rc, _, err = run_cli("qdq", path, "--cache", ranges, "--attention", "half", "-o", tmp_path / "x.onnx")
    assert rc == 2 and "--attention" in err


@pytest.mark.rtx
def test_rtx_builds_the_encoder_block_both_ways(tmp_path):
    from test_qdq import rtx_build

    pytest.importorskip("tensorrt_rtx")
    model = encoder_block()
    ranges = _ranges(model, _feed())
    shapes = {"x": ((1, S, D), (2, S, D), (4, S, D)), "mask": ((1, 1, 1, S), (2, 1, 1, S), (4, 1, 1, S))}
    counts = {}
    for mode in ("int8", "float"):
        path = tmp_path / f"enc.{mode}.onnx"
        res = write_qdq(model, ranges, attention=mode)
        res.save(path)
        kinds, _, size = rtx_build(path, shapes)
        assert kinds["QUANTIZE"] == len(res.activations) and size > 10_000
        counts[mode] = kinds["QUANTIZE"]
    assert counts["int8"] == counts["float"] + 4
