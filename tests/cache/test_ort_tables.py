"""ONNX Runtime TensorRT-EP tables: the real CREStereo triple and ONNX Runtime's own writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fixture_path

from trtcal.cache import convert as cache_io
from trtcal.cache import ort_tables
from trtcal.core.errors import TrtcalError

CRE = "HKUST-Swarm__ONNX-CREStereo-Depth-Estimation__calibration."


def test_real_triple_round_trips_and_agrees():
    text = fixture_path(CRE + "cache").read_text()
    js = fixture_path(CRE + "json").read_text()
    fb = fixture_path(CRE + "flatbuffers").read_bytes()
    table = ort_tables.parse_ort_table(text)
    ranges = ort_tables.parse_ort_json(js)
    flat = ort_tables.parse_ort_flatbuffers(fb)
    assert len(table) == len(ranges) == len(flat) == 4520  # SOURCES.md
    assert ort_tables.format_ort_table(table) == text
    assert ort_tables.format_ort_json(ranges) == js
    assert ort_tables.format_ort_flatbuffers(flat) == fb
    # SOURCES.md: every table value equals max(|min|, |max|) of the same name in the JSON
    assert table == ort_tables.amaxes_from_ranges(ranges) == flat
    assert table["init_K"] == 6.9101080894470215


def test_matches_onnxruntime_writer(tmp_path, monkeypatch):
    """ONNX Runtime's own write_calibration_table is the reference for all three files."""
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    from onnxruntime.quantization.calibrate import TensorData

    rng = np.random.default_rng(1)
    names = ["images", "/conv/Conv_output_0", "onnx::MatMul_12", "(Unnamed Layer* 3) [Constant]_output", "z b"]
    amax = rng.uniform(0.01, 50, len(names)).astype(np.float32)
    cache = {n: TensorData(lowest=-a, highest=a) for n, a in zip(names, amax)}
    monkeypatch.chdir(tmp_path)
    quant_utils.write_calibration_table(cache, dir=str(tmp_path))
    expected = {n: float(a) for n, a in zip(names, amax)}
    assert ort_tables.parse_ort_table((tmp_path / "calibration.cache").read_text()) == expected
    assert ort_tables.parse_ort_flatbuffers((tmp_path / "calibration.flatbuffers").read_bytes()) == expected
    ranges = ort_tables.parse_ort_json((tmp_path / "calibration.json").read_text())  # newer dict form
    assert ort_tables.amaxes_from_ranges(ranges) == expected
    assert ort_tables.format_ort_flatbuffers(expected) == (tmp_path / "calibration.flatbuffers").read_bytes()
    assert ort_tables.format_ort_table(expected) == (tmp_path / "calibration.cache").read_text()


def test_empty_flatbuffer_table_round_trips():
    assert ort_tables.parse_ort_flatbuffers(ort_tables.format_ort_flatbuffers({})) == {}


@pytest.mark.parametrize("data", [b"", b"\x01\x02", b"\xff" * 64, b"\x0c\x00\x00\x00" + b"\x00" * 4])
def test_garbage_flatbuffers_fail_cleanly(data):
    with pytest.raises(TrtcalError, match="^f.fb: "):
        ort_tables.parse_ort_flatbuffers(data, "f.fb")


def test_truncated_real_flatbuffer_fails_cleanly():
    fb = fixture_path(CRE + "flatbuffers").read_bytes()
    for cut in (9, 100, len(fb) // 2, len(fb) - 3):
        with pytest.raises(TrtcalError, match="^f.fb: "):
            ort_tables.parse_ort_flatbuffers(fb[:cut], "f.fb")


@pytest.mark.parametrize(("text", "what"), [
    ("", "empty"), ("a\n", ":1: expected"), ("a 1.0\nb x\n", ":2: tensor 'b'"),
    ("a 1\na 2\n", "twice"), ("TRT-8601-EntropyCalibration2\n", "TensorRT calibration cache"),
])
def test_bad_ort_table(text, what):
    with pytest.raises(TrtcalError, match=what):
        ort_tables.parse_ort_table(text, "t.cache")


@pytest.mark.parametrize(("text", "what"), [
    ("[1, 2]", "JSON object"), ('{"a": [1]}', "expected \\[min, max\\]"), ('{"a": ["x", 1]}', "not a number"),
    ("{bad", "not valid JSON"),
])
def test_bad_ort_json(text, what):
    with pytest.raises(TrtcalError, match=what):
        ort_tables.parse_ort_json(text, "t.json")


def test_detect_formats():
    assert cache_io.detect_format(b"TRT-8601-EntropyCalibration2\n") == "trt"
    assert cache_io.detect_format(b"1\n0: 3c\n") == "trt"
    assert cache_io.detect_format(b"init_K 6.91\n") == "ort-table"
    assert cache_io.detect_format(b'{"a": [0, 1]}') == "ort-json"
    assert cache_io.detect_format(json.dumps({"format": "trtcal-cache"}).encode()) == "json"
    assert cache_io.detect_format(ort_tables.format_ort_flatbuffers({"a": 1.0})) == "ort-flatbuffers"


def test_convert_ort_to_trt_rounds_scale_once():
    data = b"a 6.9101080894470215\nb 0.0\n"
    trt = cache_io.convert(data, "trt", version=(10, 9, 0)).decode()
    lines = trt.splitlines()
    assert lines[0] == "TRT-100900-EntropyCalibration2"
    a = np.float32(6.9101080894470215 / 127)
    assert lines[1] == f"a: {int(a.view(np.uint32)):x}" and lines[2] == "b: 0"


def test_convert_between_ort_formats_is_exact():
    text = fixture_path(CRE + "cache").read_bytes()
    fb = fixture_path(CRE + "flatbuffers").read_bytes()
    assert cache_io.convert(text, "ort-flatbuffers") == fb
    assert cache_io.convert(fb, "ort-table") == text
