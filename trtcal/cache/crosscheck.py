"""Cross-check a TensorRT-made cache against trtcal's numpy recomputation, and explain each difference.

Pure: from the cache, trtcal's histograms and threshold results on the same batches, and the
model's tensor names to one :class:`Row` per tensor. The explanations follow from how the
algorithms work (REFERENCE.md section 1):

- EntropyCalibration2 picks ``amax = (i + 0.5) * w`` on a 2048-bin grid of width ``w``. If
  TensorRT's amax sits on trtcal's grid, both histograms had the same range and the difference is
  in the counts or the KL choice (a near-tie is called out). If it sits on a grid whose range is
  trtcal's times a power of two, the range grew differently (batch order or size). If it is above
  anything trtcal's grid can give, TensorRT saw larger values (other data or preprocessing).
- MinMax is ``max|x|``: above or below trtcal's says TensorRT saw other values.
- A tensor whose TensorRT amax is what entropy2 gives with the other zero-bin rule (bin 0 kept as
  counted, or given bin 1's count) says so: that is how to tell which rule TensorRT follows.
- A tensor TensorRT has no range for was fused away (EntropyCalibration, unlike Entropy2,
  calibrates after fusion) or is not calibrated; a cache name the model lacks is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtcal.cache.format import scale_bits_from_amax

#: TensorRT's header algorithm -> (trtcal method, options).
METHOD_OF = {
    "EntropyCalibration2": ("entropy2", {}),
    "EntropyCalibration": ("entropy2", {}),
    "MinMaxCalibration": ("minmax", {}),
    "LegacyCalibration": ("percentile", {"q": 0.9999}),
}


@dataclass(frozen=True)
class Row:
    tensor: str
    status: str  # "agree", "differ", "only-cache", "only-trtcal"
    trt_amax: float | None
    trtcal_amax: float | None
    reason: str = ""

    @property
    def ratio(self) -> float | None:
        if self.trt_amax is None or self.trtcal_amax is None or self.trtcal_amax == 0:
            return None
        return self.trt_amax / self.trtcal_amax

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "status": self.status, "trt_amax": self.trt_amax,
                "trtcal_amax": self.trtcal_amax, "ratio": self.ratio, "reason": self.reason}


def method_for(algorithm: str) -> tuple[str, dict]:
    """The trtcal method that recomputes a cache of TensorRT's ``algorithm``; KeyError if none."""
    return METHOD_OF[algorithm]


def _entropy_reason(trt: float, hist, result) -> str:
    w = hist.width
    if w <= 0:
        return "trtcal saw no non-zero values for this tensor"
    top = (hist.bins + 0.5) * w
    if trt > top * (1 + 1e-6):
        if trt <= 2 * hist.abs_max * (1 + 1e-3) + w:
            return (f"TensorRT's amax is above any threshold on trtcal's grid (up to {top:.6g}) but within twice "
                    "the max |x|: a wider histogram range (power-of-two growth from another batch size or order), "
                    "or larger values")
        return (f"TensorRT's amax is above twice trtcal's max |x| ({hist.abs_max:.6g}): TensorRT saw larger values "
                "(other data or preprocessing)")
    k = trt / w - 0.5
    if abs(k - round(k)) < 1e-3:  # float32 scales move k by ~1e-4 at most
        k = int(round(k))
        chosen = result.diagnostics.get("bins_kept")
        kl = result.diagnostics.get("kl")
        cands = result.diagnostics.get("candidates")
        if kl is not None and cands is not None and chosen is not None and int(cands[0]) <= k <= int(cands[-1]):
            kl_trt = float(kl[k - int(cands[0])])
            kl_min = float(kl[result.diagnostics["index"]])
            if math.isfinite(kl_trt) and kl_trt - kl_min <= 1e-6 * max(kl_min, 1e-12) + 1e-12:
                return f"same grid, KL near-tie: bins kept {k} (TensorRT) vs {chosen} (trtcal) differ by float rounding"
            return (f"same histogram range, different choice: bins kept {k} (TensorRT) vs {chosen} (trtcal); "
                    "the counts differ (other data, batch order or preprocessing)")
        return f"same grid, TensorRT kept {k} bins, outside trtcal's candidates"
    ratio = trt / ((result.diagnostics.get("bins_kept", hist.bins) + 0.5) * w)
    for p in range(-6, 7):
        if p == 0:
            continue
        wp = w * 2.0**p
        kp = trt / wp - 0.5
        if abs(kp - round(kp)) < 1e-3 and 128 <= round(kp) <= hist.bins:
            return (f"TensorRT's histogram range was {2.0**p:g}x trtcal's (power-of-two range growth from "
                    "another first batch: batch size or order differ)")
    return f"off trtcal's histogram grid (ratio {ratio:.4g}): other data, batch size or order"


def _zero_bin_reason(trt: float, hist, result) -> str | None:
    """If entropy2 with the other zero-bin rule reproduces TensorRT's amax, say so."""
    from trtcal.core.thresholds import ZERO_BIN_RULES, entropy2

    used = result.diagnostics.get("zero_bin")
    if used not in ZERO_BIN_RULES:
        return None
    other = next(r for r in ZERO_BIN_RULES if r != used)
    alt = entropy2(hist, bits=result.bits, unsigned=result.unsigned, zero_bin=other)
    if alt.amax > 0 and (scale_bits_from_amax(alt.amax) == scale_bits_from_amax(trt) or abs(trt / alt.amax - 1) <= 1e-6):
        return (f"matches entropy2 with zero_bin={other} ({hist.zeros} exact zeros; trtcal used {used}): TensorRT "
                f"counts bin 0 that way; recompute with --zero-bin {other} to reproduce this cache")
    return None


def _minmax_reason(trt: float, hist) -> str:
    top = hist.abs_max
    if trt > top:
        return f"TensorRT saw larger values (max |x| {trt:.6g} vs {top:.6g}): other data or preprocessing"
    return f"TensorRT saw smaller values (max |x| {trt:.6g} vs {top:.6g}): fewer batches or other data"


def explain(cache, histograms: dict, results: dict, model_names: set[str], *, rtol: float = 1e-6,
            skipped: dict[str, str] | None = None) -> list[Row]:
    """One row per tensor of the cache, then per tensor trtcal calibrated that the cache lacks."""
    method, _ = METHOD_OF.get(cache.algorithm, ("entropy2", {}))
    skipped = skipped or {}
    rows: list[Row] = []
    for entry in cache:
        name = entry.name
        trt = entry.amax
        if name not in results:
            if name not in model_names:
                reason = "unknown name: not a tensor of this model (another model, or renamed by the exporter)"
            elif name in skipped:
                reason = f"trtcal does not calibrate it: {skipped[name]}"
            else:
                reason = "trtcal has no range for it (no values reached it)"
            rows.append(Row(name, "only-cache", trt, None, reason))
            continue
        mine = float(results[name].amax)
        same = entry.bits == scale_bits_from_amax(mine) or (mine > 0 and abs(trt / mine - 1) <= rtol) or (trt == mine == 0)
        if same:
            rows.append(Row(name, "agree", trt, mine))
            continue
        hist = histograms[name]
        if not math.isfinite(trt) or trt <= 0:
            reason = f"TensorRT's scale is {entry.scale!r}: a broken range, not a calibration difference"
        elif method == "entropy2":
            reason = _zero_bin_reason(trt, hist, results[name]) or _entropy_reason(trt, hist, results[name])
        elif method == "minmax":
            reason = _minmax_reason(trt, hist)
        else:
            reason = "percentile of other values (other data or batch order)"
        rows.append(Row(name, "differ", trt, mine, reason))
    in_cache = set(cache.names())
    for name, r in results.items():
        if name not in in_cache:
            why = ("fused away: EntropyCalibration calibrates after layer fusion" if cache.algorithm == "EntropyCalibration"
                   else "not in the cache: fused by TensorRT, not calibrated by it, or a cache of another model version")
            rows.append(Row(name, "only-trtcal", None, float(r.amax), why))
    return rows
