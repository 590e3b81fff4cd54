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
from trtcal.qdq import write_qdq
from trtcal.sensitivity import analyse

EXAMPLES = Path(__file__).resolve().parents[1] / "trtcal" / "examples"
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
