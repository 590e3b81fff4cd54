"""TensorRT calibration caches: the data model and the text format.

A cache is a header line ``TRT-<version>-<algorithm>`` followed by one ``<tensor name>: <hex>``
line per tensor, where ``<hex>`` is the IEEE-754 float32 bit pattern of the tensor's *scale*
(``amax / 127``), lowercase and not zero-padded. Names may contain spaces, colons, brackets and
``": "`` itself, so a line is split on its **last** ``": "``.

Reading is exact: whatever parses writes back byte for byte (header, hex spelling, line endings
and the final newline are kept as read, until an entry is changed). Anything that does not parse
raises :class:`~trtcal.core.errors.TrtcalError` naming the source and line.

This module is pure (numpy and the standard library); :func:`read` and
:meth:`CalibrationCache.write` are thin file wrappers around :func:`parse` and
:meth:`CalibrationCache.to_text`.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

#: The four calibrators TensorRT <= 10 has, by the name its cache header uses.
KNOWN_ALGORITHMS = (
    "EntropyCalibration2",
    "EntropyCalibration",
    "MinMaxCalibration",
    "LegacyCalibration",
)

#: The TensorRT release a new cache is stamped for unless told otherwise (the last 10.x release
#: with calibrators that we have seen caches of).
DEFAULT_TRT_VERSION = (10, 13, 3)

_HEADER_RE = re.compile(r"TRT-(\d{1,9})-([A-Za-z0-9_]+)")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")

Version = tuple[int, int, int]


# --------------------------------------------------------------------------- versions


def decode_version(number: int) -> Version:
    """Decode a header version number: ``8601 -> (8, 6, 1)``, ``100900 -> (10, 9, 0)``.

    TensorRT <= 9 writes ``major*1000 + minor*100 + patch``; TensorRT >= 10 writes
    ``major*10000 + minor*100 + patch``.
    """
    if number < 0:
        raise ValueError(f"negative TensorRT version number {number}")
    if number >= 100000:
        return (number // 10000, number // 100 % 100, number % 100)
    return (number // 1000, number // 100 % 10, number % 100)


def encode_version(version: Version) -> int:
    """Encode a version for the header: ``(8, 6, 1) -> 8601``, ``(10, 9, 0) -> 100900``."""
    major, minor, patch = version
    if major >= 10:
        if not (0 <= minor < 100 and 0 <= patch < 100):
            raise TrtcalError(f"TensorRT version {format_version(version)}: minor and patch must be 0..99")
        return major * 10000 + minor * 100 + patch
    if major < 1 or not (0 <= minor < 10 and 0 <= patch < 100):
        raise TrtcalError(
            f"TensorRT version {format_version(version)}: before 10, minor must be 0..9 and patch 0..99"
        )
    return major * 1000 + minor * 100 + patch


def format_version(version: Version | None) -> str:
    return "unknown" if version is None else ".".join(str(v) for v in version)


def parse_version(text: str) -> Version:
    """Parse ``X.Y.Z``, ``X.Y`` or ``X`` (also ``X.Y.Z.B`` build numbers, ignored) or a header
    number such as ``8601``/``100900`` into a version tuple."""
    s = str(text).strip()
    if re.fullmatch(r"\d{4,6}", s) and int(s) >= 1000:
        version = decode_version(int(s))
    else:
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)?", s)
        if not m:
            raise TrtcalError(f"TensorRT version {text!r}: expected X.Y.Z (e.g. 10.9.0) or a header number (e.g. 100900)")
        version = (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))
    encode_version(version)  # validates the ranges
    return version


def make_header(version: Version, algorithm: str) -> str:
    if not isinstance(algorithm, str) or not re.fullmatch(r"[A-Za-z0-9_]+", algorithm):
        raise TrtcalError(f"algorithm name {algorithm!r}: expected letters, digits and '_' (e.g. EntropyCalibration2)")
    return f"TRT-{encode_version(version)}-{algorithm}"


# --------------------------------------------------------------------------- float32 bits


def bits_to_float(bits: int) -> float:
    """The float32 with this bit pattern, as a Python float (exact)."""
    return struct.unpack(">f", struct.pack(">I", bits))[0]


def float_to_bits(value: float) -> int:
    """The bit pattern of ``value`` rounded once to float32."""
    try:
        return struct.unpack(">I", struct.pack(">f", value))[0]
    except OverflowError:
        # struct refuses finite doubles beyond float32's range; IEEE rounding gives +-inf.
        return 0xFF800000 if value < 0 else 0x7F800000


def scale_bits_from_amax(amax: float) -> int:
    """Bit pattern of the float32 scale ``amax / 127`` (computed in double, rounded once)."""
    return float_to_bits(float(amax) / 127.0)


# --------------------------------------------------------------------------- the model


@dataclass
class CacheEntry:
    """One tensor's range. ``bits`` is the float32 scale's bit pattern; ``raw_hex`` is the hex
    as it was read (kept only for byte-exact rewriting)."""

    name: str
    bits: int
    raw_hex: str | None = None

    @property
    def scale(self) -> float:
        return bits_to_float(self.bits)

    @property
    def amax(self) -> float:
        return self.scale * 127.0

    @property
    def hex(self) -> str:
        return format(self.bits, "x")

    def text(self) -> str:
        hex_text = self.raw_hex if self.raw_hex is not None and int(self.raw_hex, 16) == self.bits else self.hex
        return f"{self.name}: {hex_text}"


@dataclass
class CalibrationCache:
    """A TensorRT calibration cache: header and ordered entries (duplicates are kept as read,
    so that they can be reported; lookups by name use the last one, as a map insert would)."""

    version: Version | None = DEFAULT_TRT_VERSION
    algorithm: str | None = "EntropyCalibration2"
    entries: list[CacheEntry] = field(default_factory=list)
    header: str | None = None  # the header line as read; None means "make it from version/algorithm"
    newline: str = "\n"
    final_newline: bool = True

    # ---- construction

    @classmethod
    def from_amaxes(cls, amaxes: Mapping[str, float], *, version: Version = DEFAULT_TRT_VERSION,
                    algorithm: str = "EntropyCalibration2") -> CalibrationCache:
        """A cache from ``{tensor name: amax}`` (scale = amax / 127 as float32)."""
        make_header(version, algorithm)
        return cls(version=version, algorithm=algorithm,
                   entries=[CacheEntry(_check_name(n), scale_bits_from_amax(a)) for n, a in amaxes.items()])

    # ---- header

    @property
    def header_line(self) -> str:
        if self.header is not None:
            return self.header
        if self.version is None or self.algorithm is None:
            raise TrtcalError("cache has no TensorRT version/algorithm; restamp it first")
        return make_header(self.version, self.algorithm)

    @property
    def header_text(self) -> str | None:
        """The header line, or None when the cache has neither a header nor a version/algorithm."""
        if self.header is not None:
            return self.header
        if self.version is None or self.algorithm is None:
            return None
        return make_header(self.version, self.algorithm)

    @property
    def version_number(self) -> int | None:
        return None if self.version is None else encode_version(self.version)

    @property
    def is_legacy_header(self) -> bool:
        """True for the pre-TensorRT-5 header that is just a number (e.g. ``1``)."""
        return self.version is None and self.header is not None and self.header.isdigit()

    def restamped(self, version: Version, algorithm: str | None = None) -> CalibrationCache:
        """A copy whose header names another TensorRT release (and optionally algorithm)."""
        algo = algorithm or self.algorithm or "EntropyCalibration2"
        make_header(version, algo)
        return CalibrationCache(version=version, algorithm=algo,
                                entries=[CacheEntry(e.name, e.bits, e.raw_hex) for e in self.entries],
                                header=None, newline=self.newline, final_newline=self.final_newline)

    # ---- entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CacheEntry]:
        return iter(self.entries)

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self.entries)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def entry(self, name: str) -> CacheEntry:
        for e in reversed(self.entries):
            if e.name == name:
                return e
        raise TrtcalError(f"tensor {name!r} is not in the cache")

    def scale(self, name: str) -> float:
        return self.entry(name).scale

    def amax(self, name: str) -> float:
        """The tensor's range ``amax = scale * 127``."""
        return self.entry(name).amax

    def amaxes(self) -> dict[str, float]:
        return {e.name: e.amax for e in self.entries}

    def set_amax(self, name: str, amax: float) -> None:
        """Set (or add) a tensor's range; every duplicate of the name gets it."""
        self.set_bits(name, scale_bits_from_amax(amax))

    def set_bits(self, name: str, bits: int) -> None:
        _check_name(name)
        found = False
        for e in self.entries:
            if e.name == name:
                e.bits, e.raw_hex, found = bits, None, True
        if not found:
            self.entries.append(CacheEntry(name, bits))

    def drop(self, name: str) -> None:
        self.entries = [e for e in self.entries if e.name != name]

    def duplicates(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.name] = counts.get(e.name, 0) + 1
        return {n: c for n, c in counts.items() if c > 1}

    # ---- serialisation

    def to_text(self) -> str:
        lines = [self.header_line] + [e.text() for e in self.entries]
        text = self.newline.join(lines)
        return text + self.newline if self.final_newline else text

    def write(self, path: str | os.PathLike, *, force: bool = False, inputs=()) -> Path:
        """Write the cache atomically; an existing file is replaced only with ``force``."""
        return fileio.atomic_write(path, self.to_text(), force=force, inputs=inputs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; the hex is authoritative, scale/amax are for reading."""
        return {
            "format": "trtcal-cache",
            "format_version": 1,
            "header": self.header_text,
            "trt_version": None if self.version is None else format_version(self.version),
            "algorithm": self.algorithm,
            "entries": [
                {"name": e.name, "hex": e.hex, "scale": _json_float(e.scale), "amax": _json_float(e.amax)}
                for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> CalibrationCache:
        """Inverse of :meth:`to_dict`. Each entry needs ``hex``, or else ``scale`` or ``amax``."""
        if not isinstance(data, dict) or data.get("format") != "trtcal-cache":
            raise TrtcalError(f"{source}: not a trtcal cache JSON (expected \"format\": \"trtcal-cache\")")
        if data.get("format_version") != 1:
            raise TrtcalError(f"{source}: unsupported trtcal cache JSON format_version {data.get('format_version')!r} (expected 1)")
        header = data.get("header")
        if header is not None:
            if not isinstance(header, str) or "\n" in header or "\r" in header:
                raise TrtcalError(f"{source}: \"header\" must be a one-line string")
            cache = parse(header + "\n", source=source)
        else:
            version, algorithm = data.get("trt_version"), data.get("algorithm")
            try:
                if algorithm is not None:
                    make_header((10, 0, 0), algorithm)  # validates the name
                if version is not None and not isinstance(version, str):
                    raise TrtcalError("\"trt_version\" must be a string such as \"10.9.0\"")
                cache = CalibrationCache(version=None if version is None else parse_version(version),
                                         algorithm=algorithm, header=None)
            except TrtcalError as exc:
                raise TrtcalError(f"{source}: {exc}") from None
        entries = data.get("entries")
        if not isinstance(entries, list):
            raise TrtcalError(f"{source}: \"entries\" must be a list")
        for i, item in enumerate(entries):
            cache.entries.append(_entry_from_json(item, f"{source}: entries[{i}]"))
        return cache


def _json_float(x: float) -> float | str:
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x


def _entry_from_json(item: Any, where: str) -> CacheEntry:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise TrtcalError(f"{where}: expected an object with a string \"name\"")
    name = _check_name(item["name"], where)
    if "hex" in item:
        hex_text = item["hex"]
        if not isinstance(hex_text, str) or not _HEX_RE.fullmatch(hex_text) or len(hex_text) > 8:
            raise TrtcalError(f"{where}: \"hex\" {hex_text!r} is not a float32 bit pattern (1-8 hex digits)")
        return CacheEntry(name, int(hex_text, 16))
    for key, to_bits in (("scale", float_to_bits), ("amax", scale_bits_from_amax)):
        if key in item:
            try:
                value = float(item[key])
            except (TypeError, ValueError, OverflowError):
                raise TrtcalError(f"{where}: \"{key}\" {item[key]!r} is not a number") from None
            return CacheEntry(name, to_bits(value))
    raise TrtcalError(f"{where}: needs \"hex\", \"scale\" or \"amax\"")


def _check_name(name: str, where: str = "") -> str:
    if not name or "\n" in name or "\r" in name:
        raise TrtcalError(f"{where + ': ' if where else ''}tensor name {name!r} is empty or contains a line break")
    return name


# --------------------------------------------------------------------------- parsing


def _show(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


def _looks_like_ort_table_line(line: str) -> bool:
    parts = line.rsplit(" ", 1)
    if len(parts) != 2:
        return False
    try:
        float(parts[1])
    except ValueError:
        return False
    return True


def parse(text: str, source: str = "<string>") -> CalibrationCache:
    """Parse the text of a TensorRT calibration cache."""
    if text == "":
        raise TrtcalError(f"{source}: empty file, expected a TensorRT calibration cache")
    first_lf = text.find("\n")
    newline = "\r\n" if first_lf > 0 and text[first_lf - 1] == "\r" else "\n"
    final_newline = text.endswith(newline)
    body = text[: -len(newline)] if final_newline else text
    lines = body.split(newline)
    for i, line in enumerate(lines, 1):
        if "\r" in line or "\n" in line:
            kind = "stray carriage return" if "\r" in line else "bare line feed in a CRLF file"
            raise TrtcalError(f"{source}:{i}: {kind} (mixed line endings)")

    header = lines[0]
    version: Version | None
    algorithm: str | None
    m = _HEADER_RE.fullmatch(header)
    if m:
        version = decode_version(int(m.group(1)))
        algorithm = m.group(2)
        try:
            encode_version(version)
        except TrtcalError:
            raise TrtcalError(f"{source}:1: malformed header {_show(header)}: {m.group(1)} is no TensorRT "
                              "version number (e.g. 8601 for 8.6.1, 100900 for 10.9.0)") from None
    elif header.isdigit() and len(header) <= 3:
        version, algorithm = None, None  # TensorRT 3/4 era: the header is just a number
    else:
        if ": " in header and _HEX_RE.fullmatch(header.rsplit(": ", 1)[1]):
            hint = "the first line is an entry: the header is missing"
        elif _looks_like_ort_table_line(header):
            hint = "this looks like an ONNX Runtime TensorRT-EP table; use `trtcal cache convert --from ort-table`"
        elif header.lstrip().startswith("{"):
            hint = "this looks like JSON; use `trtcal cache convert --from json` or `--from ort-json`"
        else:
            hint = "expected TRT-<version>-<algorithm>, e.g. TRT-100900-EntropyCalibration2"
        raise TrtcalError(f"{source}:1: malformed header {_show(header)}: {hint}")

    cache = CalibrationCache(version=version, algorithm=algorithm, entries=[], header=header,
                             newline=newline, final_newline=final_newline)
    append = cache.entries.append
    for i, line in enumerate(lines[1:], 2):
        cut = line.rfind(": ")
        if cut < 0:
            what = "empty line" if line == "" else f"no ': ' in {_show(line)}"
            raise TrtcalError(f"{source}:{i}: {what}; expected '<tensor name>: <hex scale>'")
        name, hex_text = line[:cut], line[cut + 2:]
        if not name:
            raise TrtcalError(f"{source}:{i}: empty tensor name in {_show(line)}")
        if not _HEX_RE.fullmatch(hex_text):
            raise TrtcalError(f"{source}:{i}: tensor {_show(name)}: {_show(hex_text, 20)} is not a hexadecimal float32 bit pattern")
        if len(hex_text) > 8:
            raise TrtcalError(
                f"{source}:{i}: tensor {_show(name)}: hex {_show(hex_text, 20)} has {len(hex_text)} digits; a float32 has at most 8"
            )
        append(CacheEntry(name, int(hex_text, 16), hex_text))
    return cache


def read(source: str | os.PathLike | bytes) -> CalibrationCache:
    """Read a cache from a path, from ``bytes`` content, or from text (a ``str`` with a newline)."""
    if isinstance(source, bytes):
        return parse(fileio.decode_text(source, "<bytes>", what="calibration cache"), "<bytes>")
    if isinstance(source, str) and "\n" in source:
        return parse(source, "<string>")
    text = fileio.read_text(source, what="calibration cache")
    return parse(text, str(source))
