"""``trtcal smooth``: SmoothQuant with alpha searched per layer, an FP32 model in, an FP32 model out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtcal.cli.args.data import CALIBRATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import COUNT
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.qdq import ATTENTION_HELP
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.quantize_cmds import SELECT_SAMPLES_HELP, TARGET_HELP
from trtcal.core.errors import TrtcalError

DATA = DataArgs(CALIBRATION_DATA_HELP, required=True)
SCORING = ScoringArgs()
OUTPUT = OutputArgs("the smoothed FP32 model (default <model stem>.smooth.onnx beside the model)", quiet=True)
ALPHAS_HELP = "migration strengths tried per layer, comma-separated, each in [0, 1] (default 0.25,0.5,0.75)"


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
    LayerNorm where exact, else a Mul node. Each layer tries every --alphas value in graph order
    and keeps the one that makes the all-INT8 Q/DQ model (TensorRT's placement, mse ranges from
    a calibration of the same samples) score best at the outputs, or none. The result is an FP32
    model equal to the input in float (checked); calibrate, qdq or quantize it like any model."""
    from trtcal.cache.provenance import sidecar_path, write_sidecar
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.onnx.model import load_model
    from trtcal.ort.pipeline import calibrate, file_sha256
    from trtcal.ort.runner import first_batches
    from trtcal.ort.smoothquant import search_smoothing

    output = OUTPUT.parse(args)
    data = DATA.parse(args)
    alphas = _alphas(args.alphas)
    stream = sys.stderr if output.json or output.quiet else sys.stdout
    model = Path(args.model)
    path = Path(output.path) if output.path else model.with_name(model.stem + ".smooth.onnx")
    for p in (path, sidecar_path(path)):
        fileio.check_output(p, force=output.force, inputs=[args.model, data["data"]])
    feed = {k: data[k] for k in ("batch_axes", "shapes", "allow_nonfinite")}
    batches, _ = first_batches(args.model, data["data"], samples=args.select_samples, batch_size=data["batch_size"],
                               preprocess=data["preprocess"], **feed)
    cal = calibrate(args.model, data["data"], algorithm="mse", batch_size=data["batch_size"],
                    max_batches=len(batches), preprocess=data["preprocess"], progress=output.progress, **feed)
    fp32 = load_model(args.model, load_weights=True, fp32=True)
    with Progress(None, "smoothing", enabled=output.progress) as bar:
        result = search_smoothing(fp32, batches, {n: r.amax for n, r in cal.thresholds.items()}, alphas=alphas,
                                  target=args.target, attention=args.attention, progress=bar,
                                  batch_axes=data["batch_axes"], log=lambda line: print(line, file=stream),
                                  **SCORING.parse(args))
    fileio.atomic_write(path, result.model.SerializeToString(), force=output.force, inputs=[args.model, data["data"]])
    write_sidecar(path, {"algorithm": "smoothquant", "model": str(model), "model_sha256": file_sha256(model),
                         "data": str(data["data"]), "samples": args.select_samples, **result.to_dict()},
                  force=output.force)
    if output.json:
        print_json({"model": str(path), **result.to_dict()})
        return 0
    print(f"smoothed {len(result.alphas)} activation(s); all-INT8 output SQNR on the samples "
          f"{result.baseline_db:.2f} -> {result.final_db:.2f} dB; float equal to the input to {result.float_db:.1f} dB")
    print(f"wrote {path} (with .trtcal.json provenance); next: trtcal quantize {path} --data {data['data']}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "smooth", cmd_smooth, DATA, SCORING, OUTPUT)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--alphas", default="0.25,0.5,0.75", help=ALPHAS_HELP)
    p.add_argument("--select-samples", type=COUNT, default=64, help=SELECT_SAMPLES_HELP)
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt", help=TARGET_HELP)
    p.add_argument("--attention", choices=("int8", "float"), default="int8", help=ATTENTION_HELP)
