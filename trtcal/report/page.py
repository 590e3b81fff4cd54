"""The calibration report: one self-contained HTML page (plots embedded as PNG data URIs).

``build_report`` gathers what the page shows (per tensor: producer, signed range, every
method's threshold, the chosen range, clipped share, one-sided flag, findings; optionally a
per-tensor SQNR evaluation, and the range choice ``trtcal quantize`` recorded in its sidecars:
:mod:`trtcal.ort.choice_record`) and ``render`` writes HTML with no external resources, so the
file opens in any browser, offline, wherever it is copied.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field

from trtcal.core import thresholds
from trtcal.core.errors import TrtcalError
from trtcal.core.findings import clipped_fraction, find
from trtcal.report.plots import COLOURS

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
    plot: bytes | None = None  # the full plot (PNG), for the tensors drawn
    thumb: str | None = None  # a small inline SVG, for the others


@dataclass
class ChosenRange:
    """One tensor's range as ``trtcal quantize`` chose it (its sidecar's record)."""

    tensor: str
    method: str | None  # the candidate whose amax was written (None: none is)
    amax: float
    by: str  # "layer error", "outputs" or "refined" (trtcal.ort.choice_record)
    range_set: str  # the range set that won at the outputs, without quantize's suffixes
    per_tensor: str | None  # the candidate with the least error at the consuming layers
    measured_at: list[str]
    error: float | None  # the written candidate's relative error there
    entropy2_error: float | None
    left_float: bool = False
    in_use: float | None = None  # the cache's amax for the tensor, if the page has a cache

    @property
    def differs(self) -> bool:
        """The cache in use holds another range than the one recorded (edited since)."""
        return self.in_use is not None and not math.isclose(self.in_use, self.amax, rel_tol=1e-6)

    @property
    def why(self) -> str:
        if self.by == "layer error":
            at = self.measured_at
            where = ("its own values (no weighted layer reads it)" if at == [self.tensor] else
                     ", ".join(at[:2]) + (f" and {len(at) - 2} more" if len(at) > 2 else ""))
            text = f"lowest error at {where}"
        elif self.by == "outputs":
            text = f"{self.range_set} on every tensor scored best at the outputs (per tensor: {self.per_tensor})"
        elif self.by == "refined":
            text = f"refined at the outputs (per tensor: {self.per_tensor})"
        else:
            text = self.by
        if self.left_float:
            text += "; left in float by the fallback"
        if self.differs:
            text += f"; the cache holds {_num(self.in_use)} (edited since)"
        return text

    def to_dict(self) -> dict:
        out = {"method": self.method, "amax": self.amax, "by": self.by, "per_tensor": self.per_tensor,
               "error": self.error, "entropy2_error": self.entropy2_error, "why": self.why}
        if self.left_float:
            out["float"] = True
        if self.in_use is not None:
            out["cache_amax"] = self.in_use
        return out


@dataclass
class RangeChoice:
    """The range choice ``trtcal quantize`` recorded: the range set that won, each set's output
    SQNR on the selection samples, and every tensor's :class:`ChosenRange`."""

    source: str  # the sidecar it was read from
    chosen: str
    samples: int | None
    scores: dict[str, float]
    tensors: list[ChosenRange]

    def to_dict(self) -> dict:
        return {"source": self.source, "chosen": self.chosen, "samples": self.samples,
                "scores": {k: _json_float(v) for k, v in self.scores.items()},
                "tensors": {t.tensor: {k: _json_float(v) for k, v in t.to_dict().items()} for t in self.tensors}}


def read_range_choice(record: dict, source: str, cache=None) -> RangeChoice:
    """The range choice in ``record`` (a sidecar's ``range_choice``, from ``source``); ``cache``:
    the ranges the page shows, to flag tensors whose range was changed since."""
    from trtcal.ort.choice_record import label_parts

    def bad(what: str) -> TrtcalError:
        return TrtcalError(f"{source}: range_choice: {what}")

    def number(x, what: str) -> float | None:
        if x is None:
            return None
        try:
            return float(x)  # "nan", "inf" as written for JSON too
        except (TypeError, ValueError):
            raise bad(f"{what}: expected a number, got {x!r}") from None

    if not isinstance(record, dict) or not isinstance(record.get("tensors"), dict):
        raise bad("expected an object with a 'tensors' object")
    chosen = str(record.get("chosen", "?"))
    range_set, _steps = label_parts(chosen)  # quantize appends its steps as " + step"
    scores = record.get("scores") or {}
    if not isinstance(scores, dict):
        raise bad("'scores' is not an object")
    rows = []
    for name, e in record["tensors"].items():
        if not isinstance(e, dict) or number(e.get("amax"), f"{name}: amax") is None:
            raise bad(f"{name}: expected an object with an amax")
        errors = e.get("errors") or {}
        if not isinstance(errors, dict):
            raise bad(f"{name}: 'errors' is not an object")
        method = e.get("method")
        at = e.get("measured_at") or []
        rows.append(ChosenRange(
            str(name), None if method is None else str(method), number(e["amax"], f"{name}: amax"),
            str(e.get("by", "?")), range_set, e.get("per_tensor"), [str(a) for a in at] if isinstance(at, list) else [],
            number(errors.get(method), f"{name}: error") if method is not None else None,
            number(errors.get("entropy2"), f"{name}: entropy2 error"), bool(e.get("float")),
            float(cache.amax(name)) if cache is not None and name in cache else None))
    samples = record.get("samples")
    return RangeChoice(source, chosen, samples if isinstance(samples, int) else None,
                       {str(k): number(v, f"score of {k}") for k, v in scores.items()}, rows)


@dataclass
class Report:
    title: str
    rows: list[TensorRow]
    meta: dict
    evaluation: object | None = None  # trtcal.ort.evaluate.Evaluation
    sqnr_plot: bytes | None = None
    choice: RangeChoice | None = None  # what trtcal quantize chose per tensor, and why
    steps: dict = field(default_factory=dict)  # trtcal quantize's records of its steps after the ranges
    plots: str = "auto"  # which tensors got a full plot: "auto", "all", "named", "none"


#: ``--plots auto`` draws the tensors with findings (other than one-sided) and fills up to this
#: many with those whose methods disagree most (a model this small gets every tensor drawn).
AUTO_PLOTS = 16

#: Findings that earn a tensor its full plot under ``--plots auto`` (one-sided alone does not:
#: half the tensors of a ReLU network are).
PLOTTED_FINDINGS = ("nan-inf", "degenerate", "all-clipped", "clipped")


def match_tensors(names, patterns) -> list[str]:
    """The tensors among ``names`` that ``patterns`` (exact names or globs) name, in ``names``'
    order; a pattern that names none is a one-line error."""
    from fnmatch import fnmatchcase

    names = list(names)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatchcase(n, pattern)]
        if not hits:
            near = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            raise TrtcalError(f"--plots: {pattern!r} names no tensor of the statistics ({len(names)} tensors: {near})")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def auto_plots(rows: list[TensorRow], choice: RangeChoice | None = None, limit: int | None = None) -> list[str]:
    """The tensors ``--plots auto`` draws: every tensor with a finding other than one-sided, every
    tensor whose range was edited since ``trtcal quantize`` chose it, then, up to ``limit`` in all,
    those whose methods' thresholds spread widest (max / min amax: where the choice matters)."""
    limit = AUTO_PLOTS if limit is None else limit
    edited = {c.tensor for c in choice.tensors if c.differs} if choice is not None else set()
    must = [r.name for r in rows
            if r.name in edited or any(f.split(":", 1)[0] in PLOTTED_FINDINGS for f in r.findings)]

    def spread(r: TensorRow) -> float:
        v = [a for a in (*r.amaxes.values(), r.chosen) if a is not None and math.isfinite(a) and a > 0]
        return max(v) / min(v) if v else 0.0

    taken = set(must)
    rest = sorted((r for r in rows if r.name not in taken), key=spread, reverse=True)
    more = [r.name for r in rest[:max(0, limit - len(must))]]
    wanted = taken | set(more)
    return [r.name for r in rows if r.name in wanted]


def _methods_for(chunk: dict) -> dict:
    """Every method of :data:`METHODS` on the tensors of ``chunk``. ``onesided`` gives a tensor
    that is not one-sided entropy2's result unchanged (its contract), so it runs only on one-sided
    tensors here and the others reuse entropy2's search instead of repeating it (a third of the
    thresholds' time on YOLOv8n); the tests hold the results to ``compute_all("onesided")``."""
    out = {m: thresholds.compute_all(m, chunk) for m in METHODS if m != "onesided"}
    one_sided = thresholds.compute_all("onesided", {n: h for n, h in chunk.items() if h.min >= 0 and h.max > 0})
    e2 = out["entropy2"]
    out["onesided"] = {n: one_sided[n] if n in one_sided else thresholds.ThresholdResult(
        e2[n].amax, "onesided", e2[n].bits, False, dict(e2[n].diagnostics, chosen="entropy2", one_sided=False),
        e2[n].warnings) for n in chunk}
    return out


def all_thresholds(histograms: dict, *, jobs: int = 1) -> dict[str, dict]:
    """method -> tensor -> ThresholdResult for every method of :data:`METHODS`, by ``jobs``
    processes (each takes whole tensors: the results are those computed one by one)."""
    from trtcal.report.parallel import pool_map

    names = list(histograms)
    parts = max(1, min(len(names), 2 * jobs if jobs > 1 else 1))
    chunks = [{n: histograms[n] for n in names[i::parts]} for i in range(parts)]
    merged: dict[str, dict] = {m: {} for m in METHODS}
    for part in pool_map(_methods_for, chunks, jobs=jobs):
        for m in METHODS:
            merged[m].update(part[m])
    return {m: {n: merged[m][n] for n in names} for m in METHODS}


def build_report(histograms: dict, *, title: str, producers: dict[str, str] | None = None,
                 cache=None, meta: dict | None = None, plots: bool = True, progress=None,
                 range_choice: dict | None = None, range_choice_source: str = "", quantize_steps: dict | None = None,
                 draw: str | list[str] = "auto", jobs: int | None = None, small: bool = True) -> Report:
    """Compute every method's threshold per tensor and (with ``plots``) draw the tensors ``draw``
    asks for: ``"auto"`` (:func:`auto_plots`), ``"all"``, or names and globs
    (:func:`match_tensors`); every other tensor gets a small inline SVG of its histogram and
    thresholds (:func:`~trtcal.report.plots.tensor_svg`). ``jobs``: processes for the
    thresholds and the plots (default: the CPUs, at most 8). ``small``: the report's plot size
    (False: the size ``trtcal plot`` draws). ``range_choice``: the record ``trtcal quantize``
    keeps in its sidecars (read from ``range_choice_source``), shown per tensor; ``quantize_steps``:
    that sidecar's records of the steps after the ranges (weights, shift, bias correction)."""
    from trtcal.report.parallel import default_jobs

    jobs = default_jobs() if jobs is None else jobs
    named = None if isinstance(draw, str) else match_tensors(histograms, draw)
    if isinstance(draw, str) and draw not in ("auto", "all"):
        raise TrtcalError(f"--plots: expected auto, all or tensor names, got {draw!r}")
    producers = producers or {}
    rows = []
    results_by_method = all_thresholds(histograms, jobs=jobs)
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
        rows.append(TensorRow(name, producers.get(name, "?"), hist.min if hist.count else math.nan,
                              hist.max if hist.count else math.nan, {m: r.amax for m, r in results.items()},
                              chosen.amax, chosen.method, clipped_fraction(hist, chosen.amax),
                              bool(hist.one_sided and hist.max > 0),
                              [f"{f.kind}: {f.message}" for f in findings if f.tensor == name]))
    choice = None if range_choice is None else read_range_choice(range_choice, range_choice_source, cache)
    report = Report(title, rows, meta or {}, choice=choice, steps=dict(quantize_steps or {}), plots="none")
    if not plots:
        return report
    from trtcal.report.plots import draw_tensors, tensor_svg

    wanted = named if named is not None else list(histograms) if draw == "all" else auto_plots(rows, choice)
    report.plots = "named" if named is not None else draw
    if progress is not None and getattr(progress, "total", 0) is None:
        progress.total = len(wanted)
    by_name = {r.name: r for r in rows}
    pngs = draw_tensors([(histograms[n], {m: results_by_method[m][n] for m in METHODS}, by_name[n].chosen)
                         for n in wanted], jobs=jobs, small=small, progress=progress)
    for n, png in zip(wanted, pngs):
        by_name[n].plot = png
    for r in rows:
        if r.plot is None:
            r.thumb = tensor_svg(histograms[r.name], r.amaxes, chosen=r.chosen)
    return report


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _json_float(x):
    """JSON has no NaN/Inf: as strings, as the CLI's JSON writes them."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else "inf" if x > 0 else "-inf"
    return x


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
td.why, th.why { text-align: left; }
tr.onesided td.name::after { content: " [one-sided]"; color: #b35900; }
tr.finding { background: #fff4e5; }
section.tensor { margin: 2em 0; border-top: 1px solid #ddd; }
img { max-width: 100%; }
svg.thumb { display: block; }
span.key { display: inline-block; width: 1.5em; border-top: 2px dashed; margin: 0 3px 3px 8px; }
p.note { color: #555; font-size: 13px; }
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
    plotted = sum(r.plot is not None for r in report.rows)
    if report.plots != "none" and plotted < len(report.rows):
        which = {"auto": "those with findings other than one-sided and those whose methods disagree most",
                 "named": "those named by --plots", "all": "all"}.get(report.plots, report.plots)
        keys = "".join(f"<span class='key' style='border-color:{COLOURS[i % len(COLOURS)]}'></span>{m}"
                       for i, m in enumerate(METHODS))
        lines.append(f"<p id='plots' class='note'>Full plots (histogram, every threshold, entropy2's KL curve) for "
                     f"{plotted} of {len(report.rows)} tensors: {which}; <code>--plots all</code> or "
                     "<code>--plots NAME,GLOB...</code> draws others. The rest show a small |x| histogram (log "
                     f"counts) with the thresholds:{keys}<span class='key' style='border:0;border-top:2px solid #000'>"
                     "</span>chosen (hover a line for its value).</p>")
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
    chosen = {}
    if report.choice is not None:
        lines.append(_choice_html(report))
        chosen = {c.tensor: c for c in report.choice.tensors}
    for i, r in enumerate(report.rows):
        lines.append(f"<section class='tensor' id='t{i}'><h3><code>{esc(r.name)}</code> ({esc(r.producer)})</h3>")
        if r.name in chosen:
            c = chosen[r.name]
            lines.append(f"<p>quantize: {esc(c.method or '-')}, amax {_num(c.amax)}: {esc(c.why)}</p>")
        if r.findings:
            lines.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in r.findings) + "</ul>")
        if r.plot is not None:
            lines.append(_img(r.plot, f"histogram of {r.name}"))
        elif r.thumb is not None:
            lines.append(r.thumb)
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


def _steps_lines(steps: dict) -> list[str]:
    """One line per step ``trtcal quantize`` recorded after the ranges (its sidecar's records)."""
    lines = []
    if "weight_scales" in steps:
        lines.append(f"weight scales: {steps['weight_scales']}")
    if "weight_rounding" in steps:
        lines.append(f"weight rounding: {steps['weight_rounding']}")
    shift = steps.get("shift")
    if isinstance(shift, dict):
        names = ", ".join(shift.get("tensors") or {})
        before, after = (shift.get("selection_sqnr_db") or [math.nan, math.nan])[:2]
        lines.append(f"one-sided shift {'kept' if shift.get('kept') else 'not kept'} ({names}): output SQNR "
                     f"{_num(before)} -> {_num(after)} dB on the selection samples")
    bias = steps.get("bias_correction")
    if isinstance(bias, dict):
        judged = bias.get("sqnr_db") or {}
        what = (f"{bias.get('layers', 0)} layers, {bias.get('channels', 0)} channels" if "layers" in bias
                else bias.get("reason", ""))
        on = (f"; judged on {bias['judged_on']}: {_num(judged.get('before', math.nan))} -> "
              f"{_num(judged.get('after', math.nan))} dB") if bias.get("judged_on") and judged else ""
        lines.append(f"bias correction {'kept' if bias.get('kept') else 'not kept'} ({what}){on}")
    return lines


def _choice_html(report: Report) -> str:
    """The range choice trtcal quantize recorded: each range set's output SQNR, every tensor's
    chosen range and why, and the same as JSON (``<script id='range-choice-json'>``)."""
    esc = html.escape
    ch = report.choice
    anchor = {r.name: i for i, r in enumerate(report.rows)}
    samples = f" on {ch.samples} calibration samples" if ch.samples else ""
    out = ["<h2>Ranges chosen by trtcal quantize</h2>",
           f"<p>From <code>{esc(ch.source)}</code>: <code>{esc(ch.chosen)}</code>. Each tensor's candidates were "
           "scored by the relative error (noise / signal power) they cause at the layers that read it; the range "
           f"sets by the model's output SQNR{samples}:</p>",
           "<table id='choice-scores'><tr><th class='name'>ranges</th><th>output SQNR dB</th></tr>"]
    for label, db in sorted(ch.scores.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf):
        mark = " &larr; chosen" if label == ch.chosen else ""
        out.append(f"<tr><td class='name'>{esc(label)}{mark}</td><td>{_num(db)}</td></tr>")
    out.append("</table>")
    steps = _steps_lines(report.steps)
    if steps:
        out.append("<p>After the ranges (in the Q/DQ model only; a TensorRT &lt;= 10 cache holds the ranges):</p>"
                   "<ul id='choice-steps'>" + "".join(f"<li>{esc(line)}</li>" for line in steps) + "</ul>")
    out.append("<table id='choices'><tr><th class='name'>tensor</th><th>method</th><th>amax</th><th>error</th>"
               "<th>entropy2 error</th><th class='why'>why</th></tr>")
    for c in ch.tensors:
        name = esc(c.tensor)
        link = f"<a href='#t{anchor[c.tensor]}'>{name}</a>" if c.tensor in anchor else name
        out.append(f"<tr class='{'finding' if c.differs else ''}'><td class='name'>{link}</td>"
                   f"<td>{esc(c.method or '-')}</td><td>{_num(c.amax)}</td><td>{_num(c.error)}</td>"
                   f"<td>{_num(c.entropy2_error)}</td><td class='why'>{esc(c.why)}</td></tr>")
    out.append("</table>")
    data = json.dumps(ch.to_dict(), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    out.append(f"<script type='application/json' id='range-choice-json'>{data}</script>")
    return "\n".join(out)
