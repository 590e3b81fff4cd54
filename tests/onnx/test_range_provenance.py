"""``qdq`` and ``fallback`` refuse ranges that do not belong to the model (issue 14): a cache
whose sidecar names another model, ranges calibrated on random data (cache sidecar or statistics
metadata), or ranges for under half of the activations the placement rules quantize; each says
which, exits 2 and writes nothing, unless ``--ignore-provenance`` (then it is a warning)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from trtcal.cache.format import CalibrationCache
from trtcal.onnx.qdq import range_coverage

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL, CALIB, EVAL = EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", EXAMPLES / "fashion_eval.npz"
ACTS = ["images", "/pool1/MaxPool_output_0", "/flatten/Flatten_output_0", "/relu3/Relu_output_0"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("provenance")
    for name, extra in (("real", ["--data", CALIB, "--max-batches", "2"]), ("random", ["--random", "--max-batches", "2"])):
        rc, _, err = run_cli("calibrate", MODEL, *extra, "-o", d / f"{name}.cache", "--stats", d / f"{name}.npz", "-q")
        assert rc == 0, err
    # the same graph and tensor names with one weight changed: another model whose names all overlap
    other = onnx.load(str(MODEL))
    w = other.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))
    onnx.save(other, str(d / "other.onnx"))
    return d


def test_coverage_counts_the_activations_the_rules_quantize():
    assert range_coverage(MODEL, {n: 1.0 for n in ACTS}) == (ACTS, [])
    covered, missing = range_coverage(MODEL, {"images": 1.0, "unrelated": 2.0})
    assert covered == ["images"] and missing == ACTS[1:]
    covered, missing = range_coverage(MODEL, {"images": 1.0}, exclude_ops=["Gemm"])
    assert covered == ["images"] and missing == ["/pool1/MaxPool_output_0"]


def _qdq(*argv):
    return run_cli("qdq", *[str(a) for a in argv])


def test_another_models_cache_is_refused_though_every_name_matches(made, tmp_path):
    out = tmp_path / "q.onnx"
    rc, stdout, err = _qdq(made / "other.onnx", "--cache", made / "real.cache", "-o", out)
    assert rc == 2 and stdout == "" and err.count("\n") == 1 and not out.exists(), err
    assert f"{made / 'real.cache'}: cache not used: it was calibrated for {MODEL} (sha256 " in err
    assert "pass --ignore-provenance to use it anyway" in err
    rc, stdout, err = _qdq(made / "other.onnx", "--cache", made / "real.cache", "-o", out, "--ignore-provenance")
    assert rc == 0 and out.exists(), err
    assert "used although it was calibrated for" in err and "(--ignore-provenance)" in err
    rc, _, err = _qdq(MODEL, "--cache", made / "real.cache", "-o", tmp_path / "ok.onnx")
    assert rc == 0 and "warning" not in err, err


@pytest.mark.parametrize("source", ["--cache", "--stats"])
def test_ranges_from_random_data_are_refused(made, source, tmp_path):
    path = made / ("random.cache" if source == "--cache" else "random.npz")
    out = tmp_path / "q.onnx"
    rc, _, err = _qdq(MODEL, source, path, "-o", out)
    what = "cache" if source == "--cache" else "statistics"
    assert rc == 2 and not out.exists(), err
    assert f"{path}: {what} not used: it was calibrated on random data" in err
    rc, _, err = _qdq(MODEL, source, path, "-o", out, "--ignore-provenance")
    assert rc == 0 and "random data (trtcal calibrate --random) (--ignore-provenance)" in err, err


def test_a_cache_covering_under_half_is_refused_and_half_is_enough(tmp_path):
    partial = tmp_path / "partial.cache"  # no sidecar: only the coverage can tell
    CalibrationCache.from_amaxes({"images": 2.0, "foo": 1.0}).write(partial)
    rc, _, err = _qdq(MODEL, "--cache", partial, "-o", tmp_path / "a.onnx")
    assert rc == 2 and not (tmp_path / "a.onnx").exists(), err
    assert "it has ranges for 1 of the 4 activations" in err and "(none for '/pool1/MaxPool_output_0'" in err
    half = tmp_path / "half.cache"
    CalibrationCache.from_amaxes({"images": 2.0, "/pool1/MaxPool_output_0": 1.0}).write(half)
    rc, stdout, err = _qdq(MODEL, "--cache", half, "-o", tmp_path / "b.onnx")
    assert rc == 0, err  # 2 of 4: conv1, conv2 quantized, the Gemms stay in float and are listed
    assert "left in float: 2 tensor(s)" in stdout
    rc, _, err = _qdq(MODEL, "--cache", partial, "-o", tmp_path / "c.onnx", "--exclude-ops", "Gemm")
    assert rc == 0, err  # with the Gemms left in float, 1 of 2 is half


def test_fallback_refuses_alike_before_reading_data(made, tmp_path):
    out = tmp_path / "f.onnx"
    rc, _, err = run_cli("fallback", MODEL, "--stats", made / "random.npz", "--data", EVAL, "-o", out, "-q")
    assert rc == 2 and not out.exists() and "statistics not used: it was calibrated on random data" in err, err
    rc, _, err = run_cli("fallback", made / "other.onnx", "--cache", made / "real.cache", "--data", EVAL,
                         "--max-float", "1", "--samples", "16", "-o", out, "-q", "--ignore-provenance")
    assert rc == 0 and out.exists() and "used although it was calibrated for" in err, err


def test_the_stats_of_another_model_are_refused(made, tmp_path):
    rc, _, err = _qdq(made / "other.onnx", "--stats", made / "real.npz", "-o", tmp_path / "q.onnx")
    assert rc == 2 and "statistics not used: it was calibrated for" in err, err
