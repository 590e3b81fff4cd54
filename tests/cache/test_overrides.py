"""Overrides files: the schema, its errors, resolution against names, and ``cache edit --overrides``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from trtcal.cache import overrides as ovr
from trtcal.core.errors import TrtcalError

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
TINY_CACHE = EXAMPLES / "tiny_cnn.cache"

YAML = """\
version: 1
overrides:
  - tensor: images
    amax: 2.5
    reason: keep bright pixels
  - pattern: "/relu*"
    min: 0
    max: 6
    reason: ReLU6
  - tensor: logits
    scale: 0.5
    bits: 4
    reason: coarse logits
"""


def hexscale(amax: float) -> str:
    return format(int(np.float32(amax / 127).view(np.uint32)), "x")


def test_yaml_and_json_give_the_same_entries():
    from_yaml = ovr.parse(YAML, "o.yaml")
    doc = {"version": 1, "overrides": [
        {"tensor": "images", "amax": 2.5, "reason": "keep bright pixels"},
        {"pattern": "/relu*", "min": 0, "max": 6, "reason": "ReLU6"},
        {"tensor": "logits", "scale": 0.5, "bits": 4, "reason": "coarse logits"}]}
    assert ovr.parse(json.dumps(doc), "o.json") == from_yaml
    assert ovr.parse(json.dumps(doc["overrides"]), "o.json") == from_yaml  # a bare list
    images, relu, logits = from_yaml
    assert (images.low, images.high, images.symmetric) == (-2.5, 2.5, True)
    assert (relu.low, relu.high, relu.symmetric, relu.is_pattern) == (0.0, 6.0, False, True)
    assert logits.amax == 0.5 * 7 and logits.bits == 4  # qmax of 4 bits is 7


@pytest.mark.parametrize("entry, message", [
    ({"tensor": "a", "amax": 1.0}, "needs a reason"),
    ({"tensor": "a", "pattern": "b*", "amax": 1.0, "reason": "r"}, "exactly one of tensor"),
    ({"amax": 1.0, "reason": "r"}, "exactly one of tensor"),
    ({"tensor": "a", "amax": 1.0, "scale": 0.1, "reason": "r"}, "exactly one of amax, scale"),
    ({"tensor": "a", "reason": "r"}, "exactly one of amax, scale"),
    ({"tensor": "a", "min": 0.0, "reason": "r"}, "min and max go together"),
    ({"tensor": "a", "min": 2.0, "max": 1.0, "reason": "r"}, "need min < max"),
    ({"tensor": "a", "min": 1.0, "max": 2.0, "reason": "r"}, "0 inside"),
    ({"tensor": "a", "amax": 0, "reason": "r"}, "amax must be > 0"),
    ({"tensor": "a", "amax": "big", "reason": "r"}, "finite number"),
    ({"tensor": "a", "amax": 1.0, "bits": 1, "reason": "r"}, "bits must be an integer from 2 to 16"),
    ({"tensor": "a", "amax": 1.0, "reason": "r", "colour": 1}, "unknown key(s) colour"),
    ("just a string", "expected a mapping"),
])
def test_bad_entries_name_the_file_and_the_entry(entry, message):
    with pytest.raises(TrtcalError) as err:
        ovr.parse(json.dumps({"overrides": [{"tensor": "ok", "amax": 1, "reason": "fine"}, entry]}), "o.json")
    assert str(err.value).startswith("o.json: override 2") and message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("version: 2\noverrides: []\n", "schema version 2"),
    ("overrides: []\n", "no overrides"),
    ("overrides:\n  - tensor: a\n   amax: 1\n", "o.yaml:3: not valid YAML"),
    ("{\"overrides\": [}", "o.json:1: not valid JSON"),
    ("colour: red\n", "unknown top-level key"),
])
def test_bad_documents(text, message):
    name = "o.json" if text.startswith("{") else "o.yaml"
    with pytest.raises(TrtcalError, match=message.replace("(", r"\(")):
        ovr.parse(text, name)


def test_resolve_symmetrizes_counts_lost_codes_and_reports_repeats():
    entries = ovr.parse(json.dumps([
        {"pattern": "relu*", "min": 0, "max": 6, "reason": "ReLU6"},
        {"tensor": "relu2", "min": -1, "max": 6, "reason": "leaky"},
        {"tensor": "conv", "amax": 3, "reason": "r"}]), "o.json")
    applied, warnings = ovr.resolve(entries, ["conv", "relu1", "relu2"])
    assert list(applied) == ["conv", "relu1", "relu2"]  # the target's order
    assert applied["relu1"].amax == 6 and applied["relu1"].codes_lost == 127  # codes -127..-1
    # [-1, 6] on a step of 6/127: codes -21..127 reached, 106 of 255 lost
    assert applied["relu2"].codes_lost == 106 and applied["relu2"].replaced == (1,)
    assert applied["conv"].codes_lost == 0
    assert any("'relu2'" in w and "replaces override 1" in w for w in warnings)
    assert sum("symmetrized" in w for w in warnings) == 3
    asym, warnings = ovr.resolve(entries[:1], ["relu1"], symmetric=False)
    assert (asym["relu1"].low, asym["relu1"].high, warnings) == (0.0, 6.0, [])
    for missing in ([{"tensor": "nope", "amax": 1, "reason": "r"}], [{"pattern": "x*", "amax": 1, "reason": "r"}]):
        with pytest.raises(TrtcalError, match="override 1 .* names no tensor of the target"):
            ovr.resolve(ovr.parse(json.dumps(missing), "o.json"), ["conv"])


def test_cache_edit_with_overrides(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("overrides:\n  - tensor: images\n    amax: 2.5\n    reason: keep bright pixels\n"
                    "  - pattern: \"/conv*/Conv_output_0\"\n    min: 0\n    max: 6\n    reason: ReLU6 follows\n")
    out = tmp_path / "out.cache"
    rc, stdout, err = run_cli("cache", "edit", TINY_CACHE, "--overrides", path, "-o", out)
    assert rc == 0, err
    lines = dict(line.rsplit(": ", 1) for line in out.read_text().splitlines()[1:])
    assert lines["images"] == hexscale(2.5)
    assert lines["/conv1/Conv_output_0"] == hexscale(6.0)
    assert "symmetrized" in err and "keep bright pixels" in stdout
    side = json.loads((tmp_path / "out.cache.trtcal.json").read_text())
    assert {a["tensor"]: a["reason"] for a in side["overrides"]["applied"]}["images"] == "keep bright pixels"
    # bad: an override naming nothing, and a YAML error: exit 2, one line, nothing written
    path.write_text("overrides:\n  - tensor: ghost\n    amax: 1\n    reason: r\n")
    rc, _, err = run_cli("cache", "edit", TINY_CACHE, "--overrides", path, "-o", tmp_path / "new.cache")
    assert rc == 2 and "'ghost'" in err and "names no tensor of the cache" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new.cache").exists() and not (tmp_path / "new.cache.trtcal.json").exists()
    rc, _, err = run_cli("cache", "edit", TINY_CACHE, "--overrides", path, "--allow-new", "-o", tmp_path / "new.cache")
    assert rc == 0 and "ghost: " + hexscale(1.0) in (tmp_path / "new.cache").read_text()


def test_qdq_with_overrides(tmp_path):
    import onnx
    from onnx import numpy_helper

    from trtcal.onnx.qdq import read_qdq_scales

    model = EXAMPLES / "fashion_cnn.onnx"
    stats = tmp_path / "s.npz"
    rc, _, err = run_cli("calibrate", model, "--data", EXAMPLES / "fashion_calib.npz", "-o", tmp_path / "c.cache",
                         "--stats", stats, "-q")
    assert rc == 0, err
    path = tmp_path / "o.json"
    path.write_text(json.dumps([{"tensor": "images", "amax": 2.5, "reason": "all pixels"},
                                {"tensor": "/pool1/MaxPool_output_0", "min": 0, "max": 3.0, "reason": "ReLU"}]))
    out = tmp_path / "trt.onnx"
    rc, _, err = run_cli("qdq", model, "--cache", tmp_path / "c.cache", "--overrides", path, "-o", out)
    assert rc == 0, err
    scales = read_qdq_scales(onnx.load(str(out)))
    assert scales.entry("images").hex == hexscale(2.5)
    assert scales.entry("/pool1/MaxPool_output_0").hex == hexscale(3.0)  # symmetrized for TensorRT
    assert "symmetrized" in err and "127 of 255 codes" in err
    # ONNX Runtime keeps the one-sided override as uint8 over [0, 3] (scale 3/255, zero point 0)
    out = tmp_path / "ort.onnx"
    rc, _, err = run_cli("qdq", model, "--stats", stats, "--overrides", path, "--target", "onnxruntime", "-o", out)
    assert rc == 0, err
    m = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "/pool1/MaxPool_output_0")
    assert inits[q.input[2]].dtype == np.uint8 and inits[q.input[2]] == 0
    assert inits[q.input[1]] == np.float32(3.0 / 255)
    path.write_text(json.dumps([{"pattern": "/nothing/*", "amax": 1, "reason": "r"}]))
    rc, _, err = run_cli("qdq", model, "--cache", tmp_path / "c.cache", "--overrides", path, "-o", tmp_path / "x.onnx")
    assert rc == 2 and "names no tensor" in err and not (tmp_path / "x.onnx").exists()
