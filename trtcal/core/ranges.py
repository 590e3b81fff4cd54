"""Per-tensor ranges: what a writer of scales (a cache, a Q/DQ model) needs to know about a tensor.

A :class:`Range` is ``[low, high]`` at a bit width, with where it came from. Symmetric ranges
(``low == -high``) are what TensorRT uses; a one-sided range (``low >= 0``) is what a ReLU output
has, and runtimes with unsigned 8-bit quantization (ONNX Runtime) can use all 256 codes for it.

Ranges come from a calibration cache (:func:`from_cache`: symmetric, ``amax = scale * 127`` as
the cache stores it), from threshold results plus the histograms' signed min/max
(:func:`from_thresholds`), or from plain numbers (:func:`coerce`: ``{name: amax}``).
:meth:`Range.problem` says why a range cannot be used (zero, infinite, NaN, denormal scale).

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from trtcal.core.errors import TrtcalError

#: The smallest normal float32. A smaller scale is denormal: GPUs flush it to zero.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Range:
    """One tensor's range ``[low, high]`` (``low <= 0 <= high`` for usable ranges).

    ``scale_bits`` is set when the range was read from a calibration cache: the float32 bit
    pattern of the scale it stored, so that writers reproduce the cache's scale exactly.
    """

    low: float
    high: float
    bits: int = 8
    source: str = ""
    scale_bits: int | None = None

    @classmethod
    def symmetric(cls, amax: float, *, bits: int = 8, source: str = "", scale_bits: int | None = None) -> Range:
        amax = float(amax)
        return cls(-amax, amax, bits, source, scale_bits)

    @property
    def amax(self) -> float:
        """What a symmetric quantizer uses: ``max(|low|, |high|)`` (NaN stays NaN)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return math.nan
        return max(abs(self.low), abs(self.high))

    @property
    def is_symmetric(self) -> bool:
        return self.low == -self.high

    @property
    def one_sided(self) -> bool:
        """``low >= 0 < high``: the values never go below zero (ReLU, Clip(0, 6), Sigmoid)."""
        return self.low >= 0 and self.high > 0

    def qmax(self, unsigned: bool = False) -> int:
        """Largest code: 127 for signed 8 bits, 255 for unsigned 8 bits."""
        return 2**self.bits - 1 if unsigned else 2 ** (self.bits - 1) - 1

    def scale(self, unsigned: bool = False) -> np.float32:
        """The float32 scale: ``amax / 127`` (signed) or ``high / 255`` (unsigned, ``low >= 0``),
        computed in double and rounded once, or the cache's own scale when read from one."""
        if unsigned:
            if self.low < 0:
                raise TrtcalError(f"range [{self.low:g}, {self.high:g}] is not one-sided; no unsigned scale")
            with np.errstate(over="ignore"):
                return np.float32(self.high / self.qmax(True))
        if self.scale_bits is not None and self.bits == 8:
            return np.array([self.scale_bits], dtype=np.uint32).view(np.float32)[0]
        with np.errstate(over="ignore"):
            return np.float32(self.amax / self.qmax())

    def problem(self, unsigned: bool = False) -> str | None:
        """Why this range cannot give a quantization scale, or None when it can."""
        if math.isnan(self.low) or math.isnan(self.high):
            return "range is NaN"
        if self.low > self.high:
            return f"range is negative (amax {self.high:g})"
        amax = self.high if unsigned else self.amax
        if math.isinf(amax):
            return "range is infinite"
        if self.low > 0 or self.high < 0:
            return f"range [{self.low:g}, {self.high:g}] does not contain 0"
        if amax == 0:
            return "range is zero"
        s = float(self.scale(unsigned))
        if math.isinf(s):
            return "scale overflows float32"
        if s == 0:
            return f"range {amax:g} is too small: its scale underflows to 0 in float32"
        if s < FLOAT32_TINY:
            return f"scale {s:g} is denormal in float32 (GPUs flush it to 0)"
        return None

    def to_dict(self) -> dict:
        return {"min": self.low, "max": self.high, "amax": self.amax, "bits": self.bits, "source": self.source}


RangeLike = Range | float | int


def coerce(ranges: Mapping[str, RangeLike], source: str = "given", *, widths=(8,),
           why: str = "only 8-bit ranges are supported here") -> dict[str, Range]:
    """``{name: amax or Range}`` -> ``{name: Range}``; a plain number is a symmetric amax. A
    Range whose width is not in ``widths`` is an error, ``why`` saying what is supported."""
    out: dict[str, Range] = {}
    for name, value in ranges.items():
        if not isinstance(name, str) or not name:
            raise TrtcalError(f"range names must be non-empty strings, not {name!r}")
        if isinstance(value, Range):
            out[name] = value
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[name] = Range.symmetric(float(value), source=source)
        else:
            raise TrtcalError(f"tensor {name!r}: range {value!r} is neither an amax nor a Range")
        if out[name].bits not in widths:
            raise TrtcalError(f"tensor {name!r}: {out[name].bits}-bit range; {why}")
    return out


def from_cache(cache) -> dict[str, Range]:
    """Symmetric ranges from a :class:`~trtcal.cache.format.CalibrationCache` (the last entry of a
    duplicated name wins, as in the cache's lookups), keeping each scale's exact bits."""
    out: dict[str, Range] = {}
    for e in cache.entries:
        out[e.name] = Range.symmetric(e.amax, source="cache", scale_bits=e.bits)
    return out


def from_thresholds(results: Mapping, histograms: Mapping | None = None, *, source: str = "stats") -> dict[str, Range]:
    """Ranges from threshold results (``r.amax``), one-sided where the histogram shows ``min >= 0``.

    A one-sided tensor gets ``[0, amax]``: the same clipping point, which a symmetric target uses
    as ``[-amax, amax]`` and an unsigned one as ``[0, amax]`` with twice the resolution.
    """
    out: dict[str, Range] = {}
    histograms = histograms or {}
    for name, r in results.items():
        amax = float(r.amax)
        h = histograms.get(name)
        if h is not None and h.count > 0 and h.min >= 0 and amax > 0:
            out[name] = Range(0.0, amax, 8, source)
        else:
            out[name] = Range.symmetric(amax, source=source)
    return out
