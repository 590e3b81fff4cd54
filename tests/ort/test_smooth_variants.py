"""One parametric Q/DQ model for SmoothQuant's candidates: each candidate's outputs against the model
the Q/DQ writer writes for the same factors and ranges (the independent reference), and the fed
weights against the writer's own DequantizeLinear values."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from transformer_models import encoder_block, with_outlier_channel
from transformer_models import feed as _feed
from transformer_models import measured_ranges as _ranges

from trtcal.core.ranges import Range, coerce
from trtcal.onnx.qdq import write_qdq
from trtcal.onnx.smooth import apply_smoothing, smoothable
from trtcal.ort.runner import cpu_session
from trtcal.ort.smooth_variants import SmoothVariants


def _run(model, feed):
    return cpu_session(model, "test", int8_kernels=False).run(None, feed)[0]


def _setup():
    model = with_outlier_channel(encoder_block())
    feed = _feed(4)
    ranges = coerce(_ranges(model, feed))
    groups = smoothable(model)
    return model, feed, ranges, groups


def _dequantized_weights(model) -> dict[str, np.ndarray]:
    """reader node name -> the weight values its DequantizeLinear gives, from a written Q/DQ model."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in producer:
            continue
        dq = producer[node.input[1]]
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        q, s = inits[dq.input[0]].astype(np.float32), inits[dq.input[1]]
        shape = [1] * q.ndim
        shape[axis] = -1
        out[node.name] = q * s.reshape(shape)
    return out


def test_unsmoothed_feeds_give_the_written_model():
    model, feed, ranges, groups = _setup()
    v = SmoothVariants(model, groups, ranges)
    written = write_qdq(model, ranges, check_onnxruntime=False).model
    onnx.checker.check_model(v.model)
    np.testing.assert_allclose(_run(v.model, {**feed, **v.base}), _run(written, feed), rtol=1e-4, atol=1e-4)
    # no weight stays behind as a constant the candidates cannot change
    names = {t.name for t in v.model.graph.initializer}
    assert not {"Wq", "Wk", "Wv", "Wo", "W1", "W2"} & names
    assert not any(n.endswith("_quantized") and n.startswith("W") for n in names)


@pytest.mark.parametrize("alpha_seed", [0, 1])
def test_a_candidate_gives_the_model_the_writer_writes_for_it(alpha_seed):
    model, feed, ranges, groups = _setup()
    v = SmoothVariants(model, groups, ranges)
    rng = np.random.default_rng(alpha_seed)
    factors = {g.tensor: rng.uniform(0.2, 5, g.channels) for g in groups if g.tensor in ("ln", "gelu")}
    amax = {"ln": 0.8 * ranges["ln"].amax, "gelu": 0.6 * ranges["gelu"].amax}
    feeds = dict(v.base)
    for x, s in factors.items():
        feeds.update(v.group_feeds(x, s, amax[x]))
    smoothed = apply_smoothing(model, factors, groups)
    r = dict(ranges)
    for x in factors:
        r[smoothed.tensors[x]] = Range.symmetric(amax[x])
    written = write_qdq(smoothed.model, r, check_onnxruntime=False).model
    ref = _run(written, feed)
    got = _run(v.model, {**feed, **feeds})
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    # ...and it is not the unsmoothed model
    assert np.abs(_run(v.model, {**feed, **v.base}) - ref).max() > 1e-2 * np.abs(ref).max()
    # the fed weights are exactly the written model's dequantized weights
    want = _dequantized_weights(written)
    by_reader = {node.name: node.input[1] for node in v.model.graph.node if node.op_type == "MatMul"}
    for reader in ("ffn1", "ffn2", "query", "key", "value", "attn_out"):
        np.testing.assert_array_equal(feeds[by_reader[reader]], want[reader])


def test_suffix_runs_give_the_whole_models_outputs_as_factors_are_accepted():
    """Each activation's suffix (the nodes downstream of its factor), fed with the tensors known at
    the current feeds, gives a candidate the whole model's outputs; after a factor is accepted, the
    later suffixes see its effect. A suffix holds fewer nodes the later its activation."""
    from trtcal.ort.smooth_variants import SuffixRuns, can_cut

    model, feed, ranges, groups = _setup()
    v = SmoothVariants(model, groups, ranges)
    assert can_cut(v.model)
    names = [o.name for o in v.model.graph.output]
    plain = cpu_session(v.model, "test", int8_kernels=False)
    batches = [feed, _feed(3)]
    order = [g.tensor for g in groups]
    runs = SuffixRuns(v, order, batches, v.base, names)
    feeds, fractions = dict(v.base), {}
    for g in groups:
        fractions[g.tensor] = runs.start(g.tensor)
        trial = {**feeds, **v.group_feeds(g.tensor, np.linspace(0.5, 2, g.channels), 0.7 * ranges[g.tensor].amax)}
        for t in (trial, feeds):  # the accepted run is not the last one
            for b, out in zip(batches, runs.run(t)):
                np.testing.assert_allclose(out[0], plain.run(names, {**b, **t})[0], rtol=1e-5, atol=1e-5)
            if t is trial:
                kept = runs.last
        runs.accept(kept)  # every factor accepted: the next suffixes must see them all
        feeds = trial
    assert fractions["gelu"] < fractions["ln"] < fractions["ctx"] < fractions["x"] <= 1.0


def test_the_cut_search_chooses_as_the_whole_model_search():
    from trtcal.ort.smoothquant import search_smoothing

    model, feed, ranges, groups = _setup()
    feeds = [_feed(4) for _ in range(2)]
    cut = search_smoothing(model, feeds, ranges, cut=True)
    whole = search_smoothing(model, feeds, ranges, cut=False)
    assert cut.alphas == whole.alphas and cut.alphas
    for x, tried in whole.tried.items():
        for alpha, db in tried.items():
            assert cut.tried[x][alpha] == pytest.approx(db, abs=0.01)
    assert cut.final_db == pytest.approx(whole.final_db, abs=0.01)
