"""``trtcal qdq``: an explicit-quantization (Q/DQ) ONNX model from a cache or statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtcal.cli.common import (
    DISTRIBUTION_HELP,
    PERCENT,
    PERCENTILE_HELP,
    add_ignore_provenance,
    add_json,
    add_output,
    fmt_float,
    print_json,
)
from trtcal.cli.table import print_table
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError


def _ranges(args: argparse.Namespace):
    """The ranges to write (the cache itself, or Range objects from the statistics), the file
    they came from, and its provenance record (the cache's sidecar, the statistics' metadata)."""
    if args.cache:
        for flag, value in (("--algorithm", args.algorithm), ("--percentile", args.percentile),
                            ("--distribution", args.distribution), ("--zero-bin", args.zero_bin)):
            if value is not None:
                raise TrtcalError(f"{flag} applies to --stats only (a cache already holds its ranges)")
        from trtcal.cache.convert import read_any
        from trtcal.cache.provenance import read_sidecar

        return read_any(args.cache), args.cache, read_sidecar(args.cache)
    from trtcal.cli.calibrate_cmds import algorithm_options
    from trtcal.core.ranges import from_thresholds
    from trtcal.core.stats import load_stats
    from trtcal.ort.pipeline import compute_thresholds

    args.algorithm = args.algorithm or "entropy2"
    options = algorithm_options(args)
    histograms, meta = load_stats(args.stats)
    results = compute_thresholds(histograms, args.algorithm, **options)
    return from_thresholds(results, histograms, source=f"stats:{args.algorithm}"), args.stats, meta


def vet_ranges(args: argparse.Namespace, ranges, source, record) -> list[str]:
    """Refuse ranges that do not belong to ``args.model``: a provenance record (cache sidecar or
    statistics metadata) naming another model or random data, or ranges for under half of the
    activations the placement rules quantize. With ``--ignore-provenance`` these are returned as
    warnings instead; otherwise a :class:`TrtcalError` says which, and how to go on."""
    from trtcal.onnx.qdq import range_coverage
    from trtcal.trt.provenance import cache_mismatches, file_sha256

    problems = cache_mismatches(record, model_sha256=file_sha256(args.model))
    covered, missing = range_coverage(args.model, ranges, target=args.target,
                                      exclude_nodes=getattr(args, "exclude_nodes", None) or (),
                                      exclude_ops=_split(getattr(args, "exclude_ops", None)))
    wanted = len(covered) + len(missing)
    if wanted and 2 * len(covered) < wanted:
        problems.append(f"it has ranges for {len(covered)} of the {wanted} activations this model quantizes "
                        f"(none for {missing[0]!r}, ...): a cache of another model, or a partial one?")
    if not problems:
        return []
    what = "cache" if args.cache else "statistics"
    if getattr(args, "ignore_provenance", False):
        return [f"{source}: used although {p} (--ignore-provenance)" for p in problems]
    raise TrtcalError(f"{source}: {what} not used: {'; '.join(problems)} (pass --ignore-provenance to use it anyway)")


def apply_overrides(model_path, ranges, overrides_path, target: str):
    """``ranges`` (a cache or ``{name: Range}``) with an overrides file applied: ``({name: Range}, warnings)``.

    TensorRT is symmetric: every override becomes ``[-amax, amax]`` (asymmetric ones with a
    warning counting the codes lost). ONNX Runtime's target keeps a one-sided override ``[0, max]``
    (uint8 there); other asymmetric ones are symmetrized with the same warning.
    """
    from trtcal.cache import overrides as ovr
    from trtcal.cache.format import CalibrationCache
    from trtcal.core.ranges import Range, coerce, from_cache
    from trtcal.onnx.model import load_model, model_tensors

    entries = ovr.read(overrides_path)
    ranges = from_cache(ranges) if isinstance(ranges, CalibrationCache) else coerce(ranges)
    names = model_tensors(load_model(model_path)).activations
    keep_one_sided = target == "onnxruntime"
    symmetric_only = [e for e in entries if not (keep_one_sided and e.low == 0)]
    applied, warnings = ovr.resolve(symmetric_only, names, symmetric=True, target=str(model_path))
    one_sided, more = ovr.resolve([e for e in entries if e not in symmetric_only], names, symmetric=False,
                                  target=str(model_path)) if len(symmetric_only) < len(entries) else ({}, [])
    out = dict(ranges)
    for name, a in applied.items():
        out[name] = Range.symmetric(a.amax, source=f"override {a.override.index}")
    for name, a in one_sided.items():
        out[name] = Range(0.0, a.high, 8, f"override {a.override.index}")
    return out, warnings + more


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def cmd_qdq(args: argparse.Namespace) -> int:
    from trtcal.onnx.qdq import CACHE_HAS_NO_SIGNS, write_qdq

    if not Path(args.model).is_file():  # say this before anything about the output
        raise TrtcalError(f"{args.model}: " + ("is a directory, expected an ONNX model file"
                                               if Path(args.model).is_dir() else "no such model file"))
    fileio.check_output(args.output, force=args.force, inputs=[args.model, args.cache or args.stats])
    ranges, source, record = _ranges(args)
    override_warnings: list[str] = []
    if args.overrides:
        ranges, override_warnings = apply_overrides(args.model, ranges, args.overrides, args.target)
    override_warnings += vet_ranges(args, ranges, source, record)
    result = write_qdq(args.model, ranges, target=args.target, exclude_nodes=args.exclude_nodes or (),
                       exclude_ops=_split(args.exclude_ops), **weight_options(args))
    if args.cache and args.target == "onnxruntime" and CACHE_HAS_NO_SIGNS not in result.warnings:
        result.warnings.append(CACHE_HAS_NO_SIGNS)  # with --overrides the cache arrives as a dict
    for w in override_warnings:
        print(f"warning: {w}", file=sys.stderr)
    result.save(args.output, force=args.force, inputs=[args.model, source])
    if args.json:
        doc = result.to_dict()
        doc["output"] = args.output
        print_json(doc)
        return 0
    _print(result, args.output)
    return 0


def _print(result, output: str) -> None:
    acts, weights = result.activations, result.weights
    zp = "int8, zero point 0" if result.target == "tensorrt" else "int8/uint8, zero point 0"
    n = len(result.quantized_nodes)
    print(f"{result.target}: {n} node{'s' if n != 1 else ''} quantized ({zp}): "
          f"{len(acts)} activation{'s' if len(acts) != 1 else ''}, {len(weights)} weight tensor{'s' if len(weights) != 1 else ''}")
    rows = [(fmt_float(q.amax), fmt_float(q.scale), q.dtype, f"{q.name} -> {', '.join(q.consumers)}") for q in acts]
    for q in weights:
        where = f"per channel, axis {q.axis}, {q.channels} channels" if q.axis is not None else "per tensor"
        zero = f", {q.zero_channels} all-zero" if q.zero_channels else ""
        rows.append(("", "", q.dtype, f"{q.name} (weights, {where}{zero}) -> {', '.join(q.consumers)}"))
    print_table(("amax", "scale", "type", "tensor -> consumers"), rows, ">>><")
    if result.float_tensors:
        print(f"left in float: {len(result.float_tensors)} tensor(s)")
        for name, why in result.float_tensors.items():
            print(f"  {name}: {why}")
    if result.float_nodes:
        print(f"nodes in float: {len(result.float_nodes)}")
        for name, why in result.float_nodes.items():
            print(f"  {name}: {why}")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {output} (opset {result.opset})")


def add_ranges_args(p: argparse.ArgumentParser) -> None:
    """Where the ranges come from (a cache, or statistics and an algorithm), the overrides over
    them, and the target: shared by ``qdq`` and ``fallback``."""
    from trtcal.cli.calibrate_cmds import add_zero_bin_arg
    from trtcal.core import thresholds as thr
    from trtcal.core.weight_scales import WEIGHT_METHODS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cache", help="calibration cache (TensorRT, JSON or ONNX Runtime tables)")
    src.add_argument("--stats", help="statistics (.npz) from trtcal calibrate --stats")
    p.add_argument("--algorithm", choices=list(thr.METHODS), default=None,
                   help="with --stats: threshold algorithm (default entropy2)")
    p.add_argument("--percentile", type=PERCENT, default=None,
                   help=PERCENTILE_HELP)
    p.add_argument("--distribution", choices=("gaussian", "laplace"), default=None,
                   help=DISTRIBUTION_HELP)
    add_zero_bin_arg(p)
    add_ignore_provenance(p)
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                   help="tensorrt (default): int8, zero point 0; onnxruntime: also uint8 for one-sided "
                        "tensors (min >= 0 in --stats; a --cache holds no signs, so all int8)")
    p.add_argument("--overrides", metavar="FILE", help="hand-set ranges (YAML or JSON, see docs/overrides.md), "
                   "applied over the cache or statistics")
    p.add_argument("--weights", dest="weight_method", choices=WEIGHT_METHODS, default="max",
                   help="per-channel weight ranges: max|w| (default, what TensorRT does) or the clipping point "
                        "with the least squared error (helps channels with an outlying weight)")
    p.add_argument("--weight-scales", metavar="FILE.npz",
                   help="per-channel weight scales by weight name (e.g. <cache>.weights.npz from calibrate "
                        "--algorithm eq); they take precedence over --weights")


def weight_options(args: argparse.Namespace) -> dict:
    """write_qdq's weight options from --weights and --weight-scales."""
    scales = None
    if args.weight_scales:
        from trtcal.core.fileio import read_npz_arrays

        scales = read_npz_arrays(args.weight_scales)
    return {"weight_method": args.weight_method, "weight_scales": scales}


def register(sub) -> None:

    p = sub.add_parser("qdq", help="write a Q/DQ (explicit INT8) ONNX model from a cache or statistics",
                       description="Insert QuantizeLinear/DequantizeLinear by TensorRT's placement rules: the "
                                   "inputs of Conv, ConvTranspose, Gemm and MatMul (activations per tensor from the "
                                   "ranges, weights per output channel from the weights), the residual input of an "
                                   "Add after a quantized conv; biases and outputs stay in float. Tensors without a "
                                   "usable range stay in float and are listed. See docs/qdq.md.")
    p.add_argument("model", help="FP32 ONNX model (opset < 13 is converted to 13, or refused)")
    add_ranges_args(p)
    p.add_argument("--exclude-nodes", action="append", metavar="PATTERN",
                   help="leave nodes whose name matches this glob in float (repeatable)")
    p.add_argument("--exclude-ops", action="append", metavar="TYPES",
                   help="leave these op types in float, comma-separated: Conv, ConvTranspose, Gemm, MatMul, "
                        "Add (no residual quantization)")
    add_output(p)
    add_json(p)
    p.set_defaults(func=cmd_qdq, bits=None)
