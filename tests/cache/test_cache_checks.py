"""What inspect and lint flag, checked against the facts SOURCES.md states for real caches."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import fixture_path

from trtcal.cache import format as trtcache
from trtcal.cache.checks import (
    check_against_model,
    check_cache,
    check_header_for,
    classify_bits,
    failing,
    trt_internal_reason,
)
from trtcal.cache.format import parse


@pytest.mark.parametrize(("bits", "kind"), [
    (0x3C021406, None), (0x0, "zero"), (0x80000000, "zero"), (0x7F800000, "inf"),
    (0xFF800000, "negative"), (0x7FC00000, "nan"), (0xFFC00000, "nan"), (0x00000001, "denormal"),
    (0x007FFFFF, "denormal"), (0x00800000, None), (0xBF800000, "negative"), (0x7C010204, "huge"),
    (0x7F7FFFFF, "huge"),
    (0x4B000000, "huge"),  # scale 2^23: amax 1.065e9, just above the 1e9 line
    (0x4A000000, None),  # scale 2^21: amax 2.7e8
])
def test_classify_bits(bits, kind):
    assert classify_bits(bits) == kind


def counts(name):
    return Counter(f.code for f in check_cache(trtcache.read(fixture_path(name))))


def test_deimkit_counts_match_sources():
    c = counts("dnth__DEIMKit__calibration.cache")
    assert c["zero"] == 87 and c["inf"] == 4 and c["duplicate"] == 0 and c["nan"] == 0


def test_mpnet_counts_match_sources():
    c = counts("isaid22__TensorRT-Optimization-MPNet__calibration.cache")
    assert c["zero"] == 2 and c["inf"] == 3 and c["huge"] == 2


def test_ilias_counts_match_sources():
    path = fixture_path("IliasRmouque__nvfiles_for_forum__cal.bin")
    c = counts(path.name)
    assert c["inf"] == 70
    big = [line for line in path.read_text().splitlines()[1:]
           if 0x70000000 <= int(line.rsplit(": ", 1)[1], 16) < 0x7F800000]
    assert len(big) == 59  # SOURCES.md
    assert c["huge"] >= 59


def test_clean_real_cache_has_no_findings():
    assert counts("NVIDIA-AI-IOT__cuDLA-samples__qat2ptq.cache") == Counter()


def test_legacy_and_unknown_algorithm_and_duplicates():
    legacy = check_cache(trtcache.read(fixture_path("modricwang__Pytorch-Model-to-TensorRT__calibration_cache.bin")))
    assert [f.code for f in legacy] == ["legacy-header"]
    odd = check_cache(parse("TRT-8601-FancyCalibration\nx: 3c000000\nx: 3c000000\n"))
    assert sorted(f.code for f in odd) == ["duplicate", "unknown-algorithm"]
    assert [f.code for f in check_cache(parse("TRT-8601-MinMaxCalibration\n"))] == ["empty"]


def test_header_for_release():
    c = parse("TRT-8601-EntropyCalibration2\nx: 3c000000\n")
    assert check_header_for(c, (8, 6, 1)) == []
    assert [f.code for f in check_header_for(c, (10, 9, 0))] == ["version-mismatch"]
    assert "restamp --trt-version 10.9.0" in check_header_for(c, (10, 9, 0))[0].message
    assert [f.code for f in check_header_for(c, (8, 6, 1), "MinMaxCalibration")] == ["algorithm-mismatch"]
    assert [f.code for f in check_header_for(c, (11, 0, 0))] == ["trt11"]
    legacy = parse("1\nx: 3c000000\n")
    assert [f.code for f in check_header_for(legacy, (8, 6, 1))] == ["version-mismatch"]


def test_against_model_names():
    c = parse("TRT-100900-EntropyCalibration2\nimages: 3c000000\n/conv/Conv_output_0: 3c000000\n"
              "ONNXTRT_Broadcast_3_output: 3c000000\n(Unnamed Layer* 7) [Shuffle]_output: 3c000000\n"
              "/Constant_2_output_0_output: 3c000000\n/old/Relu_output_0: 3c000000\n")
    findings = check_against_model(c, ["images", "/conv/Conv_output_0", "/relu/Relu_output_0"],
                                   ["/Constant_2_output_0", "w"])
    by_code = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f.tensor)
    assert by_code == {
        "trt-internal": ["ONNXTRT_Broadcast_3_output", "(Unnamed Layer* 7) [Shuffle]_output",
                         "/Constant_2_output_0_output"],
        "unknown-name": ["/old/Relu_output_0"],
        "missing-range": ["/relu/Relu_output_0"],
    }
    assert {f.tensor for f in failing(findings)} == {"/old/Relu_output_0", "/relu/Relu_output_0"}


def test_trt_internal_reason():
    assert trt_internal_reason("ONNXTRT_Broadcast_615_output", set())
    assert trt_internal_reason("(Unnamed Layer* 1169) [Constant]_output", set())
    assert trt_internal_reason("a_output", {"a"})
    assert trt_internal_reason("a_output", set()) is None
    assert trt_internal_reason("/model/Conv_output_0", set()) is None
