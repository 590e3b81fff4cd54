"""Thresholds: entropy2 against the literal GTC oracle, the real-cache rule, the other methods
against independent references, degenerate tensors and option checks."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import entropy_oracle, mse_reference, neighbour_rule

from trtcal.core import thresholds as T
from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram, histogram_of

#: Where the fast path and the oracle choose different candidates, the oracle's KL values at the
#: two must be equal within this relative tolerance (floating-point near-ties between two
#: summation orders; the fast path treats values within 1e-12 as ties and takes the first).
TIE_RTOL = 1e-12


def hist_from_counts(counts, width=1.0) -> Histogram:
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    ints = np.array([counts.size, 1, n, 0, 0, 0, 0, max(counts.size, 1 << 22), 0], dtype=np.int64)
    top = float(np.flatnonzero(counts)[-1] + 1) * width if n else 0.0
    floats = np.array([width, 0.0, top, 0.0, 0.0, 0.0])
    return Histogram.from_arrays({"counts": counts, "ints": ints, "floats": floats})


def assert_same_choice(counts, levels, zero_bin="keep"):
    searched = [int(c) for c in counts]
    if zero_bin == "neighbour":
        searched = neighbour_rule(searched)
    chosen, oracle_kl = entropy_oracle(searched, levels)
    fast_kl, cands = T.kl_curve(np.asarray(searched, dtype=np.int64), levels)
    oracle_kl = np.array(oracle_kl)
    assert np.array_equal(np.isinf(fast_kl), np.isinf(oracle_kl))
    finite = np.isfinite(oracle_kl)
    assert np.allclose(fast_kl[finite], oracle_kl[finite], rtol=1e-9, atol=1e-12)
    bits = int(math.log2(levels)) + 1
    res = T.entropy2(hist_from_counts(counts), bits=bits, zero_bin=zero_bin)
    got = res.diagnostics["bins_kept"]
    if got != chosen:
        a, b = oracle_kl[got - cands[0]], oracle_kl[chosen - cands[0]]
        assert abs(a - b) <= TIE_RTOL * max(abs(a), abs(b)), (got, chosen, a, b)
    assert res.amax == (got + 0.5) * 1.0


@st.composite
def histograms(draw, levels, max_extra, min_extra=0):
    n = draw(st.integers(levels + min_extra, levels + max_extra))
    kind = draw(st.sampled_from(["dense", "sparse", "spiky", "one_bin", "mostly_zero", "huge", "decay", "tail",
                                 "far", "two_bins"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "dense":
        h = rng.integers(0, 1000, n)
    elif kind == "sparse":
        h = np.where(rng.random(n) < draw(st.floats(0.01, 0.3)), rng.integers(1, 50, n), 0)
    elif kind == "spiky":
        h = rng.integers(0, 3, n)
        h[rng.integers(0, n, 3)] += 10**draw(st.integers(2, 9))
    elif kind == "one_bin":
        h = np.zeros(n, np.int64)
        h[draw(st.integers(0, n - 1))] = draw(st.integers(1, 10**12))
    elif kind == "mostly_zero":
        h = np.where(rng.random(n) < 0.05, rng.integers(1, 5, n), 0)
        h[0] += 10**draw(st.integers(3, 12))
    elif kind == "huge":
        h = rng.integers(0, 10**15, n)
    elif kind == "decay":
        h = (10**draw(st.integers(2, 13)) * np.exp(-np.arange(n) / draw(st.floats(1, n)))).astype(np.int64)
    elif kind == "far":  # every value far from zero (sigmoid-like, [4, 16]): empty bins below
        h = rng.integers(0, 1000, n)
        h[:draw(st.integers(1, n - 1))] = 0
    elif kind == "two_bins":  # two spikes, the first one alone in many candidates' kept bins
        h = np.zeros(n, np.int64)
        a = draw(st.integers(0, n - 2))
        h[a], h[draw(st.integers(a + 1, n - 1))] = rng.integers(1, 10**9, 2)
    else:  # a long empty tail with a few outliers at the end
        h = (1000 * np.exp(-np.arange(n) / 20)).astype(np.int64)
        h[-draw(st.integers(1, min(5, n)))] = draw(st.integers(1, 100))
    h = np.asarray(h, dtype=np.int64)
    if h.sum() == 0:
        h[-1] = 1
    return h


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_entropy_matches_oracle_small_levels(data):
    levels = data.draw(st.sampled_from([2, 4, 8, 16, 32]))
    assert_same_choice(data.draw(histograms(levels, 3 * levels + 20)), levels, data.draw(st.sampled_from(T.ZERO_BIN_RULES)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_entropy_matches_oracle_128_levels(data):
    assert_same_choice(data.draw(histograms(128, 200)), 128, data.draw(st.sampled_from(T.ZERO_BIN_RULES)))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_entropy_matches_oracle_2048_bins_generated(data):
    assert_same_choice(data.draw(histograms(128, 1920, 1920)), 128, data.draw(st.sampled_from(T.ZERO_BIN_RULES)))


@pytest.mark.parametrize("zero_bin", ["keep", "neighbour"])
@pytest.mark.parametrize("case", ["gaussian", "spiky"])
def test_entropy_matches_oracle_full_2048_bins(case, zero_bin):
    rng = np.random.default_rng(11)
    if case == "gaussian":
        counts = histogram_of(rng.standard_normal(200_000).astype(np.float32)).counts
    else:
        counts = histogram_of(rng.laplace(size=50_000).astype(np.float32) ** 3).counts
        counts[[3, 700, 1500]] += [10**9, 10**6, 10**3]
    assert_same_choice(counts, 128, zero_bin)


def scale_hex(result):
    return format(int(result.scale().view(np.uint32)), "x")


def test_real_cache_rule_bit_exact():
    m = (np.float32(1) - np.float32(0.4465)) / np.float32(0.2010)
    x = np.linspace(0, 1, 200_001, dtype=np.float32) * m
    x[-1] = m
    h = histogram_of(x)
    for zero_bin in T.ZERO_BIN_RULES:  # no spike of zeros: both rules reproduce TensorRT's value
        ent = T.entropy2(h, zero_bin=zero_bin)
        assert ent.diagnostics["bins_kept"] == 2048  # the KL kept every bin
        assert ent.amax == float(m) * 4097 / 4096
        assert scale_hex(ent) == "3cb1ab7d"
    assert scale_hex(T.minmax(h)) == "3cb1a063"
    raw = T.entropy2(histogram_of(np.tile(np.arange(256, dtype=np.float32), 50)))
    assert scale_hex(raw) == "4000890a"


def direct_sqnr_db(x, amax, qmax=127):
    s = amax / qmax
    q = np.clip(np.round(x / s), -qmax, qmax) * s
    return 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - q) ** 2))


def test_zero_bin_rules_on_a_mostly_zero_relu6_tensor():
    # a ReLU6 output that is 84% exact zeros, as in EfficientNet-Lite0
    x = np.clip(np.random.default_rng(3).normal(-1, 1, 400_000) * 3, 0, 6).astype(np.float32)
    h = histogram_of(x)
    keep, neighbour = T.entropy2(h, zero_bin="keep"), T.entropy2(h, zero_bin="neighbour")
    assert keep.diagnostics["bins_kept"] == 128  # the collapse: the zero spike decides, amax ~ max/16
    assert neighbour.diagnostics["bins_kept"] == 2048 and neighbour.diagnostics["zero_bin"] == "neighbour"
    assert T.entropy2(h).amax == neighbour.amax  # the default
    assert direct_sqnr_db(x, neighbour.amax) > direct_sqnr_db(x, keep.amax) + 10
    with pytest.raises(TrtcalError, match="zero_bin"):
        T.entropy2(h, zero_bin="drop")


def test_zero_bin_rules_agree_without_exact_zeros():
    rng = np.random.default_rng(5)
    for _ in range(3):
        h = histogram_of(rng.standard_normal(100_000).astype(np.float32))
        assert T.entropy2(h, zero_bin="keep").amax == T.entropy2(h, zero_bin="neighbour").amax
    only_bin0 = np.zeros(2048, np.int64)
    only_bin0[0] = 10  # nothing outside bin 0: the neighbour rule falls back to the counts as they are
    assert T.entropy2(hist_from_counts(only_bin0)).diagnostics["bins_kept"] == 128


@pytest.mark.parametrize("low,high", [(4.0, 16.0), (0.15, 0.93), (1000.0, 1001.0)])
def test_entropy_skips_single_bin_candidates_on_tensors_far_from_zero(low, high):
    # values all far from zero (a conv of positive inputs, a landmark regressor, token counts): the
    # first candidate that keeps a non-empty bin keeps exactly one, KL 0 trivially; TensorRT's
    # cache keeps the best candidate with more than one non-empty bin (REFERENCE.md section 1)
    x = np.random.default_rng(7).uniform(low, high, 200_000).astype(np.float32)
    h = histogram_of(x)
    first = int(np.flatnonzero(h.counts)[0]) + 1
    kl, cands = T.kl_curve(h.counts, 128)
    assert kl[first - cands[0]] == 0.0  # the degenerate candidate the literal first minimum takes
    r = T.entropy2(h)
    assert r.diagnostics["single_bin"] >= 1 and r.diagnostics["bins_kept"] > first
    assert r.diagnostics["bins_kept"] == entropy_oracle(neighbour_rule(h.counts.tolist()))[0]
    assert np.mean(x > r.amax) < 0.01  # not 94-100% clipped
    # onesided's own KL searches follow the same rule
    assert np.mean(x > T.onesided(h).amax) < 0.01


def test_entropy_first_minimum_and_bit_widths():
    counts = np.zeros(2048, np.int64)
    counts[5] = 1000  # every candidate has KL 0: the first (128) wins
    r = T.entropy2(hist_from_counts(counts))
    assert r.diagnostics["bins_kept"] == 128 and r.diagnostics["index"] == 0
    assert len(r.diagnostics["kl"]) == len(r.diagnostics["candidates"]) == 1921
    h = histogram_of(np.random.default_rng(0).standard_normal(50_000).astype(np.float32))
    assert T.entropy2(h, bits=4).diagnostics["levels"] == 8
    assert T.entropy2(h, unsigned=True).diagnostics["levels"] == 256
    r16 = T.entropy2(h, bits=16)
    assert r16.diagnostics["bins_kept"] == 2048 and r16.qmax == 32767
    assert T.entropy2(h, bits=8, unsigned=True).qmax == 255


def sample():
    rng = np.random.default_rng(21)
    return np.concatenate([rng.standard_normal(100_000), rng.laplace(0, 0.3, 50_000)]).astype(np.float32)


def test_minmax_is_max_abs():
    x = sample()
    assert T.minmax(histogram_of(x)).amax == float(np.abs(x).max())


@pytest.mark.parametrize("q", [0.5, 0.9, 0.999, 0.9999, 1.0])
def test_percentile_against_quantile(q):
    x = sample()
    h = histogram_of(x)
    r = T.percentile(h, q=q)
    exact = float(np.quantile(np.abs(x).astype(np.float64), q, method="inverted_cdf"))
    assert exact <= r.amax + 1e-12 <= exact + h.width + 1e-9


def raw_mse(a, amax, qmax):
    s = amax / qmax
    return float(np.mean((a - np.minimum(np.rint(a / s), qmax) * s) ** 2))


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_against_brute_force(bits):
    a = np.abs(sample().astype(np.float64))
    h = histogram_of(a)
    r = T.mse(h, bits=bits)
    qmax = 2 ** (bits - 1) - 1
    grid = np.arange(1, 2049)[::4] * h.width
    best = min(raw_mse(a, g, qmax) for g in grid)
    assert raw_mse(a, r.amax, qmax) <= best * 1.02


def hist_with_zeros(counts, width=1.0, zeros=0) -> Histogram:
    h = hist_from_counts(counts, width)
    h.zeros = zeros
    return h


def assert_same_mse(h, bits=8, unsigned=False):
    """The fast mse chooses the literal reference's candidate, with the reference's own error
    value there, and its curve is within 1e-7 of the reference's everywhere."""
    want, want_err = mse_reference(h, bits, unsigned)
    r = T.mse(h, bits=bits, unsigned=unsigned)
    err, i = r.diagnostics["mse"], r.diagnostics["index"]
    assert r.amax == want and r.diagnostics["candidates"][i] == want
    assert i == int(np.argmin(want_err)) and np.array_equal(err[i], want_err[i], equal_nan=True)
    finite = np.isfinite(want_err)
    assert np.array_equal(finite, np.isfinite(err))
    assert np.allclose(err[finite], want_err[finite], rtol=1e-7, atol=0)
    return r


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mse_matches_reference_generated(data):
    levels = data.draw(st.sampled_from([2, 8, 64, 128]))
    counts = data.draw(histograms(levels, 300))
    width = 10.0 ** data.draw(st.floats(-8, 8))
    zeros = data.draw(st.integers(0, int(counts[0])))
    bits = data.draw(st.integers(2, 16))
    unsigned = data.draw(st.booleans())
    if int(counts.sum()) == zeros:
        zeros = 0
    assert_same_mse(hist_with_zeros(counts, width, zeros), bits, unsigned)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mse_matches_reference_2048_bins_generated(data):
    counts = data.draw(histograms(128, 1920, 1920))
    zeros = data.draw(st.integers(0, int(counts[0])))
    if int(counts.sum()) == zeros:
        zeros = 0
    bits, unsigned = data.draw(st.sampled_from([(8, False), (8, True), (4, False), (2, False), (12, False)]))
    assert_same_mse(hist_with_zeros(counts, 0.01, zeros), bits, unsigned)


def test_mse_matches_reference_on_real_statistics():
    import trtcal

    examples = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
    hists = trtcal.calibrate(examples / "fashion_cnn.onnx", examples / "fashion_calib.npz", progress=False).histograms
    assert len(hists) >= 8
    for h in hists.values():
        for bits, unsigned in ((8, False), (8, True), (4, False)):
            assert_same_mse(h, bits, unsigned)


def test_mse_matches_reference_on_odd_histograms():
    rng = np.random.default_rng(4)
    wide = rng.integers(0, 1000, 5000)  # over 4096 bins: coarsened to 2048 first
    assert_same_mse(hist_with_zeros(wide, 0.5, int(wide[0]) // 2))
    assert_same_mse(hist_with_zeros(np.full(4096, 10**15), 1.0))  # int64 tail sums would overflow
    counts = rng.integers(0, 1000, 2048)
    r = assert_same_mse(hist_with_zeros(counts, 1.0, int(counts[0]) + 5))  # more zeros than bin 0 holds
    assert r.diagnostics["refined"] == 2048  # (a merged, approximate histogram): the definition throughout
    assert T.mse_curve(counts - np.eye(1, 2048, dtype=np.int64)[0] * (int(counts[0]) + 5), 1.0, 127, 1) is None
    single = np.zeros(2048, np.int64)
    single[700] = 3
    assert_same_mse(hist_with_zeros(single, 1e-300))  # underflowing errors: the definition throughout
    assert_same_mse(hist_with_zeros(single, 1e300))  # overflowing errors


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_aciq_closed_form(distribution, bits):
    x = np.random.default_rng(3).standard_normal(100_000).astype(np.float32)
    r = T.aciq(histogram_of(x), bits=bits, distribution=distribution)
    x64 = x.astype(np.float64)
    spread = math.sqrt(np.mean(x64**2)) if distribution == "gaussian" else np.mean(np.abs(x64))
    expected = min(T.aciq_constant(distribution, bits) * spread, float(np.abs(x).max()))
    assert r.amax == pytest.approx(expected, rel=1e-9)


def test_aciq_solver_reproduces_the_paper():
    for dist, table in T.ACIQ_PAPER.items():
        for bits, c in zip(range(2, 9), table):
            assert T.solve_aciq(dist, bits) == pytest.approx(c, abs=2e-6)
            assert T.aciq_constant(dist, bits) == c
    assert T.aciq_constant("laplace", 16) > T.aciq_constant("laplace", 9) > 9.9


degenerate = {
    "empty": np.zeros(0, np.float32),
    "zeros": np.zeros(100, np.float32),
    "nan": np.full(10, np.nan, np.float32),
    "inf": np.array([np.inf, -np.inf], np.float32),
}


@pytest.mark.parametrize("method", sorted(T.METHODS))
@pytest.mark.parametrize("kind", sorted(degenerate))
def test_degenerate_tensors_give_zero_and_a_warning(method, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy
        r = T.compute(method, histogram_of(degenerate[kind]))
    assert r.amax == 0.0 and r.warnings and r.scale() == 0


@pytest.mark.parametrize("method", sorted(T.METHODS))
def test_constant_tensor(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = T.compute(method, histogram_of(np.full(100, -2.5, np.float32)))
    assert 0 < r.amax <= 2.5 * 4097 / 4096 and any("constant" in w for w in r.warnings)


def test_nan_is_reported_not_used():
    x = np.concatenate([sample(), np.array([np.nan, np.inf], np.float32)])
    r = T.entropy2(histogram_of(x))
    assert math.isfinite(r.amax) and any("1 NaN" in w for w in r.warnings)


@pytest.mark.parametrize("bad", [1, 17, 8.0, True, "8"])
def test_bits_are_checked(bad):
    h = histogram_of(sample())
    for method in T.METHODS:
        with pytest.raises(TrtcalError, match="bits"):
            T.compute(method, h, bits=bad)


def test_registry_and_options():
    h = histogram_of(sample())
    assert set(T.METHODS) == {"entropy2", "minmax", "percentile", "mse", "aciq", "onesided"}
    with pytest.raises(TrtcalError, match="unknown threshold method 'kl'"):
        T.compute("kl", h)
    with pytest.raises(TrtcalError, match="no option 'q'"):
        T.compute("entropy2", h, q=0.9)
    with pytest.raises(TrtcalError, match="option q"):
        T.compute("percentile", h, q=99.99)
    with pytest.raises(TrtcalError, match="distribution"):
        T.compute("aciq", h, distribution="cauchy")
    out = T.compute_all("percentile", {"a": h, "b": h}, q=0.99)
    assert out["a"].amax == out["b"].amax
    with pytest.raises(TrtcalError, match="tensor 'a'"):
        T.compute_all("percentile", {"a": h}, q=2)
