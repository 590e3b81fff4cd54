"""Per-tensor bit widths for a target SQNR (the SQNR analysis of seed 003).

Pure. For each tensor and each candidate bit width (smallest first), the threshold method runs at
that width and the SQNR of the tensor's values under the symmetric quantizer it gives is
estimated from the histogram (:func:`trtcal.core.thresholds.quantization_noise`; the signal is the
histogram's exact sum of squares). The tensor gets the smallest width that meets the target, or
stays in float when none does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trtcal.core import thresholds
from trtcal.core.histogram import Histogram
from trtcal.core.metrics import sqnr_db
from trtcal.core.ranges import Range

FLOAT = "float"


@dataclass(frozen=True)
class BitChoice:
    tensor: str
    bits: int | str  # the chosen width, or "float"
    amax: float | None  # the threshold at the chosen width
    sqnr_db: dict[int, float] = field(default_factory=dict)  # width -> estimated SQNR

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "bits": self.bits, "amax": self.amax,
                "sqnr_db": {str(b): v for b, v in self.sqnr_db.items()}}


def tensor_sqnr(hist: Histogram, amax: float, bits: int) -> float:
    """Estimated SQNR (dB) of a tensor under a symmetric ``bits``-bit quantizer with threshold ``amax``."""
    if hist.count == 0 or hist.abs_max == 0:
        return math.inf
    return sqnr_db(hist.sumsq, thresholds.quantization_noise(hist, amax, 2 ** (bits - 1) - 1))


def choose_bits(histograms: dict[str, Histogram], target_db: float, widths: list[int], *,
                method: str = "entropy2", **options) -> list[BitChoice]:
    """The smallest width in ``widths`` whose SQNR reaches ``target_db``, per tensor (in order)."""
    widths = sorted(set(widths))
    out = []
    for name, hist in histograms.items():
        measured: dict[int, float] = {}
        chosen: tuple[int | str, float | None] = (FLOAT, None)
        for b in widths:
            r = thresholds.compute(method, hist, bits=b, **options)
            measured[b] = tensor_sqnr(hist, r.amax, b)
            if measured[b] >= target_db:
                chosen = (b, r.amax)
                break
        out.append(BitChoice(name, chosen[0], chosen[1], measured))
    return out


def stored_ranges(choices: list[BitChoice], histograms: dict[str, Histogram], widths: tuple[int, ...], *,
                  method: str = "entropy2", **options) -> tuple[dict[str, Range], dict[str, str]]:
    """What a runtime that stores activations at ``widths`` (e.g. (8,) for TensorRT, (4, 8, 16)
    for ONNX Runtime) can do with ``choices``: each tensor at the smallest stored width at least
    its chosen one, with the threshold recomputed at that width (a wider code needs less
    clipping), one-sided ([0, amax]) where its values never go below 0. Returns ``(ranges,
    float_tensors)``: tensors that stay in float (chosen float, or wider than any stored
    width), with the reason."""
    ranges: dict[str, Range] = {}
    floats: dict[str, str] = {}
    for c in choices:
        if c.bits == FLOAT:
            floats[c.tensor] = "no width meets the target SQNR"
            continue
        stored = next((w for w in sorted(widths) if w >= c.bits), None)
        if stored is None:
            floats[c.tensor] = f"{c.bits}-bit, wider than the target stores ({', '.join(map(str, widths))}-bit)"
            continue
        hist = histograms[c.tensor]
        amax = c.amax if stored == c.bits else thresholds.compute(method, hist, bits=stored, **options).amax
        source = f"bits {c.bits}" + (f" stored as {stored}" if stored != c.bits else "")
        if hist.count > 0 and hist.min >= 0 and amax > 0:
            ranges[c.tensor] = Range(0.0, float(amax), stored, source)
        else:
            ranges[c.tensor] = Range.symmetric(float(amax), bits=stored, source=source)
    return ranges, floats


def weight_sqnr(w, axis: int | None, bits: int) -> float:
    """SQNR (dB) of a weight tensor under symmetric per-channel ``bits``-bit quantization with
    each channel's max|w| as its range, as the Q/DQ writer stores it, computed on the weights."""
    import numpy as np

    from trtcal.core.weight_scales import per_channel_int8

    w = np.asarray(w, dtype=np.float32).astype(np.float64)
    q, scale, _ = per_channel_int8(w, axis, bits=bits)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    deq = q.astype(np.float64) * scale.astype(np.float64).reshape(shape if axis is not None else ())
    return sqnr_db(float((w**2).sum()), float(((w - deq) ** 2).sum()))


def choose_weight_bits(w, axis: int | None, target_db: float, widths: list[int]) -> int:
    """The smallest width in ``widths`` whose :func:`weight_sqnr` reaches ``target_db``, else the
    widest (a weight cannot stay float alone: its layer would)."""
    widths = sorted(set(widths))
    return next((b for b in widths if weight_sqnr(w, axis, b) >= target_db), widths[-1])
