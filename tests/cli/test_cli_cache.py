"""``trtcal cache ...`` end to end: real caches, hand-computed values, bad input, file safety.

Expected values come from outside trtcal wherever possible: the facts in the fixtures'
SOURCES.md, the fixture files' own bytes (read here with a few lines of independent code),
IEEE-754 bit patterns worked out by hand (0x3f800000 is 1.0, doubling a normal float adds
0x00800000 to its bits), and numpy's float32 rounding.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, run_cli, trt_fixtures

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
TINY_CACHE = EXAMPLES / "tiny_cnn.cache"
TINY_MODEL = EXAMPLES / "tiny_cnn.onnx"

DEIM = "dnth__DEIMKit__calibration.cache"
MPNET = "isaid22__TensorRT-Optimization-MPNet__calibration.cache"
ILIAS = "IliasRmouque__nvfiles_for_forum__cal.bin"
LEGACY = "modricwang__Pytorch-Model-to-TensorRT__calibration_cache.bin"
VGG = "nt4sth__Torch-TensorRT-VGG16__calibration.cache"
CLEAN = "shiyongming__torch-tensorrt_sample__calibration.cache"  # SOURCES.md: "Nothing unusual"
CRE = "HKUST-Swarm__ONNX-CREStereo-Depth-Estimation__calibration."

ALL_COMMANDS = ["inspect", "diff", "lint", "edit", "restamp", "convert"]


# --------------------------------------------------------------------------- independent helpers


def read_trt(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(header, [(name, hex)]) of an LF cache with a final newline, read without trtcal."""
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    return lines[0], [tuple(line.rsplit(": ", 1)) for line in lines[1:]]


def f32_bits(x: float) -> int:
    """Bit pattern of x rounded to float32, by numpy."""
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def copy_aged(src: Path, dst: Path) -> Path:
    """Copy src to dst and move its mtime into the past, so any rewrite shows."""
    shutil.copyfile(src, dst)
    os.utime(dst, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return dst


def assert_one_line_error(rc: int, out: str, err: str, *names: object) -> None:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    for name in names:
        assert str(name) in err, (name, err)


def cli_json(*argv: object) -> tuple[int, dict]:
    rc, out, err = run_cli(*argv)
    assert err == "", err
    return rc, json.loads(out)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


# --------------------------------------------------------------------------- inspect


def test_inspect_json_deimkit_matches_sources_and_file(tmp_path):
    path = fixture_path(DEIM)
    header, entries = read_trt(path)
    rc, doc = cli_json("cache", "inspect", path, "--json")
    assert rc == 0
    # SOURCES.md facts
    assert doc["count"] == 1907
    assert doc["suspicious"]["zero"] == 87
    assert doc["suspicious"]["inf"] == 4
    assert doc["header"] == "TRT-100900-EntropyCalibration2"
    assert doc["trt_version"] == "10.9.0" and doc["header_number"] == 100900
    assert doc["algorithm"] == "EntropyCalibration2"
    # the table is the file, entry by entry
    assert [(e["name"], e["hex"]) for e in doc["entries"]] == entries
    by_name = {e["name"]: e for e in doc["entries"]}
    inf = by_name["(Unnamed Layer* 1169) [Constant]_output"]
    assert inf["hex"] == "7f800000" and inf["amax"] == "inf" and inf["scale"] == "inf"
    assert by_name["ONNXTRT_Broadcast_615_output"]["hex"] == "7f800000"
    assert "onnx::Mul_5015" in by_name and "boxes" in by_name and "scores" in by_name
    # images: 3c021406 -> scale and amax worked out from the bits by numpy
    scale = float(np.array([0x3C021406], dtype=np.uint32).view(np.float32)[0])
    assert by_name["images"]["scale"] == scale
    assert by_name["images"]["amax"] == pytest.approx(scale * 127, rel=1e-12)
    flagged = {f["tensor"] for f in doc["findings"] if f["code"] == "inf"}
    assert flagged == {n for n, h in entries if h == "7f800000"}
    assert len({f["tensor"] for f in doc["findings"] if f["code"] == "zero"}) == 87


@pytest.mark.parametrize("name, zero, inf, named_inf", [
    (ILIAS, 0, 70, ["Input"]),
    (MPNET, 2, 3, ["/encoder/Log_output_0", "/encoder/Div_1_output_0", "/encoder/Mul_1_output_0"]),
])
def test_inspect_json_other_counts_match_sources(name, zero, inf, named_inf):
    rc, doc = cli_json("cache", "inspect", fixture_path(name), "--json")
    assert rc == 0
    assert doc["suspicious"].get("zero", 0) == zero
    assert doc["suspicious"]["inf"] == inf
    inf_names = {f["tensor"] for f in doc["findings"] if f["code"] == "inf"}
    assert set(named_inf) <= inf_names
    if name == MPNET:
        assert doc["count"] == 842 and doc["header"] == "TRT-101303-MinMaxCalibration"
        assert {f["tensor"] for f in doc["findings"] if f["code"] == "zero"} == {"/Sub_output_0", "/Mul_output_0"}
    else:
        assert doc["count"] == 158 and doc["trt_version"] == "8.5.1"


def test_inspect_legacy_header():
    path = fixture_path(LEGACY)
    rc, doc = cli_json("cache", "inspect", path, "--json")
    assert rc == 0
    assert doc["header"] == "1" and doc["trt_version"] is None and doc["header_number"] is None
    assert doc["count"] == 62
    assert doc["suspicious"] == {"legacy-header": 1}
    names = [e["name"] for e in doc["entries"]]
    assert "446 copy" in names and "447 copy" in names
    rc, out, err = run_cli("cache", "inspect", path)
    assert rc == 0 and err == ""
    assert "legacy" in out.splitlines()[0] and "62 tensors" in out.splitlines()[0]


def test_inspect_hand_made_cache_every_kind(tmp_path):
    path = write(tmp_path / "kinds.cache", "TRT-8601-EntropyCalibration2\n"
                 "one: 3f800000\n"      # scale 1.0, amax 127
                 "tiny: 3c000000\n"     # scale 2**-7, amax 0.9921875
                 "z: 0\n"
                 "i: 7f800000\n"
                 "n: 7fc00000\n"
                 "neg: bf800000\n"      # scale -1.0
                 "den: 1\n"             # smallest denormal
                 "tiny: 3c000000\n")    # duplicate name
    rc, doc = cli_json("cache", "inspect", path, "--json")
    assert rc == 0
    assert doc["header_number"] == 8601 and doc["trt_version"] == "8.6.1" and doc["count"] == 8
    assert doc["suspicious"] == {"zero": 1, "inf": 1, "nan": 1, "negative": 1, "denormal": 1, "duplicate": 1}
    e = {x["name"]: x for x in doc["entries"]}
    assert (e["one"]["scale"], e["one"]["amax"], e["one"]["hex"]) == (1.0, 127.0, "3f800000")
    assert (e["tiny"]["scale"], e["tiny"]["amax"]) == (0.0078125, 0.9921875)
    assert (e["neg"]["scale"], e["neg"]["amax"]) == (-1.0, -127.0)
    assert e["i"]["amax"] == "inf" and e["n"]["amax"] == "nan" and e["z"]["amax"] == 0.0
    assert e["den"]["scale"] == 2.0 ** -149
    flagged = {(f["code"], f["tensor"]) for f in doc["findings"]}
    assert {("zero", "z"), ("inf", "i"), ("nan", "n"), ("negative", "neg"), ("denormal", "den"),
            ("duplicate", "tiny")} == flagged

    rc, out, err = run_cli("cache", "inspect", path)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{path}: TensorRT 8.6.1 (header 8601), EntropyCalibration2, 8 tensors"
    row = next(line for line in lines if line.endswith(" one"))
    assert row.split() == ["127", "1", "3f800000", "one"]
    assert any(line.split()[-3:] == ["z", "<-", "zero"] for line in lines)
    summary = next(line for line in lines if line.startswith("suspicious:"))
    for part in ("zero 1", "inf 1", "nan 1", "negative 1", "denormal 1", "duplicate 1"):
        assert part in summary


def test_inspect_clean_cache_says_none():
    rc, out, err = run_cli("cache", "inspect", fixture_path(CLEAN), "--summary")
    assert rc == 0 and err == ""
    assert "TensorRT 8.0.3 (header 8003), EntropyCalibration2, 197 tensors" in out
    assert out.rstrip().endswith("suspicious: none")


# --------------------------------------------------------------------------- diff


def test_diff_fixture_with_itself_is_same(tmp_path):
    path = fixture_path(DEIM)
    rc, out, err = run_cli("cache", "diff", path, path)
    assert rc == 0 and err == ""
    assert "0 differ" in out and "same" in out.splitlines()[-1]
    rc, doc = cli_json("cache", "diff", path, path, "--json")
    assert rc == 0 and doc["same"] is True
    # 1907 entries; SOURCES.md says "no duplicate names", so 1907 distinct tensors
    assert doc["common"] == 1907 and doc["differ"] == 0 and doc["only_a"] == doc["only_b"] == []


def test_diff_against_scaled_edit_names_the_tensor(tmp_path):
    src = fixture_path(DEIM)
    name = "/model/backbone/stem/stem1/conv/Conv_output_0"
    out_path = tmp_path / "scaled.cache"
    rc, _, err = run_cli("cache", "edit", src, "--scale", f"{name}=2", "-o", out_path)
    assert rc == 0, err
    rc, out, err = run_cli("cache", "diff", src, out_path)
    assert rc == 1 and err == ""
    differs = [line for line in out.splitlines() if "<- differs" in line]
    assert len(differs) == 1 and name in differs[0]
    assert "DIFFERENT" in out.splitlines()[-1]
    rc, doc = cli_json("cache", "diff", src, out_path, "--json")
    assert rc == 1 and doc["same"] is False and doc["differ"] == 1
    bad = [r for r in doc["rows"] if not r["agree"]]
    assert [r["tensor"] for r in bad] == [name]
    assert bad[0]["ratio"] == 2.0  # doubling a float32 is exact


def test_diff_only_in_one_side(tmp_path):
    a = write(tmp_path / "a.cache", "TRT-8601-EntropyCalibration2\nx: 3f800000\ny: 3c000000\n")
    b = write(tmp_path / "b.cache", "TRT-8601-EntropyCalibration2\nx: 3f800000\nw: 3c000000\n")
    rc, out, _ = run_cli("cache", "diff", a, b)
    assert rc == 1
    assert "only in A: y" in out and "only in B: w" in out
    rc, doc = cli_json("cache", "diff", a, b, "--json")
    assert rc == 1 and doc["only_a"] == ["y"] and doc["only_b"] == ["w"] and doc["differ"] == 0


@pytest.mark.parametrize("hex_b, rtol, rc", [
    ("3f800001", None, 0),     # one ulp at 1.0 (rel 1.19e-7) < default 1e-6
    ("3f800001", "0", 1),
    ("3f810000", "0.01", 0),   # 1 + 2**-7: rel 0.0078
    ("3f810000", "0.001", 1),
    ("0", "0.5", 1),           # zero against 1.0
    ("7f800000", "1e9", 1),    # inf never agrees with a finite value
])
def test_diff_rtol(tmp_path, hex_b, rtol, rc):
    a = write(tmp_path / "a.cache", "TRT-8601-EntropyCalibration2\nt: 3f800000\n")
    b = write(tmp_path / "b.cache", f"TRT-8601-EntropyCalibration2\nt: {hex_b}\n")
    argv = ["cache", "diff", a, b] + (["--rtol", rtol] if rtol is not None else [])
    got, out, err = run_cli(*argv)
    assert (got, err) == (rc, ""), out


def test_diff_headers_differ_but_ranges_agree(tmp_path):
    a = write(tmp_path / "a.cache", "TRT-8601-EntropyCalibration2\nt: 3f800000\n")
    b = write(tmp_path / "b.cache", "TRT-101303-MinMaxCalibration\nt: 3f800000\n")
    rc, out, _ = run_cli("cache", "diff", a, b)
    assert rc == 0
    assert "headers differ" in out


def test_diff_identical_nan_entries_agree(tmp_path):
    a = write(tmp_path / "a.cache", "TRT-8601-EntropyCalibration2\nt: 7fc00000\n")
    rc, out, _ = run_cli("cache", "diff", a, a)
    assert rc == 0, out


# --------------------------------------------------------------------------- lint


def test_lint_bundled_example_finds_the_four_problems():
    rc, out, err = run_cli("cache", "lint", TINY_CACHE, "--model", TINY_MODEL, "--trt-version", "10.13.3")
    assert rc == 1 and err == ""
    lines = out.splitlines()
    assert any("/conv3/Conv_output_0" in line and "not in the model" in line for line in lines)
    assert any("/pool/GlobalAveragePool_output_0" in line and "without a range" in line for line in lines)
    assert any("10.13.3" in line and "8.6.1" in line for line in lines)
    assert any(line.startswith("warning: logits:") and "zero" in line for line in lines)
    # ONNXTRT_Broadcast_12_output is TensorRT-internal: informational, not an error
    assert not any("ONNXTRT_Broadcast_12_output" in line for line in lines if line.startswith(("error", "warning")))
    rc, doc = cli_json("cache", "lint", TINY_CACHE, "--model", TINY_MODEL, "--trt-version", "10.13.3", "--json")
    assert rc == 1 and doc["ok"] is False
    got = {(f["code"], f["tensor"]) for f in doc["findings"] if f["severity"] != "info"}
    assert got == {("unknown-name", "/conv3/Conv_output_0"), ("missing-range", "/pool/GlobalAveragePool_output_0"),
                   ("version-mismatch", None), ("zero", "logits")}


def test_lint_trt11_has_no_calibrators():
    rc, doc = cli_json("cache", "lint", TINY_CACHE, "--trt-version", "11.0.0", "--json")
    assert rc == 1
    codes = [f["code"] for f in doc["findings"]]
    assert "trt11" in codes and "version-mismatch" not in codes
    rc, out, _ = run_cli("cache", "lint", TINY_CACHE, "--trt-version", "11.0.0")
    assert rc == 1 and "TensorRT 11.0.0" in out


def test_lint_clean_fixture_passes_only_for_its_own_release():
    path = fixture_path(CLEAN)  # header TRT-8003-EntropyCalibration2
    rc, out, err = run_cli("cache", "lint", path, "--trt-version", "8.0.3")
    assert (rc, err) == (0, ""), out
    assert "no findings" in out
    rc, out, _ = run_cli("cache", "lint", path, "--trt-version", "8.0.3", "--algorithm", "MinMaxCalibration")
    assert rc == 1 and "algorithm" in out
    rc, doc = cli_json("cache", "lint", path, "--trt-version", "8.6.1", "--json")
    assert rc == 1 and [f["code"] for f in doc["findings"]] == ["version-mismatch"]


def test_lint_legacy_and_inf_fixtures_fail():
    assert run_cli("cache", "lint", fixture_path(LEGACY))[0] == 1
    rc, doc = cli_json("cache", "lint", fixture_path(ILIAS), "--json")
    assert rc == 1 and doc["counts"]["inf"] == 70


def test_lint_bad_model_and_version_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope.onnx"
    assert_one_line_error(*run_cli("cache", "lint", TINY_CACHE, "--model", missing), missing)
    not_onnx = write(tmp_path / "garbage.onnx", b"\x08\xff\xff\xff\xff\xff garbage")
    assert_one_line_error(*run_cli("cache", "lint", TINY_CACHE, "--model", not_onnx), not_onnx)
    assert_one_line_error(*run_cli("cache", "lint", TINY_CACHE, "--trt-version", "banana"), "banana")


# --------------------------------------------------------------------------- edit


def test_edit_set_hand_computed_hex_and_nothing_else_changes(tmp_path):
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("cache", "edit", TINY_CACHE, "--set", "images=127",
                         "--set", "logits=0.9921875", "-o", out)
    assert rc == 0 and err == ""
    header, before = read_trt(TINY_CACHE)
    header2, after = read_trt(out)
    assert header2 == header
    expected = [(n, {"images": "3f800000", "logits": "3c000000"}.get(n, h)) for n, h in before]
    assert after == expected


@pytest.mark.parametrize("ops, hex_", [
    (["--set", "images=127", "--scale", "images=2"], "40000000"),   # 254/127 = 2.0
    (["--scale", "images=2", "--set", "images=127"], "3f800000"),   # set last wins
    (["--scale", "images=2", "--scale", "images=0.25"], None),       # x2 then /4 = /2
])
def test_edit_ops_apply_in_command_line_order(tmp_path, ops, hex_):
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("cache", "edit", TINY_CACHE, *ops, "-o", out)
    assert rc == 0, err
    got = dict(read_trt(out)[1])["images"]
    if hex_ is None:  # 3cb1c44a halved: exponent down by one
        hex_ = format(0x3CB1C44A - 0x00800000, "x")
    assert got == hex_


def test_edit_glob_scale_and_drop(tmp_path):
    out = tmp_path / "out.cache"
    rc, stdout, err = run_cli("cache", "edit", TINY_CACHE, "--scale", "/conv*=2", "--drop", "ONNXTRT_*", "-o", out)
    assert rc == 0 and err == ""
    _, before = read_trt(TINY_CACHE)
    _, after = read_trt(out)
    doubled = {n: format(int(h, 16) + 0x00800000, "x") for n, h in before if n.startswith("/conv")}
    assert doubled == {"/conv1/Conv_output_0": "3d4d8740", "/conv2/Conv_output_0": "3d8e3d16",
                       "/conv3/Conv_output_0": "3dc99326"}
    expected = [(n, doubled.get(n, h)) for n, h in before if not n.startswith("ONNXTRT_")]
    assert after == expected
    assert "wrote" in stdout


def test_edit_exact_name_full_of_glob_characters(tmp_path):
    src = fixture_path(DEIM)
    name = "(Unnamed Layer* 1169) [Constant]_output"
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("cache", "edit", src, "--drop", name, "--set", "(Unnamed Layer* 1172) [ElementWise]_output=127",
                         "-o", out)
    assert rc == 0, err
    header, before = read_trt(src)
    _, after = read_trt(out)
    expected = [(n, "3f800000" if n == "(Unnamed Layer* 1172) [ElementWise]_output" else h)
                for n, h in before if n != name]
    assert after == expected and len(after) == 1906


@pytest.mark.parametrize("ops, needle", [
    (["--drop", "nothing*"], "nothing*"),
    (["--scale", "/nope/*=2"], "/nope/*"),
    (["--set", "absent=1"], "absent"),
    (["--set", "images=1", "--drop", "images", "--scale", "images=2"], "images"),  # gone by then
])
def test_edit_pattern_matching_nothing_is_an_error(tmp_path, ops, needle):
    out = tmp_path / "out.cache"
    rc, o, e = run_cli("cache", "edit", TINY_CACHE, *ops, "-o", out)
    assert_one_line_error(rc, o, e, needle)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_edit_allow_new_adds_a_tensor(tmp_path):
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("cache", "edit", TINY_CACHE, "--allow-new", "--set", "new tensor: x=127", "-o", out)
    assert rc == 0, err
    text = out.read_text()
    assert text == TINY_CACHE.read_text() + "new tensor: x: 3f800000\n"


# --------------------------------------------------------------------------- restamp


@pytest.mark.parametrize("argv, header", [
    (["--trt-version", "10.13.3"], "TRT-101303-EntropyCalibration2"),
    (["--trt-version", "8.6.1"], "TRT-8601-EntropyCalibration2"),
    (["--trt-version", "10.9.0", "--algorithm", "MinMaxCalibration"], "TRT-100900-MinMaxCalibration"),
    (["--trt-version", "7.2.1"], "TRT-7201-EntropyCalibration2"),
])
def test_restamp_changes_only_line_one(tmp_path, argv, header):
    src = fixture_path(DEIM)
    out = tmp_path / "out.cache"
    rc, stdout, err = run_cli("cache", "restamp", src, *argv, "-o", out)
    assert rc == 0 and err == ""
    old, new = src.read_bytes(), out.read_bytes()
    assert new.split(b"\n", 1)[0] == header.encode()
    assert new.split(b"\n", 1)[1] == old.split(b"\n", 1)[1]
    assert "TRT-100900-EntropyCalibration2" in stdout and header in stdout


def test_restamp_legacy_header_keeps_entries(tmp_path):
    src = fixture_path(LEGACY)
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("cache", "restamp", src, "--trt-version", "8.6.1", "--algorithm", "EntropyCalibration", "-o", out)
    assert rc == 0, err
    assert out.read_bytes() == b"TRT-8601-EntropyCalibration" + src.read_bytes()[1:]


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize("name", trt_fixtures())
def test_convert_trt_json_trt_is_byte_identical(tmp_path, name):
    src = fixture_path(name)
    js, back = tmp_path / "c.json", tmp_path / "c.cache"
    assert run_cli("cache", "convert", src, "--to", "json", "-o", js)[0] == 0
    doc = json.loads(js.read_text())
    header, entries = read_trt(src)
    assert doc["header"] == header
    assert [(e["name"], e["hex"]) for e in doc["entries"]] == entries
    rc, _, err = run_cli("cache", "convert", js, "--to", "trt", "-o", back)
    assert rc == 0, err
    assert back.read_bytes() == src.read_bytes()


def test_convert_trt_ort_table_trt_keeps_every_bit(tmp_path):
    src = fixture_path(VGG)
    table, back = tmp_path / "t.cache", tmp_path / "back.cache"
    assert run_cli("cache", "convert", src, "--to", "ort-table", "-o", table)[0] == 0
    lines = table.read_text().splitlines()
    assert "TRT-" not in table.read_text()
    assert [ln.rsplit(" ", 1)[0] for ln in lines] == sorted(n for n, _ in read_trt(src)[1])
    rc, _, err = run_cli("cache", "convert", table, "--to", "trt", "--trt-version", "8.4.0",
                         "--algorithm", "MinMaxCalibration", "-o", back)
    assert rc == 0, err
    header, entries = read_trt(back)
    assert header == "TRT-8400-MinMaxCalibration"
    assert dict(entries) == dict(read_trt(src)[1])


def test_convert_crestereo_table_to_flatbuffers_matches_real_file(tmp_path):
    out = tmp_path / "calibration.flatbuffers"
    rc, _, err = run_cli("cache", "convert", fixture_path(CRE + "cache"), "--to", "ort-flatbuffers", "-o", out)
    assert rc == 0, err
    assert out.read_bytes() == fixture_path(CRE + "flatbuffers").read_bytes()


@pytest.mark.parametrize("src_ext", ["json", "flatbuffers"])
def test_convert_crestereo_to_table_matches_real_file(tmp_path, src_ext):
    out = tmp_path / "calibration.cache"
    rc, _, err = run_cli("cache", "convert", fixture_path(CRE + src_ext), "--to", "ort-table", "-o", out)
    assert rc == 0, err
    assert out.read_bytes() == fixture_path(CRE + "cache").read_bytes()


def _ort_table(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_convert_crestereo_table_to_ort_json_values(tmp_path):
    out = tmp_path / "calibration.json"
    rc, _, err = run_cli("cache", "convert", fixture_path(CRE + "cache"), "--to", "ort-json", "-o", out)
    assert rc == 0, err
    got = json.loads(out.read_text())
    real = json.loads(fixture_path(CRE + "json").read_text())
    table = _ort_table(fixture_path(CRE + "cache"))
    assert len(got) == len(real) == len(table) == 4520
    assert set(got) == set(real)
    for name, (lo, hi) in got.items():
        amax = max(abs(real[name][0]), abs(real[name][1]))  # SOURCES.md: the table value
        assert (lo, hi) == (-amax, amax) == (-table[name], table[name])


def test_convert_crestereo_table_to_trt_within_float32_rounding(tmp_path):
    out = tmp_path / "model.cache"
    rc, stdout, err = run_cli("cache", "convert", fixture_path(CRE + "cache"), "--to", "trt", "-o", out)
    assert rc == 0 and err == "" and "ort-table -> trt" in stdout
    table = _ort_table(fixture_path(CRE + "cache"))
    header, entries = read_trt(out)
    assert header == "TRT-101303-EntropyCalibration2"  # default stamp: TensorRT 10.13.3
    assert len(entries) == 4520 and {n for n, _ in entries} == set(table)
    for name, hex_ in entries:
        scale = float(np.array([int(hex_, 16)], dtype=np.uint32).view(np.float32)[0])
        assert math.isclose(scale * 127, table[name], rel_tol=1e-6), name
        assert int(hex_, 16) == f32_bits(table[name] / 127)


def test_convert_duplicates_to_ort_is_an_error(tmp_path):
    src = write(tmp_path / "dup.cache", "TRT-8601-EntropyCalibration2\na: 3f800000\na: 3c000000\n")
    out = tmp_path / "t"
    assert_one_line_error(*run_cli("cache", "convert", src, "--to", "ort-table", "-o", out), "'a'")
    assert not out.exists()


# --------------------------------------------------------------------------- bad input


def _truncated(tmp: Path):
    data = TINY_CACHE.read_bytes()
    cut = data.index(b"/relu1/Re") + len(b"/relu1/Re")  # mid-name on line 4
    return write(tmp / "trunc.cache", data[:cut]), 4


def _cut_at_colon(tmp: Path):
    data = TINY_CACHE.read_bytes()
    cut = data.index(b"/conv2/Conv_output_0:") + len(b"/conv2/Conv_output_0:")  # line 5, no space
    return write(tmp / "colon.cache", data[:cut]), 5


def _lines(tmp: Path, name: str, lines: list[str], bad_line: int | None):
    return write(tmp / name, "\n".join(lines) + "\n"), bad_line


HDR = "TRT-8601-EntropyCalibration2"
BAD_INPUTS = {
    "truncated": _truncated,
    "truncated-at-colon": _cut_at_colon,
    "no-header": lambda t: _lines(t, "nohdr.cache", ["images: 3cb1c44a", "x: 3c000000"], 1),
    "malformed-header": lambda t: _lines(t, "hdr.cache", ["TRT-86O1-EntropyCalibration2", "x: 3c000000"], 1),
    "header-garbage": lambda t: _lines(t, "hdr2.cache", ["hello world", "x: 3c000000"], 1),
    "no-colon-space": lambda t: _lines(t, "sep.cache", [HDR, "a: 3c000000", "b:3c000000"], 3),
    "blank-line": lambda t: _lines(t, "blank.cache", [HDR, "a: 3c000000", "", "b: 3c000000"], 3),
    "bad-hex": lambda t: _lines(t, "hex.cache", [HDR, "a: 3c00zz00"], 2),
    "hex-negative-sign": lambda t: _lines(t, "sign.cache", [HDR, "a: 3c000000", "b: -3c000000"], 3),
    "hex-9-digits": lambda t: _lines(t, "long.cache", [HDR, "a: 3c000000", "b: 13c000000"], 3),
    "empty": lambda t: (write(t / "empty.cache", b""), None),
    "whitespace-only": lambda t: (write(t / "ws.cache", b"\n\n"), None),
    "directory": lambda t: ((t / "a_dir").mkdir() or t / "a_dir", None),
    "missing": lambda t: (t / "missing.cache", None),
    "binary-nul": lambda t: (write(t / "bin.cache", b"TRT-8601-EntropyCalibration2\n\x00\x01\x02\x03"), None),
    "binary-noise": lambda t: (write(t / "noise.bin", bytes(range(1, 256)) * 8), None),
    "sparse-100MB": lambda t: (_sparse(t / "huge.cache"), None),
}


def _sparse(path: Path) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(100 * 2**20)
    return path


def _argv(cmd: str, path: Path, tmp: Path) -> list[object]:
    out = tmp / "out" / "result"
    (tmp / "out").mkdir(exist_ok=True)
    return {
        "inspect": ["cache", "inspect", path],
        "inspect-json": ["cache", "inspect", path, "--json"],
        "diff-a": ["cache", "diff", path, TINY_CACHE],
        "diff-b": ["cache", "diff", TINY_CACHE, path, "--json"],
        "lint": ["cache", "lint", path, "--trt-version", "10.9.0"],
        "edit": ["cache", "edit", path, "--set", "a=1", "-o", out],
        "restamp": ["cache", "restamp", path, "--trt-version", "10.9.0", "-o", out],
        "convert": ["cache", "convert", path, "--to", "json", "-o", out],
    }[cmd]


@pytest.mark.parametrize("cmd", ["inspect", "inspect-json", "diff-a", "diff-b", "lint", "edit", "restamp", "convert"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_error_naming_file_and_line(tmp_path, case, cmd):
    path, line = BAD_INPUTS[case](tmp_path)
    before = snapshot(path) if path.is_file() else None
    rc, out, err = run_cli(*_argv(cmd, path, tmp_path))
    assert_one_line_error(rc, out, err, path)
    if line is not None:
        assert f"{path}:{line}:" in err, err
    if before is not None:
        assert snapshot(path) == before
    assert os.listdir(tmp_path / "out") == []  # no output, no leftover temporary file


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("argv, needle", [
    (["cache", "diff", "{c}", "{c}", "--rtol", "abc"], "--rtol"),
    (["cache", "diff", "{c}", "{c}", "--rtol", "-1"], "--rtol"),
    (["cache", "diff", "{c}", "{c}", "--rtol", "nan"], "--rtol"),
    (["cache", "convert", "{c}", "--to", "onnx", "-o", "{o}"], "--to"),
    (["cache", "convert", "{c}", "--to", "json", "--from", "csv", "-o", "{o}"], "--from"),
    (["cache", "convert", "{c}", "--to", "trt", "--trt-version", "banana", "-o", "{o}"], "banana"),
    (["cache", "edit", "{c}", "--set", "images", "-o", "{o}"], "images"),
    (["cache", "edit", "{c}", "--set", "images=abc", "-o", "{o}"], "abc"),
    (["cache", "edit", "{c}", "--set", "images=-1", "-o", "{o}"], "images=-1"),
    (["cache", "edit", "{c}", "--set", "images=inf", "-o", "{o}"], "images=inf"),
    (["cache", "edit", "{c}", "--scale", "images=0", "-o", "{o}"], "images=0"),
    (["cache", "edit", "{c}", "--scale", "x=0", "-o", "{o}"], "x=0"),
    (["cache", "edit", "{c}", "--scale", "images=nan", "-o", "{o}"], "nan"),
    (["cache", "edit", "{c}", "--drop", "", "-o", "{o}"], "--drop"),
    (["cache", "edit", "{c}", "-o", "{o}"], "nothing to do"),
    (["cache", "edit", "{c}", "--set", "images=1"], "-o"),
    (["cache", "restamp", "{c}", "--trt-version", "banana", "-o", "{o}"], "banana"),
    (["cache", "restamp", "{c}", "--trt-version", "8.10.0", "-o", "{o}"], "8.10.0"),
    (["cache", "restamp", "{c}", "--trt-version", "10.9.0", "--algorithm", "Magic", "-o", "{o}"], "Magic"),
    (["cache", "restamp", "{c}", "-o", "{o}"], "--trt-version"),
    (["cache", "lint", "{c}", "--trt-version", "banana"], "banana"),
    (["cache", "inspect", "{c}", "--from", "xml"], "xml"),
    (["cache", "frobnicate", "{c}"], "frobnicate"),
    (["cache"], "required"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, argv, needle):
    cache = copy_aged(TINY_CACHE, tmp_path / "in.cache")
    before = snapshot(cache)
    out = tmp_path / "out.cache"
    argv = [a.replace("{c}", str(cache)).replace("{o}", str(out)) for a in argv]
    assert_one_line_error(*run_cli(*argv), needle)
    assert not out.exists()
    assert snapshot(cache) == before


# --------------------------------------------------------------------------- file safety


def _writing_commands(src: Path, out: Path) -> dict[str, list[object]]:
    return {
        "edit": ["cache", "edit", src, "--scale", "*=2", "-o", out],
        "restamp": ["cache", "restamp", src, "--trt-version", "10.9.0", "-o", out],
        "convert": ["cache", "convert", src, "--to", "json", "-o", out],
    }


@pytest.mark.parametrize("cmd", ["edit", "restamp", "convert"])
def test_existing_output_needs_force(tmp_path, cmd):
    src = copy_aged(TINY_CACHE, tmp_path / "in.cache")
    out = write(tmp_path / "out.cache", b"OLD CONTENT\n")
    before_in, before_out = snapshot(src), snapshot(out)
    argv = _writing_commands(src, out)[cmd]
    assert_one_line_error(*run_cli(*argv), out, "--force")
    assert snapshot(out) == before_out
    rc, _, err = run_cli(*argv, "--force")
    assert rc == 0, err
    assert out.read_bytes() != b"OLD CONTENT\n" and out.read_bytes()
    assert snapshot(src) == before_in
    assert sorted(os.listdir(tmp_path)) == ["in.cache", "out.cache"]  # no temporary files left


@pytest.mark.parametrize("cmd", ["edit", "restamp", "convert"])
@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_output_equal_to_input_refused_even_with_force(tmp_path, monkeypatch, cmd, spelling):
    src = copy_aged(TINY_CACHE, tmp_path / "in.cache")
    before = snapshot(src)
    monkeypatch.chdir(tmp_path)
    out: object = {"same": src, "relative": "./sub/../in.cache", "symlink": tmp_path / "link.cache"}[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        (tmp_path / "link.cache").symlink_to(src)
    for extra in ([], ["--force"]):
        rc, o, e = run_cli(*_writing_commands(src, out)[cmd], *extra)
        assert_one_line_error(rc, o, e, "input")
    assert snapshot(src) == before


def test_no_command_modifies_its_input(tmp_path):
    src = copy_aged(fixture_path(DEIM), tmp_path / "deim.cache")
    tiny = copy_aged(TINY_CACHE, tmp_path / "tiny.cache")
    model = copy_aged(TINY_MODEL, tmp_path / "tiny.onnx")
    table = copy_aged(fixture_path(CRE + "cache"), tmp_path / "ort.cache")
    inputs = [src, tiny, model, table]
    before = [snapshot(p) for p in inputs]
    out = tmp_path / "o"
    runs = [
        (["cache", "inspect", src], 0), (["cache", "inspect", src, "--json"], 0), (["cache", "inspect", table], 0),
        (["cache", "diff", src, tiny], 1), (["cache", "diff", src, src, "--json"], 0),
        (["cache", "lint", tiny, "--model", model, "--trt-version", "10.13.3"], 1),
        (["cache", "edit", src, "--scale", "*=1.5", "--drop", "ONNXTRT_*", "-o", out / "e"], 0),
        (["cache", "edit", tiny, "--set", "images=1", "-o", tiny, "--force"], 2),
        (["cache", "restamp", src, "--trt-version", "8.6.1", "-o", out / "r"], 0),
        (["cache", "restamp", src, "--trt-version", "8.6.1", "-o", src, "--force"], 2),
        (["cache", "convert", table, "--to", "trt", "-o", out / "c"], 0),
        (["cache", "convert", table, "--to", "ort-table", "-o", table, "--force"], 2),
        (["cache", "convert", src, "--to", "ort-flatbuffers", "-o", out / "f"], 0),
    ]
    out.mkdir()
    for argv, expected in runs:
        rc, _, err = run_cli(*argv)
        assert rc == expected and "Traceback" not in err, (argv, err)
    assert [snapshot(p) for p in inputs] == before
    assert sorted(os.listdir(out)) == ["c", "e", "f", "r"]


def test_failed_rename_leaves_old_output_and_no_temp_file(tmp_path, monkeypatch):
    from trtcal.core import fileio

    out = write(tmp_path / "out.cache", b"OLD\n")

    def broken_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    rc, o, e = run_cli("cache", "edit", TINY_CACHE, "--set", "images=1", "-o", out, "--force")
    monkeypatch.undo()
    assert_one_line_error(rc, o, e, out)
    assert out.read_bytes() == b"OLD\n"
    assert os.listdir(tmp_path) == ["out.cache"]


def test_output_folder_missing_or_a_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "out.cache"
    assert_one_line_error(*run_cli("cache", "restamp", TINY_CACHE, "--trt-version", "10.9.0", "-o", missing), missing)
    assert_one_line_error(*run_cli("cache", "restamp", TINY_CACHE, "--trt-version", "10.9.0", "-o", tmp_path,
                                   "--force"), tmp_path)


# --------------------------------------------------------------------------- demo and help


def test_demo_cache_tour_writes_a_clean_cache(tmp_path):
    rc, out, err = run_cli("demo", "--caches", "--output-dir", tmp_path)
    assert rc == 0, err
    fixed = tmp_path / "tiny_cnn.cache"
    assert os.listdir(tmp_path) == ["tiny_cnn.cache"]
    header, entries = read_trt(fixed)
    assert header == "TRT-101303-EntropyCalibration2"
    got = dict(entries)
    assert "/conv3/Conv_output_0" not in got
    assert got["logits"] == format(f32_bits(12.5 / 127), "x")
    assert got["/pool/GlobalAveragePool_output_0"] == format(f32_bits(1.0431297 / 127), "x")
    assert got["images"] == "3cb1c44a"  # untouched entries keep their hex
    assert "$ trtcal cache lint" in out
    assert run_cli("cache", "lint", fixed, "--model", TINY_MODEL, "--trt-version", "10.13.3")[0] == 0
    # the bundled example itself is untouched
    assert TINY_CACHE.read_bytes().startswith(b"TRT-8601-EntropyCalibration2\nimages: 3cb1c44a\n")


@pytest.mark.parametrize("argv", [[], ["demo"], ["cache"]] + [["cache", c] for c in ALL_COMMANDS])
def test_help_exits_0(argv):
    rc, out, err = run_cli(*argv, "--help")
    assert rc == 0 and err == ""
    assert out.startswith("usage: trtcal")


# --------------------------------------------------------------------------- once bugs, now regressions


def test_inspect_header_version_zero_names_the_file(tmp_path):
    path = write(tmp_path / "v0.cache", "TRT-900-EntropyCalibration2\na: 3c000000\n")
    rc, out, err = run_cli("cache", "inspect", path)
    assert "Traceback" not in err
    assert rc == 0 or str(path) in err, err


def test_mixed_line_endings_reported_at_their_line(tmp_path):
    path = write(tmp_path / "mixed.cache", f"{HDR}\na: 3c000000\nb: 3c000000\r\nc: 3c000000\n")
    rc, out, err = run_cli("cache", "inspect", path)
    assert_one_line_error(rc, out, err, f"{path}:3:")


def test_non_utf8_trt_cache_error_names_the_line(tmp_path):
    path = write(tmp_path / "latin1.cache", f"{HDR}\na: 3c000000\n".encode() + b"caf\xe9: 3c000000\n")
    rc, out, err = run_cli("cache", "inspect", path)
    assert_one_line_error(rc, out, err, f"{path}:3:")


def test_inspect_json_of_headerless_trtcal_json(tmp_path):
    path = write(tmp_path / "nohdr.json", json.dumps({
        "format": "trtcal-cache", "format_version": 1, "header": None, "trt_version": None,
        "algorithm": None, "entries": [{"name": "a", "hex": "3f800000"}]}))
    assert run_cli("cache", "inspect", path)[0] == 0
    rc, out, err = run_cli("cache", "inspect", path, "--json")
    assert rc == 0, err
    assert json.loads(out)["entries"][0]["amax"] == 127.0


_BIG_INT = "1" + "0" * 400
JSON_TRACEBACKS = {
    "ort-json-int-overflow": ('{"a": [0, ' + _BIG_INT + "]}", "OverflowError from float(int) in ort_tables._number"),
    "ort-json-5000-digit-int": ('{"a": [0, 1' + "0" * 5000 + "]}",
                                "ValueError (int max str digits) escapes json.loads: only JSONDecodeError is caught"),
    "ort-json-deep-nesting": ('{"a": ' + "[" * 100000 + "]" * 100000 + "}",
                              "RecursionError from json.loads in cache_io.detect_format"),
    "trtcal-json-amax-overflow": ('{"format": "trtcal-cache", "format_version": 1, "header": "' + HDR
                                  + '", "entries": [{"name": "a", "amax": ' + _BIG_INT + "}]}",
                                  "OverflowError from float(int) in cache._entry_from_json"),
    "trtcal-json-algorithm-int": (json.dumps({"format": "trtcal-cache", "format_version": 1, "header": None,
                                              "trt_version": "10.9.0", "algorithm": 5, "entries": []}),
                                  "TypeError from re.fullmatch in make_header (algorithm is not checked to be a string)"),
}


@pytest.mark.parametrize("case", [
    pytest.param(k, id=k) for k in JSON_TRACEBACKS
])
def test_bad_json_inputs_give_one_line_errors(tmp_path, case):
    path = write(tmp_path / "bad.json", JSON_TRACEBACKS[case][0])
    out = tmp_path / "out.cache"
    for argv in (["cache", "inspect", path, "--json"], ["cache", "convert", path, "--to", "trt", "-o", out]):
        try:
            rc, o, e = run_cli(*argv)
        except Exception as exc:  # the in-process runner lets tracebacks through
            pytest.fail(f"{type(exc).__name__} escaped: {exc!s:.100}")
        assert_one_line_error(rc, o, e, path)


@pytest.mark.parametrize("text, fmt", [
    ('{"a": [0, 1e400]}', "ort-json"),
    ('{"a": {"lowest": -1, "highest": true}}', "ort-json"),
    ('{"a": [1, 2, 3]}', "ort-json"),
    ('["not", "an", "object"]', "ort-json"),
    ('{"format": "trtcal-cache", "format_version": 2, "entries": []}', "json"),
    ('{"format": "trtcal-cache", "format_version": 1, "header": "TRT-8601-E", "entries": [{"name": "a", "hex": "123456789"}]}', "json"),
    ('{"format": "trtcal-cache", "format_version": 1, "header": "bad header", "entries": []}', "json"),
    ('{"format": "trtcal-cache", "format_version": 1, "header": "TRT-8601-E", "entries": [{"name": "", "hex": "0"}]}', "json"),
    ('{"a": [0, 1], ', "ort-json"),
])
def test_handled_json_inputs(tmp_path, text, fmt):
    """JSON inputs the code does handle: either a result or a one-line error naming the file."""
    path = write(tmp_path / "in.json", text)
    rc, out, err = run_cli("cache", "inspect", path, "--json")
    if rc == 0:
        assert err == "" and json.loads(out)["count"] == 1
    else:
        assert_one_line_error(rc, out, err, path)


# --------------------------------------------------------------------------- the real console script


def _console(*argv: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trtcal", *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_console_script_bad_file_is_one_line_exit_2(tmp_path):
    bad = write(tmp_path / "bad.cache", f"{HDR}\na: 3c000000\nb: xyz\n")
    p = _console("cache", "inspect", bad, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and f"{bad}:3:" in p.stderr and "Traceback" not in p.stderr
    p = _console("cache", "edit", TINY_CACHE, "--scale", "x=0", "-o", tmp_path / "o", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_console_script_diff_exit_codes(tmp_path):
    same = _console("cache", "diff", TINY_CACHE, TINY_CACHE, cwd=tmp_path)
    assert same.returncode == 0 and same.stderr == ""
    other = write(tmp_path / "other.cache", TINY_CACHE.read_text().replace("images: 3cb1c44a", "images: 3d31c44a"))
    p = _console("cache", "diff", TINY_CACHE, other, cwd=tmp_path)
    assert p.returncode == 1 and "images" in p.stdout and p.stderr == ""


def test_console_script_lint_and_help(tmp_path):
    p = _console("cache", "lint", TINY_CACHE, "--model", TINY_MODEL, "--trt-version", "10.13.3", cwd=tmp_path)
    assert p.returncode == 1 and "/conv3/Conv_output_0" in p.stdout and p.stderr == ""
    p = _console("cache", "convert", "--help", cwd=tmp_path)
    assert p.returncode == 0 and "ort-flatbuffers" in p.stdout


def test_calibrate_reports_exactly_what_lint_with_stats_finds(tmp_path):
    # one function (cache_checks.check_calibration) for both: a mask-like tensor with an amax above
    # 1e9 is flagged by calibrate too, and an amax below every value fails lint --stats
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])
    far = helper.make_tensor_value_info("far", TensorProto.FLOAT, [4, 16])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [4, 16])
    inits = [numpy_helper.from_array(np.array(10.0, np.float32), "ten"),
             numpy_helper.from_array(np.array(-3.0e38, np.float32), "big")]
    nodes = [helper.make_node("Add", ["x", "ten"], ["far"]), helper.make_node("Mul", ["x", "big"], ["mask"])]
    graph = helper.make_graph(nodes, "g", [x], [far, mask], inits)
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype(np.float32))
    cache, stats = tmp_path / "m.cache", tmp_path / "m.stats.npz"
    rc, out, err = run_cli("calibrate", model, "--data", data, "-o", cache, "--stats", stats, "--json", "-q")
    assert rc == 0, err
    got = {(f["code"], f["tensor"]) for f in json.loads(out)["findings"]}
    assert ("huge", "mask") in got  # x * -3e38: amax ~3e38
    assert {c for c, t in got if t == "far"} == {"one-sided"}  # values in [9, 11]: entropy2 keeps them
    rc, out, _ = run_cli("cache", "lint", cache, "--stats", stats, "--json")
    assert {(f["code"], f["tensor"]) for f in json.loads(out)["findings"]} == got
    edited = tmp_path / "e.cache"
    assert run_cli("cache", "edit", cache, "--set", "far=5", "-o", edited)[0] == 0
    rc, out, _ = run_cli("cache", "lint", edited, "--stats", stats)
    assert rc == 1 and "far: amax 5 below the tensor's smallest |x|" in out and "every value clipped" in out


def relu_model(tmp_path):
    """A one-Relu ONNX model, [2, 8] -> [2, 8], saved as tmp_path/m.onnx."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    return model


def test_thresholds_writes_a_sidecar_so_random_statistics_stay_flagged(tmp_path):
    import json

    model = relu_model(tmp_path)
    stats = tmp_path / "m.stats.npz"
    assert run_cli("calibrate", model, "--random", "-o", tmp_path / "r.cache", "--stats", stats, "-q")[0] == 0
    out = tmp_path / "p.cache"
    rc, _, err = run_cli("thresholds", "--stats", stats, "--algorithm", "percentile", "-o", out)
    assert rc == 0, err
    side = json.loads((tmp_path / "p.cache.trtcal.json").read_text())
    assert side["algorithm"] == "percentile" and side["fake_data"] is True and side["stats"] == str(stats)
    rc, text, _ = run_cli("cache", "lint", out)
    assert rc == 1 and "calibrated on random data" in text


def test_a_tensorrt_cache_of_another_bit_width_is_refused(tmp_path):
    model = relu_model(tmp_path)
    stats, cache = tmp_path / "s.npz", tmp_path / "c.cache"
    rc, _, err = run_cli("calibrate", model, "--random", "--bits", "4", "-o", cache, "-q")
    assert rc == 2 and "--bits 4" in err and "amax/127" in err and not cache.exists()
    assert run_cli("calibrate", model, "--random", "-o", cache, "--stats", stats, "-q")[0] == 0
    out = tmp_path / "t.cache"
    rc, _, err = run_cli("thresholds", "--stats", stats, "--bits", "6", "-o", out)
    assert rc == 2 and "--bits 6" in err and not out.exists()
    rc, text, _ = run_cli("thresholds", "--stats", stats, "--bits", "6", "--json")  # no cache written: fine
    assert rc == 0
