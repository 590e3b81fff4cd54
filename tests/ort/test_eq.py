"""EQ (EasyQuant): fake quantization, the layer search against a brute-force numpy search, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from constant_weights import as_constant_nodes
from onnx import TensorProto, helper

from trtcal.ort import eq, layers

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"


def test_fake_quant_matches_a_literal_loop():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 4)) * 3).astype(np.float32)
    s = np.float32(0.02)
    got = eq.fake_quant(x, s)
    for v, g in zip(x.ravel(), got.ravel()):
        q = min(127, max(-128, round(float(v) / float(s))))  # Python's round is half to even
        assert g == np.float32(q * s)
    scales = np.array([0.01, 0.05, 0.1], np.float32)
    per_channel = eq.fake_quant(x.T, scales, axis=1)  # columns of x.T = its 3 channels
    for k in range(3):
        assert np.array_equal(per_channel[:, k], eq.fake_quant(x.T[:, k], scales[k]))


@pytest.fixture
def gemm_model(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 16)).astype(np.float32)  # transB=1: [N, K]
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [8, 16], w.ravel().tolist())])
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.laplace(size=(64, 16)).astype(np.float32)
    return path, w, x


def test_activation_search_equals_brute_force_numpy(gemm_model):
    path, w, x = gemm_model
    a0 = float(np.abs(x).max()) * 0.3  # a deliberately poor starting range
    res = eq.refine(path, [{"x": x}], {"x": a0}, steps=40, weights=False)
    wq = eq.fake_quant(w, np.abs(w).max(axis=1) / 127, axis=0)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)

    def cosine(amax):
        y = eq.fake_quant(x, amax / 127).astype(np.float64) @ wq.T.astype(np.float64)
        return float((ref * y).sum() / np.linalg.norm(ref) / np.linalg.norm(y))

    factors = np.linspace(0.5, 2.0, 40)
    scores = [cosine(a0 * f) for f in factors]
    assert res.amaxes["x"] == pytest.approx(a0 * factors[int(np.argmax(scores))], rel=1e-12)
    before, after = next(iter(res.cosines.values()))
    assert after > before and after == pytest.approx(max(scores), abs=1e-5)


def test_weight_search_never_hurts_a_channel(gemm_model):
    path, w, x = gemm_model
    a0 = float(np.abs(x).max())
    res = eq.refine(path, [{"x": x}], {"x": a0}, steps=30)
    s = res.weight_scales["w"]
    s0 = np.abs(w).max(axis=1) / 127
    assert s.shape == (8,) and np.all(s >= s0 * 0.5 - 1e-9) and np.all(s <= s0 * 2 + 1e-6)
    xq = eq.fake_quant(x, res.amaxes["x"] / 127).astype(np.float64)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)

    def per_channel(scales):
        y = xq @ eq.fake_quant(w, scales, axis=0).T.astype(np.float64)
        return (ref * y).sum(0) / np.linalg.norm(ref, axis=0) / np.linalg.norm(y, axis=0)

    assert np.all(per_channel(s) >= per_channel(s0) - 1e-7)


def test_cli_eq_on_the_demo_model(tmp_path):
    out = tmp_path / "eq.cache"
    rc, text, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--data", EXAMPLES / "fashion_calib.npz",
                            "--algorithm", "eq", "--eq-samples", "32", "--eq-steps", "20", "-o", out, "-q", "--json")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["header"] == "TRT-101303-EntropyCalibration2" and doc["metadata"]["algorithm"] == "eq"
    cos = doc["metadata"]["eq"]["cosine"]
    assert set(cos) == {"/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"}
    assert all(after >= before - 1e-6 for before, after in cos.values())
    rc, _, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--random", "--algorithm", "eq", "-o", tmp_path / "r.cache")
    assert rc == 2 and "needs real data" in err


def test_a_memory_budget_changes_nothing_but_the_runs():
    """Layer inputs held a run of layers at a time give the same search as all at once."""
    import trtcal
    from trtcal.onnx.model import load_model
    from trtcal.ort.runner import first_samples

    model = EXAMPLES / "fashion_cnn.onnx"
    batches = first_samples(model, EXAMPLES / "fashion_calib.npz", samples=48, batch_size=16)
    amaxes = {n: r.amax for n, r in trtcal.calibrate(model, EXAMPLES / "fashion_calib.npz", progress=False,
                                                       max_batches=2).thresholds.items()}
    names = list(dict.fromkeys(layer.x for layer in layers.weighted_layers(load_model(model, load_weights=True))))
    tiny = 1e-6  # every layer input alone is over budget: one run per layer
    runs = list(layers.input_runs(load_model(model, load_weights=True), names, batches, tiny, None, str(model)))
    assert runs == [[n] for n in names] and len(runs) == 4
    whole = list(layers.input_runs(load_model(model, load_weights=True), names, batches, 1e6, None, str(model)))
    assert whole == [names]
    a = eq.refine(model, batches, amaxes, steps=8, memory_mb=tiny)
    b = eq.refine(model, batches, amaxes, steps=8, memory_mb=1e6)
    assert a.amaxes == b.amaxes and a.cosines == b.cosines
    assert a.weight_scales.keys() == b.weight_scales.keys()
    assert all(np.array_equal(a.weight_scales[k], b.weight_scales[k]) for k in a.weight_scales)


def test_cli_eq_can_start_from_another_method(tmp_path):
    out = tmp_path / "eq.cache"
    rc, text, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--data", EXAMPLES / "fashion_calib.npz",
                            "--algorithm", "eq", "--eq-init", "mse", "--eq-samples", "32", "--eq-steps", "8",
                            "-o", out, "-q", "--json")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["metadata"]["eq"]["init"] == "mse"
    # the search starts at mse's ranges: the layer cosines before EQ are mse's, better than entropy2's
    rc, text2, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--data", EXAMPLES / "fashion_calib.npz",
                             "--algorithm", "eq", "--eq-samples", "32", "--eq-steps", "8",
                             "-o", tmp_path / "e2.cache", "-q", "--json")
    assert rc == 0, err
    before = {k: v[0] for k, v in doc["metadata"]["eq"]["cosine"].items()}
    before_e2 = {k: v[0] for k, v in json.loads(text2)["metadata"]["eq"]["cosine"].items()}
    assert before["/conv1/Conv"] > before_e2["/conv1/Conv"]  # entropy2 clips the demo's input hard


def test_eq_counts_and_slices_samples_along_each_inputs_batch_axis(tmp_path):
    """A state input batched on axis 1 ([2, N, 4], first axis fixed at 2) and a 0-d scale: EQ's one-
    sample sizing run and its sample count follow --batch-axis (it took axis 0 of the first input:
    the model refused a [1, N, 4] state, a 0-d scale raised IndexError)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from trtcal.core.stats import load_stats

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["state", "scale"], ["scaled"]), helper.make_node("MatMul", ["scaled", "w"], ["y"])],
        "state_model",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 4]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "N", 3])], [w])
    model = tmp_path / "state.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    data = tmp_path / "data.npz"
    np.savez(data, state=rng.normal(size=(2, 24, 4)).astype(np.float32), scale=np.float32(0.5))
    rc, _, err = run_cli("calibrate", model, "--data", data, "--batch-axis", "state=1", "--batch-size", "8",
                         "--algorithm", "eq", "--eq-samples", "20", "--eq-steps", "4", "-o", tmp_path / "c.cache",
                         "--stats", tmp_path / "s.npz", "-q")
    assert rc == 0, err
    _, meta = load_stats(tmp_path / "s.npz")
    assert meta["eq"]["samples"] == 20  # 8 + 8 + 4 along axis 1, not 2 per batch
    side = json.loads((tmp_path / "c.cache.trtcal.json").read_text())
    assert side["algorithm"] == "eq"


def test_cli_eq_search_choices(tmp_path):
    """--eq-search: golden (default), coarse, grid; recorded in the cache's metadata; on the demo model's four
    layers the golden and grid searches end within 1e-3 of each other's cosine."""
    cos = {}
    for search in ("golden", "grid"):
        rc, text, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--data", EXAMPLES / "fashion_calib.npz",
                                "--algorithm", "eq", "--eq-samples", "16", "--eq-steps", "30", "--eq-search", search,
                                "-o", tmp_path / f"{search}.cache", "-q", "--json")
        assert rc == 0, err
        meta = json.loads(text)["metadata"]["eq"]
        assert meta["search"] == search
        cos[search] = meta["cosine"]
    assert cos["golden"].keys() == cos["grid"].keys()
    for layer, (_, after) in cos["grid"].items():
        assert abs(cos["golden"][layer][1] - after) <= 1e-3  # (the weight search after it may differ)
    rc, _, err = run_cli("calibrate", EXAMPLES / "fashion_cnn.onnx", "--data", EXAMPLES / "fashion_calib.npz",
                         "--algorithm", "eq", "--eq-search", "fast", "-o", tmp_path / "x.cache")
    assert rc == 2 and "--eq-search" in err


def test_eq_sees_weights_held_in_constant_nodes(tmp_path):
    """A model whose weights are Constant nodes (paddle2onnx) gets the same EQ as its initializer form."""
    import onnx

    import trtcal
    from trtcal.ort.runner import first_samples

    model = EXAMPLES / "fashion_cnn.onnx"
    onnx.save(as_constant_nodes(onnx.load(model)), tmp_path / "consts.onnx")
    batches = first_samples(model, EXAMPLES / "fashion_calib.npz", samples=32, batch_size=16)
    amaxes = {n: r.amax for n, r in trtcal.calibrate(model, EXAMPLES / "fashion_calib.npz", progress=False,
                                                       max_batches=2).thresholds.items()}
    a = eq.refine(model, batches, amaxes, steps=8)
    b = eq.refine(tmp_path / "consts.onnx", batches, amaxes, steps=8)
    assert a.amaxes == b.amaxes and a.cosines == b.cosines and len(a.cosines) > 0
