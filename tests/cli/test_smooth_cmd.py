"""``trtcal smooth`` on the command line: the smoothed model equals the input in float, --json, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL, CALIB, EVAL = EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", EXAMPLES / "fashion_eval.npz"


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_smooth_writes_a_float_equal_model_with_provenance(tmp_path):
    out = tmp_path / "f.smooth.onnx"
    rc, text, err = run_cli("smooth", MODEL, "--data", CALIB, "--select-samples", "32", "-o", out, "-q", "--json")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["final_sqnr_db"] >= doc["baseline_sqnr_db"] and doc["float_sqnr_db"] > 60
    every = {"0.25", "0.5", "0.75", "0.9", "1"}
    # the climb from the middle alpha: 0.75 and its neighbours up or down, a kept alpha among those tried
    assert set(doc["alphas"]) <= set(doc["tried"]) and all("0.75" in t and set(t) <= every for t in doc["tried"].values())
    assert all(f"{a:g}" in doc["tried"][x] for x, a in doc["alphas"].items())
    side = json.loads(Path(str(out) + ".trtcal.json").read_text())
    assert side["algorithm"] == "smoothquant" and side["alphas"] == doc["alphas"]
    # on held-out images the smoothed FP32 model computes what the input does
    x = np.load(EVAL)["images"][:64].astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(MODEL, x), rtol=1e-3, atol=1e-4)
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_smooth_every_alpha_scores_each_alpha_per_activation(tmp_path):
    rc, text, err = run_cli("smooth", MODEL, "--data", CALIB, "--select-samples", "16", "--every-alpha",
                            "-o", tmp_path / "e.onnx", "-q", "--json")
    assert rc == 0, err
    tried = json.loads(text)["tried"]
    assert tried and all(set(t) == {"0.25", "0.5", "0.75", "0.9", "1"} for t in tried.values())


def test_smooth_refuses_bad_alphas_and_existing_outputs(tmp_path):
    exists = tmp_path / "exists.onnx"
    exists.write_bytes(b"x")
    for alphas in ("", "1.5", "-0.1", "abc", "0.5,nan"):
        rc, _, err = run_cli("smooth", MODEL, "--data", CALIB, "--alphas", alphas, "-o", tmp_path / "a.onnx")
        assert rc == 2 and "--alphas" in err and err.count("\n") == 1, (alphas, err)
    rc, _, err = run_cli("smooth", MODEL, "--data", CALIB, "-o", exists)
    assert rc == 2 and exists.read_bytes() == b"x"
    assert not (tmp_path / "a.onnx").exists()
