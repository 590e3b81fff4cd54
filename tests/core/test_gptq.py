"""GPTQ rounding (trtcal.core.weight_rounding) against a literal Optimal Brain Quantizer (the
inverse downdated one column at a time, no Cholesky factor) and against a brute-force search
over every floor/ceil choice of tiny layers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trtcal.core.errors import TrtcalError
from trtcal.core.weight_rounding import gptq_codes, output_error, round_to_nearest


def obq(rows, scales, h, damp, order):
    """The Optimal Brain Quantizer with a fixed column order, as its paper states it: quantize
    column i, move every later weight by err * Hinv[j, i] / Hinv[i, i], remove i from Hinv."""
    w = np.asarray(rows, np.float64).copy()
    h = np.asarray(h, np.float64).copy()
    d = np.diag(h).copy()
    dead = d == 0
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    mean = d[~dead].mean() if (~dead).any() else 0.0
    hinv = np.linalg.inv(h + damp * mean * np.eye(len(d)))
    codes = np.zeros_like(w)
    left = list(order)
    while left:
        i = left.pop(0)
        q = np.clip(np.rint(w[:, i] / scales), -127, 127)
        codes[:, i] = q
        err = (w[:, i] - q * scales) / hinv[i, i]
        for j in left:
            w[:, j] -= err * hinv[j, i]
        hinv = hinv - np.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
    return codes


def problem(rng, k, c, p, dead=True):
    a = rng.normal(size=(p, k)) @ rng.normal(size=(k, k)) * 0.3  # correlated inputs
    if dead:
        a[:, rng.integers(0, k)] = 0  # an input that is zero on every sample
    w = rng.normal(size=(c, k))
    s = np.abs(w).max(1) / 127 * rng.uniform(0.5, 1.5)  # some scales clip
    return w, s, a.T @ a


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("block", [1, 5, 128])
def test_equals_the_literal_optimal_brain_quantizer(act_order, block):
    rng = np.random.default_rng(1)
    for _ in range(12):
        k, c, p = int(rng.integers(2, 30)), int(rng.integers(1, 6)), int(rng.integers(4, 120))
        w, s, h = problem(rng, k, c, p)
        diag = np.diag(h)
        order = np.argsort(-np.where(diag == 0, -1, diag), kind="stable") if act_order else np.arange(k)
        expected = obq(w, s, h, 0.01, order)
        got = gptq_codes(w, s, h, act_order=act_order, block=block)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, expected)


def test_large_layers_equal_the_literal_quantizer_too():
    """Past 128 inputs the inverse factor is built by halves: the same codes."""
    rng = np.random.default_rng(6)
    w, s, h = problem(rng, 300, 4, 900)
    diag = np.diag(h)
    order = np.argsort(-np.where(diag == 0, -1, diag), kind="stable")
    np.testing.assert_array_equal(gptq_codes(w, s, h), obq(w, s, h, 0.01, order))


def test_beats_round_to_nearest_and_nears_the_brute_force_optimum():
    rng = np.random.default_rng(2)
    ratios, gaps = [], []
    for _ in range(60):
        k, c = int(rng.integers(2, 6)), 2
        w, s, h = problem(rng, k, c, int(rng.integers(2, 40)), dead=False)
        nearest = output_error(w, round_to_nearest(w, s) * s[:, None], h)
        codes = gptq_codes(w, s, h)
        got = output_error(w, codes * s[:, None], h)
        best = np.full(c, np.inf)  # per channel, every code within a step of floor/ceil, and GPTQ's
        lo = np.floor(w / s[:, None])
        for ch in range(c):
            options = [sorted({*(lo[ch, i] + np.arange(-1, 3)), codes[ch, i]}) for i in range(k)]
            for q in itertools.product(*options):
                q = np.clip(np.array(q), -127, 127)
                best[ch] = min(best[ch], output_error(w[ch:ch + 1], q[None] * s[ch], h)[0])
        assert np.all(best <= got * (1 + 1e-9) + 1e-12)
        assert np.all(best <= nearest * (1 + 1e-9) + 1e-12)
        ratios.append(got.sum() / nearest.sum())
        gaps.append(got.sum() / best.sum())
    assert np.mean(ratios) < 0.8  # GPTQ cuts the output error on correlated inputs
    assert np.median(gaps) < 1.5  # and lands near the optimum


def test_groups_are_rounded_each_on_its_own_matrix():
    rng = np.random.default_rng(3)
    parts = [problem(rng, 6, 3, 30) for _ in range(4)]
    w = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    h = np.stack([p[2] for p in parts])
    got = gptq_codes(w, s, h, groups=4)
    for g, (wg, sg, hg) in enumerate(parts):
        np.testing.assert_array_equal(got[3 * g:3 * g + 3], gptq_codes(wg, sg, hg))


def test_zero_scale_channels_and_zero_inputs():
    rng = np.random.default_rng(4)
    w, s, h = problem(rng, 5, 3, 20, dead=False)
    s[1] = 0
    h[2, :] = h[:, 2] = 0
    got = gptq_codes(w, s, h)
    assert not got[1].any()  # scale 0: codes 0
    np.testing.assert_array_equal(got[:, 2], round_to_nearest(w, s)[:, 2])  # a dead input rounds to nearest
    zero = gptq_codes(w, np.abs(w).max(1) / 127, np.zeros((5, 5)))  # no signal at all: round to nearest
    np.testing.assert_array_equal(zero, round_to_nearest(w, np.abs(w).max(1) / 127))


@pytest.mark.parametrize("kwargs, message", [
    ({"damp": 0.0}, "damp"),
    ({"block": 0}, "block"),
    ({"groups": 2}, "groups"),
])
def test_bad_arguments(kwargs, message):
    rng = np.random.default_rng(5)
    w, s, h = problem(rng, 4, 3, 10)
    with pytest.raises(TrtcalError, match=message):
        gptq_codes(w, s, h, **kwargs)
    with pytest.raises(TrtcalError, match="scales"):
        gptq_codes(w, s[:2], h)
    with pytest.raises(TrtcalError, match="input matrix"):
        gptq_codes(w, s, h[:3, :3])
