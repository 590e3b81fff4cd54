"""ONNX Runtime's TensorRT execution provider tables, read and written.

ONNX Runtime's ``write_calibration_table`` produces three files from the same ranges:

- ``calibration.cache``: ``<name> <amax>`` lines, decimal (Python ``str`` of a float), names
  sorted, no header. Not a TensorRT cache despite its name.
- ``calibration.json``: ``{"name": [min, max], ...}`` (older releases) or
  ``{"name": {"lowest": .., "highest": ..}}`` (newer ones). Both are read; the first is written.
- ``calibration.flatbuffers``: the table the TensorRT EP reads (``trt_int8_calibration_table_name``):
  a ``TrtTable`` of ``KeyValue {key: string, value: string}`` with the amax as decimal text.

Ranges here are plain ``{name: amax}`` (or ``{name: (min, max)}``) dicts of Python floats, so
ONNX Runtime tables round-trip byte for byte; converting to a TensorRT cache rounds the scale to
float32 (see :meth:`trtcal.cache.format.CalibrationCache.from_amaxes`). Pure: the flatbuffer is read
with bounds-checked ``struct`` and written with the ``flatbuffers`` package that ONNX Runtime
itself depends on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

from trtcal.core.errors import TrtcalError

# --------------------------------------------------------------------------- text table


def parse_ort_table(text: str, source: str = "<string>") -> dict[str, float]:
    """Parse ``<name> <amax>`` lines into ``{name: amax}``."""
    if text.strip() == "":
        raise TrtcalError(f"{source}: empty file, expected an ONNX Runtime calibration table")
    body = text[:-1] if text.endswith("\n") else text
    out: dict[str, float] = {}
    for i, line in enumerate(body.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[0]:
            if i == 1 and line.startswith("TRT-"):
                raise TrtcalError(f"{source}:1: this is a TensorRT calibration cache, not an ONNX Runtime table")
            raise TrtcalError(f"{source}:{i}: expected '<tensor name> <amax>', got {line[:60]!r}")
        name, value = parts
        try:
            amax = float(value)
        except ValueError:
            raise TrtcalError(f"{source}:{i}: tensor {name!r}: {value[:30]!r} is not a number") from None
        if name in out:
            raise TrtcalError(f"{source}:{i}: tensor {name!r} appears twice")
        out[name] = amax
    return out


def format_ort_table(amaxes: Mapping[str, float]) -> str:
    """``<name> <amax>`` lines, sorted by name as ONNX Runtime writes them."""
    for name in amaxes:
        _check_name(name)
    return "".join(f"{name} {float(amaxes[name])!s}\n" for name in sorted(amaxes))


# --------------------------------------------------------------------------- json


def _number(value, where: str) -> float:
    if isinstance(value, dict) and "data" in value:  # numpy array encoded by CalibrationCacheEncoder
        value = value["data"]
        while isinstance(value, list) and len(value) == 1:
            value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrtcalError(f"{where}: {str(value)[:40]!r} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise TrtcalError(f"{where}: {str(value)[:20]}... is beyond any float") from None


def parse_ort_json(text: str, source: str = "<string>") -> dict[str, tuple[float, float]]:
    """Parse ``calibration.json`` into ``{name: (min, max)}``."""
    data = load_json(text, source)
    if not isinstance(data, dict):
        raise TrtcalError(f"{source}: expected a JSON object of tensor name -> [min, max]")
    out: dict[str, tuple[float, float]] = {}
    for name, value in data.items():
        where = f"{source}: tensor {name!r}"
        if isinstance(value, list) and len(value) == 2:
            lo, hi = _number(value[0], where), _number(value[1], where)
        elif isinstance(value, dict) and "lowest" in value and "highest" in value:
            lo, hi = _number(value["lowest"], where), _number(value["highest"], where)
        else:
            raise TrtcalError(f"{where}: expected [min, max] or {{\"lowest\": .., \"highest\": ..}}")
        out[_check_name(name, where)] = (lo, hi)
    return out


def format_ort_json(ranges: Mapping[str, tuple[float, float]]) -> str:
    """``{"name": [min, max]}`` on one line, as ONNX Runtime's older releases write it."""
    for name in ranges:
        _check_name(name)
    return json.dumps({name: [float(lo), float(hi)] for name, (lo, hi) in ranges.items()})


def load_json(text: str, source: str):
    """``json.loads`` with one-line errors for everything a hostile file can trigger."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrtcalError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise TrtcalError(f"{source}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise TrtcalError(f"{source}: not usable JSON: {str(exc)[:80]}") from None


def amaxes_from_ranges(ranges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Symmetric amax ``max(|min|, |max|)`` per tensor."""
    return {name: max(abs(lo), abs(hi)) for name, (lo, hi) in ranges.items()}


# --------------------------------------------------------------------------- flatbuffers


class _Reader:
    def __init__(self, buf: bytes, source: str):
        self.buf, self.source = buf, source

    def fail(self, what: str):
        raise TrtcalError(f"{self.source}: not an ONNX Runtime calibration flatbuffer ({what})")

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.buf):
            self.fail(f"offset {pos} out of bounds")
        return struct.unpack_from("<I", self.buf, pos)[0]

    def u16(self, pos: int) -> int:
        if pos < 0 or pos + 2 > len(self.buf):
            self.fail(f"offset {pos} out of bounds")
        return struct.unpack_from("<H", self.buf, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
        vtable = table - struct.unpack_from("<i", self.buf, table)[0] if 0 <= table <= len(self.buf) - 4 else -1
        size = self.u16(vtable)
        if size < 4 or size % 2:
            self.fail("bad vtable")
        slot = 4 + 2 * index
        if slot + 2 > size:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def string(self, pos: int) -> str:
        start = self.deref(pos)
        n = self.u32(start)
        if start + 4 + n > len(self.buf):
            self.fail("string out of bounds")
        try:
            return self.buf[start + 4: start + 4 + n].decode("utf-8")
        except UnicodeDecodeError:
            self.fail("string is not UTF-8")


def parse_ort_flatbuffers(data: bytes, source: str = "<bytes>") -> dict[str, float]:
    """Parse ``calibration.flatbuffers`` into ``{name: amax}``."""
    r = _Reader(data, source)
    if len(data) < 8:
        r.fail(f"{len(data)} bytes")
    root = r.deref(0)
    vec_field = r.field(root, 0)
    if vec_field is None:
        return {}
    vec = r.deref(vec_field)
    n = r.u32(vec)
    if vec + 4 + 4 * n > len(data):
        r.fail("vector out of bounds")
    out: dict[str, float] = {}
    for i in range(n):
        kv = r.deref(vec + 4 + 4 * i)
        key_pos, value_pos = r.field(kv, 0), r.field(kv, 1)
        if key_pos is None or value_pos is None:
            r.fail(f"entry {i} lacks a key or value")
        name, value = r.string(key_pos), r.string(value_pos)
        try:
            out[name] = float(value)
        except ValueError:
            raise TrtcalError(f"{source}: tensor {name!r}: value {value[:30]!r} is not a number") from None
    return out


def format_ort_flatbuffers(amaxes: Mapping[str, float]) -> bytes:
    """The ``TrtTable`` flatbuffer, built in the same order as ONNX Runtime builds it."""
    try:
        import flatbuffers
    except ImportError:  # pragma: no cover - onnxruntime depends on it
        raise TrtcalError("writing ort-flatbuffers needs the 'flatbuffers' package (pip install flatbuffers)") from None
    builder = flatbuffers.Builder(1024)
    items = []
    for name in sorted(amaxes):
        _check_name(name)
        key = builder.CreateString(name)
        value = builder.CreateString(str(float(amaxes[name])))
        builder.StartObject(2)
        builder.PrependUOffsetTRelativeSlot(0, key, 0)
        builder.PrependUOffsetTRelativeSlot(1, value, 0)
        items.append(builder.EndObject())
    builder.StartVector(4, len(items), 4)
    for item in items:  # ONNX Runtime prepends in sorted order, so the vector reads back reversed
        builder.PrependUOffsetTRelative(item)
    vector = builder.EndVector()
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def _check_name(name: str, where: str = "") -> str:
    if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
        raise TrtcalError(f"{where + ': ' if where else ''}tensor name {name!r} is empty or contains a line break")
    return name
