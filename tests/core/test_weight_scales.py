"""Per-channel weight ranges (max, mse, given scales) and their way into the Q/DQ writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from trtcal.core.errors import TrtcalError
from trtcal.core.weight_scales import channel_amax
from trtcal.onnx.qdq import write_qdq

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"


def slow_mse_amax(row: np.ndarray, steps: int = 100, lo: float = 0.5) -> float:
    """One channel, one candidate at a time, in plain Python floats where it matters."""
    peak = float(np.max(np.abs(row)))
    best, best_err = peak, None
    for f in np.linspace(1.0, lo, steps):
        amax = peak * f
        s = float(np.float32(amax / 127.0)) if amax > 0 else 1.0
        err = sum((float(v) - max(-127.0, min(127.0, float(np.rint(float(v) / s)))) * s) ** 2 for v in row)
        if best_err is None or err < best_err:
            best, best_err = amax, err
    return best


def weights_of(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_max_and_mse_against_a_slow_reference():
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(6, 16, 3, 3)).astype(np.float32)  # long tails: the squared error favours clipping
    w[4] = 0.0  # an all-zero channel
    assert np.array_equal(channel_amax(w, 0, "max"), np.abs(w).reshape(6, -1).max(1))
    got = channel_amax(w, 0, "mse")
    want = [slow_mse_amax(w[c].ravel()) for c in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    peak = np.abs(w).reshape(6, -1).max(1)
    assert got[4] == 0.0 and np.all(got <= peak) and np.any(got < peak)
    big = rng.laplace(size=(2, 4096))  # many weights per channel: the tail is worth clipping
    assert np.all(channel_amax(big, 0, "mse") < np.abs(big).max(1))
    assert channel_amax(w.transpose(1, 0, 2, 3), 1, "mse") == pytest.approx(got)  # the axis is respected
    with pytest.raises(TrtcalError, match="weight method 'kl'"):
        channel_amax(w, 0, "kl")


def test_writer_uses_mse_and_given_scales():
    model = onnx.load(str(MODEL))
    ranges = {"images": 2.0, "/pool1/MaxPool_output_0": 3.0, "/flatten/Flatten_output_0": 3.0,
              "/relu3/Relu_output_0": 4.0}
    plain = write_qdq(model, ranges)
    mse = write_qdq(model, ranges, weight_method="mse")
    w = weights_of(model)
    for q in mse.weights:
        dq = next(n for n in mse.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(q.name))
        scale = weights_of(mse.model)[dq.input[1]]
        want = (channel_amax(w[q.name], q.axis, "mse") / 127.0).astype(np.float32)
        want[want < np.finfo(np.float32).tiny] = 1.0
        assert np.array_equal(scale, want) and q.source == "weights:mse"
    assert {q.source for q in plain.weights} == {"weights:max"}
    # the whole model: mse weights are closer to the float weights than max weights
    errs = {}
    for name, res in (("max", plain), ("mse", mse)):
        inits = weights_of(res.model)
        total = 0.0
        for q in res.weights:
            dq = next(n for n in res.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(q.name))
            shape = [1] * w[q.name].ndim
            shape[q.axis] = -1
            deq = inits[dq.input[0]].astype(np.float64) * inits[dq.input[1]].reshape(shape)
            total += float(((deq - w[q.name]) ** 2).sum())
        errs[name] = total
    assert errs["mse"] < errs["max"]
    # given scales win, bit for bit
    conv1 = np.full(16, 0.01, np.float32)
    given = write_qdq(model, ranges, weight_scales={"conv1.weight": conv1})
    dq = next(n for n in given.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("conv1.weight"))
    assert np.array_equal(weights_of(given.model)[dq.input[1]], conv1)
    with pytest.raises(TrtcalError, match=r"weight 'conv1.weight': 3 scales given for 16 channels"):
        write_qdq(model, ranges, weight_scales={"conv1.weight": np.ones(3, np.float32)})
    with pytest.raises(TrtcalError, match="no weight of a Conv.*'nope'"):
        write_qdq(model, ranges, weight_scales={"nope": np.ones(3, np.float32)})
    # a weight whose layer stays in float this time (no range for its input) is not an error
    partial = write_qdq(model, {k: v for k, v in ranges.items() if k != "images"}, weight_scales={"conv1.weight": conv1})
    assert "conv1.weight" not in {q.name for q in partial.weights}


def test_cli_weights_options_and_eq_scales(tmp_path):
    calib = EXAMPLES / "fashion_calib.npz"
    cache = tmp_path / "eq.cache"
    rc, out, err = run_cli("calibrate", MODEL, "--data", calib, "--algorithm", "eq", "--eq-samples", "32",
                           "--eq-steps", "8", "-o", cache, "-q")
    assert rc == 0, err
    scales_file = tmp_path / "eq.cache.weights.npz"
    assert f"wrote {scales_file}" in out
    with np.load(scales_file, allow_pickle=False) as npz:
        eq_scales = {k: npz[k] for k in npz.files}
    assert set(eq_scales) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    q = tmp_path / "q.onnx"
    rc, out, err = run_cli("qdq", MODEL, "--cache", cache, "--weight-scales", scales_file, "-o", q)
    assert rc == 0, err
    m = onnx.load(str(q))
    inits = weights_of(m)
    for name, s in eq_scales.items():
        dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(name))
        assert np.array_equal(inits[dq.input[1]], s.astype(np.float32))
    # the fallback search leaves layers in float one at a time: EQ's scales for those are not an error
    rc, out, err = run_cli("fallback", MODEL, "--cache", cache, "--weight-scales", scales_file, "--data",
                           EXAMPLES / "fashion_eval.npz", "--samples", "64", "--max-float", "1",
                           "-o", tmp_path / "fb.onnx", "-q")
    assert rc == 0, err
    fb = onnx.load(str(tmp_path / "fb.onnx"))
    kept = {n.input[0].rsplit("_quantized", 1)[0] for n in fb.graph.node if n.op_type == "DequantizeLinear"}
    assert len(set(eq_scales) & kept) >= 3
    for name in set(eq_scales) & kept:  # the layers still quantized carry EQ's scales
        dq = next(n for n in fb.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith(name))
        assert np.array_equal(weights_of(fb)[dq.input[1]], eq_scales[name].astype(np.float32))
    rc, out, err = run_cli("qdq", MODEL, "--cache", cache, "--weights", "mse", "-o", tmp_path / "m.onnx", "--json")
    assert rc == 0, err and '"weights:mse"' in out
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    rc, _, err = run_cli("qdq", MODEL, "--cache", cache, "--weight-scales", bad, "-o", tmp_path / "b.onnx")
    assert rc == 2 and str(bad) in err and "Traceback" not in err and not (tmp_path / "b.onnx").exists()
    np.savez(bad, **{"conv1.weight": np.arange(8)})
    rc, _, err = run_cli("qdq", MODEL, "--cache", cache, "--weight-scales", bad, "-o", tmp_path / "b.onnx")
    assert rc == 2 and "expected floats" in err
