"""``trtcal report``: the HTML page's content, and rendering it in headless Chromium where present."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("matplotlib")
    tmp = tmp_path_factory.mktemp("report")
    stats, cache = tmp / "s.npz", tmp / "c.cache"
    rc, _, err = run_cli("calibrate", MODEL, "--data", EXAMPLES / "fashion_calib.npz", "-o", cache, "--stats", stats,
                         "-q")
    assert rc == 0, err
    rc, out, err = run_cli("report", MODEL, "--stats", stats, "--cache", cache, "--int8", MODEL,
                           "--data", EXAMPLES / "fashion_eval.npz", "--max-batches", "2", "-o", tmp / "rep", "-q")
    assert rc == 0, err
    return tmp, (tmp / "rep" / "index.html").read_text(), cache


def test_page_content(report):
    tmp, page, cache = report
    names = re.findall(r"<tr class='[^']*'><td class='name'><a href='#t\d+'>([^<]+)</a>", page)
    import onnx

    model = onnx.load(str(MODEL))
    assert names == [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    # the chosen range is the cache's, printed to 5 significant digits
    lines = dict(line.rsplit(": ", 1) for line in cache.read_text().splitlines()[1:])
    amax = float(np.frombuffer(bytes.fromhex(lines["/relu1/Relu_output_0"])[::-1], np.float32)[0]) * 127
    assert f"{amax:.5g} (cache)" in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == len(names) + 1  # one per tensor and the SQNR chart
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "INT8 vs FP32" in page and "http" not in page.split("<body>")[1].split("data:image")[0]


def test_existing_page_is_not_replaced(report):
    tmp, page, _ = report
    rc, _, err = run_cli("report", MODEL, "--stats", tmp / "s.npz", "-o", tmp / "rep", "--no-plots")
    assert rc == 2 and "index.html" in err
    assert (tmp / "rep" / "index.html").read_text() == page
    rc, _, err = run_cli("report", MODEL, "--stats", tmp / "s.npz", "--int8", MODEL, "-o", tmp / "r2")
    assert rc == 2 and "--int8 and --data go together" in err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (Debian package chromium)")
def test_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    tmp, _, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
                    f"--screenshot={shot}", (tmp / "rep" / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200)
    dark = pixels < 128
    assert dark.mean() > 0.01  # text and tables drawn
    # the SQNR chart's bars (coloured, mid-grey in luminance) fill a block of rows near the top
    grey = (pixels > 60) & (pixels < 200)
    assert grey[:900].mean() > 0.01
