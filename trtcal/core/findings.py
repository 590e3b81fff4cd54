"""What a calibration found, per tensor: one-sided tensors, heavy clipping (every value clipped:
an amax below the tensor's smallest |x|), degenerate ranges, NaN/Inf.

Pure: from histograms and threshold results to a list of :class:`Finding`, the same list that
``trtcal calibrate``, ``trtcal thresholds`` and ``trtcal demo`` print and put in ``--json``.

The clipped fraction is read from the |x| histogram: the values in bins wholly above the
threshold, plus the part of the bin that holds the threshold that lies above it (values assumed
uniform within a bin), over all finite values. It is exact to within one bin's count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trtcal.core.histogram import Histogram

#: A tensor is reported as clipped when more than this fraction of its values lie above the threshold.
CLIP_FRACTION = 0.01


@dataclass(frozen=True)
class Finding:
    """One thing worth knowing about one tensor's range."""

    tensor: str
    kind: str  # "one-sided", "clipped", "all-clipped", "degenerate", "nan-inf"
    message: str
    value: float | None = None  # the measured quantity (clipped fraction, bad-value count)

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "kind": self.kind, "message": self.message, "value": self.value}


def clipped_fraction(hist: Histogram, amax: float) -> float:
    """Fraction of the finite values with |x| > ``amax``, read from the histogram (see module doc)."""
    if hist.count == 0 or hist.width <= 0 or not math.isfinite(amax):
        return 0.0
    if amax <= 0:
        return (hist.count - hist.zeros) / hist.count
    counts = hist.counts
    position = amax / hist.width  # in bins
    whole = int(math.floor(position))
    if whole >= counts.size:
        return 0.0
    above = float(np.sum(counts[whole + 1:], dtype=np.float64))
    above += float(counts[whole]) * (1.0 - (position - whole))
    return min(1.0, above / hist.count)


def smallest_abs(hist: Histogram) -> float | None:
    """The smallest |x| of a tensor that lies on one side of zero (``min > 0`` or ``max < 0``),
    else None (a tensor that reaches or crosses zero has values near 0 to keep)."""
    if hist.count == 0:
        return None
    if hist.min > 0:
        return float(hist.min)
    if hist.max < 0:
        return float(-hist.max)
    return None


def find(histograms: dict[str, Histogram], results: dict, *, clip_fraction: float = CLIP_FRACTION) -> list[Finding]:
    """Findings for every tensor that has a result, in the results' order. A result is a
    :class:`~trtcal.core.thresholds.ThresholdResult` or just the amax (a float)."""
    findings: list[Finding] = []
    for name, r in results.items():
        h = histograms.get(name)
        if h is None:
            continue
        amax = float(r) if isinstance(r, (int, float)) else r.amax
        bad = h.nan + h.posinf + h.neginf
        if bad:
            findings.append(Finding(name, "nan-inf", f"{bad} NaN/Inf values ({h.nan} NaN, {h.posinf} +Inf, "
                                    f"{h.neginf} -Inf) left out of the range", float(bad)))
        if h.count == 0 or h.abs_max == 0 or not (amax > 0 and math.isfinite(amax)):
            what = "no finite values" if h.count == 0 else "only zeros" if h.abs_max == 0 else f"amax {amax!r}"
            findings.append(Finding(name, "degenerate", f"{what}: the range carries no information"))
            continue
        if h.one_sided and h.max > 0:
            findings.append(Finding(name, "one-sided", "min >= 0 (ReLU-like): symmetric int8 leaves codes "
                                    "-128..-1 unused, 7 bits of resolution"))
        smallest = smallest_abs(h)
        if smallest is not None and amax < smallest:
            findings.append(Finding(name, "all-clipped", f"amax {amax:.6g} below the tensor's smallest |x| "
                                    f"{smallest:.6g}: every value clipped", 1.0))
            continue
        frac = clipped_fraction(h, amax)
        if frac > clip_fraction:
            findings.append(Finding(name, "clipped", f"{100 * frac:.1f}% of values above amax {amax:.6g} "
                                    f"(max |x| {h.abs_max:.6g}) are clipped", frac))
    return findings
