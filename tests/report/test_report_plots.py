"""``trtcal report`` on a model with many tensors (issue 17): full plots only for the tensors that
matter unless asked (``--plots``), a small inline histogram for the others, a bounded page, and the
same bytes whether drawn by one process or several (``--jobs``)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from conftest import run_cli

from trtcal.core.histogram import Histogram

BLOCKS = 60  # Mul -> Relu/Tanh, twice per block: 1 + 2 * 60 = 121 tensors


def chain_model(path, blocks: int = BLOCKS) -> list[str]:
    """x [N, 16] through ``blocks`` of Mul by a constant then Relu or Tanh; returns the tensor names
    in graph order (as the report lists them)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, names, prev = [], [], ["x"], "x"
    for i in range(blocks):
        scale = np.full([16], 0.5 + (i % 7) * 0.4, np.float32)
        inits.append(onnx.numpy_helper.from_array(scale, f"s{i}"))
        nodes.append(helper.make_node("Mul", [prev, f"s{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu" if i % 2 else "Tanh", [f"m{i}"], [f"a{i}"]))
        names += [f"m{i}", f"a{i}"]
        prev = f"a{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return names


def pictures(page: str) -> tuple[list[str], list[str]]:
    """(tensors with a full plot, tensors with a small inline histogram), in page order."""
    full, thumb = [], []
    for section in re.findall(r"<section class='tensor' id='t\d+'>(.*?)</section>", page, re.S):
        name = re.search(r"<h3><code>([^<]+)</code>", section).group(1)
        if '<img alt="histogram of ' in section:
            full.append(name)
        if '<svg class="thumb"' in section:
            thumb.append(name)
    return full, thumb


def finding_kinds(page: str) -> dict[str, set[str]]:
    """tensor -> the kinds of its findings, from its section."""
    out = {}
    for section in re.findall(r"<section class='tensor' id='t\d+'>(.*?)</section>", page, re.S):
        name = re.search(r"<h3><code>([^<]+)</code>", section).group(1)
        out[name] = set(re.findall(r"<li>([a-z-]+): ", section))
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    pytest.importorskip("matplotlib")
    tmp = tmp_path_factory.mktemp("chain")
    names = chain_model(tmp / "chain.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp / "data.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    rc, _, err = run_cli("calibrate", tmp / "chain.onnx", "--data", tmp / "data.npz", "--stats", tmp / "s.npz",
                         "-o", tmp / "c.cache", "-q")
    assert rc == 0, err
    rc, out, err = run_cli("report", tmp / "chain.onnx", "--stats", tmp / "s.npz", "--cache", tmp / "c.cache",
                           "-o", tmp / "rep", "-q")
    assert rc == 0, err
    return tmp, names, (tmp / "rep" / "index.html").read_text()


def test_default_page_draws_few_tensors_and_stays_small(chain):
    from trtcal.report.page import AUTO_PLOTS

    tmp, names, page = chain
    full, thumb = pictures(page)
    assert len(names) == 121
    assert sorted(full + thumb) == sorted(names)  # every tensor shows a picture, one kind each
    # findings other than one-sided earn a full plot; this model has none, so the widest spreads fill it
    findings = [name for name, kinds in finding_kinds(page).items()
                if kinds & {"clipped", "all-clipped", "degenerate", "nan-inf"}]
    assert set(findings) <= set(full)
    assert len(full) == max(AUTO_PLOTS, len(findings))
    # the old page drew 121 PNGs of about 55 kB each (9 MB): now a bounded page
    size = len(page.encode())
    assert size < 1_000_000, size
    for png in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        data = base64.b64decode(png)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 30_000
    assert "http" not in page  # self-contained: no external reference, not even an SVG namespace
    assert f"for {len(full)} of 121 tensors" in page


def test_named_plots_draw_exactly_those_tensors(chain):
    tmp, names, _ = chain
    rc, _, err = run_cli("report", tmp / "chain.onnx", "--stats", tmp / "s.npz", "-o", tmp / "named",
                         "--plots", "a3,m1*", "--jobs", "2", "-q")
    assert rc == 0, err
    full, thumb = pictures((tmp / "named" / "index.html").read_text())
    want = ["m1", "a3"] + [f"m{i}" for i in range(10, 20)]
    assert sorted(full) == sorted(want) and full == [n for n in names if n in want]
    assert sorted(thumb) == sorted(set(names) - set(want))


@pytest.mark.parametrize(("args", "message"), [
    (["--plots", "nope"], "--plots: 'nope' names no tensor of the statistics"),
    (["--plots", "a1,,a2"], "--plots: expected auto, all or comma-separated tensor names"),
    (["--plots", ""], "--plots: expected auto, all or comma-separated tensor names"),
    (["--plots", "a1", "--no-plots"], "--plots and --no-plots contradict each other"),
    (["--jobs", "0"], "--jobs"),
    (["--plot-size", "huge"], "--plot-size"),
])
def test_bad_plot_options_fail_in_one_line_before_the_work(chain, args, message):
    tmp, _, _ = chain
    rc, _, err = run_cli("report", tmp / "chain.onnx", "--stats", tmp / "s.npz", "-o", tmp / "bad", *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp / "bad").exists()


def test_no_plots_has_no_pictures(chain):
    tmp, names, _ = chain
    rc, _, err = run_cli("report", tmp / "chain.onnx", "--stats", tmp / "s.npz", "-o", tmp / "none", "--no-plots")
    assert rc == 0, err
    assert pictures((tmp / "none" / "index.html").read_text()) == ([], [])


def _histograms(n: int = 6) -> dict[str, Histogram]:
    """Normal (two-sided) and ReLU'd (one-sided) tensors, and one of only zeros."""
    rng = np.random.default_rng(1)
    out = {}
    for i in range(n):
        h = Histogram(name=f"t{i}")
        x = rng.standard_normal(20000) * (1 + i)
        h.update(np.maximum(x, 0) if i % 2 else x)
        out[f"t{i}"] = h
    out["zeros"] = Histogram(name="zeros")
    out["zeros"].update(np.zeros(100))
    return out


def test_parallel_drawing_gives_the_serial_bytes():
    pytest.importorskip("matplotlib")
    from trtcal.core import thresholds
    from trtcal.report.page import METHODS, all_thresholds
    from trtcal.report.plots import draw_tensors

    hists = _histograms()
    serial, parallel = all_thresholds(hists, jobs=1), all_thresholds(hists, jobs=2)
    assert list(parallel) == list(METHODS) and all(list(parallel[m]) == list(hists) for m in METHODS)
    for m in METHODS:
        direct = thresholds.compute_all(m, hists)  # what each method gives on its own
        for n in hists:
            assert parallel[m][n].amax == serial[m][n].amax == direct[n].amax
            assert serial[m][n].method == direct[n].method and serial[m][n].warnings == direct[n].warnings
            assert set(serial[m][n].diagnostics) == set(direct[n].diagnostics)
    items = [(hists[n], {m: serial[m][n] for m in METHODS}, serial["mse"][n].amax) for n in hists]
    for small in (True, False):
        one = draw_tensors(items, jobs=1, small=small)
        assert draw_tensors(items, jobs=3, small=small) == one
        assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in one)


class _Cache:
    """The part of a cache ``build_report`` reads."""

    def __init__(self, amax: dict[str, float]):
        self._amax = amax

    def __contains__(self, name):
        return name in self._amax

    def amax(self, name):
        return self._amax[name]


def test_auto_draws_findings_and_the_widest_spreads_up_to_the_limit(monkeypatch):
    pytest.importorskip("matplotlib")
    from trtcal.report import page

    monkeypatch.setattr(page, "AUTO_PLOTS", 2)
    hists = _histograms(8)
    # t5 and t7 clipped hard by the cache and "zeros" degenerate: findings, drawn whatever the limit
    report = page.build_report(hists, title="t", cache=_Cache({"t5": 0.2, "t7": 0.5}), jobs=1)
    rows = {r.name: r for r in report.rows}
    assert any(f.startswith("clipped") for f in rows["t5"].findings)
    drawn = [r.name for r in report.rows if r.plot is not None]
    assert drawn == ["t5", "t7", "zeros"]  # over the limit (2): the findings alone
    assert all(r.thumb.startswith('<svg class="thumb"') for r in report.rows if r.plot is None)
    monkeypatch.setattr(page, "AUTO_PLOTS", 5)
    rows = page.build_report(hists, title="t", cache=_Cache({"t5": 0.2, "t7": 0.5}), plots=False).rows
    auto = page.auto_plots(rows)
    assert len(auto) == 5 and {"t5", "t7", "zeros"} <= set(auto)  # two more, by the spread of methods
    assert auto == [r.name for r in rows if r.name in auto]  # in the page's order
