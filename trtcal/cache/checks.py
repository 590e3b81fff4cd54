"""What can be wrong with a calibration cache, alone or against a model and a TensorRT release.

Pure: the model side comes in as sets of tensor names (see :mod:`trtcal.onnx.model`), and the data
side as histograms (:func:`check_ranges`), so the rules can be tested without ONNX. Each rule yields :class:`Finding` objects; ``inspect`` shows the
cache-only ones, ``lint`` all of them and fails on any error or warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from trtcal.cache.format import (
    KNOWN_ALGORITHMS,
    CacheEntry,
    CalibrationCache,
    Version,
    format_version,
)
from trtcal.core import findings as range_findings
from trtcal.core.histogram import Histogram

#: An amax beyond this is no activation range: a garbage or constant-folded value.
HUGE_AMAX = 1e9

# Severity: "error" and "warning" count as lint findings; "info" is shown but never fails.
ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    tensor: str | None = None
    value: float | None = None  # the measured quantity of a range finding (clipped fraction, count)

    def to_dict(self) -> dict:
        return asdict(self)


def classify_bits(bits: int) -> str | None:
    """The suspicious class of a float32 scale bit pattern, or None when it is a normal positive
    number: ``zero``, ``inf``, ``nan``, ``denormal``, ``negative`` or ``huge``."""
    sign, exp, mant = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exp == 0xFF:
        return "nan" if mant else ("negative" if sign else "inf")
    if exp == 0 and mant == 0:
        return "zero"
    if sign:
        return "negative"
    if exp == 0:
        return "denormal"
    if CacheEntry("", bits).amax > HUGE_AMAX:
        return "huge"
    return None


_ENTRY_TEXT = {
    "zero": (WARNING, "zero scale: TensorRT quantizes the tensor to 0 (it writes 0 for all-zero tensors)"),
    "inf": (ERROR, "infinite scale: every value quantizes to 0"),
    "nan": (ERROR, "NaN scale"),
    "denormal": (WARNING, "denormal scale: a range below 1.5e-36, almost certainly wrong"),
    "negative": (ERROR, "negative scale"),
    "huge": (WARNING, f"amax above {HUGE_AMAX:g}: no real activation range; every value quantizes to 0"),
}


def title(code: str) -> str:
    """A short heading for a finding code, for summaries that group findings by code."""
    if code in _ENTRY_TEXT:
        severity, text = _ENTRY_TEXT[code]
        return f"{severity} {code} ({text.split(':')[0]})"
    return code


def check_cache(cache: CalibrationCache) -> list[Finding]:
    """Findings from the cache alone: header, suspicious scales, duplicate names."""
    findings: list[Finding] = []
    if cache.is_legacy_header:
        findings.append(Finding("legacy-header", WARNING,
                                f"header {cache.header!r} is the pre-TensorRT-5 format; no current release reads it"))
    elif cache.algorithm is not None and cache.algorithm not in KNOWN_ALGORITHMS:
        findings.append(Finding("unknown-algorithm", WARNING,
                                f"algorithm {cache.algorithm!r} is none of TensorRT's calibrators ({', '.join(KNOWN_ALGORITHMS)})"))
    if len(cache) == 0:
        findings.append(Finding("empty", WARNING, "the cache holds no tensors"))
    for e in cache.entries:
        kind = classify_bits(e.bits)
        if kind is not None:
            severity, text = _ENTRY_TEXT[kind]
            findings.append(Finding(kind, severity, f"{text} (hex {e.hex})", e.name))
    for name, count in cache.duplicates().items():
        findings.append(Finding("duplicate", ERROR, f"appears {count} times; TensorRT keeps one of them", name))
    return findings


#: How much each range finding of :mod:`trtcal.core.findings` weighs in a lint. Heavy clipping and
#: one-sided tensors are what entropy calibration does on purpose; an amax below every value is not.
RANGE_SEVERITY = {"all-clipped": ERROR, "nan-inf": WARNING, "degenerate": INFO, "clipped": INFO,
                  "one-sided": INFO}


def check_ranges(cache: CalibrationCache, histograms: dict[str, Histogram]) -> list[Finding]:
    """The range findings of :func:`trtcal.core.findings.find` for the cache's amax values against
    the tensors' statistics (tensors without statistics are left out)."""
    amaxes = {e.name: e.amax for e in cache.entries if e.name in histograms}
    return [Finding(f.kind, RANGE_SEVERITY[f.kind], f.message, f.tensor, f.value)
            for f in range_findings.find(histograms, amaxes)]


def check_calibration(cache: CalibrationCache, histograms: dict[str, Histogram] | None = None) -> list[Finding]:
    """What ``trtcal calibrate`` reports about a fresh cache and ``trtcal cache lint --stats``
    about the same cache: :func:`check_cache` plus, with statistics, :func:`check_ranges`."""
    return check_cache(cache) + (check_ranges(cache, histograms) if histograms else [])


def check_header_for(cache: CalibrationCache, version: Version, algorithm: str | None = None) -> list[Finding]:
    """Would TensorRT ``version`` (with calibrator ``algorithm``) read this cache?"""
    want = format_version(version)
    if version[0] >= 11:
        return [Finding("trt11", ERROR,
                        f"TensorRT {want} has no calibrators and ignores calibration caches; "
                        "write an explicit Q/DQ model instead (trtcal qdq)")]
    findings: list[Finding] = []
    if cache.version != version:
        have = "a pre-TensorRT-5 header" if cache.is_legacy_header else f"TensorRT {format_version(cache.version)}"
        findings.append(Finding("version-mismatch", ERROR,
                                f"TensorRT {want} ignores this cache (stamped for {have}) and recalibrates; "
                                f"fix with `trtcal cache restamp --trt-version {want}`"))
    if algorithm is not None and cache.algorithm != algorithm:
        findings.append(Finding("algorithm-mismatch", ERROR,
                                f"a {algorithm} calibrator ignores a {cache.algorithm} cache "
                                "(\"Calibration table does not match calibrator algorithm type\")"))
    return findings


_TRT_INTERNAL = [
    (re.compile(r"ONNXTRT_"), "a tensor the TensorRT ONNX parser adds (broadcast, shape helper)"),
    (re.compile(r"\(Unnamed Layer\* \d+\) \["), "an unnamed TensorRT layer's output"),
]


def trt_internal_reason(name: str, model_names: set[str]) -> str | None:
    """Why a cache name absent from the ONNX model is expected anyway, or None."""
    for pattern, reason in _TRT_INTERNAL:
        if pattern.match(name):
            return reason
    if name.endswith("_output") and name[: -len("_output")] in model_names:
        return f"the output of the constant layer TensorRT makes for {name[: -len('_output')]!r}"
    return None


def check_against_model(cache: CalibrationCache, activations: Iterable[str],
                        other_names: Iterable[str] = ()) -> list[Finding]:
    """Cache names the model lacks, and model activations the cache has no range for.

    ``activations``: the float tensors that want a range (graph inputs and node outputs);
    ``other_names``: every other tensor name in the model (initializers, integer tensors).
    """
    acts = list(dict.fromkeys(activations))
    known = set(acts) | set(other_names)
    findings: list[Finding] = []
    in_cache = set()
    for e in cache.entries:
        in_cache.add(e.name)
        if e.name in known:
            continue
        reason = trt_internal_reason(e.name, known)
        if reason:
            findings.append(Finding("trt-internal", INFO, f"not in the model: {reason}", e.name))
        else:
            findings.append(Finding("unknown-name", ERROR,
                                    "not in the model: TensorRT will not use this range (renamed tensor or another model?)",
                                    e.name))
    for name in acts:
        if name not in in_cache:
            findings.append(Finding("missing-range", WARNING,
                                    "model tensor without a range: TensorRT leaves it in higher precision or fails to build INT8",
                                    name))
    return findings


def failing(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in (ERROR, WARNING)]
