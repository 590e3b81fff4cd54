"""``trtcal report``: one HTML page that shows why every range is what it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtcal.cli.args.data import DataArgs
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.plot import PlotArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command
from trtcal.core.errors import TrtcalError

STATS = StatsArgs()
DATA = DataArgs("evaluation data for --int8", labels=True)
PLOT = PlotArgs()
OUTPUT = OutputArgs("output folder (default %(default)s)", default="report", quiet=True, json=False)


def cmd_report(args: argparse.Namespace) -> int:
    """an HTML page with every tensor's histogram, thresholds and findings

    Write OUT/index.html: a summary table (every method's threshold per tensor, the chosen
    range, clipped share, one-sided flag, findings) and per tensor its |x| histogram with the
    thresholds and entropy2's KL curve; with --int8 and --data, the INT8 model's agreement with
    FP32 and per-tensor SQNR. When --cache (else --int8) was written by trtcal quantize, its
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
    plots = PLOT.parse(args).enabled
    made = producers(load_model(args.model, fp32=True))
    stats = STATS.parse(args)
    histograms, meta = load_stats(stats)
    cache = None
    if args.cache:
        from trtcal.cache.convert import read_any

        cache = read_any(args.cache)
    choice, choice_from = _range_choice(args.cache, args.int8)
    info = {"model": args.model, "statistics": stats, "data": meta.get("data", "?"),
            "samples": meta.get("samples", "?")}
    if cache is not None:
        info["cache"] = f"{args.cache} ({cache.header_line})"
    with Progress(len(histograms), "plotting", enabled=output.progress) as bar:
        report = build_report(histograms, title=f"trtcal calibration report: {Path(args.model).name}",
                              producers=made, cache=cache, meta=info, plots=plots, progress=bar,
                              range_choice=choice, range_choice_source=choice_from)
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


def _range_choice(*paths: str | None) -> tuple[dict | None, str]:
    """The range choice ``trtcal quantize`` recorded in the sidecar of the first of ``paths``
    that has one, and that sidecar's path; ``(None, "")`` when none has."""
    from trtcal.cache.provenance import read_sidecar, sidecar_path
    from trtcal.ort.choice_record import SIDECAR_KEY

    for path in paths:
        if path:
            record = read_sidecar(path) or {}
            if record.get(SIDECAR_KEY) is not None:
                return record[SIDECAR_KEY], str(sidecar_path(path))
    return None, ""


def register(sub) -> None:
    p = add_command(sub, "report", cmd_report, STATS, DATA, PLOT, OUTPUT)
    p.add_argument("model", help="the FP32 ONNX model")
    p.add_argument("--cache", help="the ranges in use (default: entropy2 from the statistics)")
    p.add_argument("--int8", help="an INT8 (Q/DQ) model to compare with the FP32 one")
    p.add_argument("--fp32", help="the FP32 model for the comparison (default: MODEL)")
