"""``trtcal report``: one HTML page that shows why every range is what it is."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtcal.cli.common import (
    BATCH,
    COUNT,
    LABELS_HELP,
    MAX_BATCHES_HELP,
    add_data_options,
    add_force,
    add_preprocess,
    data_options,
)
from trtcal.core.errors import TrtcalError


def cmd_report(args: argparse.Namespace) -> int:
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.core.stats import load_stats
    from trtcal.onnx.model import load_model, producers
    from trtcal.report.page import build_report, render
    from trtcal.report.plots import _pyplot, sqnr_png

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrtcalError(f"{out_dir}: exists and is not a folder")
    page = out_dir / "index.html"
    if out_dir.is_dir():
        fileio.check_output(page, force=args.force)
    if bool(args.int8) != bool(args.data):
        raise TrtcalError("--int8 and --data go together (the evaluation runs both models on the data)")
    if not args.no_plots:
        _pyplot()
    made = producers(load_model(args.model, fp32=True))
    histograms, meta = load_stats(args.stats)
    cache = None
    if args.cache:
        from trtcal.cache.convert import read_any

        cache = read_any(args.cache)
    info = {"model": args.model, "statistics": args.stats, "data": meta.get("data", "?"),
            "samples": meta.get("samples", "?")}
    if cache is not None:
        info["cache"] = f"{args.cache} ({cache.header_line})"
    with Progress(len(histograms), "plotting", enabled=False if args.quiet else None) as bar:
        report = build_report(histograms, title=f"trtcal calibration report: {Path(args.model).name}",
                              producers=made, cache=cache, meta=info, plots=not args.no_plots, progress=bar)
    if args.int8:
        from trtcal.data.images import Preprocess
        from trtcal.ort.evaluate import evaluate

        preprocess = Preprocess.parse(args.preprocess) if args.preprocess else None
        report.evaluation = evaluate(args.fp32 or args.model, args.int8, args.data, labels=args.labels,
                                     max_batches=args.max_batches, progress=False if args.quiet else None,
                                     preprocess=preprocess, batch_size=args.batch_size, **data_options(args))
        if not args.no_plots and report.evaluation.tensors:
            report.sqnr_plot = sqnr_png(report.evaluation)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(page, render(report), force=args.force)
    print(f"wrote {page} ({len(report.rows)} tensors" + (", with INT8 vs FP32" if args.int8 else "") + ")")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="an HTML page with every tensor's histogram, thresholds and findings",
                       description="Write OUT/index.html: a summary table (every method's threshold per tensor, "
                                   "the chosen range, clipped share, one-sided flag, findings) and per tensor its "
                                   "|x| histogram with the thresholds and entropy2's KL curve; with --int8 and "
                                   "--data, the INT8 model's agreement with FP32 and per-tensor SQNR. The page "
                                   "embeds its pictures: it opens in any browser, offline.")
    p.add_argument("model", help="the FP32 ONNX model")
    p.add_argument("--stats", required=True, help="statistics (.npz) from trtcal calibrate --stats")
    p.add_argument("--cache", help="the ranges in use (default: entropy2 from the statistics)")
    p.add_argument("--int8", help="an INT8 (Q/DQ) model to compare with the FP32 one")
    p.add_argument("--fp32", help="the FP32 model for the comparison (default: MODEL)")
    p.add_argument("--data", help="evaluation data for --int8")
    p.add_argument("--labels", help=LABELS_HELP)
    add_preprocess(p)
    p.add_argument("--batch-size", type=BATCH, help="samples per batch (default: the model's fixed batch, else 32)")
    add_data_options(p)
    p.add_argument("--max-batches", type=COUNT, help=MAX_BATCHES_HELP)
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    p.add_argument("-o", "--output", default="report", help="output folder (default %(default)s)")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)
