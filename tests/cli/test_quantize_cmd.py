"""``trtcal quantize`` on the command line: what it prints and writes, --json, and refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from conftest import run_cli

from trtcal.cache import read
from trtcal.onnx.qdq import read_qdq_scales

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL, CALIB, EVAL = EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", EXAMPLES / "fashion_eval.npz"


def test_quantize_writes_model_cache_and_stats_and_prints_the_summary(tmp_path):
    out, cache, stats = tmp_path / "m.int8.onnx", tmp_path / "m.cache", tmp_path / "m.npz"
    rc, text, err = run_cli("quantize", MODEL, "--data", CALIB, "--eval-data", EVAL, "-o", out, "--cache", cache,
                            "--stats", stats, "-q")
    assert rc == 0, err
    assert out.exists() and cache.exists() and stats.exists() and Path(str(cache) + ".trtcal.json").exists()
    assert "held out: 256 samples from" in text and "entropy2 (TensorRT's default)" in text
    qdq, trt = read_qdq_scales(onnx.load(out)), read(cache)
    side = json.loads(Path(str(cache) + ".trtcal.json").read_text())
    shifted = {v["reads_as"]: n for n, v in side["shift"]["tensors"].items()} if side.get("shift", {}).get("kept") else {}
    for name in qdq.names():  # the model and the cache hold the same ranges (a shifted tensor: half of it)
        want = trt.amax(shifted.get(name, name)) / (2 if name in shifted else 1)
        assert abs(want / qdq.amax(name) - 1) < 1e-6


def test_quantize_json(tmp_path):
    out = tmp_path / "m.int8.onnx"
    rc, text, err = run_cli("quantize", MODEL, "--data", CALIB, "-o", out, "--cache", tmp_path / "c",
                            "--stats", tmp_path / "s.npz", "--json", "--max-float", "1")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["model"] == str(out) and len(doc["float_tensors"]) <= 1
    assert doc["summary"]["samples"] == 96 and doc["summary"]["fallback"]["max_float"] == 1
    assert set(doc["ranges"]["tensors"]) >= set(doc["float_tensors"])
    assert doc["chosen"] in doc["selection_sqnr_db"]


def _common(tmp_path) -> list:
    return ["--data", CALIB, "--eval-data", EVAL, "--cache", tmp_path / "c", "--stats", tmp_path / "s.npz", "--force"]


@pytest.mark.parametrize("option, bad", [("--weight-rounding", "0"), ("--bias-correction", "yes"), ("--effort", "quick")])
def test_quantize_option_values_are_checked(option, bad):
    rc, _, err = run_cli("quantize", MODEL, "--data", CALIB, option, bad)
    assert rc == 2 and option in err and "Traceback" not in err


def test_quantize_weight_rounding_option(tmp_path):
    common = _common(tmp_path)
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "n.onnx", "--weight-rounding", "nearest", *common)
    assert rc == 0, err
    assert "rounding nearest" in text and "GPTQ" not in text
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "g.onnx", "--json", *common)
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["summary"]["weight_rounding"].startswith("gptq") and doc["chosen"].endswith(" + gptq")
    assert doc["metadata"]["weight_rounding"]["kept"] is True


def test_quantize_bias_correction_option(tmp_path):
    common = _common(tmp_path)
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "b.onnx", "--bias-correction", "on", *common)
    assert rc == 0, err
    assert re.search(r"biases corrected for the mean output error of \d+ layers", text)
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "b.onnx", "--bias-correction", "on", "--json", *common)
    doc = json.loads(text)
    record = doc["metadata"]["bias_correction"]
    assert record["kept"] and record["layers"] >= 1 and "deltas" not in record
    assert doc["summary"]["bias_correction"].endswith("layers (in the Q/DQ model only)")
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "n.onnx", "--bias-correction", "off", *common)
    assert rc == 0 and "biases corrected" not in text


def test_quantize_effort_option(tmp_path):
    common = _common(tmp_path)
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "f.onnx", "--effort", "fast", *common)
    assert rc == 0, err
    assert "rounding nearest" in text and "GPTQ" not in text and "searching per-channel" not in text
    rc, text, err = run_cli("quantize", MODEL, "-o", tmp_path / "g.onnx", "--effort", "fast", "--weight-rounding",
                            "gptq", "--json", *common)
    assert rc == 0, err
    assert json.loads(text)["metadata"]["weight_rounding"]["kept"] is True


def test_quantize_refuses_without_overwriting(tmp_path):
    out = tmp_path / "m.int8.onnx"
    out.write_bytes(b"keep")
    rc, text, err = run_cli("quantize", MODEL, "--data", CALIB, "-o", out, "--cache", tmp_path / "c",
                            "--stats", tmp_path / "s.npz")
    assert rc == 2 and "already exists" in err and "Traceback" not in err
    assert out.read_bytes() == b"keep" and not (tmp_path / "c").exists()
    rc, _, err = run_cli("quantize", MODEL, "--data", CALIB, "--max-float", "2", "--target-sqnr", "30")
    assert rc == 2 and "not allowed with" in err
    rc, _, err = run_cli("quantize", MODEL, "--data", tmp_path / "missing.npz", "-o", tmp_path / "x.onnx",
                         "--cache", tmp_path / "c", "--stats", tmp_path / "s.npz")
    assert rc == 2 and "missing.npz" in err and err.count("\n") == 1


def test_quantize_smooths_transformers_by_default_and_not_cnns(tmp_path):
    import numpy as np
    from transformer_models import encoder_block, feed

    onnx.save(encoder_block(), tmp_path / "enc.onnx")
    batches = [feed(4) for _ in range(5)]
    np.savez(tmp_path / "enc.npz", **{k: np.concatenate([b[k] for b in batches]) for k in batches[0]})

    def run(*extra):
        return run_cli("quantize", tmp_path / "enc.onnx", "--data", tmp_path / "enc.npz", "-o", tmp_path / "enc.int8.onnx",
                       "--cache", tmp_path / "enc.cache", "--stats", tmp_path / "e.npz", "--smoothed",
                       tmp_path / "enc.smooth.onnx", "--force", "--select-samples", "8", *extra)

    rc, text, err = run()
    assert rc == 0, err
    assert "smoothquant (auto): a transformer, 4 activation(s) feed weighted MatMul/Gemm layers" in text
    # judged on the 8 samples after the 8 selection samples, inside the one batch of 20 (once sliced to none)
    assert "output SQNR on 8 calibration samples after the selection samples" in text
    assert re.search(r"smoothquant \(auto\): \d activation\(s\) smoothed; .*: kept the (original|smoothed) model", text)
    rc, text, err = run("--smoothquant", "off")
    assert rc == 0 and "smoothquant" not in text, err
    rc, text, err = run("--smoothquant", "sometimes")
    assert rc == 2 and "--smoothquant" in err and "Traceback" not in err
    rc, text, err = run_cli("quantize", MODEL, "--data", CALIB, "--eval-data", EVAL, "-o", tmp_path / "f.onnx",
                            "--cache", tmp_path / "f.cache", "--stats", tmp_path / "f.npz")
    assert rc == 0 and "smoothquant" not in text, err
