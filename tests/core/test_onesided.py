"""The one-sided loss: histogram estimates against direct quantization of the data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from trtcal.core import thresholds
from trtcal.core.histogram import Histogram
from trtcal.core.onesided import analyse, quantization_noise

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"


def direct_sqnr(x: np.ndarray, amax: float, qmax: int) -> float:
    x = x.astype(np.float64)
    step = amax / qmax
    q = np.clip(np.rint(x / step), -qmax - 1, qmax) * step  # the real signed/unsigned grids
    return 10 * math.log10(np.sum(x**2) / np.sum((x - q) ** 2))


def relu_batches(seed: int, kind: str):
    rng = np.random.default_rng(seed)
    for i in range(4):
        if kind == "relu":
            yield np.maximum(rng.normal(size=50000) * (1 + 0.3 * i), 0).astype(np.float32)
        elif kind == "relu6":
            yield np.clip(rng.normal(loc=1.0, scale=2.0, size=50000), 0, 6).astype(np.float32)
        else:  # sigmoid
            yield (1 / (1 + np.exp(-rng.normal(scale=3, size=50000)))).astype(np.float32)


@pytest.mark.parametrize("kind", ["relu", "relu6", "sigmoid"])
@pytest.mark.parametrize("seed", [0, 1])
def test_histogram_sqnr_matches_direct_quantization(kind, seed):
    batches = list(relu_batches(seed, kind))
    x = np.concatenate(batches)
    h = Histogram()
    for b in batches:
        h.update(b)
    for amax in (thresholds.entropy2(h).amax, thresholds.minmax(h).amax, thresholds.percentile(h, q=0.99).amax):
        (row,) = analyse({"t": h}, {"t": amax})
        assert row.sqnr_symmetric_db == pytest.approx(direct_sqnr(x, amax, 127), abs=0.05), amax
        assert row.sqnr_unsigned_db == pytest.approx(direct_sqnr(x, amax, 255), abs=0.05), amax


def test_uniform_data_gains_six_db_without_clipping():
    x = np.random.default_rng(3).uniform(0, 1, 400000).astype(np.float32)
    h = Histogram().update(x)
    (row,) = analyse({"u": h}, {"u": float(x.max())}, {"u": "Sigmoid"})
    assert row.gain_db == pytest.approx(20 * math.log10(255 / 127), abs=0.1)  # one more bit: 6.05 dB
    assert (row.codes_symmetric, row.codes_unsigned, row.producer) == (128, 256, "Sigmoid")
    assert row.to_dict()["codes_wasted"] == 128


def test_signed_and_degenerate_tensors_are_not_listed():
    rng = np.random.default_rng(0)
    hists = {"signed": Histogram().update(rng.normal(size=1000)), "zeros": Histogram().update(np.zeros(10)),
             "neg": Histogram().update(-np.abs(rng.normal(size=100)))}
    assert analyse(hists, {n: 1.0 for n in hists}) == []
    assert quantization_noise(hists["zeros"], 1.0, 127) == 0.0


def test_cli_on_the_demo_statistics(tmp_path):
    stats = tmp_path / "s.npz"
    model = EXAMPLES / "fashion_cnn.onnx"
    rc, _, err = run_cli("calibrate", model, "--data", EXAMPLES / "fashion_calib.npz", "-o", tmp_path / "c.cache",
                         "--stats", stats, "-q")
    assert rc == 0, err
    rc, out, err = run_cli("onesided", model, "--stats", stats, "--algorithm", "minmax", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    rows = {r["tensor"]: r for r in doc["one_sided"]}
    assert set(rows) == {"/relu1/Relu_output_0", "/pool1/MaxPool_output_0", "/relu2/Relu_output_0",
                         "/pool2/MaxPool_output_0", "/flatten/Flatten_output_0", "/relu3/Relu_output_0"}
    assert rows["/relu1/Relu_output_0"]["producer"] == "Relu" and rows["/pool1/MaxPool_output_0"]["producer"] == "MaxPool"
    assert all(5 < r["gain_db"] < 6.2 for r in rows.values())  # minmax: no clipping, one bit's worth
    rc, out, err = run_cli("onesided", model, "--stats", stats, "--cache", tmp_path / "c.cache")
    assert rc == 0, err
    assert "6 of 11 tensors are one-sided" in out and "ranges from" in out
    rc, out, err = run_cli("onesided", EXAMPLES / "tiny_cnn.onnx", "--stats", stats)
    assert rc == 2 and "statistics of another model" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- the one-sided threshold


def test_onesided_threshold_beats_entropy2_on_relu_outputs_measured_directly():
    from oracle import entropy_oracle

    rng = np.random.default_rng(7)
    x = np.maximum(rng.normal(size=200000), 0).astype(np.float32)  # half exact zeros
    h = Histogram().update(x)
    e2 = thresholds.entropy2(h, zero_bin="keep")  # REFERENCE's rule: bin 0 as counted
    r = thresholds.onesided(h)
    assert r.diagnostics["one_sided"] and r.amax == r.diagnostics["candidates"][r.diagnostics["chosen"]]
    assert direct_sqnr(x, r.amax, 127) >= direct_sqnr(x, e2.amax, 127) - 0.01
    assert direct_sqnr(x, r.amax, 127) > direct_sqnr(x, e2.amax, 127) + 3  # the zero spike cost entropy2 dearly
    # entropy2's default rule (bin 0 := bin 1) escapes the spike; onesided is no worse than it
    e2n = thresholds.entropy2(h)
    assert direct_sqnr(x, e2n.amax, 127) > direct_sqnr(x, e2.amax, 127) + 3
    assert direct_sqnr(x, r.amax, 127) >= direct_sqnr(x, e2n.amax, 127) - 0.01
    # the zero-free KL search is the literal oracle's on the histogram without the exact zeros
    counts = h.counts.copy()
    counts[0] -= h.zeros
    i, _ = entropy_oracle(counts.tolist())
    assert r.diagnostics["candidates"]["kl-nonzero"] == pytest.approx((i + 0.5) * h.width, rel=1e-12)


def test_onesided_threshold_leaves_signed_tensors_to_entropy2():
    h = Histogram().update(np.random.default_rng(1).normal(size=50000).astype(np.float32))
    assert thresholds.onesided(h).amax == thresholds.entropy2(h).amax
    assert thresholds.onesided(Histogram().update(np.zeros(10))).amax == 0.0
