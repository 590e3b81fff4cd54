"""The output error of a linear layer (convolution, matrix product) for candidate weights, from
statistics of its input gathered once (pure numpy): what makes a per-channel weight-scale search
cost ``K^2`` per channel and candidate instead of a layer run over every output position.

A convolution is a matrix product once its input is unfolded (:func:`im2col`): output position
``p``, channel ``k`` of group ``g`` is ``y[p, k] = alpha * a[p, g, :] . w[k, :] + b`` with ``K =
Cin / groups * prod(kernel)`` inputs per row. With the input fake-quantized (``aq``), the output
computed from the float weights ``yq`` and the float reference output ``ref`` (both given, so a
bias, ``alpha`` and rounding of the runtime's own layer are whatever produced them), candidate
weights ``q`` (error ``e = alpha * (q - w)``) give ``got = yq + aq e`` and per channel::

    ||got - ref||^2 = e' G e + 2 e' U + c        G = aq' aq,  U = aq' (yq - ref),  c = ||yq - ref||^2
    ref . got       = r + e' V + t               V = aq' ref, t = ref . (yq - ref), r = ||ref||^2

so after one pass over the positions (:meth:`ChannelErrors.add`, float64 accumulation) every
candidate costs ``K^2`` per channel (:meth:`ChannelErrors.scores`). The result equals computing
the output for each candidate up to float rounding. The terms are small differences (``e``,
``yq - ref``), never a difference of two large sums, so the rounding stays at the level of the
float32 outputs themselves.

:func:`coarse_to_fine` and :func:`golden_peak` find the best of a grid of candidates scoring a
fraction of them (exact when the scores are unimodal along the grid; otherwise a local best).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trtcal.core.errors import TrtcalError

METRICS = ("cosine", "mse")


@dataclass(frozen=True)
class ConvGeometry:
    """An N-d convolution's shape parameters (ONNX Conv semantics, pads resolved)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, one per spatial axis
    groups: int = 1

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        n = len(self.kernel)
        return tuple((spatial[i] + self.pads[i] + self.pads[n + i] - (self.kernel[i] - 1) * self.dilations[i] - 1)
                     // self.strides[i] + 1 for i in range(n))


def conv_geometry(spatial: Sequence[int], kernel: Sequence[int], *, strides=None, dilations=None, pads=None,
                  groups: int = 1, auto_pad: str = "NOTSET") -> ConvGeometry:
    """Resolve ONNX Conv attributes for an input of spatial shape ``spatial`` (``auto_pad``:
    NOTSET, VALID, SAME_UPPER, SAME_LOWER)."""
    n = len(kernel)
    strides = tuple(strides or (1,) * n)
    dilations = tuple(dilations or (1,) * n)
    if auto_pad in ("NOTSET", ""):
        pads = tuple(pads or (0,) * (2 * n))
    elif auto_pad == "VALID":
        pads = (0,) * (2 * n)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = tuple(begin + end)
    else:
        raise TrtcalError(f"Conv auto_pad {auto_pad!r}: NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n or groups < 1:
        raise TrtcalError(f"Conv attributes do not fit a {n}-d kernel: strides {strides}, dilations {dilations}, "
                          f"pads {pads}, group {groups}")
    return ConvGeometry(tuple(int(k) for k in kernel), strides, dilations, pads, int(groups))


def im2col(x: np.ndarray, geom: ConvGeometry, every: int = 1) -> np.ndarray:
    """Unfold ``x`` ``[N, C, *spatial]`` into ``[P, groups, K]``: row ``p`` (positions in
    ``N, *output`` order) holds the input values output position ``p`` reads, per group, in the
    order of the weight's ``[Cin / groups, *kernel]`` (zero where the window lies in the pads).
    ``every``: only every ``every``-th output position along each spatial axis (from the first)."""
    n = len(geom.kernel)
    if x.ndim != n + 2 or x.shape[1] % geom.groups:
        raise TrtcalError(f"im2col: input of shape {x.shape} does not fit a {n}-d kernel with {geom.groups} groups")
    width = [(geom.pads[i], geom.pads[n + i]) for i in range(n)]
    xp = np.pad(x, [(0, 0), (0, 0)] + width) if any(geom.pads) else x
    out = geom.output_shape(x.shape[2:])
    span = [(k - 1) * d + 1 for k, d in zip(geom.kernel, geom.dilations)]
    view = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, n + 2)))
    # [N, C, *positions, *span]: every stride-th position, every dilation-th tap
    index = (slice(None), slice(None)) + tuple(slice(None, o * s, s * every) for o, s in zip(out, geom.strides)) \
        + tuple(slice(None, None, d) for d in geom.dilations)
    view = view[index]
    order = (0,) + tuple(range(2, n + 2)) + (1,) + tuple(range(n + 2, 2 * n + 2))
    cols = np.ascontiguousarray(view.transpose(order))  # [N, *out, C, *kernel]
    return cols.reshape(-1, geom.groups, x.shape[1] // geom.groups * math.prod(geom.kernel))


#: Positions per float32 product of :meth:`ChannelErrors.add`'s ``U`` and ``V`` (with a ``step``).
UV_BLOCK = 1024


def _codes(aq: np.ndarray, step: float) -> np.ndarray | None:
    """``aq / step`` as float32 integers, or None where ``aq`` is not integer multiples of ``step``
    within 255 of zero (then the caller sums ``aq`` itself)."""
    if not step > 0:
        return None
    codes = np.rint(np.asarray(aq, np.float32) / np.float32(step))
    if np.abs(codes).max(initial=0.0) > 255 or not np.allclose(codes * np.float32(step), aq, rtol=1e-6, atol=0):
        return None
    return codes


def code_gram(codes: np.ndarray) -> np.ndarray:
    """``codes' codes`` ``[K, K]`` for integer-valued float32 ``codes`` ``[P, K]`` (at most 255 in
    magnitude), summed in float32 blocks small enough that every partial sum is an integer below
    2^24 (exact), the blocks in float64: exact, at float32 matrix speed."""
    top = max(1.0, float(np.abs(codes).max(initial=0.0)))
    block = max(1, int(2**24 // (top * top)))
    total = np.zeros((codes.shape[1], codes.shape[1]))  # integers, exact in float64
    for b in range(0, codes.shape[0], block):
        part = codes[b:b + block]
        total += part.T @ part
    return total


def integer_gram(codes: np.ndarray) -> np.ndarray:
    """``G[g] = codes[:, g]' codes[:, g]`` ``[groups, K, K]`` (float64, exact) for integer-valued
    float32 ``codes`` ``[P, groups, K]`` at most 255 in magnitude: one group by :func:`code_gram`,
    several in float64 (a batched product)."""
    p, groups, k = codes.shape
    if groups == 1:
        return code_gram(codes.reshape(p, k))[None]
    a = np.ascontiguousarray(codes.transpose(1, 0, 2), dtype=np.float64)
    return a.transpose(0, 2, 1) @ a


class ChannelErrors:
    """Per output channel, the error of a linear layer's output for candidate weights, from
    ``G, U, V, c, t, r`` (module docstring) accumulated over positions.

    ``weight_rows`` ``[Cout, K]``: channel ``k``'s weights in the unfolded input's order; channels
    ``k`` of group ``k // (Cout / groups)``. ``alpha``: the layer's output scale (Gemm's alpha).
    """

    def __init__(self, weight_rows: np.ndarray, groups: int = 1, alpha: float = 1.0):
        cout, k = weight_rows.shape
        if groups < 1 or cout % groups:
            raise TrtcalError(f"{cout} output channels do not split into {groups} groups")
        self.groups, self.per_group, self.k, self.alpha = groups, cout // groups, k, float(alpha)
        self.w = np.asarray(weight_rows, np.float32)
        self.G = np.zeros((groups, k, k))
        self.U = np.zeros((groups, k, self.per_group))
        self.V = np.zeros((groups, k, self.per_group))
        self.c = np.zeros(cout)
        self.t = np.zeros(cout)
        self.r = np.zeros(cout)
        self.positions = 0

    def add(self, aq: np.ndarray, yq: np.ndarray, ref: np.ndarray, *, step: float | None = None) -> None:
        """Accumulate positions: ``aq`` ``[P, groups, K]`` the unfolded quantized input, ``yq``
        and ``ref`` ``[P, Cout]`` the outputs from the quantized input with float weights and
        from the float input (the reference). ``step``: the input's quantization step, where
        ``aq`` holds integer multiples of it (at most 255 steps from 0): then ``G`` is summed from
        the integer codes in float32 blocks small enough that every partial sum is an integer
        below 2^24 (exact), and scaled by ``step^2`` in float64: the same ``G`` as from ``aq`` up
        to the float32 rounding of ``aq`` itself, at float32 matrix speed; ``U`` and ``V`` are
        then summed in float32 over blocks of :data:`UV_BLOCK` positions, the blocks in float64
        (the float32 outputs' own rounding, about 1e-6 of each term's scale)."""
        p = aq.shape[0]
        if aq.shape[1:] != (self.groups, self.k) or yq.shape != (p, self.w.shape[0]) or ref.shape != yq.shape:
            raise TrtcalError(f"layer error: shapes {aq.shape}, {yq.shape}, {ref.shape} do not fit "
                              f"{self.groups} groups of {self.k} inputs, {self.w.shape[0]} channels")
        ref64 = ref.astype(np.float64)
        delta = yq.astype(np.float64) - ref64
        codes = _codes(aq, step) if step is not None and self.groups == 1 else None
        if codes is not None:  # G from the integer codes; U and V in float32 blocks summed in float64
            self.G[0] += code_gram(codes.reshape(p, self.k)) * (float(step) * float(step))
            a32 = np.asarray(aq, np.float32).reshape(p, self.k)
            y32, r32 = np.asarray(yq, np.float32), np.asarray(ref, np.float32)
            both = np.concatenate([y32 - r32, r32], axis=1)
            for b in range(0, p, UV_BLOCK):
                part = a32[b:b + UV_BLOCK].T @ both[b:b + UV_BLOCK]
                self.U[0] += part[:, :self.per_group]
                self.V[0] += part[:, self.per_group:]
        elif self.groups == 1:  # one product: G, U and V side by side
            a = aq.reshape(p, self.k).astype(np.float64)
            k, c = self.k, self.per_group
            every = a.T @ np.concatenate([a, delta, ref64], axis=1)
            self.G[0] += every[:, :k]
            self.U[0] += every[:, k:k + c]
            self.V[0] += every[:, k + c:]
        else:
            a = np.ascontiguousarray(aq.transpose(1, 0, 2), dtype=np.float64)  # [g, P, K]
            at = a.transpose(0, 2, 1)
            self.G += at @ a
            both = np.concatenate([delta, ref64], axis=1).reshape(p, 2, self.groups, self.per_group)
            both = at @ np.ascontiguousarray(both.transpose(2, 0, 1, 3)).reshape(self.groups, p, 2 * self.per_group)
            self.U += both[:, :, :self.per_group]
            self.V += both[:, :, self.per_group:]
        self.c += np.einsum("pk,pk->k", delta, delta)
        self.t += np.einsum("pk,pk->k", ref64, delta)
        self.r += np.einsum("pk,pk->k", ref64, ref64)
        self.positions += p

    def terms(self, q_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, ``(||got - ref||^2, ref . got)`` for weights ``q_rows`` ``[Cout, K]``."""
        e = (np.asarray(q_rows, np.float32).astype(np.float64) - self.w) * self.alpha  # [Cout, K]
        e = e.reshape(self.groups, self.per_group, self.k).transpose(0, 2, 1)  # [g, K, Cg]
        err2 = (e * (self.G @ e)).sum(1) + 2 * (e * self.U).sum(1)
        dot = (e * self.V).sum(1)
        return err2.reshape(-1) + self.c, dot.reshape(-1) + self.r + self.t

    def scores(self, q_rows: np.ndarray, metric: str = "cosine") -> np.ndarray:
        """Per output channel, larger is better: the cosine of the output with the reference (1
        where either is zero), or minus the squared error."""
        if metric not in METRICS:
            raise TrtcalError(f"layer error metric {metric!r}: {' or '.join(METRICS)}")
        err2, dot = self.terms(q_rows)
        err2 = np.maximum(err2, 0.0)
        if metric == "mse":
            return -err2
        got2 = np.maximum(self.r + 2 * (dot - self.r) + err2, 0.0)  # ||got||^2 = ||ref||^2 + 2 ref.(got-ref) + ||got-ref||^2
        den = np.sqrt(self.r) * np.sqrt(got2)
        return np.where(den > 0, dot / np.where(den > 0, den, 1), 1.0)


def coarse_to_fine(score: Callable[[int], float], n: int, *, first: int | None = None) -> tuple[int, dict[int, float]]:
    """The index in ``range(n)`` of the highest ``score`` (the first of equals), scoring every
    ``step``-th index, then every ``step / 3``-th within a step of the best so far, down to every
    index (``first``: the first step, default about ``sqrt(n)``). Exact when the scores rise to
    one peak and fall; on a rougher curve it returns the best local peak it saw. Returns ``(best,
    {index: score})`` of the indices scored (about ``sqrt(n) + 6 log3(sqrt(n))`` of them)."""
    if n < 1:
        raise TrtcalError("coarse_to_fine: nothing to search")
    step = max(1, first if first is not None else round(math.sqrt(n)))
    seen: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in seen:
            seen[i] = float(score(i))
        return seen[i]

    lo, hi = 0, n - 1
    while True:
        grid = list(range(lo, hi + 1, step))
        if grid[-1] != hi:
            grid.append(hi)
        for i in grid:
            at(i)
        best = max((i for i in seen if lo <= i <= hi), key=lambda i: (seen[i], -i))
        if step == 1:
            break
        lo, hi = max(0, best - step + 1), min(n - 1, best + step - 1)
        step = max(1, step // 3)
    best = max(seen, key=lambda i: (seen[i], -i))
    return best, seen


def golden_peak(score: Callable[[int], float], n: int, *, first: int | None = None,
                start: int | None = None) -> tuple[int, dict[int, float]]:
    """The index in ``range(n)`` of the highest ``score``, scoring every ``first``-th index
    (default about ``n / 5``: six indices, with the last; with ``start``, every ``first``-th
    index on either side of ``start`` instead, ends not included: five for ``n = 100``), then
    narrowing the bracket around the best so far by golden sections: each new index splits the larger side of the bracket at 0.382 and
    replaces the bracket's middle where it scores higher (the lower index of equals), until the
    middle's both neighbours are scored. Exact when the scores rise to one peak and fall (as
    :func:`coarse_to_fine`, with fewer scores: about ``n / first + 1.44 log2(2 first)``, 13 for
    ``n = 100`` against about 21); otherwise a local best: its scored neighbours are not higher.
    Returns ``(best, {index: score})`` of the indices scored."""
    if n < 1:
        raise TrtcalError("golden_peak: nothing to search")
    step = max(1, first if first is not None else round(n / 5))
    seen: dict[int, float] = {}

    def at(i: int) -> float:
        if i not in seen:
            seen[i] = float(score(i))
        return seen[i]

    if start is not None and 0 <= start < n:
        grid = list(range(start % step, n, step))
    else:
        grid = list(range(0, n, step))
        if grid[-1] != n - 1:
            grid.append(n - 1)
    scores = [at(i) for i in grid]
    j = max(range(len(grid)), key=lambda j: (scores[j], -grid[j]))
    mid = grid[j]
    lo = grid[j - 1] if j > 0 else -1  # -1 and n: outside the range, never scored
    hi = grid[j + 1] if j + 1 < len(grid) else n
    while hi - lo > 2:
        if hi - mid >= mid - lo:
            x = mid + max(1, round((hi - mid) * 0.381966))
        else:
            x = mid - max(1, round((mid - lo) * 0.381966))
        fx, fm = at(x), seen[mid]
        if fx > fm or (fx == fm and x < mid):  # x is the new middle
            lo, hi = (mid, hi) if x > mid else (lo, mid)
            mid = x
        elif x > mid:
            hi = x
        else:
            lo = x
    return mid, seen


def coarse_to_fine_many(score: Callable[[np.ndarray], np.ndarray], n: int, channels: int, *,
                        first: int | None = None) -> np.ndarray:
    """:func:`coarse_to_fine` for ``channels`` independent searches at once, each over
    ``range(n)``: ``score(idx)`` takes one index per channel (an int array ``[channels]``) and
    returns each channel's score; every channel follows its own steps, and the result (each
    channel's best index) is the one :func:`coarse_to_fine` returns for that channel alone. For
    searches where one call scores every channel (a per-channel weight scale: one layer run, or
    one Gram product, for all channels), ``about sqrt(n) + 6 log3(sqrt(n))`` calls instead of ``n``."""
    if n < 1:
        raise TrtcalError("coarse_to_fine: nothing to search")
    step = max(1, first if first is not None else round(math.sqrt(n)))
    rows = np.arange(channels)
    lo, hi = np.zeros(channels, np.int64), np.full(channels, n - 1, np.int64)
    best = np.zeros(channels, np.int64)
    best_score = np.full(channels, -np.inf)
    done = np.zeros((channels, n), bool)  # indices already scored, per channel
    while True:
        # each channel's grid: lo, lo + step, ... up to hi, and hi itself (padded with hi)
        width = int(((hi - lo) // step).max()) + 2
        grid = np.minimum(lo[:, None] + step * np.arange(width)[None, :], hi[:, None])
        for j in range(width):
            idx = grid[:, j]
            fresh = ~done[rows, idx]
            if not fresh.any():
                continue
            got = np.asarray(score(idx), np.float64)
            done[rows, idx] = True
            better = fresh & ((got > best_score) | ((got == best_score) & (idx < best)))
            best = np.where(better, idx, best)
            best_score = np.where(better, got, best_score)
        if step == 1:
            return best
        lo, hi = np.maximum(0, best - step + 1), np.minimum(n - 1, best + step - 1)
        step = max(1, step // 3)
