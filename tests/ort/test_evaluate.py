"""``trtcal eval`` and the streaming metrics, against direct numpy over whole arrays.

The INT8 model under test is made by ONNX Runtime's own quantize_static (a peer tool), so
nothing here depends on trtcal's Q/DQ writer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli

from trtcal.core.metrics import Comparison
from trtcal.ort.evaluate import evaluate

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"
CALIB = EXAMPLES / "fashion_calib.npz"
EVAL = EXAMPLES / "fashion_eval.npz"


def direct_sqnr(ref, test) -> float:
    ref = ref.astype(np.float64)
    return 10 * math.log10(np.sum(ref**2) / np.sum((ref - test.astype(np.float64)) ** 2))


# --------------------------------------------------------------------------- metrics


def test_streamed_metrics_equal_direct_formulas():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 10))
    test = ref + rng.normal(scale=0.3, size=ref.shape)
    labels = rng.integers(0, 10, size=300)
    c = Comparison("logits", classes="logits")
    for start in range(0, 300, 64):
        c.update(ref[start:start + 64], test[start:start + 64], labels[start:start + 64])
    assert c.sqnr_db == pytest.approx(direct_sqnr(ref, test), rel=1e-12)
    cosines = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ref, test)]
    assert c.cosine_mean == pytest.approx(sum(cosines) / len(cosines), rel=1e-12)
    assert c.to_dict()["cosine_min"] == pytest.approx(min(cosines), rel=1e-12)
    d = c.to_dict()
    assert d["top1_agreement"] == np.mean(ref.argmax(1) == test.argmax(1))
    assert d["top1_reference"] == np.mean(ref.argmax(1) == labels)
    assert d["top1_test"] == np.mean(test.argmax(1) == labels)
    assert d["max_abs_error"] == np.abs(ref - test).max()

    def literal_kl(a, b):  # softmax and KL written out, one sample at a time
        pa = [math.exp(v) for v in a]
        pb = [math.exp(v) for v in b]
        pa = [v / sum(pa) for v in pa]
        pb = [v / sum(pb) for v in pb]
        return sum(p * math.log(p / q) for p, q in zip(pa, pb))

    assert d["kl_mean"] == pytest.approx(sum(literal_kl(a, b) for a, b in zip(ref, test)) / 300, rel=1e-9)
    assert d["kl_mean"] > 0.01


def test_agreement_on_sure_samples_counts_only_those():
    rng = np.random.default_rng(1)
    ref = rng.normal(scale=2.0, size=(200, 5))
    test = ref + rng.normal(scale=0.8, size=ref.shape)
    c = Comparison("logits", classes="logits", confidence=0.6)
    for start in range(0, 200, 64):
        c.update(ref[start:start + 64], test[start:start + 64])
    top_prob = [max(math.exp(v) for v in row) / sum(math.exp(v) for v in row) for row in ref]
    sure = [i for i, p in enumerate(top_prob) if p >= 0.6]
    d = c.to_dict()
    assert 0 < d["sure_samples"] == len(sure) < 200
    assert d["top1_agreement_sure"] == sum(ref[i].argmax() == test[i].argmax() for i in sure) / len(sure)
    assert d["top1_agreement_sure"] > d["top1_agreement"]  # the flips are near-ties


def test_kl_is_zero_for_a_shift_and_large_logits_do_not_overflow():
    c = Comparison("logits", classes="logits")
    ref = np.array([[1000.0, 990.0, -5.0], [3.0, 2.0, 1.0]])
    c.update(ref, ref + 7.0)  # softmax ignores a constant shift of a row
    assert c.kl_mean == pytest.approx(0.0, abs=1e-12)
    c.update(np.array([[800.0, 0.0, 0.0]]), np.array([[0.0, 800.0, 0.0]]))
    assert math.isfinite(c.kl_mean) and c.kl_mean == pytest.approx(800.0 / 3, rel=1e-9)
    assert math.isnan(Comparison("v").kl_mean)


def test_metric_edge_cases():
    same = Comparison("a")
    same.update(np.ones((2, 3)), np.ones((2, 3)))
    assert same.sqnr_db == math.inf and same.cosine_mean == 1.0
    zero = Comparison("z")
    zero.update(np.zeros((2, 3)), np.ones((2, 3)))
    assert zero.sqnr_db == -math.inf and zero.cosine_mean == 0.0
    both = Comparison("b")
    both.update(np.zeros((2, 3)), np.zeros((2, 3)))
    assert math.isnan(both.sqnr_db) and both.cosine_mean == 1.0
    nan = Comparison("n")
    nan.update(np.array([[1.0, np.nan], [2.0, 3.0]]), np.array([[1.0, 5.0], [2.0, np.inf]]))
    assert nan.nonfinite == 2 and nan.sqnr_db == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        Comparison("s").update(np.zeros((2, 3)), np.zeros((3, 2)))


# --------------------------------------------------------------------------- evaluate on a real model


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    x = np.load(CALIB)["images"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": x[i:i + 64]} for i in range(0, len(x), 64)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path_factory.mktemp("q") / "fashion_int8.onnx"
    quantize_static(str(MODEL), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return out


def run_whole(path, x, *, fused=False):
    """The model over all of x at once. Not fused: no graph optimisation at all, so each Q/DQ pair
    runs as written (the fake quantization TensorRT's int8 computes); fused: ONNX Runtime's default
    session, which turns Q/DQ into its own integer kernels (CPU-dependent)."""
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": x})[0]


def test_outputs_match_a_direct_run(int8_model):
    data = np.load(EVAL)
    x, labels = data["images"], data["labels"]
    result = evaluate(MODEL, int8_model, EVAL, labels=EVAL, batch_size=100, progress=False)
    ref, got = run_whole(MODEL, x), run_whole(int8_model, x)
    (logits,) = result.outputs
    d = logits.to_dict()
    assert logits.name == "logits" and result.metadata["samples"] == 1000
    # evaluate keeps ONNX Runtime's float fusions (Conv+Relu ...), the reference runs unoptimised:
    # the same arithmetic up to float rounding, which a few values at a rounding boundary amplify
    assert d["sqnr_db"] == pytest.approx(direct_sqnr(ref, got), abs=0.01)
    assert abs(d["top1_agreement"] - np.mean(ref.argmax(1) == got.argmax(1))) <= 0.002
    assert d["top1_reference"] == np.mean(ref.argmax(1) == labels)
    assert d["top1_test"] == np.mean(got.argmax(1) == labels)
    assert d["top1_reference"] == pytest.approx(0.907)  # docs/demo-model.md: FP32 on the bundled eval set
    assert result.metadata["arithmetic"] == "qdq-as-written"


def test_int8_kernels_runs_what_onnxruntime_deploys(int8_model):
    x = np.load(EVAL)["images"][:300]
    result = evaluate(MODEL, int8_model, EVAL, max_batches=3, batch_size=100, per_tensor=False,
                      progress=False, int8_kernels=True)
    ref, got = run_whole(MODEL, x), run_whole(int8_model, x, fused=True)
    assert result.outputs[0].sqnr_db == pytest.approx(direct_sqnr(ref, got), abs=1e-3)
    assert result.metadata["arithmetic"] == "onnxruntime-int8-kernels"


def test_quantized_input_view_matches_numpy_fake_quant(int8_model):
    model = onnx.load(str(int8_model))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "images")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = float(inits[q.input[1]])
    x = np.load(EVAL)["images"]
    fake = np.clip(np.round(x / np.float32(scale)), -128, 127) * np.float32(scale)  # round half to even
    result = evaluate(MODEL, int8_model, EVAL, labels=EVAL, progress=False)
    assert result.quantized["images"].sqnr_db == pytest.approx(direct_sqnr(x, fake), abs=1e-6)
    names = [c.name for c in result.tensors]
    model_fp32 = onnx.load(str(MODEL))
    assert set(names) == {"images"} | {o for n in model_fp32.graph.node for o in n.output} - {"logits"}
    keys = [min(c.sqnr_db, result.quantized[c.name].sqnr_db) if c.name in result.quantized else c.sqnr_db
            for c in result.tensors]
    assert keys == sorted(keys)  # worst first


def test_a_model_against_itself_is_exact():
    result = evaluate(MODEL, MODEL, EVAL, labels=f"{EVAL}:labels", max_batches=3, progress=False)
    d = result.outputs[0].to_dict()
    assert d["sqnr_db"] == math.inf and d["top1_agreement"] == 1.0 and result.metadata["samples"] == 96
    assert all(c.sqnr_db == math.inf for c in result.tensors) and not result.quantized


# --------------------------------------------------------------------------- CLI


def test_cli_text_json_and_plot(int8_model, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sqnr.png"
    rc, out, err = run_cli("eval", MODEL, int8_model, "--data", EVAL, "--labels", EVAL, "--plot", png, "-q")
    assert rc == 0, err
    assert "logits" in out and "per-tensor SQNR" in out and "/fc1/Gemm_output_0" in out and "KL nats" in out
    assert "samples the reference is sure of (top-1 probability >= 0.5)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, err = run_cli("eval", MODEL, int8_model, "--data", EVAL, "--no-per-tensor", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["outputs"][0]["name"] == "logits" and doc["tensors"] == []
    assert 0 < doc["outputs"][0]["kl_mean"] < 0.1
    assert doc["outputs"][0]["confidence"] == 0.5 and 0 < doc["outputs"][0]["sure_samples"] <= 1000
    before = png.read_bytes()
    rc, out, err = run_cli("eval", MODEL, int8_model, "--data", EVAL, "--plot", png)
    assert rc == 2 and str(png) in err and png.read_bytes() == before


def test_bad_inputs_one_line_exit_2(int8_model, tmp_path):
    other = tmp_path / "other.onnx"
    m = onnx.load(str(MODEL))
    m.graph.output[0].name = "renamed"
    m.graph.node[-1].output[0] = "renamed"
    onnx.save(m, str(other))
    few = tmp_path / "few.npy"
    np.save(few, np.arange(10))
    bad_txt = tmp_path / "labels.txt"
    bad_txt.write_text("1\n2\ncat\n")
    cases = [
        (["eval", MODEL, other, "--data", EVAL], "no output 'logits'"),
        (["eval", MODEL, int8_model, "--data", EVAL, "--labels", few], "10 labels"),
        (["eval", MODEL, int8_model, "--data", EVAL, "--labels", bad_txt], f"{bad_txt}:3"),
        (["eval", MODEL, int8_model, "--data", EVAL, "--labels", f"{EVAL}:nope"], "no array 'nope'"),
        (["eval", MODEL, tmp_path / "missing.onnx", "--data", EVAL], "no such model file"),
        (["eval", MODEL, int8_model, "--data", EVAL, "--confidence", "1.5"], "--confidence: '1.5': must be a number in [0, 1]"),
    ]
    for argv, message in cases:
        rc, out, err = run_cli(*argv)
        assert rc == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    # the labels array beside the images is never taken for an input
    assert "top1_reference" not in evaluate(MODEL, int8_model, EVAL, max_batches=1, progress=False).outputs[0].to_dict()


def test_plot_one_tensor(tmp_path):
    pytest.importorskip("matplotlib")
    stats = tmp_path / "s.npz"
    rc, _, err = run_cli("calibrate", MODEL, "--data", CALIB, "-o", tmp_path / "c.cache", "--stats", stats, "-q")
    assert rc == 0, err
    png = tmp_path / "relu1.png"
    rc, out, err = run_cli("plot", "/relu1/Relu_output_0", "--stats", stats, "-o", png)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "entropy2: amax" in out and "onesided: amax" in out
    rc, _, err = run_cli("plot", "relu1", "--stats", stats, "-o", tmp_path / "x.png")
    assert rc == 2 and "did you mean '/relu1/Relu_output_0'" in err and not (tmp_path / "x.png").exists()
    rc, _, err = run_cli("plot", "/relu1/Relu_output_0", "--stats", stats, "-o", png)
    assert rc == 2 and str(png) in err  # exists, no --force


def _literal_balanced_ratio(ref, test, axis):
    """Per channel along ``axis``: noise over signal, capped at 1, averaged over channels with signal."""
    ratios = []
    for c in range(ref.shape[axis]):
        r = np.take(ref, c, axis=axis).astype(np.float64)
        t = np.take(test, c, axis=axis).astype(np.float64)
        signal = sum(float(v) ** 2 for v in r.ravel())
        noise = sum((float(a) - float(b)) ** 2 for a, b in zip(r.ravel(), t.ravel()))
        if signal > 0:
            ratios.append(min(noise / signal, 1.0))
    return sum(ratios) / len(ratios)


def test_an_output_that_mixes_scales_is_scored_channel_by_channel():
    """YOLOv8's [N, 4 + C, boxes]: boxes in pixels and scores in 0..1 in one tensor."""
    from trtcal.ort.sensitivity import Score

    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 320, (2, 4, 50))
    scores = rng.uniform(0, 0.1, (2, 6, 50))
    ref = np.concatenate([boxes, scores], axis=1)
    test = ref.copy()
    test[:, :4] += rng.normal(0, 0.5, (2, 4, 50))  # the boxes barely move
    test[:, 4:] = 0.0  # every class score is lost
    c = Comparison("out")
    for k in range(2):  # streamed batch by batch
        c.update(ref[k:k + 1], test[k:k + 1])
    assert c.sqnr_db > 40  # the plain SQNR sees the boxes only
    assert c.mixed_axis == 1
    assert c.noise_ratio == pytest.approx(_literal_balanced_ratio(ref, test, 1))
    assert c.balanced_sqnr_db < 3  # six of ten channels are lost
    assert Score({"out": c}).sqnr_db == pytest.approx(c.balanced_sqnr_db)
    # channels on the last axis ([N, boxes, 4 + C], YOLOv5's layout) are found there
    t = Comparison("out_t")
    t.update(np.moveaxis(ref, 1, 2), np.moveaxis(test, 1, 2))
    assert t.mixed_axis == 2 and t.noise_ratio == pytest.approx(c.noise_ratio)


def test_an_output_of_one_scale_keeps_the_plain_ratio():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, (4, 8, 16))
    test = ref + rng.normal(0, 0.01, ref.shape)
    c = Comparison("h")
    c.update(ref, test)
    assert c.mixed_axis is None
    assert c.noise_ratio == pytest.approx(c.noise / c.signal)
    assert c.balanced_sqnr_db == pytest.approx(c.sqnr_db)
    # an embedding with a few near-zero dimensions (all-MiniLM-L6-v2 has 3 of 384): those are below
    # the majority, not a minority above it, so the whole is scored as one
    emb = rng.normal(0, 1, (4, 8, 64))
    emb[..., :3] *= 1e-20
    quiet = Comparison("emb")
    quiet.update(emb, emb + rng.normal(0, 0.01, emb.shape))
    assert quiet.mixed_axis is None and quiet.noise_ratio == pytest.approx(quiet.noise / quiet.signal)
    flat = Comparison("logits")  # rank 2: never split
    flat.update(np.array([[300.0, 0.01]]), np.array([[300.0, 0.0]]))
    assert flat.mixed_axis is None
