"""The weight-scale search's Gram path (trtcal.ort.layers.gram_errors) against running the layer in
ONNX Runtime for every candidate, on small Conv, Gemm and MatMul models built here."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.ort import layers
from trtcal.ort.layers import (
    fake_quant,
    max_scale,
    search_weight_scales,
    single_node_session,
    weighted_layers,
)


def build(node, inits):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv(cin, cout, kernel, bias=True, **attrs):
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(size=(cout, cin // attrs.get("group", 1), *kernel)).astype(np.float32)}
    if bias:
        inits["b"] = rng.normal(size=cout).astype(np.float32)
    return build(helper.make_node("Conv", ["x", *inits], ["y"], **attrs), inits)


def gemm(k, n, m, trans_a=0, trans_b=0, bias_shape=None, **attrs):
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(size=(n, k) if trans_b else (k, n)).astype(np.float32)}
    if bias_shape is not None:
        inits["c"] = rng.normal(size=bias_shape).astype(np.float32)
    return build(helper.make_node("Gemm", ["x", *inits], ["y"], transA=trans_a, transB=trans_b, **attrs), inits)


def matmul(k, n):
    w = np.random.default_rng(0).normal(size=(k, n)).astype(np.float32)
    return build(helper.make_node("MatMul", ["x", "w"], ["y"]), {"w": w})


CASES = {
    "conv 3x3": (conv(3, 8, (3, 3)), (4, 3, 10, 11)),
    "conv pads strides dilations": (conv(4, 6, (3, 2), pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2]),
                                    (3, 4, 12, 9)),
    "conv groups SAME_UPPER": (conv(4, 6, (3, 3), group=2, auto_pad="SAME_UPPER", strides=[2, 2]), (3, 4, 9, 8)),
    "depthwise SAME_LOWER": (conv(8, 8, (3, 3), group=8, auto_pad="SAME_LOWER"), (3, 8, 7, 7)),
    "depthwise 5x5 strided": (conv(6, 6, (5, 5), group=6, pads=[2, 2, 2, 2], strides=[2, 2]), (2, 6, 11, 11)),
    "conv 1x1 no bias": (conv(5, 7, (1, 1), bias=False), (3, 5, 6, 6)),
    "conv 1-d": (conv(3, 5, (3,), pads=[1, 1], dilations=[2]), (4, 3, 20)),
    "gemm transB": (gemm(16, 8, 40, trans_b=1, bias_shape=(8,)), (40, 16)),
    "gemm transA alpha beta": (gemm(12, 6, 30, trans_a=1, bias_shape=(30, 6), alpha=0.5, beta=2.0), (12, 30)),
    "gemm no bias": (gemm(10, 4, 25), (25, 10)),
    "matmul 3-d": (matmul(12, 5), (3, 7, 12)),
}


def setup(case):
    model, shape = CASES[case]
    layer = weighted_layers(model)[0]
    rng = np.random.default_rng(1)
    x = rng.laplace(size=shape).astype(np.float32)
    session = single_node_session(model, layer, helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)), None)
    ref = session.run(None, {"x": x, "w": layer.weight})[0]
    xq = fake_quant(x, input_step(case))  # clipped: the input carries a real error too
    return layer, session, ref, xq


def input_step(case):
    """The quantization step of setup's input: half its max over 127."""
    x = np.random.default_rng(1).laplace(size=CASES[case][1]).astype(np.float32)
    return np.float32(np.abs(x).max() * 0.5 / 127)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("codes", [False, True])
def test_gram_scores_equal_layer_runs_per_candidate(case, codes, monkeypatch):
    from trtcal.core import layer_error

    layer, session, ref, xq = setup(case)
    s0 = max_scale(layer.weight, layer.axis)
    used = []  # the integer-code path taken (groups == 1 layers), not silently the float64 one
    real = layer_error._codes
    monkeypatch.setattr(layer_error, "_codes", lambda aq, step: used.append(real(aq, step) is not None) or real(aq, step))
    found = layers.gram_errors(layer, session, "x", xq, ref, s0, 10, force=True,
                               x_step=input_step(case) if codes else None)
    assert found is not None, "the Gram path refused a layer it supports"
    form, errs = found
    out_axis = layer.out_axis % ref.ndim
    for f in (0.5, 0.8, 1.0, 1.3, 2.0):
        q = fake_quant(layer.weight, s0 * np.float32(f), layer.axis)
        got = session.run(None, {"x": xq, "w": q})[0]
        for metric in ("cosine", "mse"):
            want = layers._score_per_channel(ref, got, out_axis, metric)
            have = errs.scores(form.rows(q), metric)
            if metric == "mse":
                assert np.allclose(have, want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max()))
            else:
                assert np.allclose(have, want, rtol=0, atol=1e-6)
    assert (codes and form.groups == 1) == (bool(used) and all(used))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("metric", ["cosine", "mse"])
@pytest.mark.parametrize("codes", [False, True])
def test_gram_search_chooses_what_the_layer_runs_choose(case, metric, codes):
    layer, session, ref, xq = setup(case)
    s0 = max_scale(layer.weight, layer.axis)
    factors = np.linspace(0.5, 2.0, 31)
    runs = search_weight_scales(layer, session, "x", xq, ref, s0, factors, metric=metric, gram=False)
    gram = search_weight_scales(layer, session, "x", xq, ref, s0, factors, metric=metric, gram=True,
                                x_step=input_step(case) if codes else None)
    assert np.array_equal(runs, gram)


def test_unsupported_layers_and_a_failed_check_fall_back_to_the_runs(monkeypatch):
    w = np.random.default_rng(0).normal(size=(3, 4, 2, 2)).astype(np.float32)
    model = build(helper.make_node("ConvTranspose", ["x", "w"], ["y"]), {"w": w})
    assert layers.linear_form(weighted_layers(model)[0], (2, 3, 5, 5)) is None
    CASES["padded"] = (conv(3, 4, (3, 3), pads=[1, 1, 1, 1]), (2, 3, 6, 6))
    layer, session, ref, xq = setup("padded")
    s0 = max_scale(layer.weight, layer.axis)
    factors = np.linspace(0.5, 2.0, 11)
    runs = search_weight_scales(layer, session, "x", xq, ref, s0, factors, gram=False)
    real = layers.linear_form

    def misread(pads):  # an unfolding that misreads the layer's pads
        def form_of(lay, shape):
            form = real(lay, shape)
            g = form.geom
            form.geom = type(g)(g.kernel, g.strides, g.dilations, pads, g.groups)
            return form
        return form_of

    # the same output shape, other values: caught by the check on the first positions
    monkeypatch.setattr(layers, "linear_form", misread((2, 2, 0, 0)))
    assert layers.gram_errors(layer, session, "x", xq, ref, s0, 12, force=True) is None
    assert np.array_equal(search_weight_scales(layer, session, "x", xq, ref, s0, factors, gram=True), runs)
    # another output shape: refused before the check
    monkeypatch.setattr(layers, "linear_form", misread((0, 0, 0, 0)))
    assert layers.gram_errors(layer, session, "x", xq, ref, s0, 12, force=True) is None
    monkeypatch.setattr(layers, "linear_form", real)
    assert layers.gram_errors(layer, session, "x", xq, ref, s0, 12, force=True) is not None
    del CASES["padded"]


def test_the_cost_rule_keeps_layer_runs_where_they_are_cheaper():
    """A layer with few positions and many inputs per channel (K > P) is searched by runs unless forced."""
    model = conv(64, 8, (3, 3))
    CASES["wide"] = (model, (1, 64, 3, 3))  # one position, K = 576
    try:
        layer, session, ref, xq = setup("wide")
    finally:
        del CASES["wide"]
    s0 = max_scale(layer.weight, layer.axis)
    assert layers.gram_errors(layer, session, "x", xq, ref, s0, 101) is None
    assert layers.gram_errors(layer, session, "x", xq, ref, s0, 101, force=True) is not None


@pytest.mark.parametrize("case", ["conv 3x3", "depthwise SAME_LOWER", "gemm transB", "matmul 3-d"])
@pytest.mark.parametrize("gram", [False, True])
def test_coarse_search_is_each_channels_own_coarse_to_fine_over_layer_runs(case, gram):
    """The reference: one channel at a time, the scalar coarse_to_fine over that channel's score
    from a layer run with only its scale changed; kept only where strictly better than s0."""
    from trtcal.core.layer_error import coarse_to_fine

    layer, session, ref, xq = setup(case)
    s0 = max_scale(layer.weight, layer.axis)
    factors = np.linspace(0.5, 2.0, 41)
    out_axis = layer.out_axis % ref.ndim

    def channel_score(k, scale):
        scales = s0.copy()
        scales[k] = scale
        got = session.run(None, {"x": xq, "w": fake_quant(layer.weight, scales, layer.axis)})[0]
        return layers._score_per_channel(ref, got, out_axis, "cosine")[k]

    want = s0.copy()
    for k in range(s0.size):
        i, seen = coarse_to_fine(lambda i, k=k: channel_score(k, s0[k] * np.float32(factors[i])), len(factors))
        if seen[i] > channel_score(k, s0[k]):
            want[k] = s0[k] * np.float32(factors[i])
    have = search_weight_scales(layer, session, "x", xq, ref, s0, factors, gram=gram, search="coarse")
    assert np.array_equal(have, want)  # the Gram path too (its scores equal the runs' to rounding)


def test_fake_quant_in_chunks_is_the_plain_formula():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(3, 5, 70, 41)) * 4).astype(np.float32)  # not a multiple of the chunk
    x.reshape(-1)[:7] = [0.5 * 0.05, 1.5 * 0.05, -2.5 * 0.05, 1e9, -1e9, 0.0, -0.0]  # ties, saturation
    s = np.float32(0.05)
    want = (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)
    assert np.array_equal(fake_quant(x, s), want)
    out = np.empty((41, 70, 5, 3), np.float32).T  # not C-contiguous: written all the same
    assert fake_quant(x, s, out=out) is out and np.array_equal(out, want)
    assert np.array_equal(fake_quant(x[:, :, ::2], s), want[:, :, ::2])  # a strided input


def test_eq_cosine_matches_float64_to_the_digits_that_differ():
    from trtcal.ort.eq import _cosine

    rng = np.random.default_rng(6)
    r = rng.normal(size=300_001).astype(np.float32)
    for noise in (1e-4, 1e-3, 1e-2, 0.3):
        g = (r * 1.01 + noise * rng.normal(size=r.size)).astype(np.float32)
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        want = r64 @ g64 / np.sqrt((r64 @ r64) * (g64 @ g64))
        for norm in (None, float(np.sqrt(r64 @ r64))):
            have = _cosine(r, g, norm)
            assert abs((1 - have) - (1 - want)) <= 1e-5 * (1 - want)
    assert _cosine(np.zeros(10, np.float32), r[:10]) == 1.0


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_scale_scores_in_the_session_equal_numpy_fake_quant_and_a_float64_cosine(case):
    """EQ's activation search: the input's Q/DQ and the cosine's sums inside one ONNX Runtime run
    (layers.InputScaleScores) against numpy's fake quantization, the layer run, float64 sums."""
    model, shape = CASES[case]
    layer = weighted_layers(model)[0]
    rng = np.random.default_rng(3)
    x = rng.laplace(size=shape).astype(np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    session = single_node_session(model, layer, x_info, None)
    ref = session.run(None, {"x": x, "w": layer.weight})[0]
    norm = float(np.linalg.norm(ref.astype(np.float64)))
    scores = layers.InputScaleScores(model, [layer], x_info, {layer.node.output[0]: ref},
                                     {layer.node.output[0]: norm}, None)
    wq = fake_quant(layer.weight, max_scale(layer.weight, layer.axis), layer.axis)
    top = float(np.abs(x).max())
    for amax in (top * 0.2, top * 0.7, top, top * 1.9):
        got = session.run(None, {"x": fake_quant(x, amax / 127), "w": wq})[0].astype(np.float64)
        want = float((got * ref).sum() / (norm * np.linalg.norm(got)))
        have = scores.cosines(x, amax, {"w": wq})[0]
        assert abs((1 - have) - (1 - want)) <= 1e-4 * (1 - want) + 1e-7, (amax, have, want)


def test_input_scale_scores_of_two_layers_reading_one_input():
    rng = np.random.default_rng(4)
    w1, w2 = rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(16, 5)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["y1"], transB=1), helper.make_node("MatMul", ["x", "w2"], ["y2"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2")],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])  # Q/DQ and ReduceSum need 13: raised
    group = weighted_layers(model)
    x = rng.laplace(size=(50, 16)).astype(np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [50, 16])
    refs = {"y1": x @ w1.T, "y2": x @ w2}
    norms = {k: float(np.linalg.norm(v.astype(np.float64))) for k, v in refs.items()}
    scores = layers.InputScaleScores(model, group, x_info, refs, norms, None)
    wq = {lay.w: fake_quant(lay.weight, max_scale(lay.weight, lay.axis), lay.axis) for lay in group}
    amax = float(np.abs(x).max()) * 0.6
    xq = fake_quant(x, amax / 127).astype(np.float64)
    for have, (out, y) in zip(scores.cosines(x, amax, wq), (("y1", xq @ wq["w1"].T), ("y2", xq @ wq["w2"]))):
        want = float((y * refs[out]).sum() / (norms[out] * np.linalg.norm(y)))
        assert abs((1 - have) - (1 - want)) <= 1e-4 * (1 - want) + 1e-7
