"""``trtcal build``: an ONNX model to a TensorRT engine (implicit INT8, FP16, explicit Q/DQ)."""

from __future__ import annotations

import argparse
import sys

from trtcal.cli.args.data import DataArgs
from trtcal.cli.args.numbers import FRACTION, MEGABYTES_INT
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.ranges import add_ignore_provenance
from trtcal.cli.common import add_command, print_json

#: ``--data`` stands beside ``--cache`` (one or the other), so ``build`` adds it itself; TensorRT
#: feeds the inputs (``--shapes`` is the optimization profile here)
DATA = DataArgs(None, batch_size_help="calibration batch size = the OPT shape's batch axis (default: the model's "
                                      "fixed batch, else 32 when calibrating, else 1)", feed=False)
OUTPUT = OutputArgs("engine to write (default engines/<model stem>.engine)", metavar="ENGINE")


def cmd_build(args: argparse.Namespace) -> int:
    """build a TensorRT engine: implicit INT8 (calibrator or cache), FP16, or a Q/DQ model

    Build MODEL.onnx into a TensorRT engine with a provenance record beside it
    (<engine>.trtcal.json: TensorRT version, GPU, sha256 of model, cache and data). TensorRT <=
    10: --int8 with --data (TensorRT calibrates; the cache is kept) or --cache (reused only if
    its header and provenance fit). A model with Q/DQ nodes builds strongly typed (TensorRT 10
    and 11, TensorRT-RTX). TensorRT 11 and TensorRT-RTX have no implicit INT8: use `trtcal qdq`."""
    from trtcal.trt.builder import build, parse_shapes
    from trtcal.trt.device import LazyDevice

    data = DATA.parse(args)
    output = OUTPUT.parse(args)
    stream = sys.stderr if output.json else sys.stdout
    result = build(args.model, output.path, int8=args.int8, fp16=args.fp16, cache=args.cache, data=args.data,
                   algorithm=args.algorithm, quantile=args.quantile, regression_cutoff=args.regression_cutoff,
                   save_cache=args.save_cache, overrides=args.overrides, fallback=args.fallback_list,
                   timing_cache=args.timing_cache, workspace_mb=args.workspace, shapes=parse_shapes(args.shapes),
                   backend=args.backend, device=LazyDevice(args.cuda), ignore_provenance=args.ignore_provenance,
                   force=output.force, verbose=args.verbose, log=lambda line: print(line, file=stream), **data)
    if output.json:
        print_json({"engine": str(result.engine), "provenance": str(result.record_path), **result.record})
        return 0
    rec = result.record
    calib = rec.get("calibration")
    if calib and result.cache_read is not None:
        print(f"reused {result.cache_read} ({calib['trt_algorithm']}; no calibration run)")
    elif calib:
        print(f"calibrated {calib['batches']} batches of {calib['batch_size']} ({calib['samples']} samples"
              + (f", {calib['dropped_samples']} dropped" if calib["dropped_samples"] else "")
              + f") with {calib['trt_algorithm']}" + (f"; cache {result.cache_written}" if result.cache_written else ""))
    if result.trt_warnings and not args.verbose:
        print(f"TensorRT reported {len(result.trt_warnings)} warning(s); -v shows TensorRT's messages "
              f"(the first ones are in {result.record_path})")
    if result.timing_cache is not None:
        print(f"timing cache {result.timing_cache}")
    gpu = rec.get("gpu")
    where = (f" for {gpu['name']} (compute capability {gpu['compute_capability']})" if gpu
             else " ahead of time (no GPU)" if rec.get("built_ahead_of_time") else "")
    print(f"wrote {result.engine} ({rec['engine_bytes']} bytes, {rec['mode']}, {result.backend}{where}) "
          f"and {result.record_path}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "build", cmd_build, DATA, OUTPUT)
    p.add_argument("model", help="ONNX model (FP32, or with Q/DQ nodes)")
    p.add_argument("--int8", action="store_true", help="implicit INT8 (TensorRT <= 10): needs --data or --cache")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--cache", help="reuse this calibration cache (TensorRT's text format)")
    src.add_argument("--data", help="calibrate with TensorRT on this data (as for trtcal calibrate)")
    p.add_argument("--algorithm", choices=("entropy2", "minmax", "entropy", "legacy"),
                   help="TensorRT calibrator (default entropy2; with --cache: the one its header names)")
    p.add_argument("--quantile", type=FRACTION, default=0.9999, help="legacy calibrator: quantile (default %(default)g)")
    p.add_argument("--regression-cutoff", type=FRACTION, default=1.0,
                   help="legacy calibrator: regression cutoff (default %(default)g)")
    p.add_argument("--save-cache", metavar="CACHE",
                   help="with --data: where TensorRT's cache goes (default calib_caches/<engine stem>.trt.cache)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT <= 10)")
    p.add_argument("--overrides", metavar="FILE", help="hand-set ranges (trtcal overrides file, YAML/JSON), applied "
                                                       "with set_dynamic_range (and to a reused cache)")
    p.add_argument("--fallback-list", metavar="FILE", help="tensors to keep in float: one name per line (# comments) "
                                                           "or a JSON list")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache: read if it exists, updated after")
    p.add_argument("--workspace", type=MEGABYTES_INT, metavar="MB", help="workspace memory pool limit in MB")
    p.add_argument("--shapes", action="append", metavar="NAME:MIN,OPT,MAX",
                   help="optimization profile of a dynamic input, e.g. images:1x3x224x224,8x3x224x224,32x3x224x224 "
                        "(repeat per input; NAME:SHAPE sets all three)")
    p.add_argument("--backend", choices=("auto", "tensorrt", "rtx"), default="auto",
                   help="tensorrt, rtx (tensorrt_rtx), or auto: tensorrt if it imports, else rtx (default)")
    p.add_argument("--cuda", choices=("auto", "pycuda", "cuda-python"), default="auto",
                   help="CUDA backend for the calibration buffers: pycuda, cuda-python (as TensorRT's samples "
                        "since 10.14), or auto: pycuda if installed, else cuda-python (default)")
    add_ignore_provenance(p)
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorRT's info messages")
