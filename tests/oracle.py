"""Literal, slow reference implementation of TensorRT's entropy calibration (REFERENCE.md s.1).

Plain Python loops and floats, written from the GTC 2017 pseudocode, one candidate at a time;
the fast vectorised ``trtcal.core.thresholds.entropy2`` must choose the same candidate.
Also ``mse_reference``: ``trtcal.core.thresholds.mse`` as it was before its fast path (every
candidate times every bin centre, element by element), which the fast one must reproduce.
"""

from __future__ import annotations

import math

import numpy as np


def kl_for_candidate(hist: list[int], i: int, levels: int) -> float:
    """KL(P||Q) for keeping the first ``i`` bins, literally as the pseudocode states it."""
    # reference distribution P: first i bins, all outliers added to the last kept bin
    p = [float(hist[k]) for k in range(i)]
    outliers = 0
    for k in range(i, len(hist)):
        outliers += hist[k]
    p[i - 1] += outliers
    # candidate distribution Q: bins 0..i-1 (without outliers) quantised into `levels` levels,
    # bin k in level floor(k*levels/i); each level's total spread over its non-empty bins
    level_total = [0] * levels
    level_nonempty = [0] * levels
    for k in range(i):
        j = (k * levels) // i
        level_total[j] += hist[k]
        if hist[k] != 0:
            level_nonempty[j] += 1
    q = [0.0] * i
    for k in range(i):
        if hist[k] != 0:
            j = (k * levels) // i
            q[k] = level_total[j] / level_nonempty[j]
    sum_p = sum(p)
    sum_q = sum(q)
    if sum_q == 0:
        return math.inf
    kl = 0.0
    for k in range(i):
        pk = p[k] / sum_p
        if pk > 0:
            qk = q[k] / sum_q
            if qk == 0:
                return math.inf
            kl += pk * math.log(pk / qk)
    return kl


def nonempty_bins(hist: list[int], i: int) -> int:
    """How many of the first ``i`` bins hold a value."""
    return sum(1 for k in range(i) if hist[k] != 0)


def entropy_oracle(hist: list[int], levels: int = 128) -> tuple[int, list[float]]:
    """(chosen number of bins i, KL per candidate) over candidates min(levels, n)..n inclusive.

    The first minimum among the candidates that keep more than one non-empty bin (a candidate
    whose kept bins are one spike has KL 0 trivially; TensorRT's caches skip it, REFERENCE.md
    section 1). When no candidate keeps two non-empty bins, the first minimum of them all.
    The KL list holds every candidate's KL as defined, degenerate ones included."""
    n = len(hist)
    kls = [kl_for_candidate(hist, i, levels) for i in range(min(levels, n), n + 1)]
    cands = list(range(min(levels, n), n + 1))
    allowed = [c for c in cands if nonempty_bins(hist, c) > 1] or cands
    best_i, best_kl = None, math.inf
    for i, kl in zip(cands, kls):
        if i in allowed and kl < best_kl:  # strict: the first minimum wins
            best_i, best_kl = i, kl
    if best_i is None:
        best_i = n
    return best_i, kls


def neighbour_rule(hist: list[int]) -> list[int]:
    """entropy2's default zero-bin rule, literally: bin 0 takes bin 1's count (NVIDIA's
    pytorch-quantization and ModelOpt do this before the same search). If that leaves no count at
    all (every value was in bin 0), the histogram is used as it is."""
    out = list(hist)
    if len(out) > 1:
        out[0] = out[1]
    return out if any(out) else list(hist)


def mse_reference(hist, bits: int = 8, unsigned: bool = False) -> tuple[float, np.ndarray]:
    """(amax, error per candidate) of the mse method, as ``thresholds.mse`` computed it up to
    2026-12-05, literally: candidates the bin upper edges, each bin's values at its centre (exact
    zeros without error), quantized round half to even and clamped at qmax, in-range error
    step^2/12 where the step is finer than a bin; the first minimum wins."""
    counts = hist.counts
    width = hist.width
    if counts.size > 4096:
        f = -(-counts.size // 2048)
        counts = np.concatenate([counts, np.zeros(-counts.size % f, np.int64)]).reshape(-1, f).sum(axis=1)
        width *= f
    weights = counts.astype(np.float64)
    weights[0] -= hist.zeros
    nb = counts.size
    centres = (np.arange(nb) + 0.5) * width
    cand = np.arange(1, nb + 1) * width
    qmax = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    err = np.empty(nb)
    with np.errstate(all="ignore"):
        for start in range(0, nb, 256):
            a = cand[start:start + 256, None]
            step = a / qmax
            q = np.minimum(np.rint(centres[None, :] / step), qmax) * step
            e = (centres[None, :] - q) ** 2
            inside = centres[None, :] <= a
            e = np.where(inside & (step < width), step * step / 12.0, e)
            err[start:start + 256] = (e * weights[None, :]).sum(axis=1) / hist.count
    index = int(np.argmin(err))
    return float(cand[index]), err
