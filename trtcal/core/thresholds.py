"""From a |x| histogram to one amax per tensor: entropy2, minmax, percentile, mse, aciq.

Every method takes a :class:`~trtcal.core.histogram.Histogram` and returns a :class:`ThresholdResult`
(amax, the method, diagnostics to plot and explain the choice, and warnings). ``METHODS`` maps
names to functions; :func:`compute` calls one by name with checked options. See docs/core.md.

Degenerate tensors never raise: no finite value (empty, or only NaN/Inf) and all-zero tensors give
``amax = 0.0`` (a zero scale, as TensorRT writes ``0`` in caches) with a warning in the result.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram

#: ACIQ optimal clipping values (alpha / sigma, alpha / b) from Banner et al. 2019, for 2..8 bits.
ACIQ_PAPER = {
    "gaussian": (1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474, 3.6151146, 3.92403714),
    "laplace": (2.83068299, 3.89722946, 5.02864014, 6.20476633, 7.41312622, 8.64561995, 9.89675982),
}


@dataclass(frozen=True)
class ThresholdResult:
    """One tensor's threshold: ``amax`` (float64) plus what explains it."""

    amax: float
    method: str
    bits: int = 8
    unsigned: bool = False
    diagnostics: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def qmax(self) -> int:
        """Largest quantised level: 127 for signed 8 bits, 255 for unsigned 8 bits."""
        return 2**self.bits - 1 if self.unsigned else 2 ** (self.bits - 1) - 1

    def scale(self) -> np.float32:
        """``float32(amax / qmax)``: the float64 quotient rounded once to float32 (cache value)."""
        return np.float32(self.amax / self.qmax)


def _check_bits(bits, unsigned) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise TrtcalError(f"option bits must be an integer from 2 to 16, not {bits!r}")
    if not isinstance(unsigned, (bool, np.bool_)):
        raise TrtcalError(f"option unsigned must be true or false, not {unsigned!r}")
    return int(bits)


def _prelude(hist: Histogram, method: str, bits: int, unsigned: bool):
    """Common checks: (warnings, result-or-None). A result is returned for degenerate tensors."""
    if not isinstance(hist, Histogram):
        raise TypeError(f"expected a Histogram, got {type(hist).__name__}")
    warns = []
    bad = hist.nan + hist.posinf + hist.neginf
    if bad:
        warns.append(f"excluded {hist.nan} NaN, {hist.posinf} +Inf and {hist.neginf} -Inf values")
    if hist.approximate:
        warns.append("histogram was merged from unaligned grids (approximate counts)")
    if hist.count == 0:
        warns.append("no finite values (only NaN/Inf); amax set to 0" if bad
                     else "empty tensor (no values); amax set to 0")
        return warns, ThresholdResult(0.0, method, bits, unsigned, {"degenerate": "no-values"}, tuple(warns))
    if hist.abs_max == 0.0:
        warns.append("all values are zero; amax set to 0")
        return warns, ThresholdResult(0.0, method, bits, unsigned, {"degenerate": "all-zero"}, tuple(warns))
    if hist.min == hist.max:
        warns.append(f"constant tensor (every value is {hist.min!r})")
    return warns, None


# -- entropy2 -----------------------------------------------------------------------------------

#: How entropy2 counts bin 0 before the KL search. ``"neighbour"`` (default): bin 0 takes bin 1's
#: count, as NVIDIA's pytorch-quantization and ModelOpt do, so that the exact zeros of ReLU, Clip
#: and padding outputs do not decide the threshold. ``"keep"``: bin 0 as counted (REFERENCE.md
#: section 1 read literally); on a tensor that is mostly exact zeros the search then keeps the
#: fewest bins (about max/16): the zero spike collapse of docs/accuracy.md.
ZERO_BIN_RULES = ("neighbour", "keep")


def entropy2(hist: Histogram, bits: int = 8, unsigned: bool = False, zero_bin: str = "neighbour") -> ThresholdResult:
    """TensorRT's EntropyCalibration2 (REFERENCE.md section 1), for any bit width.

    Candidates ``i`` from ``levels`` (128 for signed 8 bits; ``2**bits`` when unsigned) to the
    number of bins inclusive; the first minimum of KL(P||Q) among the candidates that keep more
    than one non-empty bin (see :func:`kl_search`); ``amax = (i + 0.5) * width``.
    ``zero_bin``: see :data:`ZERO_BIN_RULES` (the two rules differ only where bin 0 differs
    from bin 1, i.e. on tensors with many exact zeros).
    Diagnostics: ``kl`` (one value per candidate, inf where Q misses mass of P), ``candidates``,
    ``index`` (position of the choice in ``candidates``), ``bins_kept`` (the chosen ``i``),
    ``levels``, ``width``, ``refined`` (near-ties recomputed bin by bin), ``zero_bin`` and
    ``single_bin`` (degenerate candidates excluded, their ``kl`` set to inf).
    """
    bits = _check_bits(bits, unsigned)
    if zero_bin not in ZERO_BIN_RULES:
        raise TrtcalError(f"option zero_bin must be one of {', '.join(ZERO_BIN_RULES)}, not {zero_bin!r}")
    warns, done = _prelude(hist, "entropy2", bits, unsigned)
    if done:
        return done
    levels = 2**bits if unsigned else 2 ** (bits - 1)
    h = hist.counts
    if zero_bin == "neighbour" and h.size > 1 and h[0] != h[1]:
        h = h.copy()
        h[0] = h[1]
        if not h.any():  # only bin 0 held values; nothing else to go by
            h = hist.counts
    kl, cands, index, refined, single = kl_search(h, levels)
    i = int(cands[index])
    diag = {"kl": kl, "candidates": cands, "index": index, "bins_kept": i, "levels": levels,
            "width": hist.width, "refined": refined, "zero_bin": zero_bin, "single_bin": single}
    return ThresholdResult((i + 0.5) * hist.width, "entropy2", bits, bool(unsigned), diag, tuple(warns))


def kl_search(counts: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """The KL search of entropy2 on ``counts``: ``(kl, candidates, index, refined, single_bin)``.

    A candidate whose kept bins ``counts[:i]`` hold a single non-empty bin is *degenerate*: P and
    Q are the same spike, KL = 0 trivially, and the first-minimum rule would pick it and clip
    nearly every value of a tensor that lies far from zero (all values in [4, 16]: amax about 4).
    TensorRT's caches keep the best candidate among those with more than one non-empty kept bin
    (REFERENCE.md section 1), so degenerate candidates are excluded (their ``kl`` is set to inf;
    ``single_bin`` counts them). If every candidate is degenerate (one non-empty bin in all), the
    search runs on the curve as it is.
    """
    kl, cands = kl_curve(counts, levels)
    nonempty = np.concatenate([[0], np.cumsum(np.asarray(counts) > 0)])[cands]
    single = nonempty <= 1
    excluded = int(np.count_nonzero(single & np.isfinite(kl)))
    if excluded and not np.all(single):
        kl[single] = np.inf
    else:
        excluded = 0
    index, refined = _first_minimum(counts, levels, cands, kl)
    return kl, cands, index, refined, excluded


def kl_curve(counts: np.ndarray, levels: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """KL(P||Q) for every candidate ``i`` in ``min(levels, bins) ..= bins``, vectorised.

    Closed form through prefix sums (no loop over candidates). With p = h/T, level totals L_j,
    n_j non-empty bins, S = sum(h[:i]), O = T - S::

        KL_i = sum_{k<i} p_k ln p_k - sum_j (L_j/T) ln(L_j/(n_j T)) + ln(S/T)
               + [O > 0] * (p' ln p' - p_{i-1} ln p_{i-1} - (O/T) ln(L_last/(n_last T)))

    where p' = (h[i-1] + O)/T. Infinite when S = 0, or O > 0 and h[i-1] = 0 (P has mass where Q
    is empty). Accurate to about 1e-14 absolute; near-ties are settled by :func:`kl_direct`.
    """
    h = np.asarray(counts, dtype=np.int64)
    nbins = h.size
    cands, bounds, ln_int = _grid(levels, nbins)
    total = int(h.sum())
    tf = float(total)
    with np.errstate(all="ignore"):
        hf = h.astype(np.float64)
        p = hf / tf
        cum_plogp = np.concatenate([[0.0], np.cumsum(p * np.log(np.maximum(p, 1e-300)))])
        cum_h = np.concatenate([[0], np.cumsum(h)])
        cum_nz = np.concatenate([[0], np.cumsum(h > 0)])
        g = cum_h[bounds]
        lev_tot = (g[:, 1:] - g[:, :-1]).astype(np.float64)
        g = cum_nz[bounds]
        lev_nz = g[:, 1:] - g[:, :-1]
        # sum_j (L_j/T) ln(L_j/(n_j T)) = (sum_j L_j ln L_j - sum_j L_j ln n_j) / T - (S/T) ln T
        xlogx = np.einsum("ij,ij->i", lev_tot, np.log(np.maximum(lev_tot, 1.0)))
        xlogn = np.einsum("ij,ij->i", lev_tot, ln_int[lev_nz])
        s = cum_h[cands]
        o = total - s
        last = h[cands - 1]
        level_sum = (xlogx - xlogn) / tf - (s / tf) * math.log(tf)
        kl = cum_plogp[cands] - level_sum + np.log(s / tf)
        fix = (o > 0) & (last > 0)
        if fix.any():
            pl = last[fix] / tf
            pt = (last[fix] + o[fix]) / tf
            lt, nt = lev_tot[fix, -1], lev_nz[fix, -1]
            kl[fix] += pt * np.log(pt) - pl * np.log(pl) - (o[fix] / tf) * np.log(lt / (nt * tf))
        kl[(s == 0) | ((o > 0) & (last == 0))] = np.inf
    return kl, cands


@functools.lru_cache(maxsize=16)
def _grid(levels: int, nbins: int):
    """Candidates, level boundaries per candidate, and ln(n) for n = 0..nbins (ln 0 := 0)."""
    cands = np.arange(min(levels, nbins), nbins + 1, dtype=np.int64)
    # level j of candidate i holds bins ceil(j*i/levels) .. ceil((j+1)*i/levels) - 1,
    # i.e. exactly the bins k with floor(k*levels/i) == j
    bounds = (np.arange(levels + 1, dtype=np.int64)[None, :] * cands[:, None] + (levels - 1)) // levels
    ln_int = np.log(np.maximum(np.arange(nbins + 1, dtype=np.float64), 1.0))
    for arr in (cands, bounds, ln_int):
        arr.flags.writeable = False
    return cands, bounds, ln_int


def kl_direct(counts: np.ndarray, levels: int, cands: np.ndarray) -> np.ndarray:
    """KL(P||Q) for the given candidates, computed bin by bin (the definition, vectorised)."""
    h = np.asarray(counts, dtype=np.int64)
    nbins = h.size
    total = float(h.sum())
    out = np.empty(len(cands))
    k = np.arange(nbins, dtype=np.int64)
    cum_h = np.concatenate([[0], np.cumsum(h)])
    cum_nz = np.concatenate([[0], np.cumsum(h > 0)])
    with np.errstate(all="ignore"):
        for start in range(0, len(cands), 128):
            c = np.asarray(cands[start:start + 128], dtype=np.int64)
            rows = np.arange(c.size)
            inside = k[None, :] < c[:, None]
            pmat = np.where(inside, h[None, :], 0).astype(np.float64)
            pmat[rows, c - 1] += total - cum_h[c]
            bounds = (np.arange(levels + 1, dtype=np.int64)[None, :] * c[:, None] + (levels - 1)) // levels
            lev_tot = np.diff(cum_h[bounds], axis=1).astype(np.float64)
            lev_nz = np.diff(cum_nz[bounds], axis=1).astype(np.float64)
            lev = np.minimum((k[None, :] * levels) // c[:, None], levels - 1)
            per_bin = np.take_along_axis(lev_tot, lev, 1) / np.take_along_axis(np.maximum(lev_nz, 1), lev, 1)
            qmat = np.where(inside & (h[None, :] > 0), per_bin, 0.0)
            pn = pmat / pmat.sum(axis=1, keepdims=True)
            qn = qmat / qmat.sum(axis=1, keepdims=True)
            pos = pn > 0
            terms = np.where(pos, pn * np.log(np.where(pos, pn, 1.0) / np.where(pos, qn, 1.0)), 0.0)
            kl = terms.sum(axis=1)
            kl[(pos & ~(qn > 0)).any(axis=1)] = np.inf
            out[start:start + c.size] = kl
    return out


#: KL values within this relative difference count as equal (rounding noise between two
#: summation orders); the first candidate among them is chosen, as in exact arithmetic.
TIE_RTOL = 1e-12


def _first_minimum(h, levels, cands, kl) -> tuple[int, int]:
    """Index of the first minimum; candidates within the closed form's error of the minimum are
    recomputed bin by bin (in place in ``kl``) so near-ties are decided on accurate values."""
    m = float(np.min(kl))
    tol = 1e-11 + 1e-9 * abs(m)
    near = np.flatnonzero(kl <= m + tol)
    if near.size == 1:
        return int(near[0]), 0
    exact = kl_direct(h, levels, cands[near])
    kl[near] = exact
    best = float(np.min(exact))
    # values equal to within rounding (1e-12 relative) are ties: the first one wins
    first = int(np.flatnonzero(exact <= best + TIE_RTOL * abs(best) + 1e-300)[0])
    return int(near[first]), int(near.size)


# -- other methods ------------------------------------------------------------------------------

def minmax(hist: Histogram, bits: int = 8, unsigned: bool = False) -> ThresholdResult:
    """TensorRT's MinMaxCalibration: ``amax = max|x|`` over every batch."""
    bits = _check_bits(bits, unsigned)
    warns, done = _prelude(hist, "minmax", bits, unsigned)
    if done:
        return done
    diag = {"min": hist.min, "max": hist.max}
    return ThresholdResult(hist.abs_max, "minmax", bits, bool(unsigned), diag, tuple(warns))


def percentile(hist: Histogram, q: float = 0.9999, bits: int = 8, unsigned: bool = False) -> ThresholdResult:
    """Smallest bin edge amax with at least the fraction ``q`` of |x| <= amax (capped at max|x|).

    As TensorRT's LegacyCalibration with quantile ``q`` and regression cutoff 1.0. The exact
    quantile lies within one bin width below the result.
    """
    bits = _check_bits(bits, unsigned)
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 < q <= 1:
        raise TrtcalError(f"option q must be a fraction in (0, 1] (e.g. 0.9999), not {q!r}")
    warns, done = _prelude(hist, "percentile", bits, unsigned)
    if done:
        return done
    cum = np.cumsum(hist.counts)
    k = int(np.searchsorted(cum, float(q) * hist.count, side="left"))
    k = min(k, hist.bins - 1)
    amax = min((k + 1) * hist.width, hist.abs_max)
    diag = {"q": float(q), "bin": k, "fraction_below": float(cum[k]) / hist.count}
    return ThresholdResult(amax, "percentile", bits, bool(unsigned), diag, tuple(warns))


def mse(hist: Histogram, bits: int = 8, unsigned: bool = False) -> ThresholdResult:
    """amax minimising the mean squared quantisation error over the histogram.

    Candidates are the bin upper edges. Values are modelled by their bin centre (exact zeros
    counted as error-free); where the step is finer than a bin, in-range error is step^2/12.
    Histograms of more than 4096 bins are first coarsened to at most 2048.
    Diagnostics: ``candidates``, ``mse`` (per candidate), ``index``, ``refined`` (how many
    candidates near the minimum were recomputed by :func:`mse_rows`).

    *How it is fast*: :func:`mse_curve` gives every candidate's error at once (the clipped part
    in closed form from integer tail sums, the in-range part over the occupied bins below each
    candidate only), to about 1e-7 relative at worst; the candidates within :data:`MSE_RTOL` of
    its minimum are recomputed element by element (:func:`mse_rows`, the definition) and the
    first smallest of those wins, so the choice is the definition's own.
    """
    bits = _check_bits(bits, unsigned)
    warns, done = _prelude(hist, "mse", bits, unsigned)
    if done:
        return done
    counts = hist.counts
    width = hist.width
    if counts.size > 4096:
        f = -(-counts.size // 2048)
        counts = np.concatenate([counts, np.zeros(-counts.size % f, np.int64)]).reshape(-1, f).sum(axis=1)
        width *= f
    weights = counts.astype(np.float64)
    weights[0] -= hist.zeros
    counts = counts.astype(np.int64)  # a copy
    counts[0] -= hist.zeros
    qmax = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    nb = counts.size
    cand = np.arange(1, nb + 1) * width
    with np.errstate(all="ignore"):
        err = mse_curve(counts, width, qmax, hist.count)
    if err is None or not np.all(np.isfinite(err)):  # negative weights (approximate merge), overflow
        err, rows = None, np.arange(nb)
    else:
        m = float(np.min(err))
        rows = np.flatnonzero(err <= m + MSE_RTOL * m)
    exact = mse_rows(weights, width, qmax, hist.count, rows)
    if err is None:
        err = exact
    else:
        err[rows] = exact
    index = int(rows[int(np.argmin(exact))])
    refined = int(rows.size)
    diag = {"candidates": cand, "mse": err, "index": index, "refined": refined}
    return ThresholdResult(float(cand[index]), "mse", bits, bool(unsigned), diag, tuple(warns))


#: Candidates whose fast mse (:func:`mse_curve`) is within this relative distance of the smallest
#: are recomputed by the definition (:func:`mse_rows`). Both computations are within about 1e-7
#: of the exact value at worst (12 bits at 4096 bins; about 1e-9 at 8 bits and 2048 bins): each
#: term is a square >= (width / (2 qmax))^2 of a difference of values <= 4096 widths.
MSE_RTOL = 1e-6


def mse_rows(weights: np.ndarray, width: float, qmax: int, count: int, rows: np.ndarray) -> np.ndarray:
    """mse's error at the candidates ``rows`` (0-based: amax = (row + 1) * width), element by
    element as defined: every bin centre quantized (round half to even, clamped at ``qmax``),
    squared error weighted by the bin's ``weights``; ``step^2 / 12`` in range where the step is
    finer than a bin; divided by ``count``."""
    nb = weights.size
    centres = (np.arange(nb) + 0.5) * width
    cand = np.arange(1, nb + 1) * width
    out = np.empty(len(rows))
    with np.errstate(all="ignore"):
        for start in range(0, len(rows), 256):
            a = cand[rows[start:start + 256], None]
            step = a / qmax
            q = np.minimum(np.rint(centres[None, :] / step), qmax) * step
            e = (centres[None, :] - q) ** 2
            inside = centres[None, :] <= a
            e = np.where(inside & (step < width), step * step / 12.0, e)
            out[start:start + 256] = (e * weights[None, :]).sum(axis=1) / count
    return out


#: Rows of the in-range rounding pass of :func:`mse_curve` computed together (about 1 MB).
_MSE_ROWS = 64


def mse_curve(weights: np.ndarray, width: float, qmax: int, count: int) -> np.ndarray | None:
    """mse's error at every candidate ``amax = k * width``, ``k = 1..bins``, at once; None when
    a weight is negative (the closed form assumes non-negative terms).

    ``weights`` (int64) are the bin counts without the exact zeros. Outside the range (bins
    ``j >= k``) a centre quantizes to amax: ``sum_j w_j (c_j - amax)^2 = width^2 / 4 * sum_j w_j
    (2j + 1 - 2k)^2``, from integer tail sums of ``w``, ``w (2j+1)`` and ``w (2j+1)^2`` (Python
    integers when int64 could overflow). In range, a step finer than a bin gives ``step^2 / 12``
    times the weight below ``k``; otherwise each occupied bin below ``k`` is rounded: that part
    is a triangle of about ``bins^2 / 2`` terms over the occupied bins only, computed in blocks
    of rows with one matrix-vector product each.
    """
    w = np.asarray(weights, dtype=np.int64)
    if w.size == 0 or int(w.min()) < 0:
        return None
    nb = w.size
    k = np.arange(1, nb + 1, dtype=np.int64)
    odd = 2 * np.arange(nb, dtype=np.int64) + 1
    total = int(w.sum())
    exact = total * (2 * nb + 1) ** 2 < 2**62
    if not exact:  # Python integers: no overflow
        w, k, odd = w.astype(object), k.astype(object), odd.astype(object)

    def tail(x):  # sum over j >= k, for k = 1..nb
        return np.concatenate([np.cumsum(x[::-1])[::-1][1:], x[:1] * 0])

    t0, t1, t2 = tail(w), tail(w * odd), tail(w * odd * odd)
    clipped = (t2 - 4 * k * t1 + 4 * k * k * t0).astype(np.float64) * (width * width / 4.0)
    below = (total - t0).astype(np.float64)  # weight of the bins j < k

    cand = np.arange(1, nb + 1) * width
    step = cand / qmax
    inside = np.where(step < width, step * step / 12.0 * below, 0.0)
    rounded = np.flatnonzero(~(step < width))
    if rounded.size:
        wf = np.asarray(weights, dtype=np.float64)
        nz = np.flatnonzero(wf > 0)
        c = (nz + 0.5) * width
        wz = wf[nz]
        kk = rounded + 1  # candidate k: bins j < k are in range
        m = np.searchsorted(nz, kk)  # occupied bins below each candidate
        inv = 1.0 / step[rounded]
        acc = np.empty(rounded.size)
        for s in range(0, rounded.size, _MSE_ROWS):
            e = slice(s, s + _MSE_ROWS)
            lo, hi = int(m[s]), int(m[e][-1])
            u = np.multiply.outer(inv[e], c[:hi])
            u -= np.rint(u)
            u *= u
            if hi > lo:  # the triangle's edge: bin j counts in row k only when j < k
                u[:, lo:hi] *= nz[None, lo:hi] < kk[e, None]
            acc[e] = u @ wz[:hi]
        inside[rounded] = acc * step[rounded] ** 2
    return (clipped + inside) / count


#: Points per bin used to model the values inside it (see :func:`quantization_noise`).
SUBSAMPLES = 16


def quantization_noise(hist: Histogram, amax: float, qmax: int) -> float:
    """Expected sum of squared errors of |x| under a quantizer with step ``amax / qmax``, levels
    ``0..qmax`` (round half to even, clip at ``amax``), from the histogram: each bin's count is
    spread evenly over :data:`SUBSAMPLES` points in the bin; exact zeros quantize without error."""
    if hist.count == 0 or hist.width <= 0 or not (amax > 0 and math.isfinite(amax)):
        return 0.0
    weights = hist.counts.astype(np.float64)
    weights[0] -= hist.zeros
    nz = np.nonzero(weights > 0)[0]
    if nz.size == 0:
        return 0.0
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES
    values = (nz[:, None] + offsets[None, :]) * hist.width
    step = amax / qmax
    q = np.minimum(np.rint(values / step), qmax) * step
    err = ((values - q) ** 2).mean(axis=1)
    return float(np.dot(err, weights[nz]))


def onesided(hist: Histogram, bits: int = 8) -> ThresholdResult:
    """For a one-sided tensor (min >= 0) under a symmetric quantizer: the entropy search, then
    the symmetric amax that serves the tensor best.

    A ReLU output gets only the ``2**(bits-1)`` non-negative codes of symmetric int8, and its
    exact zeros (often half its values) quantize exactly under any scale, yet they sit in bin 0
    (entropy2's default zero-bin rule hides that spike from the search; ``zero_bin="keep"`` does
    not). Candidates: entropy2 (default rule); the KL search
    on the histogram without the exact zeros, with the signed level count (what the tensor really
    gets) and with the unsigned level count (``2**bits``); and the max. The one with the smallest
    expected squared error under the symmetric quantizer (:func:`quantization_noise`, ``qmax =
    2**(bits-1) - 1``) wins. Tensors that are not one-sided get entropy2 unchanged.
    Diagnostics: ``candidates`` (name -> amax), ``noise`` (name -> expected squared error), ``chosen``.
    """
    bits = _check_bits(bits, False)
    base = entropy2(hist, bits=bits)
    if base.diagnostics.get("degenerate") or not (hist.min >= 0 and hist.max > 0):
        diag = dict(base.diagnostics, chosen="entropy2", one_sided=False)
        return ThresholdResult(base.amax, "onesided", bits, False, diag, base.warnings)
    qmax = 2 ** (bits - 1) - 1
    nonzero = hist.copy()
    nonzero.counts[0] -= hist.zeros
    nonzero.count -= hist.zeros
    nonzero.zeros = 0
    candidates = {"entropy2": base.amax, "max": hist.abs_max}
    if nonzero.counts.sum() > 0:
        for name, levels in (("kl-nonzero", 2 ** (bits - 1)), ("kl-unsigned", 2**bits)):
            if levels <= nonzero.bins:
                _, cands, index, _, _ = kl_search(nonzero.counts, levels)
                candidates[name] = (int(cands[index]) + 0.5) * hist.width
    noise = {name: quantization_noise(hist, a, qmax) for name, a in candidates.items()}
    chosen = min(noise, key=lambda n: (noise[n], n != "entropy2"))
    diag = {"candidates": candidates, "noise": noise, "chosen": chosen, "one_sided": True}
    return ThresholdResult(candidates[chosen], "onesided", bits, False, diag, base.warnings)


def aciq_constant(distribution: str, bits: int) -> float:
    """Optimal alpha/sigma (gaussian) or alpha/b (laplace) for a ``bits``-bit quantiser.

    The paper's table (:data:`ACIQ_PAPER`) for 2..8 bits; :func:`solve_aciq` beyond.
    """
    table = ACIQ_PAPER.get(distribution)
    if table is not None and 2 <= bits <= 8:
        return table[bits - 2]
    return solve_aciq(distribution, bits)


@functools.cache
def solve_aciq(distribution: str, bits: int) -> float:
    """Solve d/dalpha [clipping noise + alpha^2 / (3 * 4^bits)] = 0 (Banner et al. 2019).

    Bisection on the derivative; reproduces the paper's 2..8-bit table to 2e-6 (its Gaussian
    values for 6..8 bits carry about 6 digits).
    """
    quant = 1.0 / (3.0 * 4.0**bits)
    if distribution == "laplace":
        def slope(x):  # d/dx [2 e^-x + x^2 quant] / 2
            return -math.exp(-x) + x * quant
    elif distribution == "gaussian":
        c = math.sqrt(2.0 / math.pi)

        def slope(x):  # d/dx [(x^2+1) erfc(x/sqrt2) - c x e^(-x^2/2) + x^2 quant] / 2
            return x * math.erfc(x / math.sqrt(2.0)) - c * math.exp(-x * x / 2.0) + x * quant
    else:
        raise TrtcalError(f"option distribution must be 'gaussian' or 'laplace', not {distribution!r}")
    lo, hi = 1e-6, 100.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def aciq(hist: Histogram, bits: int = 8, unsigned: bool = False,
         distribution: str = "gaussian") -> ThresholdResult:
    """ACIQ (Banner et al. 2019): ``amax = c(bits) * sigma`` (gaussian) or ``c(bits) * b`` (laplace).

    The quantiser is centred at zero (TensorRT), and the clipping error depends only on |x|, so
    the spread is fitted about zero: sigma = sqrt(mean(x^2)), b = mean|x| (the paper's sigma and
    mean|x - mu| when the tensor has zero mean). Unsigned mode uses the constant for bits + 1
    (same step). The result is capped at max|x|.
    """
    bits = _check_bits(bits, unsigned)
    const = aciq_constant(distribution, bits + 1 if unsigned else bits)
    warns, done = _prelude(hist, "aciq", bits, unsigned)
    if done:
        return done
    if distribution == "gaussian":
        spread = math.sqrt(hist.sumsq / hist.count)
    else:
        spread = hist.sumabs / hist.count
    alpha = const * spread
    amax = min(alpha, hist.abs_max)
    diag = {"distribution": distribution, "constant": const, "spread": spread, "alpha": alpha,
            "capped": alpha > hist.abs_max, "mean": hist.sum / hist.count}
    return ThresholdResult(amax, "aciq", bits, bool(unsigned), diag, tuple(warns))


METHODS = {
    "entropy2": entropy2,
    "minmax": minmax,
    "percentile": percentile,
    "mse": mse,
    "aciq": aciq,
    "onesided": onesided,
}


def compute(name: str, hist: Histogram, **options) -> ThresholdResult:
    """Run the method ``name`` on ``hist``; unknown methods or options are a TrtcalError."""
    fn = METHODS.get(name)
    if fn is None:
        raise TrtcalError(f"unknown threshold method {name!r}; choose from {', '.join(METHODS)}")
    allowed = [p for p in inspect.signature(fn).parameters if p != "hist"]
    for key in options:
        if key not in allowed:
            raise TrtcalError(f"method {name!r} has no option {key!r} (options: {', '.join(allowed)})")
    return fn(hist, **options)


def compute_all(name: str, histograms: dict[str, Histogram], **options) -> dict[str, ThresholdResult]:
    """:func:`compute` for every tensor of a name -> Histogram dict; errors name the tensor."""
    out = {}
    for tensor, hist in histograms.items():
        try:
            out[tensor] = compute(name, hist, **options)
        except TrtcalError as exc:
            raise TrtcalError(f"tensor {tensor!r}: {exc}") from None
    return out
