"""The calibration report: one self-contained HTML page (plots embedded as PNG data URIs).

``build_report`` gathers what the page shows (per tensor: producer, signed range, every
method's threshold, the chosen range, clipped share, one-sided flag, findings; optionally a
per-tensor SQNR evaluation) and ``render`` writes HTML with no external resources, so the file
opens in any browser, offline, wherever it is copied.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

from trtcal.core import thresholds
from trtcal.core.findings import clipped_fraction, find

METHODS = ("entropy2", "minmax", "percentile", "mse", "aciq", "onesided")


@dataclass
class TensorRow:
    name: str
    producer: str
    min: float
    max: float
    amaxes: dict[str, float]
    chosen: float
    chosen_from: str
    clipped: float
    one_sided: bool
    findings: list[str] = field(default_factory=list)
    plot: bytes | None = None


@dataclass
class Report:
    title: str
    rows: list[TensorRow]
    meta: dict
    evaluation: object | None = None  # trtcal.ort.evaluate.Evaluation
    sqnr_plot: bytes | None = None


def build_report(histograms: dict, *, title: str, producers: dict[str, str] | None = None,
                 cache=None, meta: dict | None = None, plots: bool = True, progress=None) -> Report:
    """Compute every method's threshold per tensor and (with ``plots``) draw each tensor."""
    from trtcal.report.plots import tensor_png

    producers = producers or {}
    rows = []
    results_by_method = {m: thresholds.compute_all(m, histograms) for m in METHODS}
    chosen_results = {}
    for name in histograms:
        if cache is not None and name in cache:
            chosen, source = float(cache.amax(name)), "cache"
        else:
            chosen, source = results_by_method["entropy2"][name].amax, "entropy2"
        chosen_results[name] = thresholds.ThresholdResult(chosen, source)
    findings = find(histograms, chosen_results)
    for name, hist in histograms.items():
        results = {m: results_by_method[m][name] for m in METHODS}
        chosen = chosen_results[name]
        row = TensorRow(name, producers.get(name, "?"), hist.min if hist.count else math.nan,
                        hist.max if hist.count else math.nan, {m: r.amax for m, r in results.items()},
                        chosen.amax, chosen.method, clipped_fraction(hist, chosen.amax),
                        bool(hist.one_sided and hist.max > 0),
                        [f"{f.kind}: {f.message}" for f in findings if f.tensor == name])
        if plots:
            row.plot = tensor_png(hist, results, chosen=chosen.amax)
        rows.append(row)
        if progress is not None:
            progress.update()
    return Report(title, rows, meta or {})


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.5g}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
td.name, th.name { text-align: left; font-family: monospace; }
tr.onesided td.name::after { content: " [one-sided]"; color: #b35900; }
tr.finding { background: #fff4e5; }
section.tensor { margin: 2em 0; border-top: 1px solid #ddd; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def render(report: Report) -> str:
    """The report as one HTML document (UTF-8, no external resources)."""
    esc = html.escape
    meta = report.meta
    head_cells = "".join(f"<th>{m}</th>" for m in METHODS)
    lines = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        "<p>" + " &middot; ".join(f"{esc(str(k))}: <code>{esc(str(v))}</code>" for k, v in meta.items()) + "</p>",
    ]
    n_one = sum(r.one_sided for r in report.rows)
    n_find = sum(bool(r.findings) for r in report.rows)
    lines.append(f"<p id='summary'>{len(report.rows)} tensors, {n_one} one-sided, {n_find} with findings. "
                 "The chosen range comes from the cache where it has the tensor, else entropy2. Thresholds are "
                 "amax values (scale = amax / 127).</p>")
    if report.evaluation is not None:
        lines.append(_evaluation_html(report))
    lines.append("<h2>Summary</h2><table id='tensors'><tr><th class='name'>tensor</th><th>producer</th><th>min</th>"
                 f"<th>max</th>{head_cells}<th>chosen</th><th>clipped</th></tr>")
    for i, r in enumerate(report.rows):
        cls = " ".join(c for c in ("onesided" if r.one_sided else "", "finding" if r.findings else "") if c)
        cells = "".join(f"<td>{_num(r.amaxes[m])}</td>" for m in METHODS)
        lines.append(f"<tr class='{cls}'><td class='name'><a href='#t{i}'>{esc(r.name)}</a></td><td>{esc(r.producer)}</td>"
                     f"<td>{_num(r.min)}</td><td>{_num(r.max)}</td>{cells}<td>{_num(r.chosen)} ({r.chosen_from})</td>"
                     f"<td>{100 * r.clipped:.1f}%</td></tr>")
    lines.append("</table>")
    for i, r in enumerate(report.rows):
        lines.append(f"<section class='tensor' id='t{i}'><h3><code>{esc(r.name)}</code> ({esc(r.producer)})</h3>")
        if r.findings:
            lines.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in r.findings) + "</ul>")
        lines.append(_img(r.plot, f"histogram of {r.name}"))
        lines.append("</section>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _evaluation_html(report: Report) -> str:
    esc = html.escape
    ev = report.evaluation
    out = ["<h2>INT8 vs FP32</h2><table id='outputs'><tr><th class='name'>output</th><th>SQNR dB</th>"
           "<th>cosine</th><th>top-1 agreement</th><th>top-1 FP32</th><th>top-1 INT8</th></tr>"]
    for c in ev.outputs:
        d = c.to_dict()

        def pct(k: str, d: dict = d) -> str:
            return f"{100 * d[k]:.2f}%" if k in d else "-"

        out.append(f"<tr><td class='name'>{esc(c.name)}</td><td>{_num(c.sqnr_db)}</td><td>{_num(c.cosine_mean)}</td>"
                   f"<td>{pct('top1_agreement')}</td><td>{pct('top1_reference')}</td><td>{pct('top1_test')}</td></tr>")
    out.append("</table>")
    out.append(_img(report.sqnr_plot, "per-tensor SQNR"))
    return "\n".join(out)
