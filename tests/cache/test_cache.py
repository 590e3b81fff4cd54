"""trtcal.cache.format: version numbers, the text format, exact round trips of real caches."""

from __future__ import annotations

import json
import struct

import pytest
from conftest import fixture_path, trt_fixtures

from trtcal.cache import format as trtcache
from trtcal.cache.format import (
    CalibrationCache,
    decode_version,
    encode_version,
    parse,
    parse_version,
)
from trtcal.core.errors import TrtcalError

# (header number, version) pairs from REFERENCE.md and the real caches' headers.
VERSIONS = [
    (8601, (8, 6, 1)), (8401, (8, 4, 1)), (7201, (7, 2, 1)), (100900, (10, 9, 0)),
    (101303, (10, 13, 3)), (5105, (5, 1, 5)), (8003, (8, 0, 3)), (7000, (7, 0, 0)),
    (101000, (10, 10, 0)), (8501, (8, 5, 1)),
]


@pytest.mark.parametrize(("number", "version"), VERSIONS)
def test_version_numbers_both_ways(number, version):
    assert decode_version(number) == version
    assert encode_version(version) == number


@pytest.mark.parametrize(("text", "version"), [
    ("10.9.0", (10, 9, 0)), ("8.6.1", (8, 6, 1)), ("10.9", (10, 9, 0)), ("8601", (8, 6, 1)),
    ("100900", (10, 9, 0)), ("10.13.3.9", (10, 13, 3)),
])
def test_parse_version(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["banana", "", "10.x", "8.12.0", "10.100.0", "-1"])
def test_parse_version_rejects(text):
    with pytest.raises(TrtcalError, match="TensorRT version"):
        parse_version(text)


def f32_bits(x: float) -> int:
    return struct.unpack(">I", struct.pack(">f", x))[0]


def test_entry_values_and_lookup():
    c = parse("TRT-100900-EntropyCalibration2\nimages: 3c021406\n"
              "(Unnamed Layer* 1169) [Constant]_output: 7f800000\na: b: 3f800000\nz: 0\n")
    assert c.version == (10, 9, 0) and c.version_number == 100900
    assert c.algorithm == "EntropyCalibration2"
    assert c.names() == ["images", "(Unnamed Layer* 1169) [Constant]_output", "a: b", "z"]
    assert c.scale("images") == struct.unpack(">f", bytes.fromhex("3c021406"))[0]
    assert c.amax("a: b") == 127.0  # split on the LAST ": "
    assert c.amax("z") == 0.0
    assert c.amax("(Unnamed Layer* 1169) [Constant]_output") == float("inf")
    with pytest.raises(TrtcalError, match="not in the cache"):
        c.amax("nope")


def test_from_amaxes_rounds_scale_to_float32_once():
    # REFERENCE.md: MinMax on an input normalised with mean 0.4465/std 0.2010 stores 3cb1a063,
    # EntropyCalibration2 keeping every bin stores M*4097/4096/127 = 3cb1ab7d; raw 0..255 -> 4000890a.
    import numpy as np

    m = float((np.float32(1) - np.float32(0.4465)) / np.float32(0.2010))
    c = CalibrationCache.from_amaxes({"x": m, "y": m * 4097 / 4096, "raw": 255 * 4097 / 4096},
                                     version=(8, 0, 3))
    assert [e.hex for e in c] == ["3cb1a063", "3cb1ab7d", "4000890a"]
    assert c.to_text() == "TRT-8003-EntropyCalibration2\nx: 3cb1a063\ny: 3cb1ab7d\nraw: 4000890a\n"


@pytest.mark.parametrize("name", trt_fixtures())
def test_real_caches_round_trip_byte_for_byte(name):
    path = fixture_path(name)
    data = path.read_bytes()
    c = trtcache.read(path)
    assert c.to_text().encode("utf-8") == data
    # and the entries are exactly the lines after the first
    lines = data.decode().splitlines()
    assert len(c) == len(lines) - 1
    assert [f"{e.name}: {e.hex}" for e in c] == lines[1:]


@pytest.mark.parametrize(("name", "version", "algorithm", "count"), [
    ("dnth__DEIMKit__calibration.cache", (10, 9, 0), "EntropyCalibration2", 1907),
    ("isaid22__TensorRT-Optimization-MPNet__calibration.cache", (10, 13, 3), "MinMaxCalibration", 842),
    ("nt4sth__Torch-TensorRT-VGG16__calibration.cache", (8, 4, 0), "MinMaxCalibration", 67),
    ("Kwull__deepstream-4.0.1__yolov3-calibration.table.trt5.1", (5, 1, 5), "EntropyCalibration2", 258),
    ("liujuanLT__model_convert__calibration.cache", (7, 2, 1), "EntropyCalibration2", 45),
])
def test_real_cache_headers(name, version, algorithm, count):
    c = trtcache.read(fixture_path(name))
    assert (c.version, c.algorithm, len(c)) == (version, algorithm, count)
    assert c.header_line == f"TRT-{encode_version(version)}-{algorithm}"


def test_legacy_header_one():
    c = trtcache.read(fixture_path("modricwang__Pytorch-Model-to-TensorRT__calibration_cache.bin"))
    assert c.is_legacy_header and c.version is None and c.algorithm is None
    assert len(c) == 62 and "446 copy" in c


def test_raw_hex_kept_until_changed():
    text = "TRT-8601-MinMaxCalibration\r\na: 03C00000\r\nb: 0"  # CRLF, padded upper hex, no final newline
    c = parse(text)
    assert c.to_text() == text
    assert c.entry("a").bits == 0x3C00000
    c.set_amax("a", 1.0)
    assert c.to_text() == "TRT-8601-MinMaxCalibration\r\na: 3c010204\r\nb: 0"


def test_restamp_keeps_entries_bit_for_bit():
    c = parse("TRT-8601-EntropyCalibration2\nx: 3cb1ab7d\n")
    r = c.restamped((10, 9, 0))
    assert r.to_text() == "TRT-100900-EntropyCalibration2\nx: 3cb1ab7d\n"
    assert c.to_text().startswith("TRT-8601")  # the original is untouched
    assert r.restamped((10, 9, 0), "MinMaxCalibration").header_line == "TRT-100900-MinMaxCalibration"


def test_duplicates_kept_and_last_wins():
    c = parse("TRT-8601-EntropyCalibration2\nx: 3f800000\nx: 40000000\n")
    assert len(c) == 2 and c.duplicates() == {"x": 2}
    assert c.amax("x") == 2.0 * 127


def test_json_round_trip_exact():
    src = "TRT-100900-EntropyCalibration2\nimages: 3c021406\ninf: 7f800000\nnan: 7fc00000\nneg: bf800000\n"
    c = parse(src)
    doc = json.loads(json.dumps(c.to_dict()))  # must be strict JSON (no NaN literals)
    assert doc["trt_version"] == "10.9.0" and doc["entries"][1]["amax"] == "inf"
    assert CalibrationCache.from_dict(doc).to_text() == src


def test_from_dict_accepts_amax_and_rejects_garbage():
    doc = {"format": "trtcal-cache", "format_version": 1, "header": None, "trt_version": "8.6.1",
           "algorithm": "MinMaxCalibration", "entries": [{"name": "x", "amax": 127.0}]}
    assert CalibrationCache.from_dict(doc).to_text() == "TRT-8601-MinMaxCalibration\nx: 3f800000\n"
    for bad, msg in [({"format": "other"}, "not a trtcal cache"),
                     ({**doc, "format_version": 2}, "format_version"),
                     ({**doc, "entries": [{"name": "x", "hex": "123456789"}]}, "entries\\[0\\]"),
                     ({**doc, "entries": [{"name": "x"}]}, "needs"),
                     ({**doc, "entries": [{"name": "", "amax": 1}]}, "empty")]:
        with pytest.raises(TrtcalError, match=msg):
            CalibrationCache.from_dict(bad, "f.json")


@pytest.mark.parametrize(("text", "line", "what"), [
    ("", None, "empty file"),
    ("images: 3c021406\n", 1, "header is missing"),
    ("init_K 6.91\n", 1, "ONNX Runtime"),
    ("TRT-abc-Entropy\n", 1, "malformed header"),
    ("TRT-8601-EntropyCalibration2\nimages 3c021406\n", 2, "no ': '"),
    ("TRT-8601-EntropyCalibration2\nimages: 3c02g406\n", 2, "not a hexadecimal"),
    ("TRT-8601-EntropyCalibration2\nimages: 13c0214060\n", 2, "10 digits"),
    ("TRT-8601-EntropyCalibration2\nimages: \n", 2, "not a hexadecimal"),
    ("TRT-8601-EntropyCalibration2\n\nimages: 3c\n", 2, "empty line"),
    ("TRT-8601-EntropyCalibration2\n: 3c\n", 2, "empty tensor name"),
    ("TRT-8601-EntropyCalibration2\r\na: 3c\rb: 3c\r\n", 2, "carriage return"),
    ("TRT-8601-EntropyCalibration2\nimages: 3c -\n", 2, "not a hexadecimal"),
])
def test_malformed_text_names_source_and_line(text, line, what):
    with pytest.raises(TrtcalError) as exc:
        parse(text, "m.cache")
    msg = str(exc.value)
    assert msg.startswith(f"m.cache:{line}:" if line else "m.cache:")
    assert what in msg and "\n" not in msg


def test_read_distinguishes_path_text_and_bytes(tmp_path):
    p = tmp_path / "c.cache"
    p.write_text("TRT-8601-EntropyCalibration2\nx: 3f800000\n")
    assert trtcache.read(p).amax("x") == 127.0
    assert trtcache.read(str(p)).amax("x") == 127.0
    assert trtcache.read(p.read_bytes()).amax("x") == 127.0
    assert trtcache.read(p.read_text()).amax("x") == 127.0
    with pytest.raises(TrtcalError, match="binary"):
        trtcache.read(b"TRT-8601-EntropyCalibration2\nx: 3f8\x00\n")
    with pytest.raises(TrtcalError, match="no such"):
        trtcache.read(tmp_path / "missing.cache")


def test_write_is_atomic_and_needs_force(tmp_path):
    c = parse("TRT-8601-EntropyCalibration2\nx: 3f800000\n")
    out = tmp_path / "o.cache"
    c.write(out)
    with pytest.raises(TrtcalError, match="--force"):
        c.restamped((10, 9, 0)).write(out)
    assert out.read_text().startswith("TRT-8601")
    c.restamped((10, 9, 0)).write(out, force=True)
    assert out.read_text().startswith("TRT-100900")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.cache"]  # no temp files left
