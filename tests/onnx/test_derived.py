"""Derived histograms (aliases, zero pads) against the same tensors run out of ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

import trtcal
from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram
from trtcal.onnx.derived import Derived, find_derived
from trtcal.ort.runner import Runner


def i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def build(tmp_path, *, negative=False):
    """x -> Conv -> Relu r; r padded three ways into convs (static pads, run-time pads from the
    input's shape, opset-style constant value 0 given), an Add, Reshape, Transpose, Relu output;
    and pads that cannot be derived (value 1, reflect mode) into pooled outputs."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w3")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    inits = [w1, w2, w3, zero, one, i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), i64("z2", [0, 0]),
             i64("eight", [8]), i64("s0", [2]), i64("s1", [4]), i64("shape", [0, -1])]
    div = "Sub" if negative else "Div"  # [8, 8] - 8 = [0, 0]: no; use 7 below for negative
    if negative:
        inits.append(i64("nine", [9]))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Slice", ["xs", "s0", "s1"], ["hw"]),
        helper.make_node(div, ["hw", "nine" if negative else "eight"], ["d"]),  # [1, 1] (or [-1, -1])
        helper.make_node("Concat", ["z2", "d", "z2", "d"], ["dpads"], axis=0),
        helper.make_node("Pad", ["r", "pads"], ["p1"]),
        helper.make_node("Pad", ["r", "dpads", "zero"], ["p2"]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"]),
        helper.make_node("Conv", ["p2", "w3"], ["c3"], pads=[0, 0, 0, 0] if not negative else [2, 2, 2, 2]),
        helper.make_node("Add", ["c2", "c3"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["f"]),
        helper.make_node("Transpose", ["f"], ["t"]),
        helper.make_node("Relu", ["t"], ["y"]),
        helper.make_node("Pad", ["r", "pads", "one"], ["q"]),
        helper.make_node("GlobalAveragePool", ["q"], ["yq"]),
        helper.make_node("Pad", ["r", "pads"], ["e"], mode="reflect"),
        helper.make_node("GlobalAveragePool", ["e"], ["ye"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * 4 if n != "y" else [None, None]) for n in ("y", "yq", "ye")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / ("neg.onnx" if negative else "m.onnx")
    onnx.save(model, str(path))
    x = rng.normal(size=(24, 3, 8, 8)).astype(np.float32)
    x[5:8] *= 4  # a later batch past the first range: power-of-two growth
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    return path, data


def same(derived: Histogram, exposed: Histogram) -> None:
    assert np.array_equal(derived.counts, exposed.counts)
    for slot in ("width", "count", "zeros", "nan", "posinf", "neginf", "min", "max", "bins"):
        assert getattr(derived, slot) == getattr(exposed, slot), slot
    for slot in ("sum", "sumsq", "sumabs"):  # zeros change only the summation order
        assert math.isclose(getattr(derived, slot), getattr(exposed, slot), rel_tol=1e-12, abs_tol=1e-12)


def test_derived_histograms_equal_the_exposed_ones(tmp_path):
    model, data = build(tmp_path)
    derived = trtcal.calibrate(model, data, batch_size=4, progress=False)
    exposed = trtcal.calibrate(model, data, batch_size=4, progress=False, expose_all=True)
    assert derived.metadata["derived"] == {"p1": "r", "p2": "r", "f": "a", "t": "f"}
    assert exposed.metadata["derived"] == {}
    assert list(derived.histograms) == list(exposed.histograms)  # graph order, nothing missing
    for name, h in exposed.histograms.items():
        same(derived.histograms[name], h)
        assert derived.histograms[name].name == name
    assert derived.histograms["p1"].zeros > derived.histograms["r"].zeros  # the pads were counted
    assert derived.cache.to_text() == exposed.cache.to_text()
    # the derived tensors are not run out of ONNX Runtime; the run-time pads tensor is
    outputs = set(Runner(model).output_names)
    assert not outputs & {"p1", "p2", "f", "t"} and {"q", "e", "dpads"} <= outputs


def test_negative_run_time_pads_are_refused_with_the_way_out(tmp_path):
    model, data = build(tmp_path, negative=True)
    with pytest.raises(TrtcalError, match=r"tensor 'p2'.*negative pads.*--expose-all"):
        trtcal.calibrate(model, data, batch_size=4, progress=False)
    result = trtcal.calibrate(model, data, batch_size=4, progress=False, expose_all=True)
    assert "p2" in result.histograms
    code, out, err = run_cli("calibrate", model, "--data", data, "-o", tmp_path / "c.cache", "-q")
    assert code == 2 and "negative pads" in err and "Traceback" not in err
    assert not (tmp_path / "c.cache").exists()


def test_what_is_derived_and_what_is_not():
    def model(nodes, inits=()):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    pads = i64("pads", [1, 0, 0, 1])  # axis 2: one before; axis 3: one after
    axes = i64("axes", [2, -1])
    m = model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"]),
               helper.make_node("Pad", ["x", "neg", ""], ["n"]),
               helper.make_node("Flatten", ["p"], ["f"]),
               helper.make_node("Add", ["f", "n"], ["y"])],
              [pads, axes, i64("neg", [0, 0, -1, 0, 0, 0, 0, 0])])
    found = find_derived(m, ["x", "p", "n", "f", "y"])
    assert found == {"p": Derived("p", "x", "pad", (1, 0, 0, 1), None, (2, -1)), "f": Derived("f", "p", "alias")}
    assert found["p"].padded_zeros((1, 2, 3, 3)) == 2 * 4 * 4 - 18
    assert find_derived(m, ["x", "f", "y"]) == {}  # a source that is not calibrated: nothing to derive from
    dynamic = Derived("p", "x", "pad", None, "pads", None)
    assert dynamic.padded_zeros((2, 3), np.array([1, 0, 0, 2])) == 3 * 5 - 6
    with pytest.raises(TrtcalError, match="4 pads for 1 axes"):
        Derived("p", "x", "pad", (1, 1, 1, 1), None, (0,)).padded_zeros((2, 3))


def test_add_zeros_equals_updating_with_the_zeros():
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=1000) * s for s in (1, 3, 0.5, 9)]
    plain, padded = Histogram(), Histogram()
    for b in batches:
        plain.update(b)
        padded.update(np.concatenate([b, np.zeros(37)]))
    same(plain.copy().add_zeros(37 * 4), padded)
    with pytest.raises(TrtcalError):
        Histogram().add_zeros(-1)
