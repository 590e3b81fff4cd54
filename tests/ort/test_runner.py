"""The ONNX Runtime runner: which tensors it exposes, and what it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtcal.core.errors import TrtcalError
from trtcal.ort.runner import Runner


def save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def vi(name, elem=TensorProto.FLOAT, shape=("N", 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_exposes_every_float_tensor_and_values_match_numpy(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, -2.0, 3.0, -4.0])
    path = save(tmp_path, [
        helper.make_node("Mul", ["x", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=-1),
    ], [vi("x")], [vi("y")], [w])
    runner = Runner(path)
    assert runner.plan.calibrated == ["x", "m", "r", "y"]
    assert runner.plan.skipped == {"s": "not a float tensor"}
    x = np.array([[1, 1, 1, 1], [-1, 0.5, 2, 0]], np.float32)
    got = dict(runner.run({"x": x}))
    m = x * np.array([1, -2, 3, -4], np.float32)
    np.testing.assert_allclose(got["m"], m)
    np.testing.assert_allclose(got["r"], np.maximum(m, 0))
    assert set(got) == {"x", "m", "r", "y"}


def test_refuses_quantized_models(tmp_path):
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    path = save(tmp_path, [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ], [vi("x")], [vi("y")], [s, z])
    with pytest.raises(TrtcalError, match="already quantized \\(DequantizeLinear, QuantizeLinear"):
        Runner(path)


def test_notes_control_flow(tmp_path):
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e")])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    path = save(tmp_path, [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)],
                [vi("x")], [vi("y")], [cond])
    runner = Runner(path)
    assert any("If node 'branch'" in n for n in runner.plan.notes)
    got = dict(runner.run({"x": np.ones((2, 4), np.float32)}))
    assert set(got) == {"x", "y"}


def test_model_that_does_not_load(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 5)
    with pytest.raises(TrtcalError, match="bad.onnx"):
        Runner(bad)


# ---------------------------------------------------------------- feeding real models' inputs

def vad_model(tmp_path):
    """x [N, 4], state [2, N, 128] (samples on axis 1) and a 0-d int64 sample rate sr:
    y = x * sr, s = state * 2 (a model shaped like a streaming voice-activity detector)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    return save(tmp_path, [
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "srf"], ["y"]),
        helper.make_node("Mul", ["state", "two"], ["s"]),
    ], [vi("x"), vi("state", shape=(2, "N", 128)), vi("sr", TensorProto.INT64, ())],
        [vi("y"), vi("s", shape=(2, "N", 128))], [two], name="vad.onnx")


def conv_model(tmp_path, *, normalise: bool = False):
    """x [N, 3, H, W] (dynamic H, W) -> Conv 3x3 to 2 channels -> Relu; with ``normalise``, the
    model scales its input itself first ((x - 127.5) / 128)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 3, 3], rng.normal(size=54).astype(np.float32).tolist())
    inits, nodes, first = [w], [], "x"
    if normalise:
        inits += [helper.make_tensor("mid", TensorProto.FLOAT, [], [127.5]),
                  helper.make_tensor("k", TensorProto.FLOAT, [], [1 / 128])]
        nodes += [helper.make_node("Sub", ["x", "mid"], ["c"]), helper.make_node("Mul", ["c", "k"], ["n"])]
        first = "n"
    nodes += [helper.make_node("Conv", [first, "w"], ["conv"]), helper.make_node("Relu", ["conv"], ["y"])]
    return save(tmp_path, nodes, [vi("x", shape=("N", 3, "H", "W"))], [vi("y", shape=("N", 2, "h", "w"))], inits,
                name="conv_n.onnx" if normalise else "conv.onnx")


def one_line_error(rc, out, err, *words):
    assert rc == 2 and "Traceback" not in err + out and err.count("\n") == 1, (rc, out, err)
    for word in words:
        assert word in err, (word, err)


def test_batch_axis_and_scalar_input_end_to_end(tmp_path):
    import json

    from conftest import run_cli

    model = vad_model(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    state = rng.normal(size=(2, 10, 128)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, state=state, sr=np.array(16000, np.int64))
    out = tmp_path / "c.cache"
    rc, _, err = run_cli("calibrate", model, "--data", tmp_path / "d.npz", "--batch-size", 4, "-o", out, "-q")
    one_line_error(rc, "", err, "x 10 on axis 0, state 2 on axis 0", "--batch-axis")
    assert not out.exists()
    rc, text, err = run_cli("calibrate", model, "--data", tmp_path / "d.npz", "--batch-axis", "state=1",
                            "--batch-size", 4, "--algorithm", "minmax", "-o", out, "-q", "--json")
    assert rc == 0, err
    doc = json.loads(text)
    amax = {t["name"]: t["amax"] for t in doc["tensors"]}
    np.testing.assert_allclose([amax["x"], amax["y"], amax["state"], amax["s"]],
                               [np.abs(x).max(), np.abs(x * 16000).max(), np.abs(state).max(), 2 * np.abs(state).max()],
                               rtol=1e-6)
    report = doc["metadata"]["inputs"]
    assert report["state"]["batch_axis"] == 1
    assert report["state"]["used"] == [{"shape": [2, 4, 128], "batches": 2}, {"shape": [2, 2, 128], "batches": 1}]
    assert report["sr"]["used"] == [{"shape": [], "batches": 3}] and doc["metadata"]["samples"] == 10
    # a folder of .npz batches, each larger than a batch, each with the 0-d sr (an IndexError before)
    folder = tmp_path / "npz"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=x + i, state=state, sr=np.array(8000, np.int64))
    rc, text, err = run_cli("calibrate", model, "--data", folder, "--batch-axis", "state=1", "--batch-size", 4,
                            "--algorithm", "minmax", "-o", tmp_path / "f.cache", "-q", "--json")
    assert rc == 0, err
    doc = json.loads(text)
    assert doc["metadata"]["batches"] == 9 and doc["metadata"]["samples"] == 30
    got = {t["name"]: t["amax"] for t in doc["tensors"]}["y"]
    np.testing.assert_allclose(got, np.abs(np.concatenate([x + i for i in range(3)]) * 8000).max(), rtol=1e-6)
    # the 0-d sr is constant in every batch by nature: no warning about it; state is not
    assert "'sr'" not in err


def test_nonfinite_inputs_stop_the_run_unless_allowed(tmp_path):
    from conftest import run_cli

    model = vad_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    x[150, 2] = np.nan
    state = np.random.default_rng(1).normal(size=(2, 200, 128)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, state=state, sr=np.array(16000, np.int64))
    out = tmp_path / "c.cache"
    args = ("calibrate", model, "--data", tmp_path / "d.npz", "--batch-axis", "state=1", "--batch-size", 50, "-o", out,
            "-q", "--stats", tmp_path / "s.npz")
    one_line_error(*run_cli(*args), "batch 3: input 'x' holds 1 NaN/Inf values", "index (0, 2)", "--allow-nonfinite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "vad.onnx"]  # nothing written
    rc, _, err = run_cli(*args, "--allow-nonfinite")
    assert rc == 0 and out.exists(), err
    lines = [line for line in err.splitlines() if "'x'" in line]
    assert lines == ["warning: input 'x': holds 1 NaN/Inf values in 1 of 4 batches (batch 3); left out of its range"]


def test_warnings_are_summarised_per_input(tmp_path):
    from conftest import run_cli

    model = vad_model(tmp_path)
    folder = tmp_path / "npz"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):  # a zero state in every batch, as a stream starts
        np.savez(folder / f"{i:02d}.npz", x=rng.normal(size=(4, 4)).astype(np.float32),
                 state=np.zeros((2, 4, 128), np.float32), sr=np.array(16000, np.int64))
    rc, _, err = run_cli("calibrate", model, "--data", folder, "--batch-axis", "state=1", "-o", tmp_path / "c.cache",
                         "-q")
    assert rc == 0, err
    about_state = [line for line in err.splitlines() if "input 'state'" in line]
    assert len(about_state) == 1, err  # its finding from the input checks and its threshold's, one line
    assert about_state[0].startswith("warning: input 'state': is constant in 40 of 40 batches (batches 0, 1, 2, 3, 4, "
                                     "...; value 0); is the loader feeding real data?; ")


def test_random_data_with_shapes(tmp_path):
    import json

    from conftest import run_cli

    model = conv_model(tmp_path)
    rc, text, err = run_cli("calibrate", model, "--random", "--shapes", "x=2x3x12x20", "--max-batches", 2,
                            "-o", tmp_path / "c.cache", "-q", "--json")
    assert rc == 0, err
    meta = json.loads(text)["metadata"]
    assert meta["inputs"]["x"]["used"] == [{"shape": [2, 3, 12, 20], "batches": 2}] and meta["batch_size"] == 2
    assert meta["inputs"]["x"]["dynamic_axes"] == [0, 2, 3]  # the model's, for the TensorRT profile
    rc, text, err = run_cli("calibrate", vad_model(tmp_path), "--random", "--batch-axis", "state=1", "--shapes",
                            "x=3x4", "--max-batches", 1, "-o", tmp_path / "v.cache", "-q", "--json")
    assert rc == 0, err
    used = {n: i["used"][0]["shape"] for n, i in json.loads(text)["metadata"]["inputs"].items()}
    assert used == {"x": [3, 4], "state": [2, 3, 128], "sr": []}
    for bad in ("x=0x3x12x20", "x=2x3x-12x20", "x=2x3xtwelvex20", "x=2x3x12"):
        one_line_error(*run_cli("calibrate", model, "--random", "--shapes", bad, "-o", tmp_path / "b.cache"), "--shapes")
    one_line_error(*run_cli("calibrate", model, "--random", "--shapes", "x=2x4x12x20", "-o", tmp_path / "b.cache"),
                   "the model fixes axis 1 of 'x' to 3")
    assert not (tmp_path / "b.cache").exists()


def test_mixed_aspect_images_into_dynamic_hw_model(tmp_path):
    import json

    Image = pytest.importorskip("PIL.Image")
    from conftest import run_cli

    model = conv_model(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 48), (48, 64), (80, 40), (50, 50)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "c.cache"
    for extra in ((), ("--batch-size", 2)):  # the automatic batch size too
        one_line_error(*run_cli("calibrate", model, "--data", folder, "--preprocess", "resize=16,scale=1/255",
                                *extra, "-o", out, "-q"),
                       "1.png: 21x16 (HxW) after --preprocess, but 0.png in the same batch is 16x21",
                       "resize=HxW", "letterbox=HxW", "--batch-size 1")
    assert not out.exists()
    rc, text, err = run_cli("calibrate", model, "--data", folder, "--preprocess", "resize=16,scale=1/255",
                            "--batch-size", 1, "-o", out, "-q", "--json")
    assert rc == 0, err
    used = [u["shape"] for u in json.loads(text)["metadata"]["inputs"]["x"]["used"]]
    assert used == [[1, 3, 16, 21], [1, 3, 21, 16], [1, 3, 16, 32], [1, 3, 16, 16]]
    rc, text, err = run_cli("calibrate", model, "--data", folder, "--preprocess", "letterbox=24x32,scale=1/255",
                            "-o", out, "-q", "--json", "--force")
    assert rc == 0, err
    assert json.loads(text)["metadata"]["inputs"]["x"]["used"] == [{"shape": [4, 3, 24, 32], "batches": 1}]


def test_explicit_batch_size_over_the_memory_budget_warns(tmp_path):
    from conftest import run_cli

    model = conv_model(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-1, 1, (16, 3, 20, 20)).astype(np.float32))
    # exposed per sample: x (3x20x20), conv and y (2x18x18 each), float32
    per_sample = 4 * (3 * 20 * 20 + 2 * 2 * 18 * 18)
    args = ("calibrate", model, "--data", tmp_path / "x.npy", "-o", tmp_path / "c.cache", "-q", "--force")
    rc, _, err = run_cli(*args, "--batch-size", 8, "--memory-budget", 0.05)
    assert rc == 0, err
    assert (f"warning: --batch-size 8: one batch's exposed tensors take about {8 * per_sample / 2**20:.3g} MB "
            f"({per_sample / 2**20:.3g} MB a sample), over --memory-budget 0.05 MB") in err
    rc, _, err = run_cli(*args, "--batch-size", 8, "--memory-budget", 0.2)
    assert rc == 0 and "--memory-budget" not in err, err
    rc, _, err = run_cli(*args, "--memory-budget", 0.05)  # chosen within the budget: no warning
    assert rc == 0 and "--memory-budget" not in err, err


def test_raw_pixels_into_a_model_that_scales_them_itself(tmp_path):
    from conftest import run_cli

    from trtcal.ort.runner import scaled_inputs

    plain, scaling = conv_model(tmp_path), conv_model(tmp_path, normalise=True)
    assert scaled_inputs(onnx.load(str(plain))) == set() and scaled_inputs(onnx.load(str(scaling))) == {"x"}
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 3, 16, 16)).astype(np.float32)  # resized: fractional
    np.save(tmp_path / "x.npy", pixels)
    for model, warned in ((plain, True), (scaling, False)):
        rc, _, err = run_cli("calibrate", model, "--data", tmp_path / "x.npy", "-o", tmp_path / "c.cache", "-q",
                             "--force")
        assert rc == 0 and ("raw (resized) pixels?" in err) == warned, err


def test_onnx_runtime_failure_names_the_shapes(tmp_path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    runner = Runner(save(tmp_path, [helper.make_node("Mul", ["x", "w"], ["y"])], [vi("x", shape=("N", "C"))],
                         [vi("y", shape=("N", "C"))], [w]))
    with pytest.raises(TrtcalError, match=r"ONNX Runtime failed on a batch \(x \[2, 5\]\)"):
        dict(runner.run({"x": np.ones((2, 5), np.float32)}))


def test_data_options_are_the_same_in_every_command_that_takes_data():
    from trtcal.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {}
    for name, parser in sub.choices.items():
        options = {o: a.help for a in parser._actions for o in a.option_strings}
        if "--data" in options and name not in ("build", "report"):
            helps[name] = tuple(options.get(o) for o in ("--batch-axis", "--shapes", "--allow-nonfinite"))
    assert set(helps) >= {"calibrate", "eval", "fallback", "crosscheck"}
    assert all(None not in h for h in helps.values()) and len(set(helps.values())) == 1, helps
