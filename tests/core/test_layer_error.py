"""trtcal.core.layer_error: im2col against a literal convolution loop, the Gram-based per-channel
errors against computing each candidate's output, coarse-to-fine against the full grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trtcal.core.errors import TrtcalError
from trtcal.core.layer_error import (
    ChannelErrors,
    coarse_to_fine,
    coarse_to_fine_many,
    conv_geometry,
    golden_peak,
    im2col,
)


def conv_loop(x, w, strides, dilations, pads, groups):
    """ONNX Conv, literally: every output position, channel, tap (2-d, float64)."""
    n, c, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    oh = (h + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((n, cout, oh, ow))
    per = cout // groups
    for b, k, i, j in itertools.product(range(n), range(cout), range(oh), range(ow)):
        g = k // per
        total = 0.0
        for ci, u, v in itertools.product(range(cg), range(kh), range(kw)):
            r = i * strides[0] - pads[0] + u * dilations[0]
            s = j * strides[1] - pads[1] + v * dilations[1]
            if 0 <= r < h and 0 <= s < wd:
                total += float(x[b, g * cg + ci, r, s]) * float(w[k, ci, u, v])
        y[b, k, i, j] = total
    return y


CASES = [  # (input shape, weight shape, strides, dilations, pads, groups)
    ((2, 3, 6, 7), (4, 3, 3, 3), (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ((2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 2), (1, 0, 2, 1), 2),
    ((1, 6, 8, 8), (6, 1, 3, 3), (2, 2), (2, 1), (2, 2, 1, 1), 6),  # depthwise, dilated, strided
    ((3, 5, 4, 5), (7, 5, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),  # pointwise
]


@pytest.mark.parametrize("xs,ws,strides,dilations,pads,groups", CASES)
def test_im2col_product_is_the_convolution(xs, ws, strides, dilations, pads, groups):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    geom = conv_geometry(xs[2:], ws[2:], strides=strides, dilations=dilations, pads=pads, groups=groups)
    cols = im2col(x, geom)  # [P, g, K]
    per = ws[0] // groups
    y = np.einsum("pgk,gck->pgc", cols, w.reshape(groups, per, -1)).reshape(cols.shape[0], -1)
    want = conv_loop(x, w, strides, dilations, pads, groups)
    assert np.allclose(y, np.moveaxis(want, 1, -1).reshape(-1, ws[0]), atol=1e-12)


def test_same_padding_follows_onnx():
    """SAME_UPPER puts the odd pad at the end, SAME_LOWER at the start; output = ceil(in / stride)."""
    upper = conv_geometry((7, 8), (3, 4), strides=(2, 1), auto_pad="SAME_UPPER")
    lower = conv_geometry((7, 8), (3, 4), strides=(2, 1), auto_pad="SAME_LOWER")
    assert upper.output_shape((7, 8)) == lower.output_shape((7, 8)) == (4, 8)
    assert upper.pads == (1, 1, 1, 2) and lower.pads == (1, 2, 1, 1)
    assert conv_geometry((7, 8), (3, 3), auto_pad="VALID").pads == (0, 0, 0, 0)
    with pytest.raises(TrtcalError, match="auto_pad"):
        conv_geometry((7, 8), (3, 3), auto_pad="FULL")


def fq(x, s):
    """Symmetric int8 fake quantization, per row scales ``s``."""
    s = np.asarray(s, np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


@pytest.mark.parametrize("groups,alpha", [(1, 1.0), (3, 1.0), (1, 0.7)])
def test_channel_errors_equal_the_outputs_computed_per_candidate(groups, alpha):
    rng = np.random.default_rng(1)
    p, k, cout = 500, 6, 6
    a = rng.laplace(size=(p, groups, k)).astype(np.float32)
    aq = fq(a.reshape(1, -1), [np.abs(a).max() / 127 * 0.6]).reshape(a.shape)  # clipped: a real input error
    w = rng.normal(size=(cout, k)).astype(np.float32)
    bias = rng.normal(size=cout)
    per = cout // groups

    def out(x, weights):  # [P, Cout], float64
        return alpha * np.einsum("pgk,gck->pgc", x.astype(np.float64), weights.reshape(groups, per, k).astype(np.float64)
                                 ).reshape(p, cout) + bias

    ref, yq = out(a, w), out(aq, w)
    errs = ChannelErrors(w, groups, alpha)
    for lo in range(0, p, 128):  # in chunks of positions
        errs.add(aq[lo:lo + 128], yq[lo:lo + 128].astype(np.float32), ref[lo:lo + 128].astype(np.float32))
    assert errs.positions == p
    s0 = np.abs(w).max(1) / 127
    for f in (0.5, 0.9, 1.0, 1.7):
        q = fq(w, s0 * f)
        got = out(aq, q)
        ref32 = ref.astype(np.float32).astype(np.float64)
        want_err = ((got - ref32) ** 2).sum(0)
        want_cos = (got * ref32).sum(0) / np.linalg.norm(got, axis=0) / np.linalg.norm(ref32, axis=0)
        assert np.allclose(-errs.scores(q, "mse"), want_err, rtol=1e-5)
        assert np.allclose(errs.scores(q, "cosine"), want_cos, rtol=0, atol=1e-6)


def test_channel_errors_refuse_what_does_not_fit():
    with pytest.raises(TrtcalError, match="groups"):
        ChannelErrors(np.zeros((5, 3), np.float32), groups=2)
    errs = ChannelErrors(np.zeros((4, 3), np.float32))
    with pytest.raises(TrtcalError, match="shapes"):
        errs.add(np.zeros((2, 1, 4), np.float32), np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(TrtcalError, match="metric"):
        errs.scores(np.zeros((4, 3), np.float32), "l1")


def test_zero_channels_score_one():
    errs = ChannelErrors(np.zeros((2, 3), np.float32))
    errs.add(np.ones((4, 1, 3), np.float32), np.zeros((4, 2)), np.zeros((4, 2)))
    assert np.array_equal(errs.scores(np.zeros((2, 3), np.float32)), [1.0, 1.0])


def test_coarse_to_fine_finds_the_peak_of_a_unimodal_curve_with_fewer_scores():
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 17, 100, 250):
        for _ in range(20):
            peak = rng.integers(n)
            curve = -np.abs(np.arange(n) - peak) ** rng.uniform(0.5, 3)
            best, seen = coarse_to_fine(lambda i, curve=curve: curve[i], n)
            assert best == int(np.argmax(curve)) and all(seen[i] == curve[i] for i in seen)
            if n >= 100:
                assert len(seen) < n / 3


def test_coarse_to_fine_on_a_plateau_takes_the_first_best_it_saw_and_never_a_worse_one():
    curve = np.array([0, 1, 2, 5, 5, 5, 5, 5, 3, 1, 0, 0], float)
    best, seen = coarse_to_fine(lambda i: curve[i], len(curve))
    assert curve[best] == 5 and best == min(i for i in seen if seen[i] == 5)
    rough = np.sin(np.arange(100) / 3.0) + np.arange(100) / 200  # many peaks: a local best, never below the grid's
    best, seen = coarse_to_fine(lambda i: rough[i], 100)
    assert rough[best] == max(seen.values()) >= max(rough[::10])
    with pytest.raises(TrtcalError):
        coarse_to_fine(lambda i: 0.0, 0)


def test_coarse_to_fine_many_gives_each_channel_what_the_scalar_search_gives_it():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 31, 100):
        channels = 40
        unimodal = -np.abs(np.arange(n)[None, :] - rng.integers(n, size=(channels // 2, 1))) ** 1.5
        rough = rng.normal(size=(channels // 2, n))  # many peaks: the searches go their own ways
        plateau = np.round(rng.normal(size=(4, n)))  # ties: the first best, as the scalar search
        curves = np.concatenate([unimodal, rough, plateau])
        calls = []

        def score(idx, curves=curves, calls=calls):
            calls.append(idx.copy())
            return curves[np.arange(len(curves)), idx]

        best = coarse_to_fine_many(score, n, len(curves))
        for c, curve in enumerate(curves):
            want, _ = coarse_to_fine(lambda i, curve=curve: curve[i], n)
            assert best[c] == want, (n, c)
        if n == 100:
            assert len(calls) < 35
    with pytest.raises(TrtcalError):
        coarse_to_fine_many(lambda idx: idx, 0, 3)


def test_golden_peak_finds_the_peak_of_a_strictly_unimodal_curve_as_a_brute_force_argmax_does():
    rng = np.random.default_rng(5)
    counts = []
    for _ in range(3000):
        n = int(rng.integers(1, 160))
        peak = int(rng.integers(n))
        rises = rng.uniform(1e-3, 1.0, n)  # strictly up to the peak, strictly down after it
        curve = np.array([-rises[: abs(i - peak)].sum() for i in range(n)])
        calls = []
        best, seen = golden_peak(lambda i, curve=curve, calls=calls: calls.append(i) or curve[i], n)
        assert best == int(np.argmax(curve)) == peak
        assert len(calls) == len(set(calls)) == len(seen) and all(seen[i] == curve[i] for i in seen)
        if n == 100:
            counts.append(len(seen))
    assert counts and max(counts) <= 14  # coarse_to_fine: about 21 of 100


def test_golden_peak_on_any_curve_returns_a_local_best_among_its_scored_neighbours():
    rng = np.random.default_rng(6)
    for _ in range(3000):
        n = int(rng.integers(1, 120))
        curve = rng.standard_normal(n) if rng.random() < 0.5 else rng.integers(0, 3, n).astype(float)  # ties too
        best, seen = golden_peak(lambda i, curve=curve: curve[i], n)
        for j in (best - 1, best + 1):
            if 0 <= j < n:
                assert j in seen and seen[j] <= seen[best]
        assert seen[best] >= max(curve[0:n:max(1, round(n / 5))])  # never below the coarse grid's best
    with pytest.raises(TrtcalError):
        golden_peak(lambda i: 0.0, 0)


def test_gram_from_integer_codes_is_exact_where_float32_partial_sums_would_not_be():
    """ChannelErrors.add(step=...): G summed from the input's integer codes in float32 blocks equals
    the exact integer sum times step^2 (float32 over all positions at once would round: 5000 x
    127^2 > 2^24), U and V (float32 blocks) and every score match the float64 path's to float rounding."""
    rng = np.random.default_rng(8)
    step = np.float32(0.037)
    codes = rng.integers(-128, 128, size=(5000, 1, 24)).astype(np.float32)
    codes[:, 0, 0] = 127  # a column whose own sum of squares is 80,645,000
    aq = codes * step
    w = rng.normal(size=(6, 24)).astype(np.float32)
    ref = (aq[:, 0] @ w.T + rng.normal(scale=0.1, size=(5000, 6))).astype(np.float32)
    yq = (aq[:, 0] @ w.T).astype(np.float32)
    exact = codes[:, 0].astype(np.int64).T @ codes[:, 0].astype(np.int64)
    assert exact[0, 0] == 5000 * 127 * 127 and exact[0, 0] > 2**24
    by_codes, by_values = ChannelErrors(w), ChannelErrors(w)
    by_codes.add(aq, yq, ref, step=step)
    by_values.add(aq, yq, ref)
    assert np.array_equal(by_codes.G[0], exact.astype(np.float64) * (float(step) * float(step)))
    # aq's own float32 rounding (about 6e-8 of each value) is all that separates the two
    assert np.abs(by_codes.G - by_values.G).max() <= 1e-6 * np.abs(by_values.G).max()
    for mine, theirs in ((by_codes.U, by_values.U), (by_codes.V, by_values.V)):  # float32 blocks
        assert np.abs(mine - theirs).max() <= 1e-5 * np.abs(theirs).max()
    for f in (0.6, 1.0, 1.7):
        q = np.round(w / (np.abs(w).max(1, keepdims=True) / 127 * f)) * (np.abs(w).max(1, keepdims=True) / 127 * f)
        for metric in ("mse", "cosine"):
            assert np.allclose(by_codes.scores(q, metric), by_values.scores(q, metric), rtol=1e-6, atol=1e-9)
    off_grid = ChannelErrors(w)  # values that are not multiples of the step: the float64 path
    off_grid.add(aq * 1.001, yq, ref, step=step)
    assert np.array_equal(off_grid.G, (lambda e: (e.add(aq * 1.001, yq, ref), e.G)[1])(ChannelErrors(w)))


def test_golden_peak_from_a_start_index_scores_it_and_stays_exact():
    """start: the coarse grid runs through that index (EQ: factor 1, whose score is already known)."""
    rng = np.random.default_rng(9)
    for _ in range(2000):
        n = int(rng.integers(1, 160))
        peak, start = int(rng.integers(n)), int(rng.integers(n))
        rises = rng.uniform(1e-3, 1.0, n)
        curve = np.array([-rises[: abs(i - peak)].sum() for i in range(n)])
        best, seen = golden_peak(lambda i, curve=curve: curve[i], n, start=start)
        assert best == peak and start in seen
    curve = -np.abs(np.arange(100) - 70.0)
    _, seen = golden_peak(lambda i: curve[i], 100, start=33)
    assert {13, 33, 53, 73, 93} <= set(seen) and 0 not in seen and len(seen) <= 13
