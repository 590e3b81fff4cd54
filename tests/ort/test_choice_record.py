"""The range choice ``quantize`` keeps in its sidecars (trtcal.ort.choice_record): on the bundled
Fashion-MNIST model, every quantized activation's recorded amax is the scale read back from the
written Q/DQ model (an independent reader); and, on hand-made choices, which candidate and which
reason each way of winning (layer error, a single method at the outputs, refine) records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest

from trtcal.core.ranges import Range
from trtcal.onnx.qdq import read_qdq_scales
from trtcal.ort.choice_record import SIDECAR_KEY, choice_record
from trtcal.ort.quantize import quantize
from trtcal.ort.range_choice import CANDIDATES, Choice, RangeChoice

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
#: scale = float32(amax / qmax), read back as scale * qmax; the record keeps 8 significant digits
FLOAT32_REL = 2e-7


def _sidecars(output: Path, cache: Path) -> dict:
    model_side = json.loads(Path(str(output) + ".trtcal.json").read_text())
    cache_side = json.loads(Path(str(cache) + ".trtcal.json").read_text())
    assert model_side[SIDECAR_KEY] == cache_side[SIDECAR_KEY]
    return model_side[SIDECAR_KEY]


def _check_entry(entry: dict) -> None:
    assert entry["method"] in CANDIDATES and entry["per_tensor"] in CANDIDATES
    assert set(entry["amaxes"]) == set(entry["errors"]) and set(entry["amaxes"]) <= set(CANDIDATES)
    assert entry["amaxes"][entry["method"]] == entry["amax"]
    assert all(isinstance(e, float) and e >= 0 for e in entry["errors"].values())
    # the per-tensor choice is the candidate with the least error at the consuming layers
    assert entry["errors"][entry["per_tensor"]] == min(entry["errors"].values())
    assert entry["measured_at"]


def test_sidecar_records_the_range_of_every_quantized_activation(tmp_path):
    out, cache = tmp_path / "f.int8.onnx", tmp_path / "f.cache"
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=out, cache=cache,
                 stats=tmp_path / "f.npz", select_samples=16, eval_samples=32, refine=False, progress=False)
    rec = _sidecars(out, cache)
    qdq = read_qdq_scales(onnx.load(out))
    shift = r.metadata.get("shift") or {"kept": False}
    # a tensor shifted into its readers' biases is quantized as <name>_shifted at half its range
    shifted = {v["reads_as"]: n for n, v in shift["tensors"].items()} if shift["kept"] else {}
    assert qdq.names() and {shifted.get(n, n) for n in qdq.names()} <= set(rec["tensors"])
    for name in qdq.names():
        entry = rec["tensors"][shifted.get(name, name)]
        _check_entry(entry)
        assert qdq.amax(name) * (2 if name in shifted else 1) == pytest.approx(entry["amax"], rel=FLOAT32_REL), name
    assert rec["chosen"] == r.chosen and rec["samples"] == 16
    assert set(rec["scores"]) == set(r.selection) and rec["chosen"] in rec["scores"]
    assert all(rec["scores"][k] == pytest.approx(v, abs=5e-4) for k, v in r.selection.items())
    base = r.chosen.split(" + ")[0]
    for name, entry in rec["tensors"].items():  # no refine: the winning set's own candidate
        assert entry["by"] == ("layer error" if base == "per-tensor" else "outputs")
        assert entry["per_tensor"] == r.choice.choices[name].method
    json.dumps(rec, allow_nan=False)  # strict JSON


def test_sidecar_after_refine_and_fallback_for_onnxruntime(tmp_path):
    out, cache = tmp_path / "o.int8.onnx", tmp_path / "o.cache"
    r = quantize(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", output=out, cache=cache,
                 stats=tmp_path / "o.npz", select_samples=8, eval_samples=32, refine=True, max_float=1,
                 target="onnxruntime", progress=False)
    rec = _sidecars(out, cache)
    qdq = read_qdq_scales(onnx.load(out))  # uint8 tensors read back as 255 * scale
    for name, entry in rec["tensors"].items():
        _check_entry(entry)
        if name in r.float_tensors:
            assert entry["float"] is True and name not in qdq.names()
            continue
        assert "float" not in entry
        assert qdq.amax(name) == pytest.approx(entry["amax"], rel=FLOAT32_REL), name
        if entry["by"] == "refined":  # refine moved it off the winning set's range
            assert "refined" in r.chosen and entry["amax"] != entry["amaxes"][entry["per_tensor"]]
    assert any(e.get("unsigned") for e in rec["tensors"].values())  # ReLU outputs, uint8 for ONNX Runtime
    assert len(r.float_tensors) == 1


def _choice() -> RangeChoice:
    a = Choice("a", "mse", 2.0, {"entropy2": 0.5, "minmax": 0.2, "mse": 0.1}, {"entropy2": 1.0, "minmax": 3.0, "mse": 2.0},
               ["/conv/Conv_output_0"])
    b = Choice("b", "entropy2", 1.5, {"entropy2": 0.01, "minmax": math.inf, "onesided": 0.01},
               {"entropy2": 1.5, "minmax": 4.0, "onesided": 1.5}, ["b"])
    return RangeChoice({"a": a, "b": b}, samples=8)


def test_per_tensor_win_records_each_tensors_candidate():
    ranges = {"a": Range.symmetric(2.0), "b": Range(0.0, 1.5)}
    rec = choice_record(_choice(), ranges, "per-tensor + weights", {"per-tensor": 30.123456, "mse": -math.inf},
                        float_tensors=["b"])
    a, b = rec["tensors"]["a"], rec["tensors"]["b"]
    assert (a["method"], a["amax"], a["by"], a["per_tensor"]) == ("mse", 2.0, "layer error", "mse")
    assert (b["method"], b["by"], b["float"]) == ("entropy2", "layer error", True)
    assert b["errors"]["minmax"] == "inf" and rec["scores"] == {"per-tensor": 30.123, "mse": "-inf"}
    json.dumps(rec, allow_nan=False)


def test_single_method_win_records_that_method_or_entropy2_where_the_tensor_lacks_it():
    ranges = {"a": Range.symmetric(3.0), "b": Range.symmetric(4.0)}
    rec = choice_record(_choice(), ranges, "minmax", {})
    assert rec["tensors"]["a"]["method"] == "minmax" and rec["tensors"]["a"]["by"] == "outputs"
    assert rec["tensors"]["a"]["per_tensor"] == "mse"
    # onesided equals entropy2's amax on b; the winning set names it as onesided
    ranges = {"a": Range.symmetric(1.0), "b": Range.symmetric(1.5)}
    rec = choice_record(_choice(), ranges, "onesided", {})
    assert rec["tensors"]["b"]["method"] == "onesided"
    assert rec["tensors"]["a"]["method"] == "entropy2"  # a has no onesided candidate: entropy2 there


def test_refined_records_the_candidate_the_final_amax_equals():
    ranges = {"a": Range.symmetric(1.0), "b": Range.symmetric(1.5)}  # refine moved a to entropy2's amax
    rec = choice_record(_choice(), ranges, "per-tensor + refined + weights", {})
    a, b = rec["tensors"]["a"], rec["tensors"]["b"]
    assert (a["method"], a["by"], a["per_tensor"]) == ("entropy2", "refined", "mse")
    assert (b["method"], b["by"]) == ("entropy2", "layer error")  # unchanged by refine
    rec = choice_record(_choice(), {"a": Range.symmetric(2.5), "b": Range.symmetric(1.5)}, "mse + refined", {})
    assert rec["tensors"]["a"]["method"] is None and rec["tensors"]["a"]["amax"] == 2.5
