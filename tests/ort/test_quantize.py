"""``quantize`` (trtcal.ort.quantize) on the bundled Fashion-MNIST model: what it writes is read
back by independent readers (Q/DQ scales, the cache, the statistics), its held-out summary agrees
with ``trtcal eval``'s SQNR of the written model, the held-out split, refusals, and the fallback to
a target SQNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from constant_weights import as_constant_nodes
from onnx import numpy_helper

from trtcal.cache import read
from trtcal.core.errors import TrtcalError
from trtcal.core.stats import load_stats
from trtcal.onnx.qdq import read_qdq_scales
from trtcal.ort.evaluate import evaluate
from trtcal.ort.quantize import quantize

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize")
    result = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz",
                      eval_data=EXAMPLES / "fashion_eval.npz", output=out / "f.int8.onnx", cache=out / "f.cache",
                      stats=out / "f.stats.npz", progress=False)
    return out, result


def test_quantize_writes_the_chosen_ranges_everywhere(fashion):
    out, r = fashion
    model = onnx.load(out / "f.int8.onnx")
    qdq = read_qdq_scales(model)
    cache = read(out / "f.cache")
    winner = r.selection[r.chosen]
    assert all(winner >= v for v in r.selection.values())
    base = r.chosen.split(" + ")[0]
    chosen = r.choice.amaxes if base == "per-tensor" else {
        n: c.amaxes.get(base, c.amaxes["entropy2"]) for n, c in r.choice.choices.items()}
    shifted = r.metadata["shift"]["tensors"] if r.metadata["shift"]["kept"] else {}
    for name, amax in chosen.items():
        if name in shifted:  # quantized as name - amax/2 in [-amax/2, amax/2]
            assert shifted[name]["shift"] == pytest.approx(amax / 2, rel=1e-6)
            assert qdq.amax(shifted[name]["reads_as"]) == pytest.approx(amax / 2, rel=1e-6)
        else:
            assert qdq.amax(name) == pytest.approx(amax, rel=1e-6)
        assert cache.amax(name) == pytest.approx(amax, rel=1e-6)
    hists, meta = load_stats(out / "f.stats.npz")
    assert set(r.choice.choices) <= set(hists) and meta["algorithm"] == "entropy2"
    side = json.loads((out / "f.int8.onnx.trtcal.json").read_text())
    assert side["algorithm"] == "quantize" and side["ranges"] == r.chosen
    assert json.loads((out / "f.cache.trtcal.json").read_text())["model_sha256"] == side["model_sha256"]


def test_quantize_summary_agrees_with_eval_of_the_written_model(fashion):
    out, r = fashion
    ev = evaluate(EXAMPLES / "fashion_cnn.onnx", out / "f.int8.onnx", EXAMPLES / "fashion_eval.npz", per_tensor=False,
                  progress=False)
    logits = ev.outputs[0]
    assert r.summary["samples"] == 256  # --eval-samples' default
    assert ev.metadata["samples"] >= 256
    # eval scores every evaluation sample, the summary the first 256: close, not equal
    assert r.summary["sqnr_db"] == pytest.approx(logits.sqnr_db, abs=1.5)
    assert r.summary["sqnr_db"] > r.summary["entropy2_sqnr_db"] + 10  # entropy2 clips the input's background spike


def test_quantize_summary_cosine_is_the_per_sample_cosine_of_the_written_model(fashion):
    out, r = fashion
    d = np.load(EXAMPLES / "fashion_eval.npz")
    x = d[d.files[0]][:256]
    ref = ort.InferenceSession(str(EXAMPLES / "fashion_cnn.onnx")).run(None, {"images": x})[0].astype(np.float64)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # Q/DQ as written
    got = ort.InferenceSession(str(out / "f.int8.onnx"), options).run(None, {"images": x})[0].astype(np.float64)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert r.summary["cosine_mean"] == pytest.approx(cos.mean(), abs=1e-5)
    (o,) = r.summary["outputs"].values()
    assert o["cosine_min"] == pytest.approx(cos.min(), abs=1e-5) and o["cosine_mean"] == r.summary["cosine_mean"]
    assert r.summary["entropy2_cosine_mean"] < r.summary["cosine_mean"] <= 1


def test_quantize_holds_out_every_fifth_batch_without_eval_data(tmp_path):
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "m.onnx",
                 cache=tmp_path / "m.cache", stats=tmp_path / "m.npz", batch_size=32, progress=False)
    # 512 samples in 16 batches of 32: batches 4, 9 and 14 held out
    assert r.metadata["calibration"]["batches"] == 13 and r.metadata["calibration"]["samples"] == 13 * 32
    assert r.summary["samples"] == 96 and "not calibrated on" in r.summary["data"]


def test_quantize_refuses_to_overwrite_before_doing_any_work(fashion, tmp_path):
    out, _ = fashion
    before = (out / "f.cache").read_bytes()
    with pytest.raises(TrtcalError, match="exists"):
        quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "new.onnx",
                 cache=out / "f.cache", stats=tmp_path / "s.npz", progress=False)
    assert (out / "f.cache").read_bytes() == before and not (tmp_path / "new.onnx").exists()


def test_target_sqnr_leaves_the_fewest_tensors_in_float_that_reach_it(fashion, tmp_path):
    _, all_int8 = fashion
    target = all_int8.selection[all_int8.chosen] + 3
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", eval_data=EXAMPLES / "fashion_eval.npz",
                 output=tmp_path / "t.onnx", cache=tmp_path / "t.cache", stats=tmp_path / "t.npz", target_sqnr=target,
                 progress=False)
    fb = r.summary["fallback"]
    assert fb["reached"] and fb["selection_sqnr_db"][1] >= target and r.float_tensors
    scales = read_qdq_scales(onnx.load(tmp_path / "t.onnx"))
    assert not any(name in scales.names() for name in r.float_tensors)  # left in float: no Q/DQ on them
    # one tensor fewer would not have reached the target: the walk stops at the first that does
    assert len(r.float_tensors) == 1 or fb["selection_sqnr_db"][0] < target


def _weight_codes(model) -> dict:
    """weight initializer -> (its int8 codes, scales) of a Q/DQ model."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0].removesuffix("_quantized"): (inits[n.input[0]], inits[n.input[1]])
            for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
            and inits[n.input[0]].ndim > 1}


def test_gptq_rounding_is_kept_where_it_scores_better(fashion, tmp_path):
    """The Fashion CNN: GPTQ's codes score better at the outputs (on the selection samples by
    construction, and on the held-out ones measured: 41.3 -> 42.5 dB); with --weight-rounding
    nearest every code is max|w|-scaled round to nearest, as TensorRT would make it."""
    out, r = fashion
    assert r.chosen.endswith(" + gptq") and r.summary["weight_rounding"].startswith("gptq")
    assert r.selection[r.chosen] > r.selection[r.chosen.removesuffix(" + gptq")]
    side = json.loads((out / "f.int8.onnx.trtcal.json").read_text())
    assert side["weight_rounding"] == "gptq (4 weights)"
    errors = r.metadata["weight_rounding"]["output_error"]
    assert len(errors) == 4 and all(e["gptq"] < e["nearest"] for e in errors.values())
    near = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz",
                    eval_data=EXAMPLES / "fashion_eval.npz", output=tmp_path / "n.onnx", cache=tmp_path / "n.cache",
                    stats=tmp_path / "n.npz", progress=False, weight_rounding="nearest")
    assert "gptq" not in near.chosen and near.summary["weight_rounding"] == "nearest"
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(EXAMPLES / "fashion_cnn.onnx").graph.initializer}
    moved = 0
    for name, (codes, scale) in _weight_codes(onnx.load(tmp_path / "n.onnx")).items():
        shaped = scale.reshape([-1] + [1] * (codes.ndim - 1))
        np.testing.assert_array_equal(codes, np.clip(np.rint(fp32[name] / shaped), -127, 127))
        gptq_codes, gptq_scale = _weight_codes(onnx.load(out / "f.int8.onnx"))[name]
        np.testing.assert_array_equal(gptq_scale, scale)  # the same grid, other codes
        moved += int((gptq_codes != codes).sum())
    assert moved > 0
    assert r.summary["sqnr_db"] > near.summary["sqnr_db"] + 0.5  # held out


def test_gptq_is_judged_on_samples_it_was_not_fit_on(fashion, tmp_path):
    """With calibration samples after the selection ones, GPTQ is judged there; with none (64
    samples, all selected), it is fit on the first half of the selection and judged on the
    second; either way its record says where and by how much."""
    _, r = fashion
    record = r.metadata["weight_rounding"]
    assert record["kept"] and record["judged_on"] == "64 calibration samples after the selection samples"
    before, after = record["sqnr_db"].values()
    assert after > before
    d = np.load(EXAMPLES / "fashion_calib.npz")
    np.savez(tmp_path / "few.npz", images=d["images"][:64])
    few = quantize(EXAMPLES / "fashion_cnn.onnx", tmp_path / "few.npz", eval_data=EXAMPLES / "fashion_eval.npz",
                   output=tmp_path / "f.onnx", cache=tmp_path / "f.cache", stats=tmp_path / "f.npz", progress=False)
    record = few.metadata["weight_rounding"]
    assert record["judged_on"] == "the last 32 selection samples (fit on the first 32)"
    assert few.chosen.endswith(" + gptq") == record["kept"]
    labels = list(record["sqnr_db"])
    assert labels[1].endswith(" + gptq")
    if record["kept"]:  # kept only where it scored better on the judging samples
        assert record["sqnr_db"][labels[1]] > record["sqnr_db"][labels[0]]


def test_one_sided_gemm_inputs_are_shifted_into_the_biases(fashion, tmp_path):
    """The Fashion CNN's two Gemm inputs are ReLU outputs: quantized as x - amax/2, the shift in
    the Gemm biases (computed with the quantized weights), they cost a quarter of the rounding
    noise; measured held out 42.5 -> 46.0 dB. pool1 feeds a padded Conv: not shifted."""
    out, r = fashion
    record = r.metadata["shift"]
    assert record["kept"] and set(record["tensors"]) == {"/flatten/Flatten_output_0", "/relu3/Relu_output_0"}
    before, after = record["selection_sqnr_db"]
    assert after > before + 1 and r.final_db == after
    model = onnx.load(out / "f.int8.onnx")
    subs = [n for n in model.graph.node if n.op_type == "Sub"]
    assert sorted(n.input[0] for n in subs) == sorted(record["tensors"])
    side = json.loads((out / "f.int8.onnx.trtcal.json").read_text())
    assert side["shift"]["tensors"] == record["tensors"]
    off = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz",
                   eval_data=EXAMPLES / "fashion_eval.npz", output=tmp_path / "n.onnx", cache=tmp_path / "n.cache",
                   stats=tmp_path / "n.npz", progress=False, shift_one_sided=False)
    assert "shift" not in off.metadata
    assert not any(n.op_type == "Sub" for n in onnx.load(tmp_path / "n.onnx").graph.node)
    assert r.summary["sqnr_db"] > off.summary["sqnr_db"] + 2  # held out


def test_an_asymmetric_activation_is_not_shifted(tmp_path):
    """A SiLU output (minimum about -0.28) read by a Gemm is left as it is (see _shift_one_sided),
    a ReLU output in its place is shifted by half its amax."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(16, 12)).astype(np.float32), rng.normal(size=(12, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(640, 16)).astype(np.float32))
    common = dict(cache=tmp_path / "m.cache", stats=tmp_path / "m.npz", progress=False, force=True, select_samples=64)
    for act, nodes in (("silu", [helper.make_node("Sigmoid", ["h"], ["g"]), helper.make_node("Mul", ["h", "g"], ["a"])]),
                       ("relu", [helper.make_node("Relu", ["h"], ["a"])])):
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w1"], ["h"]), *nodes, helper.make_node("Gemm", ["a", "w2"], ["y"])], act,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{act}.onnx")
        r = quantize(tmp_path / f"{act}.onnx", tmp_path / "d.npz", output=tmp_path / f"{act}.q.onnx", **common)
        if act == "silu":
            assert "shift" not in r.metadata
            assert not any(n.op_type == "Sub" for n in onnx.load(tmp_path / "silu.q.onnx").graph.node)
        else:
            record = r.metadata["shift"]
            assert set(record["tensors"]) == {"a"}
            amax = read(tmp_path / "m.cache").amax("a")
            assert record["tensors"]["a"]["shift"] == pytest.approx(amax / 2, rel=1e-6)
            if record["kept"]:
                assert read_qdq_scales(onnx.load(tmp_path / "relu.q.onnx")).amax("a_shifted") == pytest.approx(amax / 2, rel=1e-6)


def test_weight_rounding_option_is_checked(tmp_path):
    with pytest.raises(TrtcalError, match="--weight-rounding 'adaround'"):
        quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "x.onnx",
                 weight_rounding="adaround", progress=False)


def test_max_float_and_target_sqnr_exclude_each_other(tmp_path):
    with pytest.raises(TrtcalError, match="exclude each other"):
        quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "x.onnx",
                 max_float=2, target_sqnr=30.0, progress=False)


@pytest.mark.rtx
def test_the_quantized_model_builds_in_tensorrt_rtx(fashion, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from trtcal.trt.builder import build

    out, _ = fashion
    result = build(out / "f.int8.onnx", tmp_path / "f.engine", backend="rtx",
                   shapes={"images": ((1, 1, 28, 28), (8, 1, 28, 28), (32, 1, 28, 28))})
    assert result.engine.stat().st_size > 100_000 and result.record["mode"] != "fp32"


def test_too_few_batches_to_hold_one_out_is_said(tmp_path):
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "m.onnx",
                 cache=tmp_path / "m.cache", stats=tmp_path / "m.npz", batch_size=256, progress=False)
    assert r.metadata["calibration"]["batches"] == 2  # nothing held out: batch 4 does not exist
    assert "calibration samples" in r.summary["data"] and "--eval-data" in r.summary["note"]
    assert any("--eval-data" in w for w in r.warnings)


@pytest.mark.parametrize("which", ["fashion", "encoder"])
def test_range_sets_scored_in_one_model_score_as_their_written_models(which):
    """quantize scores its candidate range sets in one model with scales as inputs: each set's
    SQNR equals that of the model write_qdq writes for it (reference), to the last bit."""
    from transformer_models import encoder_block, feed, measured_ranges, with_outlier_channel

    from trtcal.core.ranges import Range
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.evaluate import choose_outputs
    from trtcal.ort.quantize import _score_sets
    from trtcal.ort.sensitivity import reference_outputs, score_model

    if which == "fashion":
        model = onnx.load(EXAMPLES / "fashion_cnn.onnx")
        x = np.load(EXAMPLES / "fashion_calib.npz")["images"][:32]
        batches = [{"images": x[:16]}, {"images": x[16:]}]
    else:
        model = with_outlier_channel(encoder_block())
        batches = [feed(4), feed(4)]
    top = measured_ranges(model, batches[0])
    placed = write_qdq(model, top, check_onnxruntime=False)
    names = [q.name for q in placed.activations]
    rng = np.random.default_rng(0)
    sets = {"max": {n: Range.symmetric(top[n]) for n in names}}
    for k in range(3):  # clipped at random, one tensor unsigned in the last
        sets[f"clip{k}"] = {n: Range.symmetric(top[n] * rng.uniform(0.2, 1.0)) for n in names}
    sets["clip2"][names[0]] = Range(0.0, top[names[0]], 8, "unsigned")
    choice = choose_outputs(model, which)
    refs, _ = reference_outputs(model, batches, choice)
    got = _score_sets(model, sets, batches, refs, choice, target="tensorrt", attention="int8")
    for label, ranges in sets.items():
        written = write_qdq(model, ranges, check_onnxruntime=False).model
        assert got[label] == score_model(written, batches, refs, choice, sqnr_only=True).sqnr_db, label
    assert len(set(got.values())) == len(sets)  # the sets differ: a mix-up of feeds would show


def _dequantized_weights(model) -> dict:
    """``{weight: values}`` read back from a Q/DQ model's weight DequantizeLinear nodes."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_quantized") and node.input[0] in inits:
            codes, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]].astype(np.float32)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * codes.ndim
            shape[axis] = -1
            out[node.input[0].removesuffix("_quantized")] = codes * scale.reshape(shape)
    return out


def test_the_weights_shift_and_bias_correction_compute_with_are_the_written_ones():
    """GPTQ-like values whose largest weight per channel moved by a step stay on the float weights'
    max grid in the writer; ``_held_weights`` must give exactly what the Q/DQ model holds (the shift
    took the values' own max grid before: biases off by up to a step times the shift)."""
    from trtcal.core.ranges import from_thresholds
    from trtcal.core.weight_scales import per_channel_int8
    from trtcal.onnx.model import load_model
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.layers import weighted_layers
    from trtcal.ort.pipeline import calibrate
    from trtcal.ort.quantize import _held_weights

    fp32 = load_model(EXAMPLES / "fashion_cnn.onnx", load_weights=True, fp32=True)
    cal = calibrate(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", max_batches=2, progress=False)
    ranges = from_thresholds(cal.thresholds, cal.histograms, source="entropy2")
    values, scales = {}, {}
    for layer in weighted_layers(fp32):
        codes, scale, _ = per_channel_int8(layer.weight, layer.axis)
        moved = np.where(np.abs(codes) == 127, codes - np.sign(codes), codes)  # every channel's extreme code moves in
        shape = [1] * codes.ndim
        shape[layer.axis] = -1
        values[layer.w] = (moved * scale.reshape(shape)).astype(np.float32)
        scales[layer.w] = scale * 0.9
    for weights in ({}, {"weight_values": values}, {"weight_scales": scales}):
        written = _dequantized_weights(write_qdq(fp32, ranges, **weights).model)
        held = _held_weights(fp32, weights)
        assert set(written) <= set(held)
        for name, v in written.items():
            assert np.array_equal(held[name], v), (list(weights), name)


def test_bias_correction_writes_the_recorded_deltas(tmp_path):
    """``bias_correction="on"``: the Q/DQ model's biases are the FP32 model's plus the recorded
    deltas (the Gemms read shifted inputs: their biases also carry the shift, so only the Conv biases
    are compared exactly); ``"auto"`` (the default) judges it; ``"off"`` does not try; the option
    is checked."""
    common = dict(eval_data=EXAMPLES / "fashion_eval.npz", cache=tmp_path / "m.cache", stats=tmp_path / "m.npz",
                  progress=False, force=True)
    on = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "on.onnx",
                  bias_correction="on", **common)
    record = on.metadata["bias_correction"]
    assert record["kept"] and record["layers"] >= 1 and record["channels"] >= 1
    assert record["judged_on"] == "64 calibration samples after the selection samples"
    side = json.loads((tmp_path / "on.onnx.trtcal.json").read_text())
    assert side["bias_correction"]["layers"] == record["layers"] and "deltas" not in side["bias_correction"]
    fp32 = onnx.load(EXAMPLES / "fashion_cnn.onnx")
    fp_inits = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    q = onnx.load(tmp_path / "on.onnx")
    q_inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    prod = {o: n for n in q.graph.node for o in n.output}
    checked = 0
    for node in q.graph.node:
        if node.op_type != "Conv":
            continue
        weight = prod[node.input[1]].input[0].removesuffix("_quantized")
        fp_node = next(n for n in fp32.graph.node if len(n.input) > 1 and n.input[1] == weight)
        delta = np.asarray(record["deltas"].get(weight, np.zeros(len(fp_inits[fp_node.input[2]]))))
        assert q_inits[node.input[2]] == pytest.approx(fp_inits[fp_node.input[2]] + delta, abs=1e-6)
        checked += 1
    assert checked == 2
    auto = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "auto.onnx",
                    bias_correction="auto", **common)
    judged = auto.metadata["bias_correction"]
    before, after = judged["sqnr_db"]["before"], judged["sqnr_db"]["after"]
    assert judged["kept"] == (after > before and judged["selection_sqnr_db"][1] > judged["selection_sqnr_db"][0]) \
        if "selection_sqnr_db" in judged else not judged["kept"]
    off = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "off.onnx",
                   bias_correction="off", **common)
    assert "bias_correction" not in off.metadata
    with pytest.raises(TrtcalError, match="--bias-correction 'yes'"):
        quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "x.onnx",
                 bias_correction="yes", **common)


def test_eval_shows_a_shifted_tensor_as_quantized(fashion):
    """``trtcal eval``'s per-tensor "as quantized" view of a shifted tensor is the dequantized
    shifted tensor plus the shift: numpy's rounding of the INT8 model's ``x - c`` at the written
    scale, plus ``c``; its SQNR is that view's against FP32's ``x``."""
    from trtcal.ort.evaluate import dequantized_views
    from trtcal.ort.runner import cpu_session

    out, r = fashion
    name = "/relu3/Relu_output_0"
    shift = r.metadata["shift"]["tensors"][name]["shift"]
    model = onnx.load(out / "f.int8.onnx")
    view, offset = dequantized_views(model)[name]
    assert offset == pytest.approx(shift) and view.startswith(f"{name}_shifted")
    images = {"images": np.load(EXAMPLES / "fashion_eval.npz")["images"]}

    def values(m, names):
        for n in names:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
        return cpu_session(m, "t", int8_kernels=False).run(names, images)

    x_int8, seen = values(onnx.load(out / "f.int8.onnx"), [name, view])
    scale = read_qdq_scales(model).amax(f"{name}_shifted") / 127
    q = np.clip(np.rint((x_int8.astype(np.float64) - shift) / scale), -128, 127) * scale + shift
    assert np.allclose(seen + np.float32(offset), q, atol=1e-5 * scale + 1e-6)
    (x,) = values(onnx.load(EXAMPLES / "fashion_cnn.onnx"), [name])
    want = 10 * np.log10((x.astype(np.float64) ** 2).sum() / ((q - x) ** 2).sum())
    ev = evaluate(EXAMPLES / "fashion_cnn.onnx", out / "f.int8.onnx", EXAMPLES / "fashion_eval.npz", progress=False)
    assert ev.quantized[name].sqnr_db == pytest.approx(want, abs=0.01)


def test_weights_held_in_constant_nodes_are_quantized_as_initializers(tmp_path):
    """A model whose weights are Constant nodes (as paddle2onnx writes them) gets the layer-wise
    steps as its initializer form does: the same ranges, GPTQ record and written weights; the
    outputs and provenance name the model given, which is left as it was."""
    import hashlib

    path = tmp_path / "consts.onnx"
    onnx.save(as_constant_nodes(onnx.load(EXAMPLES / "fashion_cnn.onnx")), path)
    before = path.read_bytes()
    common = dict(eval_data=EXAMPLES / "fashion_eval.npz", progress=False, select_samples=64)
    lines = []
    got = quantize(path, EXAMPLES / "fashion_calib.npz", output=tmp_path / "c.int8.onnx", cache=tmp_path / "c.cache",
                   stats=tmp_path / "c.npz", log=lines.append, **common)
    ref = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "r.int8.onnx",
                   cache=tmp_path / "r.cache", stats=tmp_path / "r.npz", **common)
    assert any("Constant nodes (its weights among them) taken as initializers" in line for line in lines)
    assert path.read_bytes() == before
    assert got.chosen == ref.chosen and got.chosen.endswith(" + gptq")
    assert got.metadata["weight_rounding"]["rounded"] == ref.metadata["weight_rounding"]["rounded"] == 4
    assert read(tmp_path / "c.cache").amaxes() == read(tmp_path / "r.cache").amaxes()
    assert got.summary["sqnr_db"] == pytest.approx(ref.summary["sqnr_db"], abs=1e-6)
    side = json.loads((tmp_path / "c.int8.onnx.trtcal.json").read_text())
    assert side["model"] == str(path) and side["constants_as_initializers"] == 8
    assert side["model_sha256"] == hashlib.sha256(before).hexdigest()
    assert got.metadata["calibration"]["model"] == str(path)


def test_effort_fast_leaves_out_the_costly_steps_unless_asked(tmp_path):
    common = dict(eval_data=EXAMPLES / "fashion_eval.npz", cache=tmp_path / "m.cache", stats=tmp_path / "m.npz",
                  progress=False, force=True)
    lines = []
    fast = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "f.onnx",
                    effort="fast", log=lines.append, **common)
    assert "weight_rounding" not in fast.metadata and "bias_correction" not in fast.metadata
    assert not any("searching per-channel weight scales" in line for line in lines)
    assert "+ gptq" not in fast.chosen and "+ weights" not in fast.chosen
    assert fast.summary["weight_rounding"] == "nearest" and fast.summary["weight_scales"] == "max"
    assert "shift" in fast.metadata  # the cheap steps stay
    asked = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "g.onnx",
                     effort="fast", weight_rounding="gptq", **common)
    assert asked.metadata["weight_rounding"]["kept"] and asked.chosen.endswith(" + gptq")
    with pytest.raises(TrtcalError, match="--effort 'quick'"):
        quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=tmp_path / "x.onnx",
                 effort="quick", **common)
