"""``trtcal eval``: an INT8 model against its FP32 original, per output and per tensor."""

from __future__ import annotations

import argparse
import math

from trtcal.cli.args.data import EVALUATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import COUNT0, PROBABILITY
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.plot import PlotArgs
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.table import print_table

DATA = DataArgs(EVALUATION_DATA_HELP, required=True, labels=True)
SCORING = ScoringArgs()
PLOT = PlotArgs("write a PNG of per-tensor SQNR (needs the plot extra)")
OUTPUT = OutputArgs(quiet=True)


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _db(x: float) -> str:
    return "-" if x is None or math.isnan(x) else ("inf" if math.isinf(x) and x > 0 else f"{x:.2f}")


def _kl(x: float | None) -> str:
    return "" if x is None else f"{x:.2g}"


def cmd_eval(args: argparse.Namespace) -> int:
    """compare an INT8 (Q/DQ) model with its FP32 original on real data

    Run both models in ONNX Runtime on the CPU over the same data and report, per scored output
    (--score; never integer or boolean ones), SQNR, cosine similarity and, for class scores
    (--classifier), top-1 agreement (per position for [N, T, C]; over all and over those FP32
    is sure of), the mean KL divergence of the softmaxes and (with --labels) top-1 accuracy; and
    the SQNR of every tensor the two models share, worst first."""
    from trtcal.ort.evaluate import evaluate

    output = OUTPUT.parse(args)
    data = DATA.parse(args)
    plots = PLOT.parse(args, inputs=[args.reference, args.test])  # fail before the work, never after it
    result = evaluate(args.reference, args.test, per_tensor=not args.no_per_tensor, progress=output.progress,
                      int8_kernels=args.int8_kernels, confidence=args.confidence, **data, **SCORING.parse(args))
    if plots.path:
        from trtcal.report.plots import plot_sqnr

        plot_sqnr(result, plots.path, force=output.force)
    if output.json:
        print_json(result)
        return 0
    meta = result.metadata
    print(f"{meta['test']} vs {meta['reference']} on {meta['samples']} samples from {meta['data']}")
    scored = [(c, c.to_dict()) for c in result.outputs]
    print_table(("output", "SQNR dB", "cosine", "min cos", "top-1 agree", "KL nats", "top-1 ref", "top-1 test"),
                [(c.name, _db(c.sqnr_db), f"{c.cosine_mean:.4f}", f"{d['cosine_min']:.4f}",
                  _pct(d.get("top1_agreement")), _kl(d.get("kl_mean")), _pct(d.get("top1_reference")),
                  _pct(d.get("top1_test"))) for c, d in scored], "<>>>>>>>")
    for c, d in scored:
        if d.get("sure_samples") is not None:
            what = "samples" if len(c.shape) == 2 else "positions"
            if what == "positions":
                print(f"{c.name}: class scores per position ({c.positions} positions of {c.samples} samples, "
                      f"shape {list(c.shape)} a batch): top-1 agreement {_pct(d['top1_agreement'])}")
            print(f"{c.name}: top-1 agreement on the {d['sure_samples']} of {c.positions} {what} the reference is "
                  f"sure of (top-1 probability >= {c.confidence:g}): {_pct(d['top1_agreement_sure'])}")
    if meta.get("not_scored"):
        print("not scored: " + ", ".join(f"{n} ({why})" for n, why in meta["not_scored"].items()))
    if result.tensors:
        shown = result.tensors if args.all else result.tensors[:args.top]
        print(f"\nper-tensor SQNR (dB), worst first ({len(shown)} of {len(result.tensors)}; "
              "'as quantized' = what its consumers see after Q/DQ):")
        print_table(("SQNR", "as quantized", "tensor"),
                    [(_db(c.sqnr_db), _db(result.quantized[c.name].sqnr_db) if c.name in result.quantized else "",
                      c.name) for c in shown], ">><")
    if plots.path:
        print(f"wrote {plots.path}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "eval", cmd_eval, DATA, SCORING, PLOT, OUTPUT)
    p.add_argument("reference", help="the FP32 ONNX model")
    p.add_argument("test", help="the INT8 model to judge (Q/DQ ONNX), or any model with the same outputs")
    p.add_argument("--int8-kernels", action="store_true",
                   help="let ONNX Runtime fuse Q/DQ into its integer kernels (what an ONNX Runtime deployment "
                        "runs; results depend on the CPU). Default: run Q/DQ as written, TensorRT's arithmetic")
    p.add_argument("--confidence", type=PROBABILITY, default=0.5, metavar="P",
                   help="classifiers: also report top-1 agreement over the samples whose FP32 top-1 probability is "
                        "at least P (separates near-ties from real flips on unlabelled data; default %(default)s)")
    p.add_argument("--no-per-tensor", action="store_true", help="compare the outputs only (faster)")
    p.add_argument("--top", type=COUNT0, default=15, help="per-tensor rows to print (default %(default)s)")
    p.add_argument("--all", action="store_true", help="print every tensor")
