"""``trtcal quantize``: an FP32 ONNX model and data to the best INT8 trtcal makes, in one command."""

from __future__ import annotations

import argparse
import math
import sys

from trtcal.cli.args.algorithm import TRT_VERSION_HELP
from trtcal.cli.args.data import CALIBRATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import COUNT, COUNT0, DECIBELS
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.qdq import ATTENTION_HELP
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.table import print_table

DATA = DataArgs(CALIBRATION_DATA_HELP, required=True,
                batch_size_help="samples per batch (default: the model's fixed batch, else as many as keep one batch's "
                                "exposed tensors within 256 MB, at most 32)")
SCORING = ScoringArgs()
OUTPUT = OutputArgs("the Q/DQ model (default <model stem>.int8.onnx beside the model)", quiet=True)
TARGET_HELP = "tensorrt (default): int8, zero point 0; onnxruntime: also uint8 for one-sided tensors (min >= 0)"
SELECT_SAMPLES_HELP = ("calibration samples the choices are measured on (quantize: ranges; smooth: SmoothQuant "
                       "factors) (default %(default)s)")
TARGET_SQNR_HELP = ("instead of --max-float: leave the fewest tensors in float that bring the model's output SQNR "
                    "on the calibration samples to DB (at most 20)")


def _db(x: float) -> str:
    return "-" if x is None or math.isnan(x) else ("inf" if math.isinf(x) and x > 0 else f"{x:.2f}")


def cmd_quantize(args: argparse.Namespace) -> int:
    """an FP32 ONNX model and data to the best INT8: Q/DQ model, TensorRT cache and a quality summary

    Calibrate once (statistics kept), choose each quantized tensor's range among entropy2, minmax,
    percentiles, mse, aciq and onesided by the error it causes in the layers that consume it, keep
    that choice only if it beats every single method at the model's outputs, and write the Q/DQ
    model by TensorRT's placement rules (TensorRT 11, TensorRT-RTX; --target onnxruntime for ONNX
    Runtime), the TensorRT cache of the same ranges (trtexec --int8 --calib=, TensorRT <= 10), the
    statistics and their provenance. The summary scores the written model and TensorRT's default
    (entropy2 everywhere) against FP32 on held-out samples: --eval-data, else every fifth batch of
    --data, never calibrated on. Nothing is left in float unless --max-float or --target-sqnr asks.
    Transformers also get a SmoothQuant-ed copy quantized the same way, and the better model is
    kept (--smoothquant)."""
    from trtcal.cache.format import parse_version
    from trtcal.ort.quantize import quantize

    output = OUTPUT.parse(args)
    data = DATA.parse(args)
    stream = sys.stderr if output.json or output.quiet else sys.stdout
    result = quantize(args.model, output=output.path, cache=args.cache, stats=args.stats, target=args.target,
                      eval_data=args.eval_data, eval_samples=args.eval_samples, select_samples=args.select_samples,
                      max_float=args.max_float, target_sqnr=args.target_sqnr, refine=args.refine, attention=args.attention,
                      shift_one_sided=not args.no_shift, effort=args.effort, smoothed=args.smoothed,
                      **{k: v for k, v in (("weight_rounding", args.weight_rounding),
                                           ("bias_correction", args.bias_correction),
                                           ("smoothquant", args.smoothquant)) if v is not None},
                      trt_version=parse_version(args.trt_version), force=output.force, progress=output.progress,
                      log=lambda line: print(line, file=stream), **data, **SCORING.parse(args))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if output.json:
        print_json(result)
        return 0
    counts = ", ".join(f"{label} {n}" for label, n in result.choice.counts().items())
    print(f"ranges chosen per tensor on {result.choice.samples} calibration samples: {counts}")
    ranked = sorted(result.selection.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf)
    print_table(("output SQNR dB", "ranges (on the calibration samples)"),
                [(_db(v), label + ("  <- chosen" if label == result.chosen else "")) for label, v in ranked], "><")
    s = result.summary
    if result.float_tensors:
        print(f"left in float: {', '.join(result.float_tensors)}")
    print(f"weights: {s['weight_scales']} scales, rounding {s['weight_rounding']}")
    shift = result.metadata.get("shift")
    if shift and shift["kept"]:
        print(f"shifted by half their range into their readers' biases (one-sided, in the Q/DQ model only): "
              f"{', '.join(shift['tensors'])}")
    bias = result.metadata.get("bias_correction")
    if bias and bias["kept"]:
        print(f"biases corrected for the mean output error of {bias['layers']} layers ({bias['channels']} channels; "
              "in the Q/DQ model only)")
    print(f"\nheld out: {s['samples']} samples from {s['data']}")
    rows = [("this model", _db(s["sqnr_db"]), f"{s['cosine_mean']:.4f}", _pct(s.get("top1_agreement"))),
            ("entropy2 (TensorRT's default)", _db(s["entropy2_sqnr_db"]), f"{s['entropy2_cosine_mean']:.4f}",
             _pct(s.get("entropy2_top1_agreement")))]
    print_table(("INT8 vs FP32", "output SQNR dB", "cosine", "top-1 agreement"), rows, "<>>>")
    for name, o in s["outputs"].items():
        if "balanced_sqnr_db" in o:
            print(f"output {name} mixes scales along axis {o['mixed_scales_axis']} (e.g. boxes in pixels, scores in "
                  f"0..1): its SQNR is per channel, averaged ({_db(o['balanced_sqnr_db'])} dB; "
                  f"{_db(o['sqnr_db'])} dB as a whole)")
    if result.smoothquant:
        sq = result.smoothquant
        scored = sq.get("sqnr_db", {})
        auto = " (auto)" if sq.get("mode") == "auto" else ""
        if "reason" in sq:
            print(f"smoothquant{auto}: {sq['reason']}: kept the original model")
        else:
            print(f"smoothquant{auto}: {sq['smoothed']} activation(s) smoothed; output SQNR on "
                  f"{sq.get('judged_on', '-')}" + (f" ({sq['judged_with']})" if sq.get("judged_with") else "")
                  + ": " + ", ".join(f"{k} {_db(v)} dB" for k, v in scored.items())
                  + f": kept the {sq['kept']} model"
                  + (f" ({sq['smoothed_model']}: build TensorRT <= 10 engines from it with the cache)"
                     if sq["kept"] == "smoothed" else ""))
    print(f"wrote {result.model}, {result.cache} and {result.stats} (with .trtcal.json provenance)")
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def register(sub) -> None:
    from trtcal.cache.format import DEFAULT_TRT_VERSION, format_version
    from trtcal.ort.quantize import EFFORTS, WEIGHT_ROUNDINGS

    p = add_command(sub, "quantize", cmd_quantize, DATA, SCORING, OUTPUT)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--eval-data", help="held-out evaluation data for the summary (default: every fifth batch of "
                                       "--data, not calibrated on)")
    p.add_argument("--eval-samples", type=COUNT, default=256, help="held-out samples scored (default %(default)s)")
    p.add_argument("--select-samples", type=COUNT, default=64, help=SELECT_SAMPLES_HELP)
    p.add_argument("--refine", action="store_true",
                   help="then try other ranges tensor by tensor at the model's outputs on the calibration samples, "
                        "keeping each change that helps (about four models scored per tensor: slower)")
    p.add_argument("--effort", choices=EFFORTS, default="full",
                   help="full (default): every step below; fast: the defaults become --smoothquant off, "
                        "--weight-rounding nearest, --bias-correction off and no weight-scale search (about half "
                        "the time on YOLOv8n; what is given explicitly is kept)")
    p.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, default=None,
                   help="gptq (default; nearest with --effort fast): also round each layer's weights by GPTQ (codes "
                        "chosen for the layer's output, on the max weight scales; in the Q/DQ model only) and keep "
                        "it where the model scores better at the outputs; nearest: round to nearest only, as "
                        "TensorRT does")
    p.add_argument("--bias-correction", choices=("auto", "on", "off"), default=None,
                   help="correct each layer's bias for the mean output error its quantization causes, measured "
                        "layer by layer per output channel (only where it exceeds 3 standard errors over the "
                        "samples): auto (default; off with --effort fast) keeps it only if the model then scores "
                        "better on samples it was not measured on; on always keeps it; off never tries it (in the "
                        "Q/DQ model only)")
    p.add_argument("--no-shift", action="store_true",
                   help="do not shift one-sided activations (ReLU outputs read only by Gemm, MatMul or unpadded Conv "
                        "layers) by half their range into those layers' biases; by default, with --target tensorrt, "
                        "they are quantized as x - amax/2 in [-amax/2, amax/2] (symmetric int8 then uses all its codes: "
                        "one bit more) where the model scores better so (in the Q/DQ model only)")
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt", help=TARGET_HELP)
    p.add_argument("--attention", choices=("int8", "float"), default="int8", help=ATTENTION_HELP)
    p.add_argument("--smoothquant", nargs="?", const="on", default=None, choices=("auto", "on", "off"),
                   help="also quantize a SmoothQuant-ed copy (trtcal smooth, alpha per layer) and keep whichever model "
                        "scores better at the outputs on calibration samples neither search saw: auto (default; off "
                        "with --effort fast) for "
                        "transformers (attention blocks, or LayerNorm outputs feeding weighted MatMul/Gemm layers), on "
                        "(also the bare flag) for any model with weighted MatMul/Gemm layers, off never (slower: "
                        "about two quantize runs and the search)")
    p.add_argument("--smoothed", metavar="FILE.onnx",
                   help="where the smoothed FP32 model goes when it wins (default <model stem>.smooth.onnx beside -o); "
                        "the cache is of its tensors")
    fallback = p.add_mutually_exclusive_group()
    fallback.add_argument("--max-float", type=COUNT0, default=0,
                          help="tensors to keep in float at most (default %(default)s)")
    fallback.add_argument("--target-sqnr", type=DECIBELS, metavar="DB", help=TARGET_SQNR_HELP)
    p.add_argument("--cache", help="the TensorRT cache to write (default calib_caches/<model stem>.cache)")
    p.add_argument("--stats", help="the statistics to write (default calib_caches/<model stem>.stats.npz)")
    p.add_argument("--trt-version", default=format_version(DEFAULT_TRT_VERSION), help=TRT_VERSION_HELP)
