"""Per-tensor range choice (trtcal.ort.range_choice) and ``quantize`` (trtcal.ort.quantize).

The choice is checked against a brute force written in numpy: every candidate amax of a tensor
is applied to its values (computed here from the weights), the consuming MatMul's output is
computed with per-channel max-scaled int8 weights, and the smallest relative error must win.
``quantize`` is checked on the bundled Fashion-MNIST model: what it writes is read back by
independent readers (Q/DQ scales, the cache, the statistics), its held-out summary agrees with
``trtcal eval``'s SQNR of the written model, and at the outputs it is never worse than any single
method applied everywhere, nor better than an exhaustive search over every tensor's candidates.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.core import thresholds
from trtcal.core.histogram import Histogram
from trtcal.onnx.qdq import read_qdq_scales, write_qdq
from trtcal.ort.quantize import quantize
from trtcal.ort.range_choice import CANDIDATES, WEIGHT_FACTORS, choose_ranges, search_weights

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
RNG = np.random.default_rng(7)
W1 = RNG.normal(size=(8, 16)).astype(np.float32)
W2 = (RNG.normal(size=(16, 4)) * np.array([0.05, 1.0, 3.0, 0.3])).astype(np.float32)  # channels of unlike size


def mlp() -> onnx.ModelProto:
    """x [N, 8] -> MatMul W1 -> h0 -> Relu -> h -> MatMul W2 -> y -> Add(y, y) -> out."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "W2"], ["y"]), helper.make_node("Add", ["y", "y"], ["out"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def fq(x, scale):
    """Symmetric int8 fake quantization written out: round half to even, clamp to [-128, 127]."""
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


def rel_err(ref, got):
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))


@pytest.fixture(scope="module")
def mlp_case(tmp_path_factory):
    path = tmp_path_factory.mktemp("choice") / "mlp.onnx"
    onnx.save(mlp(), path)
    x = (RNG.standard_t(3, size=(96, 8)) * 2).astype(np.float32)  # heavy tails: the methods disagree
    h = np.maximum(x @ W1, 0)
    y = h @ W2
    hists = {n: Histogram(name=n).update(v) for n, v in (("x", x), ("h", h), ("y", y))}
    return path, x, h, y, hists


def test_each_tensor_gets_the_candidate_with_the_smallest_layer_output_error(mlp_case):
    path, x, h, y, hists = mlp_case
    batches = [{"x": x[:48]}, {"x": x[48:]}]
    got = choose_ranges(path, hists, batches, ["x", "h", "y"])
    assert got.samples == 96
    w1q = fq(W1, np.abs(W1).max(axis=0) / 127)  # MatMul weights [K, N]: one scale per output column
    w2q = fq(W2, np.abs(W2).max(axis=0) / 127)
    expected = {
        # x and h feed a MatMul: the error of its output; y feeds only an Add: its own error
        "x": lambda a: rel_err(x @ W1, fq(x, a / 127) @ w1q),
        "h": lambda a: rel_err(h @ W2, fq(h, a / 127) @ w2q),
        "y": lambda a: rel_err(y, fq(y, a / 127)),
    }
    for name, error in expected.items():
        amaxes = {label: float(thresholds.compute(m, hists[name], **opts).amax) for label, (m, opts) in CANDIDATES.items()}
        errors = {label: error(a) for label, a in amaxes.items()}
        best = min(errors, key=errors.get)
        c = got.choices[name]
        assert c.amaxes == pytest.approx(amaxes)
        assert c.errors == pytest.approx(errors, rel=1e-3, abs=1e-9)
        assert errors[c.method] == pytest.approx(errors[best], rel=1e-3)  # the winner, up to float32 ties
        assert c.amax == amaxes[c.method]
    assert got.choices["x"].measured_at == ["h0"] and got.choices["y"].measured_at == ["y"]
    assert len({round(e, 12) for e in got.choices["h"].errors.values()}) > 2  # the candidates really differ here


def test_weight_scales_are_searched_per_channel_against_a_brute_force(mlp_case):
    path, x, h, y, hists = mlp_case
    amax = choose_ranges(path, hists, [{"x": x}], ["h"]).choices["h"].amax
    got = search_weights(path, {"h": amax}, [{"x": x}])
    hq = fq(h, amax / 127)
    ref = h @ W2
    s0 = np.abs(W2).max(axis=0) / 127
    want = np.empty(4, np.float32)
    for j in range(4):  # every candidate scale of channel j, its output column's squared error
        options = [np.float32(s0[j])] + [np.float32(np.float32(s0[j]) * np.float32(f)) for f in WEIGHT_FACTORS]
        errors = [np.sum((hq @ fq(W2[:, j], s) - ref[:, j]).astype(np.float64) ** 2) for s in options]
        want[j] = options[int(np.argmin(errors))]
    assert set(got) == {"W2"}  # only the layer whose input has a range
    np.testing.assert_allclose(got["W2"], want, rtol=1e-6)
    assert not np.allclose(want, s0)  # the search moved some channel off the max scale


def test_unsigned_tensors_are_scored_with_256_levels(mlp_case):
    path, x, h, y, hists = mlp_case
    got = choose_ranges(path, hists, [{"x": x}], ["h"], unsigned={"h"})
    c = got.choices["h"]
    assert "onesided" not in c.amaxes  # a symmetric quantizer's method
    w2q = fq(W2, np.abs(W2).max(axis=0) / 127)
    for label, a in c.amaxes.items():
        s = np.float32(a / 255)
        hq = (np.clip(np.rint(h / s), 0, 255) * s).astype(np.float32)
        assert c.errors[label] == pytest.approx(rel_err(h @ W2, hq @ w2q), rel=1e-3, abs=1e-9)


def test_choice_needs_statistics_for_every_tensor(mlp_case):
    path, x, h, y, hists = mlp_case
    from trtcal.core.errors import TrtcalError

    with pytest.raises(TrtcalError, match="no statistics for tensor 'h0'"):
        choose_ranges(path, hists, [{"x": x}], ["h0"])


def test_the_choice_lies_between_the_best_single_method_and_exhaustive_search(mlp_case, tmp_path):
    """On the small MLP, every combination of the candidates of its quantized tensors is scored at
    the output: quantize's pick is at least the best single method and at most the optimum."""
    path, x, h, y, hists = mlp_case
    np.savez(tmp_path / "data.npz", x=x)
    r = quantize(path, tmp_path / "data.npz", eval_data=tmp_path / "data.npz", output=tmp_path / "q.onnx",
                 cache=tmp_path / "q.cache", stats=tmp_path / "q.npz", select_samples=96, progress=False,
                 search_weights=False, weight_rounding="nearest", shift_one_sided=False)  # activation ranges
    # only: the exhaustive search keeps max weights rounded to nearest, the tensors unshifted
    model = mlp()
    ref = x @ W1
    ref = np.maximum(ref, 0) @ W2 * 2

    def sqnr(amaxes):
        from trtcal.ort.runner import cpu_session

        q = write_qdq(model, amaxes, check_onnxruntime=False).model
        got = cpu_session(q, "q", int8_kernels=False).run(None, {"x": x})[0]
        return -10 * math.log10(rel_err(ref, got))

    tensors = list(r.choice.choices)
    assert tensors == ["x", "h"]  # the MatMul inputs: TensorRT's placement leaves the Add alone here
    options = [sorted(set(r.choice.choices[t].amaxes.values())) for t in tensors]
    best = max(sqnr(dict(zip(tensors, combo))) for combo in itertools.product(*options))
    ours = sqnr({t: q for t, q in zip(tensors, (read_qdq_scales(onnx.load(tmp_path / "q.onnx")).amax(t)
                                                 for t in tensors))})
    singles = [sqnr({t: r.choice.choices[t].amaxes.get(label, r.choice.choices[t].amaxes["entropy2"]) for t in tensors})
               for label in CANDIDATES]
    assert max(singles) - 1e-6 <= ours <= best + 1e-6
    assert ours == pytest.approx(r.selection[r.chosen], abs=1e-3)


def test_refine_keeps_only_changes_that_help_and_stays_below_the_optimum(mlp_case, tmp_path):
    path, x, h, y, hists = mlp_case
    np.savez(tmp_path / "data.npz", x=x)
    common = dict(eval_data=tmp_path / "data.npz", select_samples=96, progress=False, search_weights=False,
                  weight_rounding="nearest", shift_one_sided=False)
    plain = quantize(path, tmp_path / "data.npz", output=tmp_path / "a.onnx", cache=tmp_path / "a.cache",
                     stats=tmp_path / "a.npz", **common)
    refined = quantize(path, tmp_path / "data.npz", output=tmp_path / "b.onnx", cache=tmp_path / "b.cache",
                       stats=tmp_path / "b.npz", refine=True, **common)
    start = plain.selection[plain.chosen]
    got = refined.selection[refined.chosen]
    assert got >= start
    assert refined.chosen.endswith(" + refined") == (got > start)
    model = mlp()
    ref = np.maximum(x @ W1, 0) @ W2 * 2
    from trtcal.ort.runner import cpu_session

    def sqnr(amaxes):
        q = write_qdq(model, amaxes, check_onnxruntime=False).model
        return -10 * math.log10(rel_err(ref, cpu_session(q, "q", int8_kernels=False).run(None, {"x": x})[0]))

    tensors = list(refined.choice.choices)
    options = [sorted(set(refined.choice.choices[t].amaxes.values())) for t in tensors]
    assert got <= max(sqnr(dict(zip(tensors, combo))) for combo in itertools.product(*options)) + 1e-6
