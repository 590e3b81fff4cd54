"""``trtcal calibrate`` and ``trtcal thresholds``: ranges from data, or from saved statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtcal.cache import checks as cache_checks
from trtcal.cache import format as trtcache
from trtcal.cache.format import format_version
from trtcal.cache.provenance import sidecar_path, write_sidecar
from trtcal.cli.common import (
    BATCH,
    BITS,
    COUNT,
    DISTRIBUTION_HELP,
    MAX_BATCHES_HELP,
    MEGABYTES,
    PERCENT,
    PERCENTILE_HELP,
    STEPS,
    add_data_options,
    add_force,
    add_json,
    add_preprocess,
    data_options,
    fmt_float,
    json_float,
    print_json,
)
from trtcal.cli.table import print_table
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError
from trtcal.core.findings import CLIP_FRACTION


def add_algorithm_args(p: argparse.ArgumentParser, *, with_eq: bool = False) -> None:
    from trtcal.core import thresholds as thr

    p.add_argument("--algorithm", default="entropy2", choices=list(thr.METHODS) + (["eq"] if with_eq else []),
                   help="threshold algorithm (default %(default)s: TensorRT's EntropyCalibration2)"
                        + ("; eq refines entropy2 layer by layer (EasyQuant)" if with_eq else ""))
    p.add_argument("--bits", type=BITS, default=None, help="quantization bit width, 2..16 (default 8)")
    p.add_argument("--percentile", type=PERCENT, default=None,
                   help=PERCENTILE_HELP)
    p.add_argument("--distribution", choices=("gaussian", "laplace"), default=None,
                   help=DISTRIBUTION_HELP)
    add_zero_bin_arg(p)
    p.add_argument("--trt-version", default=format_version(trtcache.DEFAULT_TRT_VERSION),
                   help="TensorRT release the cache is stamped for (default %(default)s)")


def add_zero_bin_arg(p: argparse.ArgumentParser) -> None:
    from trtcal.core import thresholds as thr

    p.add_argument("--zero-bin", choices=thr.ZERO_BIN_RULES, default=None,
                   help="for entropy2: how bin 0 counts in the KL search: neighbour (default; bin 0 takes bin 1's "
                        "count, as NVIDIA's pytorch-quantization and ModelOpt do, so exact zeros of ReLU/Clip "
                        "outputs do not collapse the range) or keep (bin 0 as counted; see docs/core.md)")


def algorithm_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.bits is not None:
        options["bits"] = args.bits
    if args.percentile is not None:
        if args.algorithm != "percentile":
            raise TrtcalError("--percentile applies to --algorithm percentile only")
        options["q"] = args.percentile / 100
    if args.distribution is not None:
        if args.algorithm != "aciq":
            raise TrtcalError("--distribution applies to --algorithm aciq only")
        options["distribution"] = args.distribution
    if getattr(args, "zero_bin", None) is not None:
        searched = getattr(args, "eq_init", "entropy2") if args.algorithm == "eq" else args.algorithm
        if searched != "entropy2":
            raise TrtcalError("--zero-bin applies to --algorithm entropy2 only (or eq started from it)")
        options["zero_bin"] = args.zero_bin
    return options


def refuse_non_8bit_cache(args: argparse.Namespace) -> None:
    """A TensorRT cache holds 8-bit ranges: TensorRT reads every scale as amax/127, so a range
    chosen for another width would be used as an 8-bit one. Refuse rather than write it."""
    if args.bits is not None and args.bits != 8:
        raise TrtcalError(f"--bits {args.bits}: a TensorRT cache holds 8-bit ranges (TensorRT reads every scale as "
                          f"amax/127, so a {args.bits}-bit range would act as an 8-bit one); keep the statistics "
                          "(--stats) and use `trtcal thresholds --bits` without -o to see them, or `trtcal bits` "
                          "for Q/DQ models of other widths")


def _print_result(cache, results, histograms, out_path, stats_path, skipped, warnings, as_json, meta) -> None:
    # the same function `trtcal cache lint --stats` runs on this cache
    findings = cache_checks.check_calibration(cache, histograms)
    if as_json:
        print_json({
            "cache": None if out_path is None else str(out_path), "stats": None if stats_path is None else str(stats_path),
            "header": cache.header_line, "metadata": meta,
            "tensors": [{"name": n, "amax": json_float(r.amax), "min": json_float(histograms[n].min),
                         "max": json_float(histograms[n].max), "one_sided": histograms[n].one_sided,
                         "nan": histograms[n].nan, "inf": histograms[n].posinf + histograms[n].neginf}
                        for n, r in results.items()],
            "findings": [f.to_dict() for f in findings],
            "skipped": skipped, "warnings": warnings,
        })
        return
    print_inputs(meta.get("inputs") or {})
    print_ranges(results, histograms, findings)
    if skipped:
        print(f"skipped {len(skipped)} tensors: " + ", ".join(f"{n} ({why})" for n, why in list(skipped.items())[:8])
              + (" ..." if len(skipped) > 8 else ""))
    print_findings(results, findings)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if out_path is not None:
        print(f"wrote {out_path} ({cache.header_line})" + (f" and {stats_path}" if stats_path else ""))


def print_inputs(inputs: dict) -> None:
    """The shapes fed to inputs with dynamic dimensions (a TensorRT profile must cover them)."""
    for name, info in inputs.items():
        if not info.get("dynamic_axes"):
            continue
        model = "[" + ", ".join(str(d) for d in info["model"]) + "]"
        used = ", ".join("[" + ", ".join(map(str, u["shape"])) + f"] x{u['batches']}" for u in info["used"])
        print(f"input {name!r} {model}: dynamic axes {info['dynamic_axes']}, calibrated with {used}")


def print_ranges(results, histograms, findings) -> None:
    """One line per tensor: amax, signed min/max, max/amax, clipped share, one-sided flag."""
    clipped = {f.tensor: f.value for f in findings if f.code in ("clipped", "all-clipped")}
    onesided = {f.tensor for f in findings if f.code == "one-sided"}
    rows = []
    for name, r in results.items():
        h = histograms[name]
        used = abs(h.abs_max / r.amax) if r.amax else 0.0
        clip = f"{100 * clipped[name]:.1f}%" if name in clipped else ""
        flag = "  [one-sided]" if name in onesided else ""
        rows.append((fmt_float(r.amax), fmt_float(h.min if h.count else None), fmt_float(h.max if h.count else None),
                     f"{used:.2f}", clip, name + flag))
    print_table(("amax", "min", "max", "max/amax", "clipped", "tensor"), rows, ">>>>><")


def print_findings(results, findings, limit: int = 6) -> None:
    """A summary of the findings: one line per kind, naming the tensors (worst first)."""
    by_kind: dict[str, list] = {}
    for f in findings:
        by_kind.setdefault(f.code, []).append(f)
    print(f"{len(results)} tensors calibrated" + (", findings:" if findings else ", no findings"))
    titles = {"one-sided": "one-sided (ReLU-like: symmetric int8 leaves codes -128..-1 unused)",
              "all-clipped": "every value clipped (amax below the tensor's smallest |x|)",
              "clipped": f"clipped (more than {100 * CLIP_FRACTION:g}% of values above amax)",
              "degenerate": "no usable range", "nan-inf": "NaN/Inf in activations (left out of the range)"}
    for code in by_kind:  # the cache's own findings (those `trtcal cache lint` fails on)
        titles.setdefault(code, cache_checks.title(code))
    for kind, title in titles.items():
        found = by_kind.get(kind, [])
        if kind in ("clipped", "nan-inf"):
            found = sorted(found, key=lambda f: -(f.value or 0))
        if not found:
            continue
        names = [f"{f.tensor} {100 * f.value:.1f}%" if kind == "clipped" else f.tensor or f.message
                 for f in found[:limit]]
        more = f", ... ({len(found) - limit} more)" if len(found) > limit else ""
        print(f"  {title}: {len(found)} tensor{'s' if len(found) > 1 else ''}: {', '.join(names)}{more}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from trtcal.data.images import Preprocess
    from trtcal.ort.pipeline import calibrate

    version = trtcache.parse_version(args.trt_version)
    options = algorithm_options(args)
    refuse_non_8bit_cache(args)
    out = Path(args.output) if args.output else Path("calib_caches") / f"{Path(args.model).stem}.cache"
    if not args.output:
        out.parent.mkdir(parents=True, exist_ok=True)
    fileio.check_output(out, force=args.force, inputs=[args.model])
    fileio.check_output(sidecar_path(out), force=args.force, inputs=[args.model])
    weights_out = out.with_name(out.name + ".weights.npz")  # EQ's per-channel weight scales
    if args.algorithm == "eq":
        fileio.check_output(weights_out, force=args.force, inputs=[args.model])
    if args.stats:
        fileio.check_output(args.stats, force=args.force, inputs=[args.model])
    preprocess = Preprocess.parse(args.preprocess) if args.preprocess else None
    eq = args.algorithm == "eq"
    if eq and args.random:
        raise TrtcalError("--algorithm eq needs real data, not --random")
    result = calibrate(args.model, args.data, algorithm=args.eq_init if eq else args.algorithm,
                       batch_size=args.batch_size, max_batches=args.max_batches, trt_version=version,
                       preprocess=preprocess, random=args.random, progress=False if args.quiet else None,
                       memory_budget_mb=args.memory_budget, include_constants=args.include_constants,
                       expose_all=args.expose_all, **data_options(args), **options)
    weight_scales = _apply_eq(args, result, preprocess, version) if eq else None
    if weight_scales:
        result.metadata["eq"]["weight_scales"] = str(weights_out)
    result.cache.write(out, force=args.force, inputs=[args.model])
    write_sidecar(out, result.metadata, force=args.force)
    if weight_scales:
        fileio.write_npz_arrays(weights_out, weight_scales, force=args.force, inputs=[args.model])
    if args.stats:
        result.save_stats(args.stats, force=args.force)
    _print_result(result.cache, result.thresholds, result.histograms, out, args.stats, result.skipped,
                  result.warnings, args.json, result.metadata)
    if weight_scales and not args.json:
        print(f"wrote {weights_out} (EQ's per-channel weight scales, for trtcal qdq --weight-scales)")
    return 0


def _apply_eq(args: argparse.Namespace, result, preprocess, version) -> dict:
    """Refine the --eq-init ranges in place with EQ on the first --eq-samples samples; return EQ's
    per-channel weight scales (weight name -> scales), which the cache cannot hold."""
    from trtcal.core.progress import Progress
    from trtcal.core.thresholds import ThresholdResult
    from trtcal.data.sources import samples_in
    from trtcal.ort import eq
    from trtcal.ort.pipeline import ranges_to_cache
    from trtcal.ort.runner import first_batches

    batches, specs = first_batches(args.model, args.data, samples=args.eq_samples, batch_size=args.batch_size,
                                   preprocess=preprocess, **data_options(args))
    amaxes = {n: r.amax for n, r in result.thresholds.items()}
    with Progress(eq.layer_count(args.model), "EQ search", enabled=False if args.quiet else None) as bar:
        refined = eq.refine(args.model, batches, amaxes, steps=args.eq_steps, progress=bar, inputs=specs)
    for name, amax in refined.amaxes.items():
        if name in result.thresholds and amax != result.thresholds[name].amax:
            old = result.thresholds[name]
            result.thresholds[name] = ThresholdResult(amax, "eq", old.bits, old.unsigned,
                                                      {f"{args.eq_init}_amax": old.amax}, old.warnings)
    result.cache = ranges_to_cache(result.thresholds, algorithm="entropy2", version=version)
    result.metadata["algorithm"] = "eq"
    result.metadata["eq"] = {"samples": sum(samples_in(b, specs) for b in batches),
                             "steps": args.eq_steps, "init": args.eq_init,
                             "cosine": {k: [round(a, 6), round(b, 6)] for k, (a, b) in refined.cosines.items()}}
    return refined.weight_scales


def cmd_thresholds(args: argparse.Namespace) -> int:
    from trtcal.core.stats import load_stats
    from trtcal.ort.pipeline import compute_thresholds, ranges_to_cache

    version = trtcache.parse_version(args.trt_version)
    options = algorithm_options(args)
    if args.output:
        refuse_non_8bit_cache(args)
        fileio.check_output(args.output, force=args.force, inputs=[args.stats])
        fileio.check_output(sidecar_path(args.output), force=args.force, inputs=[args.stats])
    histograms, meta = load_stats(args.stats)
    results = compute_thresholds(histograms, args.algorithm, **options)
    cache = ranges_to_cache(results, algorithm=args.algorithm, version=version)
    if args.output:
        cache.write(args.output, force=args.force, inputs=[args.stats])
        # the statistics' provenance (model, data, random or not) travels on, with what made the ranges
        meta = dict(meta, algorithm=args.algorithm, options=options, stats=str(args.stats),
                    header=cache.header_line)
        write_sidecar(args.output, meta, force=args.force)
    _print_result(cache, results, histograms, args.output, None, {}, [], args.json, meta)
    return 0


def register(sub) -> None:
    from trtcal.core import thresholds

    p = sub.add_parser("calibrate", help="calibrate an ONNX model on the CPU and write a TensorRT cache",
                       description="Run the FP32 model in ONNX Runtime over the calibration data with every "
                                   "tensor exposed, stream each tensor into a histogram, compute thresholds, "
                                   "and write a TensorRT calibration cache (default calib_caches/<model>.cache).")
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--data", help="calibration data: .npy, .npz, a folder of them, a folder of images "
                                  "(with --preprocess), or script.py:function")
    p.add_argument("--random", action="store_true", help="use random inputs (smoke test; the result is fake)")
    add_preprocess(p)
    p.add_argument("--batch-size", type=BATCH, help="samples per batch (default: the model's fixed batch, else as many "
                   "as fit --memory-budget, at most 32; files larger than a batch are split)")
    p.add_argument("--memory-budget", type=MEGABYTES, default=256, metavar="MB",
                   help="bound on one batch's exposed tensors when choosing the batch size (default %(default)g MB; "
                        "an explicit --batch-size over it gets a warning with the measured size)")
    add_data_options(p)
    p.add_argument("--max-batches", type=COUNT, help=MAX_BATCHES_HELP)
    p.add_argument("--include-constants", action="store_true",
                   help="also calibrate the constant (weight) inputs of MatMul, which TensorRT's implicit INT8 "
                        "wants ranges for (transformers)")
    p.add_argument("--expose-all", action="store_true",
                   help="run every tensor out of ONNX Runtime, even aliases (Reshape, Transpose ...) and zero pads, "
                        "whose histograms are otherwise derived from their inputs' (same result, slower)")
    add_algorithm_args(p, with_eq=True)
    p.add_argument("--eq-samples", type=COUNT, default=64, help="for --algorithm eq: samples for the layer search "
                   "(default %(default)s)")
    p.add_argument("--eq-steps", type=STEPS, default=100, help="for --algorithm eq: scale factors tried in "
                   "[0.5, 2] (default %(default)s)")
    p.add_argument("--eq-init", default="entropy2", choices=[m for m in thresholds.METHODS if m != "eq"],
                   help="for --algorithm eq: the ranges the search starts from (default %(default)s, as EasyQuant; "
                        "docs/accuracy.md compares starting points)")
    p.add_argument("-o", "--output", help="cache to write (default calib_caches/<model stem>.cache)")
    p.add_argument("--stats", help="also save the statistics (.npz) for `trtcal thresholds`")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("thresholds", help="recompute ranges from saved statistics (no inference)",
                       description="Compute thresholds with any algorithm from a statistics file written by "
                                   "`trtcal calibrate --stats`, so sweeping algorithms costs no inference.")
    p.add_argument("--stats", required=True, help="statistics file (.npz) from trtcal calibrate --stats")
    add_algorithm_args(p)
    p.add_argument("-o", "--output", help="cache to write")
    add_force(p)
    add_json(p)
    p.set_defaults(func=cmd_thresholds)
