"""Per-tensor bit widths: histogram SQNR estimates and choices against direct quantization."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli

from trtcal.core import thresholds
from trtcal.core.bitwidth import choose_bits, tensor_sqnr
from trtcal.core.histogram import Histogram
from trtcal.core.stats import save_stats


def direct_sqnr(x: np.ndarray, amax: float, bits: int) -> float:
    x = x.astype(np.float64)
    qmax = 2 ** (bits - 1) - 1
    step = amax / qmax
    q = np.clip(np.rint(x / step), -qmax, qmax) * step
    return 10 * math.log10(np.sum(x**2) / np.sum((x - q) ** 2))


def tensors():
    rng = np.random.default_rng(5)
    return {"normal": rng.normal(size=100000).astype(np.float32),
            "laplace": rng.laplace(size=100000).astype(np.float32),
            "relu": np.maximum(rng.normal(size=100000), 0).astype(np.float32)}


@pytest.mark.parametrize("method", ["entropy2", "mse", "minmax"])
def test_estimates_and_choices_match_direct_quantization(method):
    data = tensors()
    hists = {n: Histogram(name=n).update(x) for n, x in data.items()}
    for name, x in data.items():
        for bits in (4, 6, 8):
            amax = thresholds.compute(method, hists[name], bits=bits).amax
            assert tensor_sqnr(hists[name], amax, bits) == pytest.approx(direct_sqnr(x, amax, bits), abs=0.1)
    for target in (15.0, 25.0, 35.0):
        for c in choose_bits(hists, target, [4, 6, 8, 16], method=method):
            direct = {b: direct_sqnr(data[c.tensor], thresholds.compute(method, hists[c.tensor], bits=b).amax, b)
                      for b in (4, 6, 8, 16)}
            want = next((b for b in (4, 6, 8, 16) if direct[b] >= target), "float")
            margin = min(abs(v - target) for v in direct.values())
            if margin > 0.1:  # away from a knife edge the choice is the direct one
                assert c.bits == want, (c.tensor, target, direct)


def test_unreachable_target_stays_float():
    hists = {"t": Histogram().update(np.random.default_rng(0).normal(size=1000))}
    (c,) = choose_bits(hists, 200.0, [4, 8])
    assert c.bits == "float" and c.amax is None and set(c.sqnr_db) == {4, 8}


def test_cli(tmp_path):
    data = tensors()
    stats = tmp_path / "s.npz"
    save_stats(stats, {n: Histogram(name=n).update(x) for n, x in data.items()})
    out = tmp_path / "bits.json"
    rc, text, err = run_cli("bits", "--stats", stats, "--target-sqnr", "30", "-o", out)
    assert rc == 0, err
    chosen = json.loads(out.read_text())
    assert set(chosen) == set(data) and all(v in (4, 6, 8, 16, "float") for v in chosen.values())
    assert "target 30 dB" in text
    rc, _, err = run_cli("bits", "--stats", stats, "--target-sqnr", "30", "--bits", "4,x")
    assert rc == 2 and "--bits" in err
    rc, _, err = run_cli("bits", "--stats", stats, "--target-sqnr", "30", "-o", out)
    assert rc == 2 and str(out) in err


def test_json_with_an_all_zero_tensor(tmp_path):
    """A tensor of zeros has an infinite SQNR at every width: --json writes it as "inf", no crash."""
    stats = tmp_path / "s.npz"
    save_stats(stats, {"zeros": Histogram(name="zeros").update(np.zeros(100, np.float32))})
    rc, out, err = run_cli("bits", "--stats", stats, "--target-sqnr", "30", "--json")
    assert rc == 0, err
    (row,) = json.loads(out)["tensors"]
    assert row["bits"] == 4 and row["sqnr_db"]["4"] == "inf"


def test_stored_ranges_round_up_to_what_the_target_stores():
    from trtcal.core.bitwidth import BitChoice, stored_ranges

    data = tensors()
    hists = {n: Histogram(name=n).update(x) for n, x in data.items()}
    amax6 = thresholds.compute("mse", hists["normal"], bits=6).amax
    choices = [BitChoice("normal", 6, amax6), BitChoice("laplace", 16, 1.0), BitChoice("relu", "float", None)]
    ranges, floats = stored_ranges(choices, hists, (4, 8, 16), method="mse")
    # 6 bits is stored as 8, with the 8-bit threshold (less clipping than the 6-bit one)
    assert ranges["normal"].bits == 8 and ranges["normal"].amax == thresholds.compute("mse", hists["normal"], bits=8).amax
    assert ranges["normal"].amax > amax6 and ranges["normal"].low < 0
    assert ranges["laplace"].bits == 16 and ranges["laplace"].amax == 1.0  # stored as chosen: its own threshold
    assert floats == {"relu": "no width meets the target SQNR"}
    ranges, floats = stored_ranges([BitChoice("laplace", 16, 1.0), BitChoice("relu", 4, 2.0)], hists, (8,))
    assert "16-bit, wider than the target stores (8-bit)" in floats["laplace"]
    relu = ranges["relu"]  # one-sided values: [0, amax], at the 8-bit threshold of entropy2
    assert relu.low == 0 and relu.bits == 8 and relu.high == thresholds.compute("entropy2", hists["relu"], bits=8).amax


def test_cli_writes_the_qdq_model_at_the_chosen_widths(tmp_path):
    from pathlib import Path

    import onnx
    from onnx import numpy_helper

    import trtcal
    from trtcal.core.bitwidth import weight_sqnr
    from trtcal.ort.evaluate import evaluate

    examples = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
    model, calib, ev = examples / "fashion_cnn.onnx", examples / "fashion_calib.npz", examples / "fashion_eval.npz"
    stats = tmp_path / "s.npz"
    save_stats(stats, trtcal.calibrate(model, calib, progress=False).histograms)
    out = {}
    for target, sqnr in (("onnxruntime", 45), ("tensorrt", 45), ("onnxruntime", 35), ("onnxruntime", 18)):
        path = tmp_path / f"{target}_{sqnr}.onnx"
        rc, text, err = run_cli("bits", model, "--stats", stats, "--target-sqnr", sqnr, "--bits", "4,8,16",
                                "--algorithm", "mse", "--qdq", path, "--target", target, "--json")
        assert rc == 0, err
        doc = json.loads(text)
        chosen = {t["tensor"]: t["bits"] for t in doc["tensors"]}
        stored = doc["qdq"]["stored"]
        for name, dtype in stored.items():  # each quantized activation at the smallest stored width >= its choice
            want = 8 if target == "tensorrt" else next(w for w in (4, 8, 16) if w >= chosen[name])
            assert dtype.lstrip("u") == f"int{want}", (name, chosen[name], dtype)
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
        for name, dtype in doc["qdq"]["weights"].items():  # int4 exactly where 4 bits meet the target
            axis = 0  # Conv weights, and Gemm weights with transB=1: output channels on axis 0
            want = "int4" if target == "onnxruntime" and weight_sqnr(weights[name], axis, 4) >= sqnr else "int8"
            assert dtype == want, (name, sqnr, dtype)
        if target == "tensorrt":  # the 16-bit choices stay in float
            assert doc["qdq"]["float_tensors"] and all(chosen[n] == 16 for n in doc["qdq"]["float_tensors"])
        m = onnx.load(str(path))
        onnx.checker.check_model(m, full_check=True)
        out[(target, sqnr)] = evaluate(model, path, ev, per_tensor=False, progress=False).outputs[0].sqnr_db
    # 16-bit activations where 8 bits miss 45 dB: better than the all-8-bit model of the 35 dB target
    assert out[("onnxruntime", 45)] > out[("onnxruntime", 35)] + 2
    assert out[("onnxruntime", 18)] < out[("onnxruntime", 35)] - 5  # int4 costs, as the target allows
    assert "int4" in json.dumps(doc["qdq"]["weights"])
    rc, _, err = run_cli("bits", "--stats", stats, "--target-sqnr", "30", "--qdq", tmp_path / "x.onnx")
    assert rc == 2 and "--qdq needs the MODEL" in err and not (tmp_path / "x.onnx").exists()


def test_weight_sqnr_and_choice_against_a_literal_loop():
    from trtcal.core.bitwidth import choose_weight_bits, weight_sqnr

    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 5)).astype(np.float32) * np.array([[1.0], [10.0], [0.1]], np.float32)
    for bits in (4, 8):
        qmax = 2 ** (bits - 1) - 1
        signal = noise = 0.0
        for c in range(3):  # channel by channel, value by value
            s = float(np.float32(max(abs(float(v)) for v in w[c]) / qmax))
            for v in w[c]:
                q = max(-qmax, min(qmax, round(float(v) / s))) * s
                signal += float(v) ** 2
                noise += (float(v) - q) ** 2
        assert weight_sqnr(w, 0, bits) == pytest.approx(10 * math.log10(signal / noise), abs=1e-9)
    s4, s8 = weight_sqnr(w, 0, 4), weight_sqnr(w, 0, 8)
    assert choose_weight_bits(w, 0, s4 - 0.1, [4, 8]) == 4
    assert choose_weight_bits(w, 0, s4 + 0.1, [4, 8]) == 8
    assert choose_weight_bits(w, 0, s8 + 1, [4, 8]) == 8  # none meets it: the widest


def test_qdq_int4_weights_for_onnxruntime(tmp_path):
    from pathlib import Path

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    from trtcal.core.errors import TrtcalError
    from trtcal.onnx.qdq import write_qdq

    model = Path(__file__).resolve().parents[2] / "trtcal" / "examples" / "fashion_cnn.onnx"
    ranges = {"images": 2.0, "/pool1/MaxPool_output_0": 3.0, "/flatten/Flatten_output_0": 3.0,
              "/relu3/Relu_output_0": 4.0}
    res = write_qdq(model, ranges, target="onnxruntime", weight_bits={"conv2.weight": 4})
    assert res.opset == 21 and {q.name: q.dtype for q in res.weights}["conv2.weight"] == "int4"
    m = res.model
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("conv2.weight"))
    inits = {t.name: t for t in m.graph.initializer}
    assert inits[dq.input[0]].data_type == TensorProto.INT4 and inits[dq.input[2]].data_type == TensorProto.INT4
    codes = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int8)
    scale = numpy_helper.to_array(inits[dq.input[1]])
    w = numpy_helper.to_array(next(t for t in onnx.load(str(model)).graph.initializer if t.name == "conv2.weight"))
    want_scale = (np.abs(w).reshape(w.shape[0], -1).max(1).astype(np.float64) / 7).astype(np.float32)
    assert np.array_equal(scale, want_scale) and codes.min() >= -7 and codes.max() <= 7
    np.testing.assert_array_equal(codes, np.clip(np.rint(w / want_scale[:, None, None, None]), -7, 7))
    # ONNX Runtime dequantizes them to exactly codes * scale
    probe = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("DequantizeLinear", list(dq.input), ["y"], axis=0)], "p", [],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [inits[n] for n in dq.input]), opset_imports=[onnx.helper.make_opsetid("", 21)])
    got = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    np.testing.assert_array_equal(got, codes.astype(np.float32) * scale[:, None, None, None])
    with pytest.raises(TrtcalError, match="4-bit weights; target tensorrt stores 8-bit"):
        write_qdq(model, ranges, weight_bits={"conv2.weight": 4})
    with pytest.raises(TrtcalError, match="weight bits given for 1 tensor"):
        write_qdq(model, ranges, target="onnxruntime", weight_bits={"nope": 4})
