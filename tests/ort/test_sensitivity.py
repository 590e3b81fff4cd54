"""Leave-one-out sensitivity and the float fallback, against direct runs of the models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli

from trtcal import calibrate
from trtcal.core.errors import TrtcalError
from trtcal.onnx.qdq import write_qdq
from trtcal.ort.sensitivity import analyse

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"
EVAL = EXAMPLES / "fashion_eval.npz"


@pytest.fixture(scope="module")
def setup():
    cache = calibrate(MODEL, EXAMPLES / "fashion_calib.npz", progress=False).cache  # entropy2: lossy, good to fix
    x = np.load(EVAL)["images"][:200]
    return cache, [{"images": x[:100]}, {"images": x[100:]}], x


def sqnr(model_proto, x) -> float:
    ref = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    options = ort.SessionOptions()  # Q/DQ as written, not ONNX Runtime's CPU-dependent int8 kernels
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    got = ort.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    return 10 * math.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - got) ** 2))


def test_gains_match_direct_measurements(setup):
    cache, batches, x = setup
    sens, final = analyse(MODEL, cache, batches, max_float=2)
    base = sqnr(write_qdq(MODEL, cache).model, x)
    assert sens.baseline_db == pytest.approx(base, abs=1e-6)
    top = next(iter(sens.gains))
    ranges = {e.name: e.amax for e in cache.entries if e.name != top}
    assert sens.gains[top] == pytest.approx(sqnr(write_qdq(MODEL, ranges).model, x) - base, abs=1e-6)
    assert list(sens.gains.values()) == sorted(sens.gains.values(), reverse=True)
    assert sens.chosen == [n for n, g in sens.gains.items() if g > 0][:2]
    assert sens.final_db == pytest.approx(sqnr(final.model, x), abs=1e-6) and sens.final_db > sens.baseline_db
    assert all(name in final.float_tensors for name in sens.chosen)


def kl_mean(model_proto, x) -> float:
    """Mean KL(softmax(FP32) || softmax(test)) written out with numpy, independent of trtcal.core.metrics."""
    ref = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    got = ort.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    p = np.exp(ref.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    q = np.exp(got.astype(np.float64))
    q /= q.sum(1, keepdims=True)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


def test_kl_metric_gains_match_direct_measurements(setup):
    cache, batches, x = setup
    sens, final = analyse(MODEL, cache, batches, max_float=2, metric="kl")
    assert sens.metric == "kl" and sens.baseline_db == pytest.approx(sqnr(write_qdq(MODEL, cache).model, x), abs=1e-6)
    base = kl_mean(write_qdq(MODEL, cache).model, x)
    assert sens.kl[0] == pytest.approx(base, rel=1e-6)
    ranges = {e.name: e.amax for e in cache.entries}
    for name in list(sens.gains)[:3]:
        trial = kl_mean(write_qdq(MODEL, {k: v for k, v in ranges.items() if k != name}).model, x)
        assert sens.gains[name] == pytest.approx(10 * math.log10(base / trial), abs=1e-6)
    assert list(sens.gains.values()) == sorted(sens.gains.values(), reverse=True)
    assert sens.chosen == [n for n, g in sens.gains.items() if g > 0][:2]
    assert sens.kl[1] == pytest.approx(kl_mean(final.model, x), rel=1e-6) and sens.kl[1] < sens.kl[0]
    assert sens.final_db == pytest.approx(sqnr(final.model, x), abs=1e-6)


def test_kl_metric_needs_a_classifier(setup, tmp_path):
    import onnx
    from onnx import helper

    cache, batches, _ = setup
    m = onnx.load(str(MODEL))  # flatten the logits to rank 1: no longer a classifier output
    out = m.graph.output[0].name
    shape = helper.make_tensor("flat_shape", onnx.TensorProto.INT64, [1], [-1])
    m.graph.initializer.append(shape)
    m.graph.node.append(helper.make_node("Reshape", [out, "flat_shape"], ["flat"]))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("flat", onnx.TensorProto.FLOAT, ["n"]))
    path = tmp_path / "flat.onnx"
    onnx.save(m, str(path))
    with pytest.raises(TrtcalError, match="metric kl needs a classifier"):
        analyse(path, cache, batches[:1], max_float=1, metric="kl")
    with pytest.raises(TrtcalError, match="choose from sqnr, kl"):
        analyse(MODEL, cache, batches[:1], max_float=1, metric="top1")


def test_one_at_a_time_gains_come_from_each_tensor_quantized_alone(setup):
    cache, batches, x = setup
    sens, final = analyse(MODEL, cache, batches, max_float=2, mode="one-at-a-time")
    assert sens.mode == "one-at-a-time" and sens.to_dict()["mode"] == "one-at-a-time"
    ranges = {e.name: e.amax for e in cache.entries}
    noise_all = 10 ** (-sqnr(write_qdq(MODEL, cache).model, x) / 10)  # error power over signal power
    for name in list(sens.gains)[:4]:
        alone = 10 ** (-sqnr(write_qdq(MODEL, {name: ranges[name]}).model, x) / 10)
        share = alone / noise_all
        expected = math.inf if share >= 1 else -10 * math.log10(1 - share)
        assert sens.gains[name] == pytest.approx(expected, rel=1e-6)
    assert list(sens.gains.values()) == sorted(sens.gains.values(), reverse=True)
    assert sens.chosen == [n for n, g in sens.gains.items() if g > 0][:2]
    assert sens.final_db == pytest.approx(sqnr(final.model, x), abs=1e-6)
    with pytest.raises(TrtcalError, match="choose from leave-one-out, one-at-a-time"):
        analyse(MODEL, cache, batches[:1], mode="bisect")


def test_progress_total_is_set_by_analyse(setup):
    cache, batches, _ = setup

    class Bar:
        total, n = None, 0

        def update(self, n=1):
            self.n += n

    bar = Bar()
    sens, _ = analyse(MODEL, cache, batches[:1], max_float=1, progress=bar)
    assert bar.total == len(sens.gains) == bar.n > 0


def test_cli_writes_model_and_fallback_list(setup, tmp_path):
    cache, _, _ = setup
    cache.write(tmp_path / "c.cache")
    out, lst = tmp_path / "fb.onnx", tmp_path / "fb.txt"
    rc, text, err = run_cli("fallback", MODEL, "--cache", tmp_path / "c.cache", "--data", EVAL, "--samples", "200",
                            "--max-float", "2", "-o", out, "--list", lst, "--json", "-q")
    assert rc == 0, err
    doc = json.loads(text)
    assert out.exists() and len(doc["chosen"]) == 2 and doc["final_sqnr_db"] > doc["baseline_sqnr_db"]
    layers = [line for line in lst.read_text().splitlines() if not line.startswith("#")]
    assert layers == doc["fallback_layers"] and layers
    if "images" in doc["chosen"]:  # the input's consumer is the first conv
        assert "/conv1/Conv_output_0" in layers
    rc, text, err = run_cli("fallback", MODEL, "--cache", tmp_path / "c.cache", "--data", EVAL, "--samples", "100",
                            "--max-float", "1", "--metric", "kl", "-o", tmp_path / "kl.onnx", "-q")
    assert rc == 0, err
    assert "KL divergence shrinks by" in text and "nats" in text and (tmp_path / "kl.onnx").exists()
    rc, text, err = run_cli("fallback", MODEL, "--cache", tmp_path / "c.cache", "--data", EVAL, "--samples", "100",
                            "--max-float", "1", "--mode", "one-at-a-time", "-o", tmp_path / "one.onnx", "--json")
    assert rc == 0, err
    assert json.loads(text)["mode"] == "one-at-a-time" and (tmp_path / "one.onnx").exists()
    rc, _, err = run_cli("fallback", MODEL, "--cache", tmp_path / "c.cache", "--data", EVAL, "--max-float", "-1",
                         "-o", tmp_path / "x.onnx")
    assert rc == 2 and "--max-float" in err and not (tmp_path / "x.onnx").exists()


def test_greedy_picks_are_each_the_best_next_step(setup):
    cache, batches, x = setup
    sens, final = analyse(MODEL, cache, batches, max_float=2, greedy=True)
    ranges = {e.name: e.amax for e in cache.entries}
    pool = [n for n, g in sens.gains.items() if g > 0][:6]

    def without(dropped):
        return sqnr(write_qdq(MODEL, {k: v for k, v in ranges.items() if k not in dropped}).model, x)

    first = max(pool, key=lambda n: without({n}))
    assert sens.chosen[0] == first
    if len(sens.chosen) > 1:
        second = max((n for n in pool if n != first), key=lambda n: without({first, n}))
        assert sens.chosen[1] == second
    assert sens.final_db == pytest.approx(sqnr(final.model, x), abs=1e-6)
    assert sens.final_db >= analyse(MODEL, cache, batches, max_float=1)[0].final_db - 1e-9
