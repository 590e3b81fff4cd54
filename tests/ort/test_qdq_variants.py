"""Q/DQ variants in one model, and cut models, against the models write_qdq writes (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from trtcal import calibrate
from trtcal.onnx.qdq import write_qdq
from trtcal.ort.qdq_variants import QdqVariants
from trtcal.ort.sensitivity import analyse

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"


@pytest.fixture(scope="module")
def setup():
    cache = calibrate(MODEL, EXAMPLES / "fashion_calib.npz", progress=False).cache
    x = np.load(EXAMPLES / "fashion_eval.npz")["images"][:64]
    ranges = {e.name: e.amax for e in cache.entries}
    return cache, ranges, x


def run(model, feeds):
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


def test_switched_variants_equal_written_models(setup):
    _, ranges, x = setup
    full = write_qdq(MODEL, ranges)
    names = [q.name for q in full.activations]
    # activation-only variants: other ranges for two tensors (scales as inputs), and the base
    other = dict(ranges, **{names[0]: ranges[names[0]] * 0.5, names[-1]: ranges[names[-1]] * 2})
    V = QdqVariants(MODEL, ranges)
    vm = V.switched([ranges, other], scales_as_inputs=True)
    for j, variant in enumerate([ranges, other]):
        want = run(write_qdq(MODEL, variant).model, {"images": x})
        got = run(vm.model, {"images": x, **vm.feeds(j)})
        assert all(np.array_equal(want[k], got[k]) for k in want)
    with pytest.raises(Exception, match="different ranges"):
        V.switched([ranges, other])
    # variants that disagree on weights too: the same values, to float rounding
    dropped = {k: v for k, v in ranges.items() if k != names[1]}
    vm = V.switched([ranges, dropped])
    want = run(write_qdq(MODEL, dropped).model, {"images": x})
    got = run(vm.model, {"images": x, **vm.feeds(1)})
    assert all(np.allclose(want[k], got[k], rtol=1e-3, atol=1e-3) for k in want)
    assert not all(np.array_equal(a, b) for a, b in zip(vm.feeds(0).values(), vm.feeds(1).values()))


def test_cut_models_equal_written_models(setup):
    _, ranges, x = setup
    full = write_qdq(MODEL, ranges)
    outputs = [o.name for o in full.model.graph.output]
    V = QdqVariants(MODEL, ranges)
    cuts = {q.name: V.cut({k: v for k, v in ranges.items() if k != q.name}, outputs) for q in full.activations}
    needed = {t for m in cuts.values() for t in m.cut_inputs}
    base = V.base_tensors(full.model, needed, [{"images": x}], lambda m: ort.InferenceSession(
        m.SerializeToString(), providers=["CPUExecutionProvider"]))[0]
    sizes = []
    for name, vm in cuts.items():
        want = run(write_qdq(MODEL, {k: v for k, v in ranges.items() if k != name}).model, {"images": x})
        inputs = {vi.name for vi in vm.model.graph.input}
        got = run(vm.model, {**{t: base[t] for t in vm.cut_inputs}, **({"images": x} if "images" in inputs else {})})
        assert got and all(np.array_equal(want[k], got[k]) for k in got)
        sizes.append(len(vm.model.graph.node))
    assert min(sizes) < max(sizes)  # the later the tensor, the smaller its model


@pytest.mark.parametrize("kwargs", [{}, {"mode": "one-at-a-time"}, {"greedy": True, "max_float": 2},
                                    {"metric": "kl"}])
def test_analyse_same_as_whole_models(setup, kwargs):
    cache, _, x = setup
    batches = [{"images": x[:40]}, {"images": x[40:]}]
    kwargs = {"max_float": 3, **kwargs}
    new, final_new = analyse(MODEL, cache, batches, **kwargs)
    old, final_old = analyse(MODEL, cache, batches, _whole_models=True, **kwargs)
    assert json.dumps(new.to_dict(), sort_keys=True) == json.dumps(old.to_dict(), sort_keys=True)
    assert final_new.model.SerializeToString() == final_old.model.SerializeToString()


def test_small_budget_takes_batches_a_chunk_at_a_time(setup, monkeypatch):
    import trtcal.ort.sensitivity as S

    cache, _, x = setup
    batches = [{"images": x[i:i + 16]} for i in range(0, 64, 16)]
    old, _ = analyse(MODEL, cache, batches, max_float=2, _whole_models=True)
    monkeypatch.setattr(S, "BASE_TENSOR_BUDGET", 1)
    new, _ = analyse(MODEL, cache, batches, max_float=2)
    assert new.gains == old.gains and new.chosen == old.chosen
