"""``trtcal report``: the HTML page's content, and rendering it in headless Chromium where present."""

from __future__ import annotations

import base64
import json
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


# --------------------------------------------------------------------------- quantize's range choice


def _page_json(page: str) -> dict:
    return json.loads(re.search(r"<script type='application/json' id='range-choice-json'>(.*?)</script>", page).group(1))


def _choice_rows(page: str) -> dict[str, list[str]]:
    """The 'choices' table: tensor -> its cells (method, amax, error, entropy2 error, why)."""
    table = page.split("<table id='choices'>")[1].split("</table>")[0]
    rows = {}
    for tr in re.findall(r"<tr class='[^']*'>(.*?)</tr>", table):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr)
        rows[re.sub(r"<[^>]+>", "", cells[0])] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quantized")
    rc, _, err = run_cli("quantize", MODEL, "--data", EXAMPLES / "fashion_calib.npz", "--select-samples", "8",
                         "--eval-samples", "32", "-o", tmp / "q.onnx", "--cache", tmp / "q.cache", "--stats", tmp / "q.npz",
                         "-q")
    assert rc == 0, err
    rc, out, err = run_cli("report", MODEL, "--stats", tmp / "q.npz", "--cache", tmp / "q.cache", "-o", tmp / "rep",
                           "--no-plots", "-q")
    assert rc == 0, err
    assert "with quantize's range choice" in out
    return tmp, (tmp / "rep" / "index.html").read_text()


def test_report_shows_the_range_quantize_chose_per_tensor(quantized):
    from trtcal.cache import read

    tmp, page = quantized
    side = json.loads((tmp / "q.cache.trtcal.json").read_text())["range_choice"]
    cache = read(tmp / "q.cache")
    rows, doc = _choice_rows(page), _page_json(page)
    assert list(rows) == list(side["tensors"]) == list(doc["tensors"])
    name = "images"  # read by /conv1/Conv only
    entry = side["tensors"][name]
    method, amax, error, e2_error, why = rows[name]
    assert method == entry["method"] == doc["tensors"][name]["method"]
    assert amax == f"{cache.amax(name):.5g}"  # the range in the cache, as the summary table prints it
    assert float(error) == pytest.approx(entry["errors"][entry["method"]], rel=1e-3)
    assert float(e2_error) == pytest.approx(entry["errors"]["entropy2"], rel=1e-3)
    if entry["by"] == "layer error":
        assert why == "lowest error at /conv1/Conv_output_0"
    else:
        assert side["chosen"].split(" + ")[0] in why
    scores = page.split("<table id='choice-scores'>")[1].split("</table>")[0]
    assert f"{side['chosen']} &larr; chosen" in scores
    assert doc["scores"] == side["scores"] and doc["chosen"] == side["chosen"]
    assert f"<p>quantize: {entry['method']}, amax {cache.amax(name):.5g}:" in page  # the tensor's own section


def test_report_flags_a_range_edited_since_quantize(quantized):
    tmp, _ = quantized
    overrides = tmp / "o.json"
    overrides.write_text(json.dumps([{"tensor": "images", "amax": 3.0, "reason": "test"}]))
    rc, _, err = run_cli("cache", "edit", tmp / "q.cache", "--overrides", overrides, "-o", tmp / "e.cache")
    assert rc == 0, err  # the sidecar (and its range choice) travels with the edited cache
    rc, _, err = run_cli("report", MODEL, "--stats", tmp / "q.npz", "--cache", tmp / "e.cache", "-o", tmp / "rep2",
                         "--no-plots", "-q")
    assert rc == 0, err
    page = (tmp / "rep2" / "index.html").read_text()
    doc = _page_json(page)["tensors"]
    assert doc["images"]["cache_amax"] == pytest.approx(3.0) and "the cache holds 3 (edited since)" in doc["images"]["why"]
    assert all("edited since" not in t["why"] for n, t in doc.items() if n != "images")
    assert re.search(r"<tr class='finding'><td class='name'><a href='#t\d+'>images</a>", page)


def test_report_reads_the_choice_beside_the_int8_model_without_a_cache(quantized):
    from trtcal.cli.report_cmds import _range_choice

    tmp, _ = quantized
    record, source, steps = _range_choice(None, str(tmp / "q.onnx"))
    assert source == str(tmp / "q.onnx.trtcal.json") and set(record["tensors"]) >= {"images"}
    assert set(steps) >= {"weight_scales", "weight_rounding"}
    assert _range_choice(str(tmp / "q.npz"), None) == (None, "", {})  # no sidecar there


def test_report_without_a_quantize_sidecar_shows_no_choice(report):
    _, page, _ = report
    assert "Ranges chosen by trtcal quantize" not in page and "range-choice-json" not in page


def test_a_malformed_range_choice_is_one_line(quantized):
    tmp, _ = quantized
    bad = tmp / "bad.cache"
    bad.write_bytes((tmp / "q.cache").read_bytes())
    Path(str(bad) + ".trtcal.json").write_text(json.dumps({"range_choice": {"tensors": {"images": {"amax": "x"}}}}))
    rc, _, err = run_cli("report", MODEL, "--stats", tmp / "q.npz", "--cache", bad, "-o", tmp / "rep3", "--no-plots")
    assert rc == 2 and "bad.cache.trtcal.json: range_choice: images: amax" in err and err.count("\n") == 1


def test_report_lists_quantizes_steps_after_the_ranges(quantized):
    tmp, page = quantized
    side = json.loads((tmp / "q.cache.trtcal.json").read_text())
    steps = page.split("<ul id='choice-steps'>")[1].split("</ul>")[0]
    items = re.findall(r"<li>(.*?)</li>", steps)
    assert items[0] == f"weight scales: {side['weight_scales']}"
    assert items[1] == f"weight rounding: {side['weight_rounding']}"
    shift, bias = side["shift"], side["bias_correction"]
    assert items[2].startswith(f"one-sided shift {'kept' if shift['kept'] else 'not kept'} (")
    assert all(name in items[2] for name in shift["tensors"])
    assert items[3].startswith(f"bias correction {'kept' if bias['kept'] else 'not kept'} (")
    if "layers" in bias:
        assert f"{bias['layers']} layers, {bias['channels']} channels" in items[3]
