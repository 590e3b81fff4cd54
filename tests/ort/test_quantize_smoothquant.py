"""``quantize(..., smoothquant=True)``: both models quantized, the one that scores better on unseen
calibration samples kept, and the smoothed FP32 model written only when it wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from constant_weights import as_constant_nodes
from transformer_models import encoder_block, feed, with_outlier_channel

from trtcal.cache import read
from trtcal.onnx.qdq import read_qdq_scales
from trtcal.ort.quantize import quantize

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"


def _data(path, samples, seed):
    rng = np.random.default_rng(seed)
    parts = [feed(4) for _ in range(samples // 4)]
    x = np.concatenate([p["x"] for p in parts]) * rng.uniform(0.5, 1.5)
    np.savez(path, x=x.astype(np.float32), mask=np.concatenate([p["mask"] for p in parts]))
    return path


def _run(model, data):
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, data)[0]


def test_smoothquant_keeps_the_better_model_and_writes_the_smoothed_one_only_if_it_wins(tmp_path):
    model = tmp_path / "enc.onnx"
    onnx.save(with_outlier_channel(encoder_block()), model)
    calib, held = _data(tmp_path / "calib.npz", 48, 0), _data(tmp_path / "eval.npz", 16, 1)
    out, smoothed = tmp_path / "enc.int8.onnx", tmp_path / "enc.smooth.onnx"
    r = quantize(model, calib, eval_data=held, output=out, cache=tmp_path / "enc.cache", stats=tmp_path / "s.npz",
                 select_samples=16, eval_samples=16, batch_size=8, smoothquant=True, smoothed=smoothed, progress=False)
    sq = r.smoothquant
    assert sq["smoothed"] > 0 and set(sq["sqnr_db"]) == {"original", "smoothed"}
    assert sq["judged_on"].startswith("16 calibration samples after the selection samples")
    best = max(sq["sqnr_db"], key=sq["sqnr_db"].get)
    assert sq["kept"] == best == "smoothed"  # the outlier channel: measured 18.9 dB original, 32.7 smoothed
    assert sq["sqnr_db"]["smoothed"] > sq["sqnr_db"]["original"] + 3
    assert smoothed.exists() == (best == "smoothed")
    side = json.loads(Path(str(out) + ".trtcal.json").read_text())
    qdq, cache = read_qdq_scales(onnx.load(out)), read(tmp_path / "enc.cache")
    for name in qdq.names():  # the cache holds the written model's ranges, by the same names
        assert abs(cache.amax(name) / qdq.amax(name) - 1) < 1e-6
    if best == "smoothed":
        data = dict(np.load(held))
        np.testing.assert_allclose(_run(smoothed, data), _run(model, data), rtol=1e-3, atol=1e-4)
        assert side["smoothquant"]["alphas"] == sq["alphas"]


def test_smoothquant_that_loses_writes_no_smoothed_model(tmp_path):
    """The Fashion CNN: smoothing its two Gemm inputs fits the 64 selection samples and loses on
    the next 64 (measured: 41.4 dB original, 34.5 smoothed), so the original is kept."""
    out, smoothed = tmp_path / "f.int8.onnx", tmp_path / "f.smooth.onnx"
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz",
                 eval_data=EXAMPLES / "fashion_eval.npz", output=out, cache=tmp_path / "f.cache",
                 stats=tmp_path / "f.npz", eval_samples=64, smoothquant=True, smoothed=smoothed, progress=False)
    assert r.smoothquant["kept"] == "original" and not smoothed.exists()
    assert r.smoothquant["sqnr_db"]["original"] > r.smoothquant["sqnr_db"]["smoothed"]
    assert out.exists() and "smoothquant" not in json.loads(Path(str(out) + ".trtcal.json").read_text())


def test_the_smoothed_model_must_win_by_the_margin(tmp_path, monkeypatch):
    """A gain within float rounding of the search keeps the original (one file fewer to build from)."""
    import trtcal.ort.quantize as q

    model = tmp_path / "enc.onnx"
    onnx.save(with_outlier_channel(encoder_block()), model)
    calib = _data(tmp_path / "calib.npz", 32, 0)
    kept = {}
    for gain in (0.05, 0.2):
        monkeypatch.setattr(q, "_validation_scores",
                            lambda *a, gain=gain, **k: ({"original": 20.0, "smoothed": 20.0 + gain}, "stub samples"))
        smoothed = tmp_path / f"s{gain}.smooth.onnx"
        r = quantize(model, calib, output=tmp_path / f"o{gain}.onnx", cache=tmp_path / f"c{gain}.cache",
                     stats=tmp_path / f"s{gain}.npz", select_samples=8, eval_samples=8, batch_size=8,
                     smoothed=smoothed, progress=False)
        assert r.smoothquant["mode"] == "auto"
        kept[gain] = (r.smoothquant["kept"], smoothed.exists())
    assert q.SMOOTH_MARGIN_DB == 0.1
    assert kept == {0.05: ("original", False), 0.2: ("smoothed", True)}


def test_a_search_that_gained_little_quantizes_no_smoothed_copy(tmp_path, monkeypatch):
    """Under SMOOTH_MIN_SEARCH_GAIN_DB on the selection samples the smoothed copy is not quantized
    (PP-OCRv4 rec: +0.16 dB in the search, +0.01 when judged)."""
    import trtcal.ort.quantize as q
    import trtcal.ort.smoothquant as sq
    from trtcal.ort.smoothquant import SmoothResult

    model = tmp_path / "enc.onnx"
    onnx.save(with_outlier_channel(encoder_block()), model)
    calib = _data(tmp_path / "calib.npz", 32, 0)
    calls = []
    real = q._quantize

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    def small_gain(model_path, data, *, output, **k):
        Path(output).write_bytes(Path(model_path).read_bytes())
        return Path(output), SmoothResult(None, {"ln": 0.5}, {"ln": "ln"}, {}, 20.0, 20.3, 120.0)

    monkeypatch.setattr(q, "_quantize", counting)
    monkeypatch.setattr(sq, "smooth", small_gain)
    smoothed = tmp_path / "enc.smooth.onnx"
    r = quantize(model, calib, output=tmp_path / "o.onnx", cache=tmp_path / "c.cache", stats=tmp_path / "s.npz",
                 select_samples=8, eval_samples=8, batch_size=8, smoothed=smoothed, progress=False)
    assert q.SMOOTH_MIN_SEARCH_GAIN_DB == 0.5
    assert calls == [model]  # the original only
    assert r.smoothquant["kept"] == "original" and not smoothed.exists()
    assert r.smoothquant["search_gain_db"] == pytest.approx(0.3)
    assert "under 0.5" in r.smoothquant["reason"]


@pytest.mark.parametrize("quick, quantized, kept", [
    ((20.0, 25.0), ["smoothed"], "smoothed"),  # decisive for the smoothed model: the original is not quantized
    ((25.0, 20.0), ["original"], "original"),  # decisive against it: the smoothed copy is not quantized
    ((20.0, 21.0), ["original", "smoothed"], "smoothed"),  # close: both in full, judged again
])
def test_a_decisive_quick_judge_quantizes_only_the_better_model(tmp_path, monkeypatch, quick, quantized, kept):
    """The search's own two Q/DQ models are judged first; SMOOTH_DECISIVE_DB apart, only the better
    one is quantized in full. Only the kept model is scored on the held-out samples."""
    import trtcal.ort.quantize as q

    model = tmp_path / "enc.onnx"
    onnx.save(with_outlier_channel(encoder_block()), model)
    calib = _data(tmp_path / "calib.npz", 32, 0)
    judged = iter([({"original": quick[0], "smoothed": quick[1]}, "quick"),
                   ({"original": 20.0, "smoothed": 22.0}, "full")])
    monkeypatch.setattr(q, "_validation_scores", lambda *a, **k: next(judged))
    runs = []
    real = q._quantize

    def recording(path, *a, **k):
        r = real(path, *a, **k)
        runs.append(("smoothed" if Path(path).name.endswith(".smooth.onnx") else "original", r))
        return r

    monkeypatch.setattr(q, "_quantize", recording)
    smoothed = tmp_path / "enc.smooth.onnx"
    r = quantize(model, calib, output=tmp_path / "o.onnx", cache=tmp_path / "c.cache", stats=tmp_path / "s.npz",
                 select_samples=8, eval_samples=8, batch_size=8, smoothed=smoothed, progress=False)
    assert q.SMOOTH_DECISIVE_DB == 3.0
    assert [label for label, _ in runs] == quantized
    assert r.smoothquant["kept"] == kept and smoothed.exists() == (kept == "smoothed")
    assert r.smoothquant["judged_on"] == ("quick" if len(quantized) == 1 else "full")
    assert ("search's ranges" in r.smoothquant["judged_with"]) == (len(quantized) == 1)
    for _, result in runs:  # the held-out summary of the kept model only
        assert (result.summary is not None) == (result is r)
    assert r.summary["sqnr_db"] == r.summary["sqnr_db"]  # measured (not NaN)


def test_a_model_with_constant_weights_is_smoothed_and_recorded_as_given(tmp_path):
    """Weights in Constant nodes (as paddle2onnx writes them): quantize works on the initializer form,
    and the Q/DQ model's and the smoothed model's provenance both name the model given."""
    import hashlib

    model = tmp_path / "enc.onnx"
    onnx.save(as_constant_nodes(with_outlier_channel(encoder_block())), model)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    calib, held = _data(tmp_path / "calib.npz", 48, 0), _data(tmp_path / "eval.npz", 16, 1)
    out, smoothed = tmp_path / "enc.int8.onnx", tmp_path / "enc.smooth.onnx"
    r = quantize(model, calib, eval_data=held, output=out, cache=tmp_path / "enc.cache", stats=tmp_path / "s.npz",
                 select_samples=16, eval_samples=16, batch_size=8, smoothquant=True, smoothed=smoothed, progress=False)
    assert r.smoothquant["kept"] == "smoothed" and smoothed.exists()
    for side in (Path(str(out) + ".trtcal.json"), Path(str(smoothed) + ".trtcal.json")):
        record = json.loads(side.read_text())
        assert record["model"] == str(model) and record["model_sha256"] == digest, side
    assert json.loads(Path(str(out) + ".trtcal.json").read_text())["smoothquant"]["original_model"] == str(model)
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
