"""``trtcal report``: one HTML page that shows why every range is what it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtcal.cli.args.data import DataArgs
from trtcal.cli.args.numbers import Bounded
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.plot import PlotArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command
from trtcal.core.errors import TrtcalError

STATS = StatsArgs()
DATA = DataArgs("evaluation data for --int8", labels=True)
PLOT = PlotArgs()
JOBS = Bounded(int, 1, 256)
OUTPUT = OutputArgs("output folder (default %(default)s)", default="report", quiet=True, json=False)


def cmd_report(args: argparse.Namespace) -> int:
    """an HTML page with every tensor's histogram, thresholds and findings

    Write OUT/index.html: a summary table (every method's threshold per tensor, the chosen
    range, clipped share, one-sided flag, findings) and per tensor its |x| histogram with the
    thresholds and entropy2's KL curve: in full for the tensors with findings other than
    one-sided, then those whose methods disagree most, 16 in all unless more have findings
    (--plots all or --plots NAME,GLOB for others), as a small histogram with the thresholds for
    the rest. With --int8 and --data, the INT8 model's agreement with FP32 and per-tensor SQNR. When --cache (else --int8) was written by trtcal quantize, its
    .trtcal.json sidecar's range choice too: per tensor the method chosen, its amax, its error and
    entropy2's at the consuming layers, and why; and each range set's output SQNR. The page embeds
    its pictures: it opens in any browser, offline."""
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.core.stats import load_stats
    from trtcal.onnx.model import load_model, producers
    from trtcal.report.page import build_report, render

    output = OUTPUT.parse(args)
    out_dir = Path(output.path)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrtcalError(f"{out_dir}: exists and is not a folder")
    page = out_dir / "index.html"
    if out_dir.is_dir():
        fileio.check_output(page, force=output.force)
    if bool(args.int8) != bool(args.data):
        raise TrtcalError("--int8 and --data go together (the evaluation runs both models on the data)")
    draw = _plots_option(args.plots)
    plots = PLOT.parse(args).enabled
    if args.no_plots and args.plots is not None:
        raise TrtcalError("--plots and --no-plots contradict each other")
    made = producers(load_model(args.model, fp32=True))
    stats = STATS.parse(args)
    histograms, meta = load_stats(stats)
    if isinstance(draw, list):
        from trtcal.report.page import match_tensors

        match_tensors(histograms, draw)  # a name that is no tensor fails now, before the work
    cache = None
    if args.cache:
        from trtcal.cache.convert import read_any

        cache = read_any(args.cache)
    choice, choice_from, steps = _range_choice(args.cache, args.int8)
    info = {"model": args.model, "statistics": stats, "data": meta.get("data", "?"),
            "samples": meta.get("samples", "?")}
    if cache is not None:
        info["cache"] = f"{args.cache} ({cache.header_line})"
    with Progress(None, "plotting", enabled=output.progress) as bar:
        report = build_report(histograms, title=f"trtcal calibration report: {Path(args.model).name}",
                              producers=made, cache=cache, meta=info, plots=plots, progress=bar,
                              range_choice=choice, range_choice_source=choice_from, quantize_steps=steps, draw=draw,
                              jobs=args.jobs, small=args.plot_size == "small")
    if args.int8:
        from trtcal.ort.evaluate import evaluate
        from trtcal.report.plots import sqnr_png

        report.evaluation = evaluate(args.fp32 or args.model, args.int8, progress=output.progress,
                                     **DATA.parse(args))
        if plots and report.evaluation.tensors:
            report.sqnr_plot = sqnr_png(report.evaluation)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(page, render(report), force=output.force)
    print(f"wrote {page} ({len(report.rows)} tensors" + (", with INT8 vs FP32" if args.int8 else "")
          + (", with quantize's range choice" if report.choice is not None else "") + ")")
    return 0


def _plots_option(text: str | None):
    """``--plots``: "auto" (also when not given), "all", or the list of names and globs."""
    if text is None or text.strip() == "auto":
        return "auto"
    if text.strip() == "all":
        return "all"
    names = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise TrtcalError(f"--plots: expected auto, all or comma-separated tensor names or globs, got {text!r}")
    return names


#: What ``trtcal quantize`` records in its sidecars about its steps after the ranges (the report shows them).
QUANTIZE_STEPS = ("weight_scales", "weight_rounding", "shift", "bias_correction")


def _range_choice(*paths: str | None) -> tuple[dict | None, str, dict]:
    """The range choice ``trtcal quantize`` recorded in the sidecar of the first of ``paths``
    that has one, that sidecar's path, and its records of the steps after the ranges
    (:data:`QUANTIZE_STEPS`); ``(None, "", {})`` when none has."""
    from trtcal.cache.provenance import read_sidecar, sidecar_path
    from trtcal.ort.choice_record import SIDECAR_KEY

    for path in paths:
        if path:
            record = read_sidecar(path) or {}
            if record.get(SIDECAR_KEY) is not None:
                return (record[SIDECAR_KEY], str(sidecar_path(path)),
                        {k: record[k] for k in QUANTIZE_STEPS if k in record})
    return None, "", {}


def register(sub) -> None:
    p = add_command(sub, "report", cmd_report, STATS, DATA, PLOT, OUTPUT)
    p.add_argument("model", help="the FP32 ONNX model")
    p.add_argument("--cache", help="the ranges in use (default: entropy2 from the statistics)")
    p.add_argument("--int8", help="an INT8 (Q/DQ) model to compare with the FP32 one")
    p.add_argument("--fp32", help="the FP32 model for the comparison (default: MODEL)")
    p.add_argument("--plots", metavar="WHICH",
                   help="the tensors drawn in full (histogram, thresholds, KL curve): auto (default: those with "
                        "findings other than one-sided, then those whose methods disagree most, 16 in all unless more have findings), all, "
                        "or comma-separated names or globs, e.g. '/head/*,logits'; the others get a small "
                        "histogram with their thresholds")
    p.add_argument("--plot-size", choices=("small", "large"), default="small",
                   help="small (default: 512x358 pixels, 64 colours, about 12 kB) or large (the size "
                        "`trtcal plot` draws: 720x520, about 55 kB, twice the time)")
    p.add_argument("--jobs", type=JOBS, default=None, metavar="N",
                   help="processes computing the thresholds and drawing the plots (default: the CPUs, at most 8)")
