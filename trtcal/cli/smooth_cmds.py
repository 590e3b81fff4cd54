"""``trtcal smooth``: SmoothQuant with alpha searched per layer, an FP32 model in, an FP32 model out."""

from __future__ import annotations

import argparse
import sys

from trtcal.cli.args.data import CALIBRATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import COUNT
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.qdq import ATTENTION_HELP
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.quantize_cmds import SELECT_SAMPLES_HELP, TARGET_HELP
from trtcal.core.errors import TrtcalError

DATA = DataArgs(CALIBRATION_DATA_HELP, required=True, max_batches=False)
SCORING = ScoringArgs()
OUTPUT = OutputArgs("the smoothed FP32 model (default <model stem>.smooth.onnx beside the model)", quiet=True)
ALPHAS_HELP = "migration strengths tried per layer, comma-separated, each in [0, 1] (default 0.25,0.5,0.75,0.9,1)"


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise TrtcalError(f"--alphas {text!r}: give numbers in [0, 1], comma-separated") from None
    if not values or any(not (0.0 <= v <= 1.0) for v in values):
        raise TrtcalError(f"--alphas {text!r}: each must be in [0, 1]")
    return values


def cmd_smooth(args: argparse.Namespace) -> int:
    """SmoothQuant: move activation outliers into the weights, alpha searched per layer

    For each activation read by MatMul/Gemm nodes with constant weights, scale its channels by
    1/s and the weights' rows by s (s = max|X|^alpha / max|W|^(1-alpha)), folded into a preceding
    LayerNorm where exact, else a Mul node. Each layer, in graph order, tries --alphas values
    from the middle one toward the better neighbour while the score rises (--every-alpha: all)
    and keeps the one that makes the all-INT8 Q/DQ model (TensorRT's placement, mse ranges from
    a calibration of the same samples) score best at the outputs, or none. The result is an FP32
    model equal to the input in float (checked); calibrate, qdq or quantize it like any model."""
    from trtcal.ort.smoothquant import smooth

    output = OUTPUT.parse(args)
    data = DATA.parse(args)
    alphas = _alphas(args.alphas)
    stream = sys.stderr if output.json or output.quiet else sys.stdout
    path, result = smooth(args.model, data.pop("data"), output=output.path, alphas=alphas,
                          climb_alphas=not args.every_alpha,
                          select_samples=args.select_samples, target=args.target, attention=args.attention,
                          force=output.force, progress=output.progress, log=lambda line: print(line, file=stream),
                          **data, **SCORING.parse(args))
    if output.json:
        print_json({"model": str(path), **result.to_dict()})
        return 0
    print(f"smoothed {len(result.alphas)} activation(s); all-INT8 output SQNR on the samples "
          f"{result.baseline_db:.2f} -> {result.final_db:.2f} dB; float equal to the input to {result.float_db:.1f} dB")
    print(f"wrote {path} (with .trtcal.json provenance); next: trtcal quantize {path} --data {args.data}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "smooth", cmd_smooth, DATA, SCORING, OUTPUT)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--alphas", default="0.25,0.5,0.75,0.9,1", help=ALPHAS_HELP)
    p.add_argument("--every-alpha", action="store_true",
                   help="score every --alphas value per layer, not only those on the climb from the middle one")
    p.add_argument("--select-samples", type=COUNT, default=64, help=SELECT_SAMPLES_HELP)
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt", help=TARGET_HELP)
    p.add_argument("--attention", choices=("int8", "float"), default="int8", help=ATTENTION_HELP)
