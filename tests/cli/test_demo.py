"""``trtcal demo``: the README's first command, ``trtcal quantize`` on the bundled Fashion-MNIST CNN.

Expected values come from the model's own graph and the bundled data, not from trtcal: the
tensors an ONNX graph holds, which of them are one-sided by construction (Relu outputs and
MaxPool/Flatten of those), the data's own max |x|, and a direct count of the clipped pixels.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"
CALIB = EXAMPLES / "fashion_calib.npz"


def read_cache(path: Path) -> tuple[str, dict[str, float]]:
    lines = path.read_text().splitlines()
    entries = {}
    for line in lines[1:]:
        name, hexval = line.rsplit(": ", 1)
        entries[name] = float(np.frombuffer(bytes.fromhex(hexval)[::-1], np.float32)[0]) * 127
    return lines[0], entries


def one_sided_by_construction(model) -> set[str]:
    found: set[str] = set()
    for node in model.graph.node:  # topological order
        if node.op_type == "Relu" or (node.op_type in ("MaxPool", "Flatten") and node.input[0] in found):
            found.add(node.output[0])
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    rc, out, err = run_cli("demo", "--output-dir", out_dir)
    assert rc == 0, err
    return out_dir, out, err


def test_demo_writes_cache_sidecar_and_stats(demo):
    out_dir, out, _ = demo
    assert sorted(os.listdir(out_dir)) == ["fashion_cnn.cache", "fashion_cnn.cache.trtcal.json", "fashion_cnn.int8.onnx",
                                           "fashion_cnn.int8.onnx.trtcal.json", "fashion_cnn.stats.npz"]
    header, entries = read_cache(out_dir / "fashion_cnn.cache")
    assert header == "TRT-101303-EntropyCalibration2"
    model = onnx.load(str(MODEL))
    tensors = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    assert list(entries) == tensors  # every tensor, in graph order
    side = json.loads((out_dir / "fashion_cnn.cache.trtcal.json").read_text())
    assert side["fake_data"] is False and side["samples"] == 512
    assert "$ trtcal quantize" in out and "$ trtcal cache lint" in out and "no findings" in out
    assert side["algorithm"] == "quantize" and "$ trtcal thresholds" in out
    # the Q/DQ model holds the cache's ranges for the tensors it quantizes; a one-sided tensor shifted
    # into its readers' biases (the sidecar says which) is quantized as <name>_shifted at half its amax
    from trtcal.onnx.qdq import read_qdq_scales

    qdq = read_qdq_scales(onnx.load(out_dir / "fashion_cnn.int8.onnx"))
    shifted = {v["reads_as"]: n for n, v in side["shift"]["tensors"].items()} if side["shift"]["kept"] else {}
    assert shifted  # the two Gemm inputs, ReLU outputs
    assert qdq.names() and all(qdq.amax(n) * (2 if n in shifted else 1) == pytest.approx(entries[shifted.get(n, n)], rel=1e-6)
                               for n in qdq.names())


def test_demo_reports_one_sided_tensors_from_the_graph(demo):
    _, out, _ = demo
    expected = one_sided_by_construction(onnx.load(str(MODEL)))
    assert len(expected) == 6
    line = next(x for x in out.splitlines() if x.strip().startswith("one-sided"))
    listed = set(line.split(" tensors: ", 1)[1].split(", "))
    assert listed == expected
    flagged = {x.split()[-2] for x in out.splitlines() if x.endswith("[one-sided]")}
    assert flagged == expected


def test_demo_input_range_and_clipping_match_the_data(demo):
    out_dir, out, _ = demo
    x = np.load(CALIB)["images"].astype(np.float64)
    # entropy2's row of the thresholds table: its amax, and the share of pixels it clips
    row = next(line for line in out.splitlines() if line.endswith("  images"))
    amax = float(row.split()[0])
    clipped = np.mean(np.abs(x) > amax)
    shown = float(re.search(r"images (\d+\.\d)%", out).group(1))
    assert shown == pytest.approx(100 * clipped, abs=0.5)
    assert 0.1 < clipped < 0.5  # the KL search stops after the background spike: a real finding
    _, entries = read_cache(out_dir / "fashion_cnn.cache")
    assert np.mean(np.abs(x) > entries["images"]) < 0.01  # quantize's range for the input clips almost nothing
    # minmax from the saved statistics is the data's own max |x|, bit for bit
    rc, _, err = run_cli("thresholds", "--stats", out_dir / "fashion_cnn.stats.npz", "--algorithm", "minmax",
                         "-o", out_dir.parent / "minmax.cache")
    assert rc == 0, err
    want = np.float32(np.abs(x).max() / 127)
    line = next(x for x in (out_dir.parent / "minmax.cache").read_text().splitlines() if x.startswith("images:"))
    assert line.split(": ")[1] == format(int(want.view(np.uint32)), "08x")
    said = float(re.search(r"clips (\d+\.\d)% of 'images'", out).group(1))
    assert said == pytest.approx(100 * clipped, abs=0.5)


def test_demo_runs_again_over_its_own_output(demo):
    out_dir, out, _ = demo
    before = (out_dir / "fashion_cnn.cache").read_bytes()
    rc, again, err = run_cli("demo", "--output-dir", out_dir)
    assert rc == 0, err
    assert (out_dir / "fashion_cnn.cache").read_bytes() == before  # deterministic
