"""Streaming histograms of |x| per tensor, with TensorRT's range growth (see docs/core.md).

A :class:`Histogram` counts the absolute values of the finite elements of every batch it sees,
in ``bins`` bins of equal width starting at 0, with bounded memory. It also keeps the signed
``min``/``max``, the number of finite values, of exact zeros, of NaN and of +/-Inf (those are
excluded from the histogram and from every statistic), and running float64 sums of x, x^2, |x|.

Bin of a finite value ``v``: ``floor(|v| * (1 / width))`` in float64, clipped to the last bin, so
zeros go in bin 0 and a value exactly at the range maximum in the last bin.

Range growth (``growth``):

- ``"power2"`` (default, TensorRT's rule): the first batch with a non-zero value sets the range to
  that batch's max|x| exactly (``width = max / bins``). A later batch whose max|x| exceeds the range
  doubles the range (repeatedly) until it is covered; existing counts are summed pairwise into the
  wider bins. The number of bins never changes.
- ``"append"``: the first batch fixes ``width = max / bins``; a later batch beyond the range appends
  bins of the same width. Memory grows with max|x| / width, bounded by ``max_bins``.

The binning runs in a compiled numba kernel when numba is installed (``pip install trtcal[fast]``)
and in chunked numpy otherwise; both give identical counts, min, max and tallies (the float sums
may differ in the last bits: different summation order).
"""

from __future__ import annotations

import math
import os

import numpy as np

from trtcal.core.errors import TrtcalError

DEFAULT_BINS = 2048
GROWTH_RULES = ("power2", "append")
#: Bound on the number of bins of an ``"append"`` histogram (8 bytes each: 32 MiB).
DEFAULT_MAX_BINS = 1 << 22
_CHUNK = 1 << 18  # elements per numpy chunk: bounds temporary memory of the numpy path
_THREADED_SIZE = 1 << 22
_POOL = None

_KERNELS: object = None  # None: not tried yet; False: numba absent or disabled; else the kernels


def _label(name: str | None) -> str:
    return f"tensor {name!r}: " if name else ""


class Histogram:
    """A streaming histogram of |x| for one tensor; see the module docstring for the rules."""

    __slots__ = ("bins", "growth", "width", "counts", "count", "zeros", "nan", "posinf", "neginf",
                 "min", "max", "sum", "sumsq", "sumabs", "max_bins", "approximate", "name")

    def __init__(self, bins: int = DEFAULT_BINS, growth: str = "power2", *,
                 range_max: float | None = None, max_bins: int = DEFAULT_MAX_BINS,
                 name: str | None = None):
        if growth not in GROWTH_RULES:
            raise TrtcalError(f"{_label(name)}growth must be one of {', '.join(GROWTH_RULES)}, not {growth!r}")
        if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
            raise TrtcalError(f"{_label(name)}bins must be a positive integer, not {bins!r}")
        if growth == "power2" and bins % 2:
            raise TrtcalError(f"{_label(name)}bins must be even for power-of-two growth, not {bins}")
        if max_bins < bins:
            raise TrtcalError(f"{_label(name)}max_bins ({max_bins}) is smaller than bins ({bins})")
        self.name = name
        self.bins = int(bins)
        self.growth = growth
        self.max_bins = int(max_bins)
        #: bin width; 0.0 until the first non-zero finite value (or a preset ``range_max``)
        self.width = 0.0
        if range_max is not None:
            if not (math.isfinite(range_max) and range_max > 0):
                raise TrtcalError(f"{_label(name)}range_max must be a positive finite number, not {range_max!r}")
            self.width = float(range_max) / self.bins
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.count = 0  # finite values
        self.zeros = 0
        self.nan = 0
        self.posinf = 0
        self.neginf = 0
        self.min = math.inf  # signed, finite values only
        self.max = -math.inf
        self.sum = 0.0
        self.sumsq = 0.0
        self.sumabs = 0.0
        #: True once a merge had to re-bin counts onto a grid that was not aligned (see merge)
        self.approximate = False

    # -- derived views -------------------------------------------------------------------------
    @property
    def range_max(self) -> float:
        """Upper edge of the last bin (0.0 while the range is not set)."""
        return self.width * self.bins

    @property
    def abs_max(self) -> float:
        """max|x| over the finite values seen (0.0 when none)."""
        return max(-self.min, self.max) if self.count else 0.0

    @property
    def one_sided(self) -> bool:
        """True when every finite value has the same sign (ReLU-like); False when none seen."""
        return self.count > 0 and (self.min >= 0 or self.max <= 0)

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``bins + 1`` values from 0 to ``range_max``."""
        return np.arange(self.bins + 1, dtype=np.float64) * self.width

    def copy(self) -> Histogram:
        new = object.__new__(Histogram)
        for slot in self.__slots__:
            setattr(new, slot, getattr(self, slot))
        new.counts = self.counts.copy()
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__ if s not in ("counts", "name")) \
            and np.array_equal(self.counts, other.counts)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (f"Histogram(name={self.name!r}, bins={self.bins}, growth={self.growth!r}, "
                f"range_max={self.range_max!r}, count={self.count}, min={self.min!r}, max={self.max!r}, "
                f"zeros={self.zeros}, nan={self.nan}, posinf={self.posinf}, neginf={self.neginf})")

    # -- updating ------------------------------------------------------------------------------
    def update(self, array, *, engine: str | None = None, threads: int | None = None) -> Histogram:
        """Add one batch (any shape) and return self.

        ``engine``: None (numba when available, else numpy), "numba" or "numpy". ``threads``
        (numba only): split a large batch over that many threads; None: 2 for batches of at least
        4 Mi values on a machine with 2 or more cores, else 1. The result does not depend on it.
        """
        a = _as_float_vector(array, self.name)
        if a.size == 0:
            return self
        kernels = _pick_engine(engine)
        if kernels:
            if threads is None:
                threads = min(2, os.cpu_count() or 1) if a.size >= _THREADED_SIZE else 1
            self._update_numba(a, kernels, max(1, int(threads)))
        else:
            self._update_numpy(a)
        return self

    def _add_stats(self, st) -> None:
        n, zeros, nan, posinf, neginf, mn, mx, s, ss, sa = st
        self.count += int(n)
        self.zeros += int(zeros)
        self.nan += int(nan)
        self.posinf += int(posinf)
        self.neginf += int(neginf)
        if n:
            self.min = min(self.min, float(mn))
            self.max = max(self.max, float(mx))
        self.sum += float(s)
        self.sumsq += float(ss)
        self.sumabs += float(sa)

    def _update_numba(self, a: np.ndarray, kernels, threads: int) -> None:
        stats_fn, bin_fn, fused_fn = kernels
        parts = np.array_split(a, threads) if threads > 1 else [a]
        if self.width > 0.0:
            # One pass: statistics and binning on the current grid together. Kept unless the batch
            # reaches past the range (or holds NaN/Inf): then the range grows and the values are
            # binned again on the new grid, exactly as the two-pass path would have.
            inv = 1.0 / self.width

            def fused(part):
                local = np.zeros(self.bins, dtype=np.int64)
                return fused_fn(part, inv, local), local

            done = _run(fused, parts)
            sts = [st for st, _ in done]
            if not any(st[2] or st[3] or st[4] for st in sts):
                st = _combine(sts)
                if max(-st[5], st[6]) <= self.range_max:
                    for _, local in done:
                        self.counts += local
                    self._add_stats(st)
                    return
            del done
        sts = _run(lambda part: stats_fn(part), parts)
        st = _combine(sts)
        n, mn, mx = st[0], st[5], st[6]
        if n and max(-mn, mx) > self.range_max:
            self._cover(max(-mn, mx))
        if n:
            if self.width == 0.0:  # only zeros so far: they all belong in bin 0
                self.counts[0] += n
            else:
                inv = 1.0 / self.width

                def binned(part):
                    local = np.zeros(self.bins, dtype=np.int64)
                    bin_fn(part, inv, local)
                    return local

                for local in _run(binned, parts):
                    self.counts += local
        self._add_stats(st)

    def _update_numpy(self, a: np.ndarray) -> None:
        n = zeros = nan = posinf = neginf = 0
        mn, mx = math.inf, -math.inf
        s = ss = sa = 0.0
        dirty = []  # chunk starts holding NaN/Inf
        with np.errstate(all="ignore"):
            for start in range(0, a.size, _CHUNK):
                c = a[start:start + _CHUNK]
                cmin, cmax = c.min(), c.max()
                if not (math.isfinite(cmin) and math.isfinite(cmax)):
                    dirty.append(start)
                    nan += int(np.count_nonzero(np.isnan(c)))
                    posinf += int(np.count_nonzero(c == np.inf))
                    neginf += int(np.count_nonzero(c == -np.inf))
                    c = c[np.isfinite(c)]
                    if c.size == 0:
                        continue
                    cmin, cmax = c.min(), c.max()
                mn, mx = min(mn, float(cmin)), max(mx, float(cmax))
                n += c.size
                zeros += c.size - int(np.count_nonzero(c))
                c64 = c.astype(np.float64)
                s += float(c64.sum())
                ss += float(np.einsum("i,i->", c64, c64))  # no BLAS: no thread pool
                np.abs(c64, out=c64)
                sa += float(c64.sum())
        if n and max(-mn, mx) > self.range_max:
            self._cover(max(-mn, mx))
        if n:
            if self.width == 0.0:  # only zeros so far: they all belong in bin 0
                self.counts[0] += n
            else:
                dirty_set = set(dirty)
                inv = 1.0 / self.width
                top = float(self.bins - 1)
                buf = np.empty(min(_CHUNK, a.size), dtype=np.float64)
                for start in range(0, a.size, _CHUNK):
                    c = a[start:start + _CHUNK]
                    if start in dirty_set:
                        c = c[np.isfinite(c)]
                    t = buf[:c.size]
                    t[:] = c  # exact widening of float32
                    np.abs(t, out=t)
                    np.multiply(t, inv, out=t)
                    np.minimum(t, top, out=t)
                    self.counts += np.bincount(t.astype(np.intp), minlength=self.bins)
        self._add_stats((n, zeros, nan, posinf, neginf, mn, mx, s, ss, sa))

    def _cover(self, m: float) -> None:
        """Set or grow the range so that ``m`` (> range_max, finite) is inside it."""
        if self.width == 0.0:
            self.width = m / self.bins  # first non-zero batch: range = its max|x| exactly
            return
        if self.growth == "power2":
            doublings = 0
            while self.width * self.bins < m:
                self.width *= 2.0
                doublings += 1
                if not math.isfinite(self.width * self.bins):
                    raise TrtcalError(f"{_label(self.name)}value {m!r} is too large to histogram")
            self.counts = _halve(self.counts, doublings)
        else:
            need = max(self.bins + 1, math.ceil(m * (1.0 / self.width)))
            if need > self.max_bins:
                raise TrtcalError(
                    f"{_label(self.name)}a fixed-width histogram would need {need} bins to reach "
                    f"{m!r} (max_bins {self.max_bins}); use growth='power2' or a larger max_bins")
            self.counts = np.concatenate([self.counts, np.zeros(need - self.bins, dtype=np.int64)])
            self.bins = need

    def add_zeros(self, n: int) -> Histogram:
        """Count ``n`` more exact zeros (in place; returns self): what padding with zeros adds.
        Zeros fall in bin 0 on every grid and never move the range, so this equals updating with
        the same batches plus their zeros."""
        if n < 0:
            raise TrtcalError(f"{_label(self.name)}cannot add {n} zeros")
        if n:
            self.counts[0] += n
            self.count += n
            self.zeros += n
            self.min = min(self.min, 0.0)
            self.max = max(self.max, 0.0)
        return self

    # -- merging -------------------------------------------------------------------------------
    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts and statistics into self (in place) and return self.

        Exact when both grids align: same width, or (power2) widths that differ by a power of
        two, or one side has seen only zeros. Otherwise the other side's bins are re-binned by
        their centres onto the coarser grid and ``approximate`` is set.
        """
        if not isinstance(other, Histogram):
            raise TypeError("can only merge a Histogram")
        if other.growth != self.growth or (self.growth == "power2" and other.bins != self.bins):
            raise TrtcalError(f"{_label(self.name or other.name)}cannot merge a {other.growth} histogram "
                              f"of {other.bins} bins into a {self.growth} histogram of {self.bins} bins")
        oc = other.counts
        if other.width == 0.0:
            self.counts[0] += oc[0]
        elif self.width == 0.0:
            zeros_here = self.counts[0]
            self.width, self.bins, self.counts = other.width, other.bins, oc.copy()
            self.counts[0] += zeros_here
        elif self.growth == "power2":
            a, b = (self, other) if self.width >= other.width else (other, self)
            ratio = a.width / b.width
            k = int(round(math.log2(ratio)))
            if b.width * 2.0**k == a.width:
                fine = _halve(b.counts, k)
                self.width, self.counts = a.width, a.counts + fine
            else:
                self.counts, self.width = _rebin(a, b), a.width
                self.approximate = True
        else:
            if self.width == other.width:
                bins = max(self.bins, other.bins)
                counts = np.zeros(bins, dtype=np.int64)
                counts[:self.bins] += self.counts
                counts[:other.bins] += oc
            else:
                a, b = (self, other) if self.width > other.width else (other, self)
                bins = max(a.bins, math.ceil(b.range_max / a.width))
                if bins > self.max_bins:
                    raise TrtcalError(f"{_label(self.name)}merged histogram would need {bins} bins "
                                      f"(max_bins {self.max_bins})")
                grid = a.copy()
                grid.counts = np.concatenate([a.counts, np.zeros(bins - a.bins, dtype=np.int64)])
                grid.bins = bins
                counts = _rebin(grid, b)
                self.width = a.width
                self.approximate = True
            self.bins, self.counts = bins, counts
        self.approximate = self.approximate or other.approximate
        self._add_stats((other.count, other.zeros, other.nan, other.posinf, other.neginf,
                         other.min, other.max, other.sum, other.sumsq, other.sumabs))
        return self

    # -- (de)serialising -----------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numeric arrays (no objects) holding the whole state; see :meth:`from_arrays`."""
        ints = [self.bins, GROWTH_RULES.index(self.growth), self.count, self.zeros, self.nan,
                self.posinf, self.neginf, self.max_bins, int(self.approximate)]
        floats = [self.width, self.min, self.max, self.sum, self.sumsq, self.sumabs]
        return {"counts": self.counts.copy(), "ints": np.array(ints, dtype=np.int64),
                "floats": np.array(floats, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays, name: str | None = None) -> Histogram:
        """Rebuild a histogram from :meth:`to_arrays`; inconsistent data is a TrtcalError."""
        where = _label(name)
        try:
            counts, ints, floats = (np.asarray(arrays[k]) for k in ("counts", "ints", "floats"))
        except KeyError as exc:
            raise TrtcalError(f"{where}histogram data lacks {exc.args[0]!r}") from None
        if ints.shape != (9,) or ints.dtype != np.int64 or floats.shape != (6,) or floats.dtype != np.float64:
            raise TrtcalError(f"{where}histogram header has the wrong shape or type")
        bins, growth, count, zeros, nan, posinf, neginf, max_bins, approx = (int(v) for v in ints)
        width, mn, mx, s, ss, sa = (float(v) for v in floats)
        problems = []
        if counts.dtype != np.int64 or counts.shape != (bins,):
            problems.append(f"counts must be int64[{bins}]")
        elif counts.size and counts.min() < 0:
            problems.append("negative counts")
        elif int(counts.sum()) != count:
            problems.append(f"counts sum to {int(counts.sum())}, not {count}")
        if growth not in (0, 1) or bins < 1 or max_bins < bins or min(zeros, nan, posinf, neginf) < 0:
            problems.append("invalid header values")
        if not (math.isfinite(width) and width >= 0) or (count and not (mn <= mx)):
            problems.append("invalid range")
        if problems:
            raise TrtcalError(f"{where}corrupt histogram: {'; '.join(problems)}")
        if growth == 0 and bins % 2:
            raise TrtcalError(f"{where}corrupt histogram: odd bin count for power2 growth")
        h = cls(bins, GROWTH_RULES[growth], max_bins=max_bins, name=name)
        h.counts = counts.copy()
        h.width, h.count, h.zeros, h.nan, h.posinf, h.neginf = width, count, zeros, nan, posinf, neginf
        h.min, h.max, h.sum, h.sumsq, h.sumabs = mn, mx, s, ss, sa
        h.approximate = bool(approx)
        return h


def _halve(counts: np.ndarray, times: int) -> np.ndarray:
    """Sum bins pairwise ``times`` times, keeping the bin count (power-of-two range growth)."""
    counts = counts.copy()
    for _ in range(times):
        if not counts[1:].any():
            break  # everything is in bin 0 already
        pairs = counts.reshape(-1, 2).sum(axis=1)
        counts[:] = 0
        counts[:pairs.size] = pairs
    return counts


def _rebin(coarse: Histogram, fine: Histogram) -> np.ndarray:
    """Counts of ``coarse`` plus ``fine``'s counts placed by bin centre onto coarse's grid."""
    centres = (np.arange(fine.bins, dtype=np.float64) + 0.5) * fine.width
    idx = np.minimum(np.floor(centres / coarse.width), coarse.bins - 1).astype(np.intp)
    out = coarse.counts.copy()
    np.add.at(out, idx, fine.counts)
    return out


def _as_float_vector(array, name: str | None) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype == np.float32 or a.dtype == np.float64:
        pass
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind in "biu":
        a = a.astype(np.float64)
    else:
        raise TrtcalError(f"{_label(name)}cannot histogram values of type {a.dtype}")
    return np.ascontiguousarray(a).reshape(-1)


def numba_available() -> bool:
    """Whether the compiled update path can be used (numba importable, TRTCAL_NUMBA not 0)."""
    return bool(_load_kernels())


def _pick_engine(engine: str | None):
    if engine is None:
        return _load_kernels() or None
    if engine == "numpy":
        return None
    if engine == "numba":
        kernels = _load_kernels()
        if not kernels:
            raise TrtcalError("engine 'numba' requested but numba is not available (pip install trtcal[fast])")
        return kernels
    raise TrtcalError(f"engine must be 'numba', 'numpy' or None, not {engine!r}")


def _run(fn, parts):
    """Run ``fn`` over parts, on a small thread pool when there are several (numba releases the GIL)."""
    global _POOL
    if len(parts) == 1:
        return [fn(parts[0])]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="trtcal-hist")
    return list(_POOL.map(fn, parts))


def _combine(sts):
    n = zeros = nan = posinf = neginf = 0
    mn, mx = math.inf, -math.inf
    s = ss = sa = 0.0
    for st in sts:
        n += int(st[0])
        zeros += int(st[1])
        nan += int(st[2])
        posinf += int(st[3])
        neginf += int(st[4])
        if st[0]:
            mn, mx = min(mn, float(st[5])), max(mx, float(st[6]))
        s, ss, sa = s + float(st[7]), ss + float(st[8]), sa + float(st[9])
    return n, zeros, nan, posinf, neginf, mn, mx, s, ss, sa


def _load_kernels():
    """Compile (or load from numba's cache) the update kernels, once; False if unavailable.

    Returns ``(stats, binning, fused)``: ``stats(a)`` -> (n, zeros, nan, posinf, neginf, min, max,
    sum, sumsq, sumabs) of a float32/float64 vector; ``binning(a, inv, counts)`` adds every finite
    value to ``counts[min(floor(|v| * inv), bins - 1)]``, exactly like the numpy path;
    ``fused(a, inv, counts)`` does both in one pass over ``a`` (counts valid only without NaN/Inf).
    """
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    if os.environ.get("TRTCAL_NUMBA", "1").strip().lower() in ("0", "no", "false", "off"):
        _KERNELS = False
        return _KERNELS
    try:
        from trtcal.core import _histogram_kernels as k
    except Exception:  # ImportError, or a broken numba/llvmlite install
        _KERNELS = False
        return _KERNELS
    fast_stats, careful_stats, binning, fused = k.fast_stats, k.careful_stats, k.binning, k.fused

    consts = {np.dtype(np.float32): (np.int32, 31, 0x7FFFFFFF, 0x7F800000),
              np.dtype(np.float64): (np.int64, 63, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000)}

    def keyed(kernel, a, *extra):
        """Run a kernel that returns min/max as integer keys (fast_stats, fused) and decode them to
        stats()'s tuple; with NaN/Inf present, careful_stats' tuple instead (counts not usable)."""
        if a.size == 0:
            return 0, 0, 0, 0, 0, math.inf, -math.inf, 0.0, 0.0, 0.0
        itype, sh, mask, expo = consts[a.dtype]
        kmn, kmx, s, ss, sa, zeros, bad = kernel(a, a.view(itype), itype(sh), itype(mask), itype(expo), *extra)
        if bad:
            return careful_stats(a)
        keys = np.array([kmn, kmx], dtype=itype)
        mn, mx = (keys ^ ((keys >> itype(sh)) & itype(mask))).view(a.dtype)
        return a.size, zeros, 0, 0, 0, float(mn), float(mx), s, ss, sa

    def stats(a):
        return keyed(fast_stats, a)

    def fused_update(a, inv, counts):
        """Statistics of ``a`` as ``stats`` gives them, and its bins added to ``counts``; with
        NaN/Inf present the counts are not usable and nan (or posinf, neginf) is non-zero."""
        return keyed(fused, a, float(inv), counts)

    _KERNELS = (stats, binning, fused_update)
    return _KERNELS


def histogram_of(array, bins: int = DEFAULT_BINS, growth: str = "power2", *,
                 name: str | None = None, engine: str | None = None) -> Histogram:
    """A new histogram of one batch."""
    return Histogram(bins, growth, name=name).update(array, engine=engine)


def update_all(histograms: dict[str, Histogram], batch: dict, *, bins: int = DEFAULT_BINS,
               growth: str = "power2", engine: str | None = None, workers: int = 1) -> dict[str, Histogram]:
    """Update ``histograms`` (name -> Histogram) with a batch (name -> array), adding new names.

    ``workers`` > 1: the tensors are counted side by side on this module's thread pool, largest
    first (numba and numpy release the GIL); a tensor holding at least half of the batch's values
    goes first, alone, split over threads by :meth:`Histogram.update`. Each histogram gets its
    one array of the batch, so the result does not depend on ``workers``."""
    for name in batch:
        if name not in histograms:
            histograms[name] = Histogram(bins, growth, name=name)
    if workers <= 1:
        for name, array in batch.items():
            histograms[name].update(array, engine=engine)
        return histograms
    items = sorted(batch.items(), key=lambda kv: -np.size(kv[1]))
    if items and 2 * np.size(items[0][1]) >= sum(np.size(a) for _, a in items):
        name, array = items.pop(0)
        histograms[name].update(array, engine=engine)  # its own threads when large
    if items:
        _run(lambda kv: histograms[kv[0]].update(kv[1], engine=engine, threads=1), items)
    return histograms


def merge_all(parts: list[dict[str, Histogram]]) -> dict[str, Histogram]:
    """Merge several name -> Histogram dicts (e.g. from parallel workers) into a new dict."""
    out: dict[str, Histogram] = {}
    for part in parts:
        for name, hist in part.items():
            if name in out:
                out[name].merge(hist)
            else:
                out[name] = hist.copy()
    return out
