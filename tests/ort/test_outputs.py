"""Outputs that are not class scores: which outputs ``eval`` and ``fallback`` score, and how.

Small models built here hold an int64 pass-through, an embedding, a sequence ``[N, T, C]`` of
softmaxes, a box regressor and a two-class softmax; the numbers are checked against numpy over
direct ONNX Runtime runs of the two models.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtcal import calibrate
from trtcal.core.errors import TrtcalError
from trtcal.onnx.qdq import write_qdq
from trtcal.ort.evaluate import choose_outputs, evaluate
from trtcal.ort.sensitivity import analyse

T, C = 3, 4  # the sequence output's positions and classes


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32 if np.asarray(array).dtype.kind == "f"
                                              else np.int64), name)


def build(outputs=("ids_out", "emb", "seq", "box", "prob"), seed=0) -> onnx.ModelProto:
    """x [N, 8] float and ids [N, 5] int64 in; the named outputs out (see the module doc)."""
    rng = np.random.default_rng(seed)
    inits = [_init("W1", rng.normal(size=(8, 12))), _init("W2", rng.normal(size=(12, 16))),
             _init("Wb", rng.normal(size=(12, 4))), _init("bb", rng.normal(size=4)),
             _init("Ws", rng.normal(size=(12, T * C))), _init("seq_shape", np.array([-1, T, C])),
             _init("Wp", rng.normal(size=(12, 2))), _init("bp", rng.normal(size=2)),
             _init("zero", np.zeros(1))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("Identity", ["ids"], ["ids_out"]),
             helper.make_node("MatMul", ["h", "W2"], ["emb_raw"]),
             helper.make_node("LpNormalization", ["emb_raw"], ["emb"], axis=-1, p=2),
             helper.make_node("MatMul", ["h", "Wb"], ["box0"]), helper.make_node("Add", ["box0", "bb"], ["box"]),
             helper.make_node("MatMul", ["h", "Ws"], ["seq0"]),
             helper.make_node("Reshape", ["seq0", "seq_shape"], ["seq1"]),
             helper.make_node("Softmax", ["seq1"], ["seq"], axis=-1),
             helper.make_node("MatMul", ["h", "Wp"], ["p0"]), helper.make_node("Add", ["p0", "bp"], ["p1"]),
             helper.make_node("Softmax", ["p1"], ["prob"], axis=-1),
             helper.make_node("Mul", ["box", "zero"], ["dead"])]
    info = {"ids_out": (TensorProto.INT64, ["n", 5]), "emb": (TensorProto.FLOAT, ["n", 16]),
            "seq": (TensorProto.FLOAT, ["n", T, C]), "box": (TensorProto.FLOAT, ["n", 4]),
            "prob": (TensorProto.FLOAT, ["n", 2]), "dead": (TensorProto.FLOAT, ["n", 4])}
    graph = helper.make_graph(nodes, "outputs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 5])],
                              [helper.make_tensor_value_info(o, *info[o]) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def run(model, feeds) -> dict[str, np.ndarray]:
    """All outputs of ``model`` on ``feeds``, Q/DQ run as written."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def sqnr(ref, got) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return 10 * math.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))


def kl_probs(p, q) -> float:
    """Mean KL(p || q) over the rows of the last axis: probabilities, renormalised, written out."""
    p = p.astype(np.float64).reshape(-1, p.shape[-1])
    q = q.astype(np.float64).reshape(-1, q.shape[-1])
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The FP32 model, its Q/DQ INT8 model, the data and the cache, on disk."""
    tmp = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    ids = rng.integers(0, 30000, size=(96, 5)).astype(np.int64)
    data = tmp / "data.npz"
    np.savez(data, x=x, ids=ids)
    paths = {}
    for name, outs in {"multi": ("ids_out", "emb", "seq", "box", "prob"), "embedding": ("ids_out", "emb"),
                       "dead": ("emb", "dead")}.items():
        paths[name] = tmp / f"{name}.onnx"
        onnx.save(build(outs), str(paths[name]))
    cache = calibrate(paths["multi"], data, algorithm="minmax", progress=False).cache
    cache_path = tmp / "multi.cache"
    cache.write(cache_path)
    int8 = tmp / "multi.int8.onnx"
    onnx.save(write_qdq(paths["multi"], cache).model, str(int8))
    return {"tmp": tmp, "data": data, "x": x, "ids": ids, "cache": cache, "cache_path": cache_path,
            "int8": int8, **paths}


# --------------------------------------------------------------------------- which outputs, and how


def test_rules_choose_class_scores_and_never_integers():
    choice = choose_outputs(build(), "m.onnx")
    assert choice.classes == {"emb": None, "seq": "probabilities", "box": None, "prob": "probabilities"}
    assert list(choice.not_scored) == ["ids_out"] and "int64" in choice.not_scored["ids_out"]
    # told: only the named output is class scores (and it is scored even outside --score)
    told = choose_outputs(build(), "m.onnx", score=["emb"], classifiers=["box"])
    assert told.classes == {"emb": None, "box": "logits"} and told.told
    assert choose_outputs(build(), "m.onnx", classifiers=["none"]).classes == dict.fromkeys(
        ["emb", "seq", "box", "prob"])
    with pytest.raises(TrtcalError, match="--score ids_out: output 'ids_out' is int64; integer and boolean"):
        choose_outputs(build(), "m.onnx", score=["ids_out"])
    with pytest.raises(TrtcalError, match=r"--classifier nope: m.onnx has no output 'nope' \(its outputs: ids_out, emb"):
        choose_outputs(build(), "m.onnx", classifiers=["nope"])
    with pytest.raises(TrtcalError, match="no float output to score"):
        choose_outputs(build(("ids_out",)), "m.onnx")


def _single(op_tail: list, out_shape: list, opset: int = 17) -> onnx.ModelProto:
    """x [N, 6] -> MatMul(x, W [6, 6]) -> ``op_tail`` nodes -> the output "y"."""
    w = numpy_helper.from_array(np.ones((6, 6), np.float32), "W")
    b = numpy_helper.from_array(np.ones(6, np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "s")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["m"])] + op_tail, "single",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], [w, b, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("tail, shape, expected", [
    ([helper.make_node("Add", ["m", "b"], ["y"])], ["n", 6], "logits"),  # a lone linear [N, C]: logits
    ([helper.make_node("Identity", ["m"], ["y"])], ["n", 6], "logits"),
    ([helper.make_node("LpNormalization", ["m"], ["y"], axis=-1)], ["n", 6], None),  # an embedding
    ([helper.make_node("Relu", ["m"], ["y"])], ["n", 6], None),
    ([helper.make_node("Reshape", ["m", "s"], ["y"])], ["n", 2, 3], None),  # [N, T, C] logits need telling
    ([helper.make_node("Reshape", ["m", "s"], ["r"]), helper.make_node("LogSoftmax", ["r"], ["y"], axis=2)],
     ["n", 2, 3], "logits"),
    ([helper.make_node("Reshape", ["m", "s"], ["r"]), helper.make_node("Softmax", ["r"], ["y"], axis=1)],
     ["n", 2, 3], None),  # not over the last axis
    ([helper.make_node("Softmax", ["m"], ["s0"]), helper.make_node("Identity", ["s0"], ["y"])], ["n", 6],
     "probabilities"),
])
def test_rules_on_single_outputs(tail, shape, expected):
    assert choose_outputs(_single(tail, shape), "m.onnx").classes == {"y": expected}


def test_opset_11_softmax_default_axis_is_the_last_of_rank_2_only():
    two = _single([helper.make_node("Softmax", ["m"], ["y"])], ["n", 6], opset=11)
    assert choose_outputs(two, "m.onnx").classes == {"y": "probabilities"}
    three = _single([helper.make_node("Reshape", ["m", "s"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])],
                    ["n", 2, 3], opset=11)  # axis 1 of [N, 2, 3]: a softmax over 6 values
    assert choose_outputs(three, "m.onnx").classes == {"y": None}


# --------------------------------------------------------------------------- eval


def test_eval_scores_each_output_as_what_it_is(work):
    feeds = {"x": work["x"], "ids": work["ids"]}
    ref = run(onnx.load(str(work["multi"])), feeds)
    got = run(onnx.load(str(work["int8"])), feeds)
    result = evaluate(work["multi"], work["int8"], work["data"], batch_size=40, per_tensor=False, progress=False)
    by_name = {c.name: c.to_dict() for c in result.outputs}
    assert list(by_name) == ["emb", "seq", "box", "prob"]  # the int64 pass-through is not scored
    assert "ids_out" in result.metadata["not_scored"] and result.metadata["samples"] == 96
    for name in by_name:
        assert by_name[name]["sqnr_db"] == pytest.approx(sqnr(ref[name], got[name]), abs=1e-6)
    for name in ("emb", "box"):  # no top-1, no KL for an embedding or a box
        assert "top1_agreement" not in by_name[name] and "kl_mean" not in by_name[name]
    seq = by_name["seq"]  # per position: argmax over C at each (n, t)
    agree = np.mean(ref["seq"].argmax(-1) == got["seq"].argmax(-1))
    assert seq["positions"] == 96 * T and seq["top1_agreement"] == pytest.approx(agree, abs=1e-12)
    assert 0 < agree < 1  # minmax int8 on random weights flips some positions: the number can be wrong
    assert seq["kl_mean"] == pytest.approx(kl_probs(ref["seq"], got["seq"]), rel=1e-6)
    sure = ref["seq"].reshape(-1, C).max(1) / ref["seq"].reshape(-1, C).sum(1) >= 0.5
    hits = ref["seq"].reshape(-1, C).argmax(1) == got["seq"].reshape(-1, C).argmax(1)
    assert seq["sure_samples"] == sure.sum() and seq["top1_agreement_sure"] == pytest.approx(hits[sure].mean())
    prob = by_name["prob"]
    assert prob["positions"] == 96 and prob["classes"] == "probabilities"
    assert prob["top1_agreement"] == pytest.approx(np.mean(ref["prob"].argmax(1) == got["prob"].argmax(1)))
    assert prob["kl_mean"] == pytest.approx(kl_probs(ref["prob"], got["prob"]), rel=1e-6)


def test_eval_cli_json_text_and_choices(work):
    rc, out, err = run_cli("eval", work["multi"], work["int8"], "--data", work["data"], "--no-per-tensor", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [o["name"] for o in doc["outputs"]] == ["emb", "seq", "box", "prob"]
    assert all(o["name"] != "ids_out" for o in doc["outputs"]) and "ids_out" in doc["metadata"]["not_scored"]
    rc, out, err = run_cli("eval", work["multi"], work["int8"], "--data", work["data"], "--no-per-tensor",
                           "--score", "box", "--classifier", "seq", "-q")
    assert rc == 0, err
    rows = [line.split()[0] for line in out.splitlines()[2:] if line and not line.startswith(("seq:", "not "))]
    assert rows == ["seq", "box"]
    assert "seq: class scores per position (288 positions of 96 samples" in out
    assert "not scored: ids_out (int64 (not a float output)), emb (not chosen (--score))" in out
    # 96 samples in one batch of the default 32 is 3 batches; 12 samples are one batch, not "1 batches of 32"
    few = work["tmp"] / "few.npz"
    np.savez(few, x=work["x"][:12], ids=work["ids"][:12])
    rc, out, err = run_cli("eval", work["multi"], work["int8"], "--data", few, "--no-per-tensor", "-q")
    assert rc == 0, err
    assert f"on 12 samples from {few} (12 samples in 1 batch)" in out.splitlines()[0]
    for argv, message in [
        (["--score", "ids_out"], "--score ids_out: output 'ids_out' is int64"),
        (["--classifier", "emb"], None),
        (["--classifier", "nope"], "--classifier nope:"),
        (["--labels", work["tmp"] / "labels.npy", "--classifier", "seq"], "no scored output is [N, C] class scores"),
    ]:
        np.save(work["tmp"] / "labels.npy", np.zeros(96, np.int64))
        rc, out, err = run_cli("eval", work["multi"], work["int8"], "--data", work["data"], "--no-per-tensor",
                               "-q", *argv)
        if message is None:
            assert rc == 0, err
            continue
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_eval_told_classifier_needs_a_class_axis(work, tmp_path):
    m = build(("emb", "box"))  # plus a [N, 1] output, named as class scores: it has no class axis
    m.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
    m.graph.node.append(helper.make_node("ReduceSum", ["box", "ax"], ["one"], keepdims=1))
    m.graph.output.append(helper.make_tensor_value_info("one", TensorProto.FLOAT, ["n", 1]))
    path = tmp_path / "one.onnx"
    onnx.save(m, str(path))
    with pytest.raises(TrtcalError, match=r"--classifier one: its values have shape \[32, 1\], no class axis"):
        evaluate(path, path, work["data"], per_tensor=False, progress=False, classifiers=["one"])


# --------------------------------------------------------------------------- fallback


def test_fallback_objective_leaves_integers_out_and_weighs_outputs_alike(work):
    x, ids = work["x"][:64], work["ids"][:64]
    batches = [{"x": x[:32], "ids": ids[:32]}, {"x": x[32:], "ids": ids[32:]}]
    ref = run(build(), {"x": x, "ids": ids})
    sens, final = analyse(work["multi"], work["cache"], batches, max_float=1)
    got = run(write_qdq(work["multi"], work["cache"]).model, {"x": x, "ids": ids})
    names = ["emb", "seq", "box", "prob"]
    ratios = [np.sum((ref[n].astype(np.float64) - got[n]) ** 2) / np.sum(ref[n].astype(np.float64) ** 2) for n in names]
    assert sens.baseline_db == pytest.approx(-10 * math.log10(np.mean(ratios)), abs=1e-6)
    assert list(sens.outputs) == names and "ids_out" in sens.not_scored and sens.samples == 64
    for n in names:
        assert sens.outputs[n]["sqnr_db"][0] == pytest.approx(sqnr(ref[n], got[n]), abs=1e-6)
    top = next(iter(sens.gains))
    ranges = {e.name: e.amax for e in work["cache"].entries if e.name != top}
    trial = run(write_qdq(work["multi"], ranges).model, {"x": x, "ids": ids})
    trial_ratios = [np.sum((ref[n].astype(np.float64) - trial[n]) ** 2) / np.sum(ref[n].astype(np.float64) ** 2)
                    for n in names]
    assert sens.gains[top] == pytest.approx(10 * math.log10(np.mean(ratios) / np.mean(trial_ratios)), abs=1e-6)
    # kl: the mean of the two class-score outputs' KL divergences (per position for the sequence)
    sens, _ = analyse(work["multi"], work["cache"], batches, max_float=1, metric="kl")
    expected = (kl_probs(ref["seq"], got["seq"]) + kl_probs(ref["prob"], got["prob"])) / 2
    assert sens.kl[0] == pytest.approx(expected, rel=1e-6)
    agree = (np.mean(ref["seq"].argmax(-1) == got["seq"].argmax(-1)) + np.mean(ref["prob"].argmax(1) == got["prob"].argmax(1))) / 2
    assert sens.agreement[0] == pytest.approx(agree)


def test_fallback_embedding_with_integer_pass_through(work):
    cache = work["cache_path"]
    rc, out, err = run_cli("fallback", work["embedding"], "--cache", cache, "--data", work["data"], "--samples", "64",
                           "--max-float", "1", "-o", work["tmp"] / "emb.qdq.onnx", "--json", "-q")
    assert rc == 0, err
    doc = json.loads(out)
    x, ids = work["x"][:64], work["ids"][:64]
    ref = run(build(("ids_out", "emb")), {"x": x, "ids": ids})
    got = run(write_qdq(work["embedding"], work["cache"]).model, {"x": x, "ids": ids})
    assert doc["baseline_sqnr_db"] == pytest.approx(sqnr(ref["emb"], got["emb"]), abs=1e-6)  # not the ids' inf
    assert list(doc["outputs"]) == ["emb"] and "ids_out" in doc["not_scored"] and doc["samples"] == 64
    rc, out, err = run_cli("fallback", work["embedding"], "--cache", cache, "--data", work["data"], "--samples", "64",
                           "--metric", "kl", "-o", work["tmp"] / "kl.qdq.onnx", "-q")
    assert rc == 2 and "metric kl needs a classifier output" in err and "emb [32, 16]" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (work["tmp"] / "kl.qdq.onnx").exists()


def test_fallback_refuses_an_objective_that_is_not_a_number(work):
    cache = work["cache_path"]
    args = ["fallback", work["dead"], "--cache", cache, "--data", work["data"], "--samples", "64", "--max-float", "1",
            "-q", "-o"]
    rc, out, err = run_cli(*args, work["tmp"] / "dead.qdq.onnx")
    assert rc == 2 and "output 'dead': all zeros in FP32 on the 64 evaluation samples" in err, err
    assert len(err.strip().splitlines()) == 1 and not (work["tmp"] / "dead.qdq.onnx").exists()
    rc, out, err = run_cli(*args, work["tmp"] / "alive.qdq.onnx", "--score", "emb")
    assert rc == 0, err


def test_fallback_keeps_one_tensor_quantized(work):
    x, ids = work["x"][:64], work["ids"][:64]
    sens, final = analyse(work["embedding"], work["cache"], [{"x": x, "ids": ids}], max_float=5)
    assert set(sens.gains) == {"x", "h"} and all(g > 0 for g in sens.gains.values())  # both would gain
    assert sens.chosen == [next(iter(sens.gains))] and final.activations  # all in float is no Q/DQ model


def test_softmax_rank_from_its_output_when_inference_cannot_tell():
    """paddle2onnx's OCR recogniser: Softmax(axis=2) of an Add shape inference gives no rank to."""
    graph = helper.make_graph([helper.make_node("Opaque", ["x"], ["a"], domain="vendor"),
                               helper.make_node("Softmax", ["a"], ["y"], axis=2)], "rec",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 48, "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "t", 6625])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12), helper.make_opsetid("vendor", 1)])
    assert choose_outputs(model, "rec.onnx").classes == {"y": "probabilities"}
    model.graph.node[1].attribute[0].i = 1
    assert choose_outputs(model, "rec.onnx").classes == {"y": None}


def test_samples_are_counted_on_the_batch_axis_not_a_state_inputs_axis_0(tmp_path):
    """A state input [2, N, 4] beside x [N, 8]: 20 samples, not 2."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "W2"], ["m"]),
             helper.make_node("ReduceSum", ["state", "axis0"], ["s"], keepdims=0),
             helper.make_node("Add", ["m", "s"], ["y"])]
    graph = helper.make_graph(nodes, "state",
                              [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "n", 4]),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [_init("W1", rng.normal(size=(8, 12))), _init("W2", rng.normal(size=(12, 4))),
                               _init("axis0", np.array([0]))])
    path = tmp_path / "state.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    data = tmp_path / "state.npz"
    state, x = rng.normal(size=(2, 20, 4)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    np.savez(data, state=state, x=x)
    result = evaluate(path, path, data, per_tensor=False, progress=False, batch_axes={"state": 1})
    assert result.metadata["samples"] == 20 and result.outputs[0].samples == 20
    batches = [{"state": state[:, :12], "x": x[:12]}, {"state": state[:, 12:], "x": x[12:]}]
    sens, _ = analyse(path, {"x": float(np.abs(x).max()), "h": 4.0}, batches, max_float=1, batch_axes={"state": 1})
    assert sens.samples == 20
