"""Reading and writing ranges in every cache format trtcal knows, and converting between them.

Formats:

==================  ================================================================
``trt``             TensorRT's calibration cache (:mod:`trtcal.cache.format`)
``json``            trtcal's JSON view of a TensorRT cache (header, hex, scale, amax)
``ort-table``       ONNX Runtime TensorRT-EP ``calibration.cache`` (``name amax``)
``ort-json``        ONNX Runtime ``calibration.json`` (``{"name": [min, max]}``)
``ort-flatbuffers`` ONNX Runtime ``calibration.flatbuffers`` (what the TensorRT EP reads)
==================  ================================================================

Between ONNX Runtime formats the decimal amaxes are carried exactly; into a TensorRT cache the
scale is rounded once to float32.
"""

from __future__ import annotations

import json
import os
import re

from trtcal.cache import format as trtcache
from trtcal.cache import ort_tables
from trtcal.cache.format import CalibrationCache, Version
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

FORMATS = ("trt", "json", "ort-table", "ort-json", "ort-flatbuffers")
ORT_FORMATS = ("ort-table", "ort-json", "ort-flatbuffers")


def detect_format(data: bytes, source: str = "<bytes>") -> str:
    """Guess the format of file content."""
    if not data.strip():
        raise TrtcalError(f"{source}: empty file, expected a calibration cache")
    head = data.lstrip()[:1]
    if head == b"{":
        # trtcal's JSON names its format near the top; anything else in braces is ONNX Runtime's
        return "json" if re.search(rb'"format"\s*:\s*"trtcal-cache"', data[:4096]) else "ort-json"
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if first_line.startswith(b"TRT-") or first_line.isdigit():
        return "trt"  # even with a bad byte further on: the TensorRT parser names the line
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return "ort-flatbuffers"
    first = text.split("\n", 1)[0].rstrip("\r")
    if first.startswith("TRT-") or first.isdigit():
        return "trt"
    if ": " not in first and len(first.rsplit(" ", 1)) == 2:
        try:
            float(first.rsplit(" ", 1)[1])
            return "ort-table"
        except ValueError:
            pass
    return "trt"  # the TensorRT parser gives the most useful error


def _ranges(data: bytes, fmt: str, source: str) -> dict[str, tuple[float, float]]:
    """``{name: (min, max)}`` from an ONNX Runtime format (symmetric where it stores an amax)."""
    if fmt == "ort-flatbuffers":
        amaxes = ort_tables.parse_ort_flatbuffers(data, source)
    else:
        text = fileio.decode_text(data, source, what="ONNX Runtime calibration table")
        if fmt == "ort-json":
            return ort_tables.parse_ort_json(text, source)
        amaxes = ort_tables.parse_ort_table(text, source)
    return {name: (-a, a) for name, a in amaxes.items()}


def load(data: bytes, fmt: str = "auto", source: str = "<bytes>", *,
         version: Version = trtcache.DEFAULT_TRT_VERSION,
         algorithm: str = "EntropyCalibration2") -> CalibrationCache:
    """A :class:`CalibrationCache` from content in any format. ``version``/``algorithm`` stamp
    the header of caches made from formats that have none (the ONNX Runtime tables)."""
    fmt = detect_format(data, source) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise TrtcalError(f"unknown cache format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "trt":
        return trtcache.parse(fileio.decode_text(data, source, what="calibration cache"), source)
    if fmt == "json":
        text = fileio.decode_text(data, source, what="JSON file")
        return CalibrationCache.from_dict(ort_tables.load_json(text, source), source)
    amaxes = ort_tables.amaxes_from_ranges(_ranges(data, fmt, source))
    return CalibrationCache.from_amaxes(amaxes, version=version, algorithm=algorithm)


def dump(cache: CalibrationCache, fmt: str) -> bytes:
    """Content of ``cache`` in format ``fmt``."""
    if fmt == "trt":
        return cache.to_text().encode("utf-8")
    if fmt == "json":
        return (json.dumps(cache.to_dict(), indent=1) + "\n").encode("utf-8")
    dups = cache.duplicates()
    if dups and fmt in ORT_FORMATS:
        raise TrtcalError(f"tensor {next(iter(dups))!r} appears more than once; ONNX Runtime tables hold one range per name")
    return _dump_ranges({e.name: (-e.amax, e.amax) for e in cache.entries}, fmt)


def _dump_ranges(ranges: dict[str, tuple[float, float]], fmt: str) -> bytes:
    if fmt == "ort-json":
        return ort_tables.format_ort_json(ranges).encode("utf-8")
    amaxes = ort_tables.amaxes_from_ranges(ranges)
    if fmt == "ort-table":
        return ort_tables.format_ort_table(amaxes).encode("utf-8")
    if fmt == "ort-flatbuffers":
        return ort_tables.format_ort_flatbuffers(amaxes)
    raise TrtcalError(f"unknown cache format {fmt!r}; choose from {', '.join(FORMATS)}")


def convert(data: bytes, to: str, *, source: str = "<bytes>", fmt: str = "auto",
            version: Version = trtcache.DEFAULT_TRT_VERSION, algorithm: str = "EntropyCalibration2") -> bytes:
    """Convert content between formats (ONNX Runtime to ONNX Runtime keeps the exact decimals)."""
    if to not in FORMATS:
        raise TrtcalError(f"unknown target format {to!r}; choose from {', '.join(FORMATS)}")
    fmt = detect_format(data, source) if fmt == "auto" else fmt
    if fmt in ORT_FORMATS and to in ORT_FORMATS:
        return _dump_ranges(_ranges(data, fmt, source), to)
    return dump(load(data, fmt, source, version=version, algorithm=algorithm), to)


def read_any(path: str | os.PathLike, fmt: str = "auto", **stamp) -> CalibrationCache:
    """Read a cache file in any format (see :func:`load`)."""
    return load(fileio.read_bytes(path, what="calibration cache"), fmt, str(path), **stamp)
