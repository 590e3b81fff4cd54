"""Streaming |x| histograms: binning rule, growth rules, tallies, merge, engines, serialisation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram, histogram_of, merge_all, numba_available, update_all

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba not installed")


def reference_counts(x, width, bins):
    """Independent binning: floor(|x| * (1/width)) in float64, clipped to the last bin."""
    a = np.abs(np.asarray(x, dtype=np.float64).ravel())
    a = a[np.isfinite(a)]
    idx = np.minimum(np.floor(a * (1.0 / width)), bins - 1).astype(np.int64)
    return np.bincount(idx, minlength=bins)


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_first_batch_sets_range_exactly(engine):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_000).astype(np.float32)
    x[17] = 0.0
    h = histogram_of(x, engine=engine)
    m = float(np.abs(x).max())
    assert h.range_max == m and h.width == m / 2048
    assert np.array_equal(h.counts, reference_counts(x, h.width, 2048))
    assert h.counts[-1] >= 1  # the maximum sits in the last bin
    assert h.count == x.size and h.zeros == 1
    assert h.min == float(x.min()) and h.max == float(x.max())
    assert h.sum == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-12, abs=1e-9)
    assert h.sumsq == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-12)
    assert h.sumabs == pytest.approx(float(np.abs(x.astype(np.float64)).sum()), rel=1e-12)


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_nan_and_inf_are_counted_and_excluded(engine):
    x = np.array([1.0, np.nan, np.inf, -np.inf, -np.inf, -2.0, 0.0, -0.0], dtype=np.float32)
    h = histogram_of(x, engine=engine)
    assert (h.nan, h.posinf, h.neginf, h.count, h.zeros) == (1, 1, 2, 4, 2)
    assert h.counts.sum() == 4 and h.range_max == 2.0
    assert (h.min, h.max) == (-2.0, 1.0) and not h.one_sided
    only_nan = histogram_of(np.full(5, np.nan, np.float32), engine=engine)
    assert only_nan.count == 0 and only_nan.nan == 5 and only_nan.range_max == 0.0


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_power2_growth_doubles_range_and_merges_pairs(engine):
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, 5000).astype(np.float32)
    a[0] = 1.0
    b = rng.uniform(-3, 3, 5000).astype(np.float32)
    h = Histogram().update(a, engine=engine)
    before = h.counts.copy()
    h.update(b, engine=engine)
    assert h.range_max == 4.0 and h.bins == 2048  # 1 -> 2 -> 4
    expected = before.reshape(-1, 2).sum(1).reshape(-1, 2).sum(1)
    expected = np.concatenate([expected, np.zeros(2048 - expected.size, np.int64)])
    expected += reference_counts(b, h.width, 2048)
    assert np.array_equal(h.counts, expected)
    assert h.counts[1536:].sum() == 0  # nothing above 3.0


def test_power2_growth_agrees_with_preset_range_except_old_maximum():
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal(3000).astype(np.float32) * s for s in (1, 3, 0.5, 10)]
    grown = Histogram()
    for b in batches:
        grown.update(b)
    preset = Histogram(range_max=grown.range_max)
    for b in batches:
        preset.update(b)
    # values at an old range maximum stay in the top bin of that old range (at most one per growth)
    assert np.abs(grown.counts - preset.counts).sum() <= 2 * 3
    assert grown.count == preset.count


def test_all_zero_batches_then_range():
    h = Histogram().update(np.zeros(10, np.float32))
    assert h.range_max == 0.0 and h.counts[0] == 10 and h.zeros == 10
    h.update(np.array([0.5, 0.0], np.float32))
    assert h.range_max == 0.5 and h.counts[0] == 11 and h.counts[-1] == 1


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_append_growth_keeps_width(engine):
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 4000).astype(np.float32)
    a[0] = 1.0
    b = rng.uniform(0, 2.5, 4000).astype(np.float32)
    h = Histogram(100, "append").update(a, engine=engine).update(b, engine=engine)
    assert h.width == 1.0 / 100 and h.bins == 250 and h.range_max >= 2.5 - 1e-9
    # a's maximum sat exactly at the old range maximum: it stays in the old top bin (99)
    expected = np.concatenate([reference_counts(a, h.width, 100), np.zeros(150, np.int64)])
    expected += reference_counts(b, h.width, h.bins)
    assert np.array_equal(h.counts, expected)


def test_append_is_bounded():
    h = Histogram(16, "append", max_bins=64, name="t:0").update(np.array([1.0], np.float32))
    with pytest.raises(TrtcalError, match="'t:0'.*max_bins"):
        h.update(np.array([100.0], np.float32))


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.sampled_from([0.0, -0.0, 1e-38, 1e-45, 3.0e38]))


@needs_numba
@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(finite_or_not, max_size=60), min_size=1, max_size=4),
       growth=st.sampled_from(["power2", "append"]), dtype=st.sampled_from([np.float32, np.float64]),
       bins=st.sampled_from([2, 8, 2048]))
def test_numba_and_numpy_paths_identical(batches, growth, dtype, bins):
    hs = {}
    for engine in ("numpy", "numba"):
        h = Histogram(bins, growth, max_bins=1 << 30)
        try:
            for b in batches:
                h.update(np.array(b, dtype=dtype), engine=engine)
        except TrtcalError as exc:  # append growth beyond max_bins: same error on both paths
            h = str(exc)
        hs[engine] = h
    a, b = hs["numpy"], hs["numba"]
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert np.array_equal(a.counts, b.counts)
    for field in ("bins", "width", "count", "zeros", "nan", "posinf", "neginf", "min", "max"):
        assert getattr(a, field) == getattr(b, field), field
    for field in ("sum", "sumsq", "sumabs"):  # summation order differs
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-300)


@needs_numba
def test_threads_do_not_change_the_result():
    x = np.random.default_rng(4).standard_normal(1 << 20).astype(np.float32)
    x[::1000] = np.nan
    one = Histogram().update(x, engine="numba", threads=1).update(3 * x, engine="numba", threads=1)
    two = Histogram().update(x, engine="numba", threads=2).update(3 * x, engine="numba", threads=2)
    ref = Histogram().update(x, engine="numpy").update(3 * x, engine="numpy")
    assert np.array_equal(one.counts, two.counts) and np.array_equal(one.counts, ref.counts)
    assert (one.min, one.max, one.nan, one.zeros) == (two.min, two.max, two.nan, two.zeros)


def test_integer_and_half_inputs():
    h = histogram_of(np.arange(256, dtype=np.uint8))
    assert h.range_max == 255.0 and h.count == 256
    assert histogram_of(np.ones(4, np.float16)).range_max == 1.0
    with pytest.raises(TrtcalError, match="'x'.*complex"):
        Histogram(name="x").update(np.ones(3, np.complex64))


def test_bad_options_name_the_problem():
    with pytest.raises(TrtcalError, match="growth"):
        Histogram(growth="linear")
    with pytest.raises(TrtcalError, match="even"):
        Histogram(7)
    with pytest.raises(TrtcalError, match="range_max"):
        Histogram(range_max=float("nan"))


def test_merge_equals_sequential_with_shared_range():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(5000).astype(np.float32), rng.laplace(size=5000).astype(np.float32)
    r = float(max(np.abs(a).max(), np.abs(b).max())) * 1.5
    h1 = Histogram(range_max=r).update(a)
    h2 = Histogram(range_max=r).update(b)
    seq = Histogram(range_max=r).update(a).update(b)
    cat = Histogram(range_max=r).update(np.concatenate([a, b]))
    merged = h1.copy().merge(h2)
    for other in (seq, cat):
        assert np.array_equal(merged.counts, other.counts)
        assert (merged.count, merged.min, merged.max, merged.zeros) == (other.count, other.min, other.max, other.zeros)
        assert merged.sumsq == pytest.approx(other.sumsq, rel=1e-12)
    assert not merged.approximate


def test_merge_power_of_two_related_ranges_is_exact():
    rng = np.random.default_rng(6)
    a = rng.uniform(-1, 1, 3000).astype(np.float32)
    a[0] = -1.0
    b = rng.uniform(-4, 4, 3000).astype(np.float32)
    b[0] = 4.0
    merged = histogram_of(a).merge(histogram_of(b))
    seq = histogram_of(a).update(b)
    assert merged == seq and not merged.approximate
    merged_other_way = histogram_of(b).merge(histogram_of(a))
    assert np.array_equal(merged_other_way.counts, seq.counts)


def test_merge_unaligned_is_flagged_approximate():
    a = histogram_of(np.array([1.0, 0.3], np.float32))
    b = histogram_of(np.array([3.0, 0.2], np.float32))
    m = a.copy().merge(b)
    assert m.approximate and m.count == 4 and m.counts.sum() == 4 and m.range_max == 3.0


def test_merge_append_and_dicts():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    parts = [update_all({}, {"t": x}, bins=10, growth="append"),
             update_all({}, {"t": x[:50], "u": x}, bins=10, growth="append")]
    merged = merge_all(parts)
    assert merged["t"].count == 151 and merged["u"].count == 101
    assert parts[0]["t"].count == 101  # inputs untouched
    with pytest.raises(TrtcalError, match="cannot merge"):
        Histogram().merge(Histogram(16, "append"))


def test_arrays_round_trip_and_validation():
    h = histogram_of(np.array([1.0, -2.0, np.nan, 0.0], np.float32), name="t")
    again = Histogram.from_arrays(h.to_arrays(), name="t")
    assert again == h and again.name == "t"
    bad = h.to_arrays()
    bad["counts"][3] += 1
    with pytest.raises(TrtcalError, match="'t'.*corrupt"):
        Histogram.from_arrays(bad, name="t")


def test_import_does_not_load_numba():
    code = "import sys, trtcal.core.histogram, trtcal.core.thresholds, trtcal.core.stats; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("engine", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_update_all_on_threads_equals_one_at_a_time(engine):
    # a dominant tensor (counted first, alone) and small ones (side by side), over batches whose
    # range grows: each histogram must see its batches in order whatever the worker count
    rng = np.random.default_rng(4)
    batches = [{"big": rng.normal(size=5000) * s, "a": rng.normal(size=300) * s, "b": np.maximum(rng.normal(size=200), 0) * s,
                "c": rng.laplace(size=100) * s} for s in (1.0, 3.0, 0.5, 9.0)]
    one, many = {}, {}
    for batch in batches:
        update_all(one, batch, engine=engine)
        update_all(many, batch, engine=engine, workers=4)
    assert list(one) == list(many) == ["big", "a", "b", "c"]
    for name in one:
        assert one[name] == many[name], name
