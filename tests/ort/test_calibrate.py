"""The CPU calibration pipeline, end to end, against numpy and the literal entropy oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper
from oracle import entropy_oracle

from trtcal import calibrate
from trtcal.cache import format as trtcache
from trtcal.core import thresholds as T
from trtcal.core.errors import TrtcalError

W = np.array([1.0, -2.0, 3.0, -0.5], np.float32)


@pytest.fixture
def model(tmp_path):
    """x -> m = x * W -> r = Relu(m) -> l = Log(m) (NaN where m < 0) -> y = r + 1."""
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Log", ["m"], ["l"]),
        helper.make_node("Add", ["r", "one"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("l", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], W.tolist()),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def data(tmp_path):
    x = np.random.default_rng(0).normal(size=(600, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy", x


def reference_tensors(x):
    m = x * W
    with np.errstate(invalid="ignore", divide="ignore"):
        log = np.log(m)
    return {"x": x, "m": m, "r": np.maximum(m, 0), "l": log, "y": np.maximum(m, 0) + 1}


def test_minmax_matches_numpy(model, data):
    path, x = data
    result = calibrate(model, path, algorithm="minmax", batch_size=64, progress=False)
    ref = reference_tensors(x)
    assert result.cache.names() == ["x", "m", "r", "l", "y"]  # graph order, inputs first
    for name, t in ref.items():
        finite = t[np.isfinite(t)]
        want = trtcache.scale_bits_from_amax(float(np.abs(finite).max()))
        assert result.cache.entry(name).bits == want, name
    assert result.cache.header_line == "TRT-101303-MinMaxCalibration"
    h = result.histograms["l"]  # Log of negative values: NaN, counted, never in the range
    assert h.nan == int(np.isnan(ref["l"]).sum()) > 0
    assert any("'l'" in w and "NaN" in w for w in result.warnings)
    assert result.histograms["r"].one_sided and not result.histograms["m"].one_sided
    assert result.metadata["batches"] == 10 and result.metadata["samples"] == 600


def test_entropy2_single_batch_matches_oracle(model, data):
    path, x = data
    result = calibrate(model, path, algorithm="entropy2", batch_size=600, progress=False)
    a = np.abs(x.astype(np.float64)).ravel()
    top = a.max()
    counts, _ = np.histogram(a, bins=2048, range=(0, top))
    i, _ = entropy_oracle(counts.tolist())
    want = (i + 0.5) * top / 2048
    assert result.thresholds["x"].amax == pytest.approx(want, rel=2 / 2048)


def test_thresholds_from_saved_stats_equal_a_fresh_run(model, data, tmp_path):
    path, _ = data
    stats = tmp_path / "s.npz"
    rc, out, err = run_cli("calibrate", model, "--data", path, "--batch-size", "50", "--stats", stats,
                           "-o", tmp_path / "e.cache", "-q")
    assert rc == 0, err
    for algo, extra in (("minmax", []), ("percentile", ["--percentile", "99.9"]), ("mse", []), ("aciq", [])):
        rc, _, err = run_cli("thresholds", "--stats", stats, "--algorithm", algo, *extra, "-o", tmp_path / f"{algo}.cache")
        assert rc == 0, err
        fresh = calibrate(model, path, algorithm=algo, batch_size=50, progress=False,
                          **({"q": 0.999} if algo == "percentile" else {}))
        assert (tmp_path / f"{algo}.cache").read_text() == fresh.cache.to_text(), algo
    rc, _, _ = run_cli("thresholds", "--stats", stats, "-o", tmp_path / "again.cache")
    assert (tmp_path / "again.cache").read_text() == (tmp_path / "e.cache").read_text()


def test_zero_bin_option_reaches_entropy2_and_nothing_else(model, data, tmp_path):
    from trtcal.core.stats import load_stats

    path, _ = data
    stats = tmp_path / "s.npz"
    rc, _, err = run_cli("calibrate", model, "--data", path, "--batch-size", "50", "--stats", stats,
                         "--zero-bin", "keep", "-o", tmp_path / "k.cache", "-q")
    assert rc == 0, err
    histograms, _ = load_stats(stats)
    want = {n: trtcache.scale_bits_from_amax(T.entropy2(h, zero_bin="keep").amax) for n, h in histograms.items()}
    got = trtcache.read(tmp_path / "k.cache")
    assert {n: got.entry(n).bits for n in want} == want
    # the ReLU output "r" is half exact zeros: the two rules give it different ranges
    assert T.entropy2(histograms["r"], zero_bin="keep").amax != T.entropy2(histograms["r"]).amax
    rc, _, err = run_cli("thresholds", "--stats", stats, "--algorithm", "minmax", "--zero-bin", "keep")
    assert rc == 2 and "--zero-bin applies to --algorithm entropy2 only" in err


@pytest.mark.parametrize("cores", [1, 4])
def test_histograms_equal_a_plain_loop_whatever_the_thread_count(model, tmp_path, monkeypatch, cores):
    # the calibration loop counts each batch's tensors on a thread pool; every histogram must
    # still see its batches in order (the range grows batch after batch here), as a plain loop does
    from trtcal.core.histogram import Histogram
    from trtcal.ort import pipeline

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(600, 4)) * np.repeat(1.5 ** np.arange(12), 50)[:, None]).astype(np.float32)
    np.save(tmp_path / "grow.npy", x)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: cores)
    result = calibrate(model, tmp_path / "grow.npy", algorithm="minmax", batch_size=50, progress=False)
    want: dict[str, Histogram] = {}
    for start in range(0, 600, 50):
        for name, t in reference_tensors(x[start:start + 50]).items():
            want.setdefault(name, Histogram(name=name)).update(t, engine="numpy")
    assert set(result.histograms) == set(want)
    for name, h in want.items():
        got, ref = result.histograms[name].to_arrays(), h.to_arrays()
        assert np.array_equal(got["counts"], ref["counts"]) and np.array_equal(got["ints"], ref["ints"]), name
        # sums to 1e-6: ONNX Runtime's Log and numpy's differ in the last bits
        assert np.allclose(got["floats"], ref["floats"], rtol=1e-6, equal_nan=True), name


def test_batch_order_matters_only_through_range_growth(model, tmp_path):
    """TensorRT's power-of-two growth: a small first batch then a large one re-bins the counts."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(100, 4)) * 0.1, rng.normal(size=(100, 4))]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    grown = calibrate(model, tmp_path / "x.npy", algorithm="minmax", batch_size=100, progress=False)
    h = grown.histograms["x"]
    assert h.range_max >= np.abs(x).max() and h.counts.sum() == x.size
    # the range is the first batch's max doubled until it covers the second batch's max
    first = float(np.abs(x[:100]).max())
    k = int(np.ceil(np.log2(np.abs(x).max() / first)))
    assert h.range_max == pytest.approx(first * 2**k, rel=1e-6)


def test_cli_calibrate_default_output_and_json(model, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("calibrate", model, "--data", data[0], "--json")
    assert rc == 0, err
    import json

    doc = json.loads(out)
    assert doc["cache"] == "calib_caches/m.cache" and (tmp_path / "calib_caches" / "m.cache").exists()
    assert {t["name"] for t in doc["tensors"] if t["one_sided"]} == {"r", "y"}
    rc, _, err = run_cli("calibrate", model, "--data", data[0])
    assert rc == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "what"), [
    ([], "no calibration data"),
    (["--data", "missing.npy"], "no such data"),
    (["--data", "EMPTY"], "empty data folder"),
    (["--data", "X", "--algorithm", "bogus"], "invalid choice"),
    (["--data", "X", "--batch-size", "0"], "--batch-size: '0': must be an integer from 1"),
    (["--data", "X", "--max-batches", "0"], "--max-batches: '0': must be an integer from 1"),
    (["--data", "X", "--percentile", "99"], "--percentile applies"),
    (["--data", "X", "--algorithm", "percentile", "--percentile", "120"], "must be a number in (0, 100]"),
    (["--data", "X", "--bits", "1"], "bits"),
    (["--data", "X", "--trt-version", "banana"], "TensorRT version"),
    (["--data", "WRONG"], "axis 1 must be 4"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(model, data, tmp_path, args, what):
    (tmp_path / "EMPTY").mkdir()
    np.save(tmp_path / "wrong.npy", np.zeros((8, 5), np.float32))
    subst = {"X": str(data[0]), "EMPTY": str(tmp_path / "EMPTY"), "WRONG": str(tmp_path / "wrong.npy"),
             "missing.npy": str(tmp_path / "missing.npy")}
    out = tmp_path / "out.cache"
    rc, _, err = run_cli("calibrate", model, *[subst.get(a, a) for a in args], "-o", out, "-q")
    assert rc == 2
    assert what in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_quantized_model_is_refused(tmp_path, data):
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [s, z])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(TrtcalError, match="already quantized"):
        calibrate(path, data[0], progress=False)


def test_random_data_needs_the_flag_and_is_marked(model):
    result = calibrate(model, None, random=True, max_batches=3, batch_size=8, progress=False)
    assert result.metadata["fake_data"] is True and result.metadata["batches"] == 3


def test_random_cache_is_flagged_by_its_sidecar(model, tmp_path):
    out = tmp_path / "fake.cache"
    rc, _, err = run_cli("calibrate", model, "--random", "--max-batches", "2", "-o", out, "-q")
    assert rc == 0, err
    import json

    side = json.loads((tmp_path / "fake.cache.trtcal.json").read_text())
    assert side["fake_data"] is True and len(side["model_sha256"]) == 64
    rc, out_text, _ = run_cli("cache", "lint", out)
    assert rc == 1 and "calibrated on random data" in out_text
    rc, out_text, _ = run_cli("cache", "inspect", out)
    assert rc == 0 and "fake-data 1" in out_text


def test_dynamic_dimensions_are_reported_with_the_shapes_used(model, data, tmp_path):
    path, _ = data  # 600 samples into a model whose batch axis is "N"
    result = calibrate(model, path, algorithm="minmax", batch_size=64, progress=False)
    assert result.metadata["inputs"] == {"x": {"model": ["N", 4], "dynamic_axes": [0],
                                               "used": [{"shape": [64, 4], "batches": 9},
                                                        {"shape": [24, 4], "batches": 1}]}}
    stats = tmp_path / "s.npz"
    rc, out, err = run_cli("calibrate", model, "--data", path, "--batch-size", "64", "-o", tmp_path / "c.cache",
                           "--stats", stats, "-q")
    assert rc == 0, err
    assert "input 'x' [N, 4]: dynamic axes [0], calibrated with [64, 4] x9, [24, 4] x1" in out
    rc, out, err = run_cli("thresholds", "--stats", stats)  # the statistics remember the shapes
    assert rc == 0, err
    assert "calibrated with [64, 4] x9, [24, 4] x1" in out


def test_automatic_batch_size_keeps_a_batch_within_the_memory_budget(tmp_path):
    import onnxruntime as ort

    from trtcal.data import open_data
    from trtcal.ort.runner import InputSpec

    examples = __import__("pathlib").Path(__file__).resolve().parents[2] / "trtcal" / "examples"
    model, data = examples / "fashion_cnn.onnx", examples / "fashion_calib.npz"
    # bytes of every float tensor for one sample, by a plain ONNX Runtime session (not trtcal's runner),
    # less the Flatten output, whose histogram is its input's (not exposed: trtcal.onnx.derived)
    m = onnx.load(str(model))
    assert sum(n.op_type == "Flatten" for n in m.graph.node) == 1
    outs = [o for n in m.graph.node if n.op_type != "Flatten" for o in n.output]
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outs if o not in {x.name for x in m.graph.output})
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.load(data)["images"][:1]
    per_sample = x.nbytes + sum(a.nbytes for a in sess.run(None, {"images": x}))
    budget_mb = 3 * per_sample / 2**20 + 1e-3  # room for exactly 3 samples
    result = calibrate(model, data, memory_budget_mb=budget_mb, max_batches=2, progress=False)
    assert result.metadata["batch_size"] == 3
    assert result.metadata["batch_size_auto"]["bytes_per_sample"] == per_sample
    assert result.metadata["inputs"]["images"]["used"] == [{"shape": [3, 1, 28, 28], "batches": 2}]
    # a folder whose files are larger than the batch is split along axis 0
    folder = tmp_path / "batches"
    folder.mkdir()
    np.save(folder / "a.npy", np.load(data)["images"][:10])
    np.save(folder / "b.npy", np.load(data)["images"][10:13])
    spec = [InputSpec("images", np.float32, (None, 1, 28, 28))]
    source = open_data(folder, spec, batch_size=4)
    assert [b["images"].shape[0] for b in source] == [4, 4, 2, 3] and source.num_batches == 4
    with pytest.raises(TrtcalError, match="memory-budget"):
        calibrate(model, data, memory_budget_mb=0, progress=False)


def test_constant_matmul_inputs_are_calibrated_on_request(tmp_path):
    rng = np.random.default_rng(3)
    b = rng.normal(size=(4, 3)).astype(np.float32)
    c = (rng.normal(size=(3, 2)) * 5).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "b"], ["h"]),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", TensorProto.FLOAT, [3, 2],
                                                                                  c.ravel().tolist())),
             helper.make_node("MatMul", ["h", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor("b", TensorProto.FLOAT, [4, 3], b.ravel().tolist())])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    data = tmp_path / "x.npy"
    np.save(data, rng.normal(size=(64, 4)).astype(np.float32))
    plain = calibrate(path, data, algorithm="minmax", progress=False)
    assert plain.cache.names() == ["x", "h", "y"]
    withc = calibrate(path, data, algorithm="minmax", include_constants=True, progress=False)
    assert set(withc.cache.names()) == {"x", "h", "y", "b", "c"}
    for name, w in (("b", b), ("c", c)):  # their range is their values' max |w|, bit for bit
        assert withc.cache.entry(name).bits == trtcache.scale_bits_from_amax(float(np.abs(w).max()))
        assert withc.histograms[name].count == w.size
    assert withc.metadata["constants"] == ["b", "c"]
    rc, out, err = run_cli("calibrate", path, "--data", data, "--include-constants", "-o", tmp_path / "c.cache", "-q")
    assert rc == 0 and "b: " in (tmp_path / "c.cache").read_text()
