"""SmoothQuant's rewrite: the smoothed model equals the input in float, LayerNorm folds are exact,
and the search keeps only factors that help at the outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from transformer_models import encoder_block, with_outlier_channel
from transformer_models import feed as _feed
from transformer_models import measured_ranges as _ranges

from trtcal.core.errors import TrtcalError
from trtcal.onnx.smooth import apply_smoothing, smoothable, weight_row_max


def _run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_smoothable_groups_share_one_factor_per_activation_and_fold_only_into_layernorm():
    model = encoder_block()
    groups = {g.tensor: g for g in smoothable(model)}
    names = [n.name for n in model.graph.node]
    # x feeds Q, K, V (one factor for all three); ln feeds ffn1 only and is LayerNorm's output
    assert sorted(names[i] for i in groups["x"].readers) == ["key", "query", "value"]
    assert groups["x"].fold_into is None  # a graph input: a Mul is inserted
    assert names[groups["ln"].fold_into] == "ln"
    assert groups["gelu"].fold_into is None and groups["ctx"].fold_into is None
    assert set(groups) == {"x", "ctx", "ln", "gelu"}  # the batched MatMuls have no constant weight


def test_smoothed_model_equals_the_input_in_float():
    model = encoder_block()
    feed = _feed()
    rng = np.random.default_rng(0)
    groups = smoothable(model)
    factors = {g.tensor: rng.uniform(0.1, 10, g.channels) for g in groups}
    out = apply_smoothing(model, factors, groups)
    assert set(out.folded) == {"ln"} and set(out.inserted) == {"x", "ctx", "gelu"}
    assert out.tensors["ln"] == "ln" and out.tensors["x"] == "x_smoothed"
    ref, got = _run(model, feed), _run(out.model, feed)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # the input model is untouched
    np.testing.assert_array_equal(_run(model, feed), ref)
    assert model.SerializeToString() != out.model.SerializeToString()
    onnx.checker.check_model(out.model, full_check=True)


def test_layernorm_fold_divides_scale_and_bias_by_the_factor():
    model = encoder_block()
    s = np.linspace(0.5, 4, 16)
    out = apply_smoothing(model, {"ln": s})
    inits = {t.name: numpy_helper.to_array(t) for t in out.model.graph.initializer}
    np.testing.assert_allclose(inits["gamma"], (np.ones(16) / s).astype(np.float32), rtol=1e-6)
    w1 = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["W1"]
    np.testing.assert_allclose(inits["W1"], (w1 * s[:, None]).astype(np.float32), rtol=1e-6)
    assert len(out.model.graph.node) == len(model.graph.node)  # folded: no Mul


def test_weight_row_max_is_over_every_reader():
    model = encoder_block()
    g = next(g for g in smoothable(model) if g.tensor == "x")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    expect = np.max([np.abs(inits[w]).max(axis=1) for w in ("Wq", "Wk", "Wv")], axis=0)
    np.testing.assert_allclose(weight_row_max(model, g), expect)


def test_bad_factors_are_refused():
    model = encoder_block()
    for bad in (np.zeros(16), np.full(16, np.nan), np.ones(5)):
        with pytest.raises(TrtcalError, match="smoothing factors of 'ln'"):
            apply_smoothing(model, {"ln": bad})
    with pytest.raises(TrtcalError, match="cannot be smoothed"):
        apply_smoothing(model, {"scores": np.ones(8)})


def test_search_helps_an_outlier_channel_and_never_scores_below_the_start():
    from trtcal.ort.smoothquant import factors, mse_amax, search_smoothing

    model = with_outlier_channel(encoder_block())
    feeds = [_feed(4) for _ in range(2)]
    ranges = _ranges(model, feeds[0])
    result = search_smoothing(model, feeds, ranges, climb_alphas=False)
    assert result.float_db > 60
    assert result.final_db >= result.baseline_db
    assert "ln" in result.alphas  # the outlier channel in LayerNorm's output is worth smoothing
    assert result.final_db > result.baseline_db + 1
    # every alpha was scored, and what was kept is the best seen for each tensor
    assert all(set(t) == {"0.25", "0.5", "0.75", "0.9", "1"} for t in result.tried.values())
    for x, alpha in result.alphas.items():
        assert max(result.tried[x], key=result.tried[x].get) == f"{alpha:g}"
    # the climb from the middle alpha scores fewer candidates; where the scores wander (this tiny
    # random block) it may stop at a local best, so it is held to the exhaustive search loosely
    climbed = search_smoothing(model, feeds, ranges)
    assert sum(map(len, climbed.tried.values())) < sum(map(len, result.tried.values()))
    assert climbed.final_db > climbed.baseline_db + 1 and climbed.final_db > result.final_db - 1.0
    first = next(iter(result.tried))  # the first tensor is searched from the same state by both
    assert "0.75" in climbed.tried[first]
    for alpha, db in climbed.tried[first].items():
        assert db == pytest.approx(result.tried[first][alpha], abs=1e-6)
    table, order = result.tried[first], ["0.25", "0.5", "0.75", "0.9", "1"]
    kept = max(climbed.tried[first], key=climbed.tried[first].get)
    i = order.index(kept)
    assert all(table[order[j]] <= table[kept] for j in (i - 1, i + 1) if 0 <= j < len(order))  # a local best
    # the factor formula and the brute-force range
    np.testing.assert_allclose(factors([4.0, 1e-9], [1.0, 2.0], 0.5), [2.0, np.sqrt(1e-5 / 2.0)])
    # the range against a brute force over the values themselves, on the same 64 clipping points
    for v in (np.concatenate([np.linspace(-1, 1, 1001), [50.0]]),
              np.random.default_rng(4).standard_t(3, size=(37, 1111)).astype(np.float32),
              np.maximum(np.random.default_rng(5).standard_normal((64, 300)), -0.17)):
        a = np.abs(np.asarray(v, np.float32).astype(np.float64)).ravel()
        grid = a.max() * np.geomspace(0.02, 1, 64)
        errs = [np.square(np.minimum(np.rint(a / (g / 127)), 127) * (g / 127) - a).sum() for g in grid]
        assert mse_amax(v) == pytest.approx(grid[int(np.argmin(errs))])
    assert mse_amax(np.zeros(7)) == 0.0


def test_the_climb_finds_a_local_best_and_the_peak_of_a_single_peaked_score():
    """Against brute force: on a score with one peak the climb finds the best alpha; on any score
    what it returns is a local best of the sorted alphas (both neighbours scored lower or absent),
    each alpha scored at most once."""
    from trtcal.ort.smoothquant import climb

    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        alphas = list(rng.permutation(np.round(np.sort(rng.choice(np.arange(1, 101), n, replace=False)) / 100, 2)))
        order = sorted(alphas)
        peaked = rng.random() < 0.5
        if peaked:  # rising strictly to one peak, then falling strictly
            peak = int(rng.integers(0, n))
            steps = rng.uniform(0.01, 2, n)
            values = [-float(steps[: abs(i - peak)].sum()) for i in range(n)]
        else:
            values = list(rng.standard_normal(n))
        table = dict(zip(order, values))
        calls = []
        scores = climb(alphas, lambda a, calls=calls, table=table: calls.append(a) or table[a])
        assert len(calls) == len(set(calls)) <= n and scores == {a: table[a] for a in calls}
        assert order[n // 2] in scores
        best = max(scores, key=scores.get)
        i = order.index(best)
        assert all(table[order[j]] <= table[best] for j in (i - 1, i + 1) if 0 <= j < n)
        if peaked:
            assert table[best] == max(values)


def test_transformer_groups_count_a_post_ln_layernorm_that_also_feeds_the_residual():
    from onnx import TensorProto, helper

    from trtcal.onnx.smooth import transformer_groups

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "W"], ["h"]), helper.make_node("Add", ["h", "ln"], ["y"])]
    graph = helper.make_graph(nodes, "postln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    groups = smoothable(model)
    assert [g.tensor for g in groups] == ["ln"] and groups[0].fold_into is None  # the residual reads it too
    assert [g.tensor for g in transformer_groups(model)] == ["ln"]
    # the same MatMul on a graph input, no LayerNorm and no attention: not a transformer
    plain = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
                                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                                                inits[:1]), opset_imports=[helper.make_opsetid("", 17)])
    assert smoothable(plain) and transformer_groups(plain) == []
    # the encoder block: attention blocks, so every smoothable activation
    assert {g.tensor for g in transformer_groups(encoder_block())} == {"x", "ctx", "ln", "gelu"}


def test_weights_in_constant_nodes_are_smoothable_once_made_initializers():
    """paddle2onnx writes every weight as a Constant node (PP-OCRv4 rec: no activation was smoothable)."""
    from onnx import helper

    from trtcal.onnx.model import constants_as_initializers
    from trtcal.onnx.smooth import transformer_groups

    model = encoder_block()
    inits = {t.name: t for t in model.graph.initializer}
    for name in ("W1", "W2"):
        model.graph.node.insert(0, helper.make_node("Constant", [], [name], value=inits[name]))
        model.graph.initializer.remove(inits[name])
    assert {g.tensor for g in smoothable(model)} == {"x", "ctx"}  # ffn1/ffn2 read Constant outputs
    moved = constants_as_initializers(model)
    assert not any(n.op_type == "Constant" for n in moved.graph.node)
    assert {"W1", "W2"} <= {t.name for t in moved.graph.initializer}
    assert {g.tensor for g in smoothable(moved)} == {"x", "ctx", "ln", "gelu"}
    assert {g.tensor for g in transformer_groups(model)} == {"x", "ctx", "ln", "gelu"}
    feed = _feed()
    np.testing.assert_array_equal(_run(moved, feed), _run(model, feed))
    assert any(n.op_type == "Constant" for n in model.graph.node)  # the input is untouched
    assert constants_as_initializers(moved) is moved  # nothing to move: the model itself
    from trtcal.ort.smoothquant import search_smoothing

    result = search_smoothing(model, [_feed(4)], _ranges(model, _feed(4)))
    assert {"ln", "gelu"} <= set(result.tried) and result.float_db > 60
