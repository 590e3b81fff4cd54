"""Property tests for the cache text format, the parser's error handling and the CLI on bad input.

1. Caches generated here and written by this file's own small formatter (not trtcal's writer)
   parse back to the same names, bit patterns and header, and ``to_text()`` gives the input back.
2. Mutations of the real fixture caches either parse and write back byte for byte, or raise
   ``TrtcalError`` whose message starts with the source name; nothing else ever escapes.
3. Mutated files driven through ``trtcal cache inspect`` exit 0, or exit 2 with exactly one line
   on stderr and no traceback.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, run_cli, trt_fixtures
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trtcal.cache import convert as cache_io
from trtcal.cache.format import KNOWN_ALGORITHMS, parse
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

SETTINGS = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}

# --------------------------------------------------------------------------- (1) generated caches

# Pieces of real tensor names (SOURCES.md: spaces, ':', '::', '/', '*', brackets, TF ':0', digits).
NAME_TOKENS = [
    "/", "::", ":", " ", "*", "(", ")", "[", "]", ".", "_", "-", "0", "7", "42", ":0",
    "onnx::MatMul_", "(Unnamed Layer* 1169) [Constant]", "_output", "_output_0", "/model/backbone/",
    "Conv", "ONNXTRT_Broadcast_", "input.1", "446 copy", "TRT-8601-EntropyCalibration2", ": ", "0x",
]
name_strategy = st.lists(
    st.one_of(st.sampled_from(NAME_TOKENS),
              st.characters(categories=["L", "Nd"]),  # unicode letters and digits
              st.characters(min_codepoint=0x20, max_codepoint=0x7E)),  # any printable ASCII
    min_size=1, max_size=8,
).map("".join)

SPECIAL_BITS = [0, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x80000000, 1, 0x007FFFFF,
                0x00800000, 0x3C000000, 0x3F800000, 0xBF800000, 0x7C010204, 0x7F7FFFFF]
bits_strategy = st.one_of(st.sampled_from(SPECIAL_BITS), st.integers(0, 2**32 - 1))


@st.composite
def header_strategy(draw):
    """(header line, expected version or None, expected algorithm or None)."""
    kind = draw(st.sampled_from(["old", "new", "legacy"]))
    if kind == "legacy":
        text = draw(st.sampled_from(["1", "2", "0", "100"]))
        return text, None, None
    if kind == "old":  # TensorRT <= 9: major*1000 + minor*100 + patch
        major, minor, patch = draw(st.integers(1, 9)), draw(st.integers(0, 9)), draw(st.integers(0, 99))
        number = major * 1000 + minor * 100 + patch
    else:  # TensorRT >= 10: major*10000 + minor*100 + patch
        major, minor, patch = draw(st.integers(10, 99)), draw(st.integers(0, 99)), draw(st.integers(0, 99))
        number = major * 10000 + minor * 100 + patch
    algorithm = draw(st.one_of(st.sampled_from(KNOWN_ALGORITHMS),
                               st.from_regex(r"[A-Za-z0-9_]{1,24}", fullmatch=True)))
    return f"TRT-{number}-{algorithm}", (major, minor, patch), algorithm


def spell_hex(bits: int, style: str) -> str:
    """TensorRT writes lowercase without padding; other spellings must survive a rewrite too."""
    canonical = format(bits, "x")
    return {"trt": canonical, "padded": format(bits, "08x"), "upper": canonical.upper()}[style]


@st.composite
def cache_text_strategy(draw):
    header, version, algorithm = draw(header_strategy())
    names = draw(st.lists(name_strategy, max_size=12))
    bits = [draw(bits_strategy) for _ in names]
    styles = [draw(st.sampled_from(["trt", "trt", "trt", "padded", "upper"])) for _ in names]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    final = draw(st.booleans())
    lines = [header] + [f"{n}: {spell_hex(b, s)}" for n, b, s in zip(names, bits, styles)]
    text = newline.join(lines) + (newline if final else "")
    return text, header, version, algorithm, names, bits


def f32(bits: int) -> float:
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


@settings(max_examples=500, **SETTINGS)
@given(cache_text_strategy())
def test_generated_caches_parse_exactly(case):
    text, header, version, algorithm, names, bits = case
    cache = parse(text, "gen.cache")
    assert cache.names() == names
    assert [e.bits for e in cache.entries] == bits
    assert cache.to_text() == text
    assert cache.header == header
    assert cache.version == version
    assert cache.algorithm == algorithm
    assert cache.is_legacy_header == (version is None)
    for e, b in zip(cache.entries, bits):
        want = f32(b)
        assert e.hex == format(b, "x")
        assert (e.scale != e.scale and want != want) or e.scale == want


@settings(max_examples=150, **SETTINGS)
@given(cache_text_strategy())
def test_generated_caches_json_round_trip_gives_canonical_text(case):
    """trt -> json -> trt: same header, names and bits, in TensorRT's own spelling (LF, final
    newline, lowercase unpadded hex), written here independently."""
    text, header, version, algorithm, names, bits = case
    js = cache_io.convert(text.encode("utf-8"), "json", source="gen.cache")
    doc = json.loads(js)
    assert [(e["name"], e["hex"]) for e in doc["entries"]] == [(n, format(b, "x")) for n, b in zip(names, bits)]
    back = cache_io.convert(js, "trt", source="gen.json").decode("utf-8")
    assert back == "".join(f"{line}\n" for line in [header] + [f"{n}: {b:x}" for n, b in zip(names, bits)])


@settings(max_examples=25, **SETTINGS)
@given(cache_text_strategy())
def test_generated_caches_through_cli_inspect(tmp_path_factory, case):
    text, header, version, algorithm, names, bits = case
    path = tmp_path_factory.mktemp("gen") / "gen.cache"
    path.write_bytes(text.encode("utf-8"))
    rc, out, err = run_cli("cache", "inspect", path, "--json")
    assert (rc, err) == (0, "")
    doc = json.loads(out)
    assert doc["count"] == len(names)
    assert [(e["name"], e["hex"]) for e in doc["entries"]] == [(n, format(b, "x")) for n, b in zip(names, bits)]
    assert doc["header"] == header
    assert path.read_bytes() == text.encode("utf-8")


# --------------------------------------------------------------------------- (2) mutated real caches

_FIXTURE_BYTES: dict[str, bytes] = {}


def fixture_bytes(name: str) -> bytes:
    if name not in _FIXTURE_BYTES:
        _FIXTURE_BYTES[name] = (FIXTURES / name).read_bytes()
    return _FIXTURE_BYTES[name]


needs_fixtures = pytest.mark.skipif(not trt_fixtures(), reason=f"real cache fixtures not available ({FIXTURES})")
fixture_names = st.sampled_from(trt_fixtures() or ["none"])

INTERESTING = [b": ", b":", b" ", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xe9", b"\xc3\xa9", b"g", b"0",
               b"f", b"F", b"-", b"TRT-", b"7f800000", b"123456789", b"{", b"\t"]
insert_bytes = st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=4))


@st.composite
def mutation(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "dup-line", "blank-line",
                                 "crlf-all", "crlf-one", "drop-newline"]))
    n = len(data)
    if kind == "delete":
        i = draw(st.integers(0, max(n - 1, 0)))
        return data[:i] + data[i + draw(st.integers(1, 4)):]
    if kind == "insert":
        i = draw(st.integers(0, n))
        return data[:i] + draw(insert_bytes) + data[i:]
    if kind == "replace":
        i = draw(st.integers(0, max(n - 1, 0)))
        return data[:i] + draw(insert_bytes) + data[i + 1:]
    if kind == "truncate":
        return data[:draw(st.integers(0, n))]
    lines = data.split(b"\n")
    i = draw(st.integers(0, max(len(lines) - 2, 0)))
    if kind == "dup-line":
        return b"\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])
    if kind == "blank-line":
        return b"\n".join(lines[:i + 1] + [b""] + lines[i + 1:])
    if kind == "crlf-all":
        return data.replace(b"\n", b"\r\n")
    if kind == "crlf-one":
        return b"\n".join(lines[:i + 1]) + b"\r\n" + b"\n".join(lines[i + 1:])
    return data.rstrip(b"\n")  # drop-newline


@st.composite
def mutated_fixture(draw):
    name = draw(fixture_names)
    data = fixture_bytes(name)
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutation(data))
    return name, data


SRC = "mutant.cache"


@needs_fixtures
@settings(max_examples=1000, **SETTINGS)
@given(mutated_fixture())
def test_mutated_fixtures_parse_exactly_or_fail_cleanly(case):
    _name, data = case
    try:
        cache = parse(fileio.decode_text(data, SRC, what="calibration cache"), SRC)
    except TrtcalError as exc:
        message = str(exc)
        assert message.startswith(SRC + ":"), message
        assert "\n" not in message and "\r" not in message, message  # one line, even for the API
        event("TrtcalError")
        return
    event("parsed")
    assert cache.to_text().encode("utf-8") == data


@needs_fixtures
@settings(max_examples=500, **SETTINGS)
@given(mutated_fixture())
def test_mutated_fixtures_load_any_format_or_fail_cleanly(case):
    """The format-detecting loader the CLI uses: a cache, or TrtcalError naming the source."""
    _name, data = case
    try:
        cache = cache_io.load(data, "auto", SRC)
    except TrtcalError as exc:
        assert str(exc).startswith(SRC + ":"), str(exc)
        return
    if cache_io.detect_format(data, SRC) == "trt":
        assert cache.to_text().encode("utf-8") == data


@needs_fixtures
@settings(max_examples=150, **SETTINGS)
@given(st.sampled_from(trt_fixtures() or ["none"]), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_fixtures_with_other_line_endings_round_trip(name, newline, final):
    text = fixture_bytes(name).decode("utf-8")[:-1].replace("\n", newline) + (newline if final else "")
    assert parse(text, SRC).to_text() == text


# --------------------------------------------------------------------------- (3) the CLI on mutants


@needs_fixtures
@settings(max_examples=60, **SETTINGS)
@given(mutated_fixture())
def test_cli_inspect_on_mutants_exit_0_or_one_line_exit_2(case):
    _name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.cache"
        path.write_bytes(data)
        mtime = path.stat().st_mtime_ns
        rc, out, err = run_cli("cache", "inspect", path)
        assert "Traceback" not in err and "Traceback" not in out
        event(f"exit {rc}")
        if rc == 0:
            assert err == "" and out.startswith(f"{path}: ")
        else:
            assert rc == 2, (rc, err)
            assert err.endswith("\n") and err.count("\n") == 1, err
            assert err.startswith("trtcal: error: ")
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
        assert os.listdir(tmp) == ["mutant.cache"]


# --------------------------------------------------------------------------- once bugs, now regressions


def test_bare_lf_inside_crlf_cache_is_an_error():
    with pytest.raises(TrtcalError, match=r"^x\.cache:2: "):
        parse("TRT-8601-EntropyCalibration2\r\na\nb: 3c000000\r\n", "x.cache")
