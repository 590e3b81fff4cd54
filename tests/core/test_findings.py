"""Findings about calibrated ranges, against direct counts over the data."""

from __future__ import annotations

import numpy as np
import pytest

from trtcal.core import thresholds
from trtcal.core.findings import clipped_fraction, find
from trtcal.core.histogram import Histogram


def hist_of(*batches) -> Histogram:
    h = Histogram()
    for b in batches:
        h.update(np.asarray(b, np.float32))
    return h


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kind", ["normal", "relu", "laplace", "spiky"])
def test_clipped_fraction_matches_a_direct_count(seed, kind):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(size=20000) * (1 + i) for i in range(3)]  # growth re-bins on the way
    if kind == "relu":
        batches = [np.maximum(b, 0) for b in batches]
    elif kind == "laplace":
        batches = [rng.laplace(size=20000) for _ in range(3)]
    elif kind == "spiky":
        batches = [np.where(rng.random(20000) < 0.6, -0.81, rng.normal(size=20000)) for _ in range(3)]
    x = np.concatenate(batches).astype(np.float32)
    h = hist_of(*batches)
    for amax in (thresholds.entropy2(h).amax, thresholds.percentile(h, q=0.99).amax, 0.5, 1e-3):
        direct = np.mean(np.abs(x.astype(np.float64)) > amax)
        # exact up to the values of the one bin that holds amax
        bin_share = h.counts[min(int(amax / h.width), h.bins - 1)] / h.count
        assert abs(clipped_fraction(h, amax) - direct) <= bin_share + 1e-12, amax
    assert clipped_fraction(h, h.abs_max * 1.01) == 0.0


def test_findings_kinds():
    rng = np.random.default_rng(0)
    hists = {
        "relu": hist_of(np.maximum(rng.normal(size=5000), 0)),
        "signed": hist_of(rng.normal(size=5000)),
        "zeros": hist_of(np.zeros(100)),
        "nan": hist_of(np.array([1.0, np.nan, np.inf, -2.0])),
    }
    results = {n: thresholds.minmax(h) for n, h in hists.items()}
    got = {(f.tensor, f.kind) for f in find(hists, results)}
    assert got == {("relu", "one-sided"), ("zeros", "degenerate"), ("nan", "nan-inf")}
    results["signed"] = thresholds.percentile(hists["signed"], q=0.9)  # keeps 90%: about 10% clipped
    clipped = [f for f in find(hists, results) if f.kind == "clipped"]
    assert [f.tensor for f in clipped] == ["signed"] and clipped[0].value == pytest.approx(0.1, abs=0.01)
    nan = next(f for f in find(hists, results) if f.kind == "nan-inf")
    assert nan.value == 2 and "1 NaN" in nan.message


def test_amax_below_the_smallest_value_is_every_value_clipped():
    rng = np.random.default_rng(1)
    pos, neg = rng.uniform(4, 16, 5000), -rng.uniform(0.15, 0.93, 5000)
    hists = {"pos": hist_of(pos), "neg": hist_of(neg), "signed": hist_of(rng.normal(size=5000))}
    from trtcal.core.thresholds import ThresholdResult
    results = {"pos": ThresholdResult(3.9, "entropy2"), "neg": ThresholdResult(0.14, "entropy2"),
               "signed": ThresholdResult(1e-4, "entropy2")}
    got = {f.tensor: f for f in find(hists, results)}
    for name, x in (("pos", pos), ("neg", neg)):
        assert np.all(np.abs(x) > results[name].amax)  # the direct count: every value is clipped
        assert got[name].kind == "all-clipped" and got[name].value == 1.0
        assert "every value clipped" in got[name].message
    assert got["signed"].kind == "clipped"  # values near zero survive: the ordinary finding
    results["pos"] = ThresholdResult(4.1, "entropy2")  # above the smallest value: not all clipped
    assert {f.kind for f in find(hists, results) if f.tensor == "pos"} == {"one-sided", "clipped"}
