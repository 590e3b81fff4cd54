"""``trtcal crosscheck``: recompute a TensorRT cache in numpy on the same batches and explain differences."""

from __future__ import annotations

import argparse

from trtcal.cli.args.algorithm import AlgorithmArgs
from trtcal.cli.args.data import DataArgs
from trtcal.cli.args.numbers import RTOL
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.common import add_command, fmt_float, print_json
from trtcal.cli.table import table
from trtcal.core.errors import TrtcalError

DATA = DataArgs("the calibration data TensorRT used (as for trtcal calibrate)", required=True,
                batch_size_help="TensorRT's calibration batch size (it moves entropy ranges)")
#: the cache's header names the algorithm; only entropy2's zero-bin rule is open
ALGORITHM = AlgorithmArgs(("--zero-bin",))
OUTPUT = OutputArgs(force=False, quiet=True)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    """recompute a TensorRT cache in numpy and explain every difference

    Run the FP32 model over the same batches TensorRT calibrated on (same batch size and
    order, TensorRT's power-of-two range growth), recompute every tensor's range with the
    cache's algorithm, and report per tensor TensorRT's amax, trtcal's, the ratio and the likely
    reason for a difference. Exit 0 when all agree, 1 otherwise."""
    from trtcal.cache.convert import read_any
    from trtcal.cache.crosscheck import METHOD_OF, explain
    from trtcal.onnx.model import load_model, model_tensors
    from trtcal.ort.pipeline import calibrate

    if args.rtol < 0:
        raise TrtcalError(f"--rtol {args.rtol:g}: must be >= 0")
    cache = read_any(args.cache)
    if cache.algorithm not in METHOD_OF:
        raise TrtcalError(f"{args.cache}: algorithm {cache.algorithm!r} in its header is not one of TensorRT's "
                          f"({', '.join(METHOD_OF)}); cannot tell how to recompute it")
    method, options = METHOD_OF[cache.algorithm]
    zero_bin = ALGORITHM.parse(args).options
    if zero_bin:
        if method != "entropy2":
            raise TrtcalError(f"--zero-bin applies to entropy caches, not {cache.algorithm}")
        options = {**options, **zero_bin}
    output = OUTPUT.parse(args)
    result = calibrate(args.model, algorithm=method, progress=output.progress, **DATA.parse(args), **options)
    names = model_tensors(load_model(args.model, fp32=True)).all_names()
    rows = explain(cache, result.histograms, result.thresholds, names, rtol=args.rtol, skipped=result.skipped)
    differ = [r for r in rows if r.status != "agree"]
    if output.json:
        print_json({"cache": str(args.cache), "algorithm": cache.algorithm, "method": method,
                    "data": result.metadata["data"], "batches": result.metadata["batches"],
                    "agree": len(rows) - len(differ), "differ": len(differ),
                    "tensors": rows})
    else:
        print(f"{args.cache} ({cache.header_line}) vs trtcal {method} on {result.metadata['data']}")
        lines = table(("TensorRT", "trtcal", "ratio", "status", "tensor"),
                      [(fmt_float(r.trt_amax), fmt_float(r.trtcal_amax),
                        f"{r.ratio:.4f}" if r.ratio is not None else "-", r.status, r.tensor) for r in rows], ">>><<")
        indent = " " * (len(lines[0]) - len("tensor"))  # reasons start under the tensor column
        print(lines[0])
        for r, line in zip(rows, lines[1:]):
            print(line + (f"\n{indent}{r.reason}" if r.reason else ""))
        print(f"{len(rows) - len(differ)} of {len(rows)} tensors agree within rtol {args.rtol:g}"
              + (f"; {len(differ)} differ" if differ else ""))
        other_rule = [r for r in differ if "matches entropy2 with zero_bin=" in r.reason]
        if other_rule:
            rule = other_rule[0].reason.split("zero_bin=")[1].split()[0]
            print(f"{len(other_rule)} of them match entropy2's other zero-bin rule: rerun with --zero-bin {rule}")
    return 1 if differ else 0


def register(sub) -> None:
    p = add_command(sub, "crosscheck", cmd_crosscheck, DATA, ALGORITHM, OUTPUT)
    p.add_argument("model", help="the FP32 ONNX model the cache was calibrated for")
    p.add_argument("--cache", required=True, help="the TensorRT calibration cache (or an ONNX Runtime table)")
    p.add_argument("--rtol", type=RTOL, default=1e-6, help="relative tolerance on amax (default %(default)g; "
                   "bit-identical scales always agree)")
