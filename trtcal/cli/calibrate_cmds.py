"""``trtcal calibrate`` and ``trtcal thresholds``: ranges from data, or from saved statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtcal.cache import checks as cache_checks
from trtcal.cache.provenance import sidecar_path, write_sidecar
from trtcal.cli.args.algorithm import AlgorithmArgs, EqSearch, Thresholding
from trtcal.cli.args.data import CALIBRATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import MEGABYTES
from trtcal.cli.args.output import Output, OutputArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command, fmt_float, json_float, print_json
from trtcal.cli.table import print_table
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError
from trtcal.core.findings import CLIP_FRACTION

#: ``calibrate``'s option groups.
CALIBRATE_DATA = DataArgs(CALIBRATION_DATA_HELP, random=True,
                          batch_size_help="samples per batch (default: the model's fixed batch, else as many as fit "
                                          "--memory-budget, at most 32; files larger than a batch are split)")
CALIBRATE_ALGORITHM = AlgorithmArgs(eq=True)
CALIBRATE_OUTPUT = OutputArgs("cache to write (default calib_caches/<model stem>.cache)", quiet=True)
#: ``thresholds``' option groups.
THRESHOLDS_STATS = StatsArgs()
THRESHOLDS_ALGORITHM = AlgorithmArgs()
THRESHOLDS_OUTPUT = OutputArgs("cache to write")


def refuse_non_8bit_cache(thresholding: Thresholding) -> None:
    """A TensorRT cache holds 8-bit ranges: TensorRT reads every scale as amax/127, so a range
    chosen for another width would be used as an 8-bit one. Refuse rather than write it."""
    bits = thresholding.options.get("bits")
    if bits is not None and bits != 8:
        raise TrtcalError(f"--bits {bits}: a TensorRT cache holds 8-bit ranges (TensorRT reads every scale as "
                          f"amax/127, so a {bits}-bit range would act as an 8-bit one); keep the statistics "
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
    """calibrate an ONNX model on the CPU and write a TensorRT cache

    Run the FP32 model in ONNX Runtime over the calibration data with every tensor exposed,
    stream each tensor into a histogram, compute thresholds, and write a TensorRT calibration
    cache (default calib_caches/<model>.cache)."""
    from trtcal.ort.pipeline import calibrate

    thresholding = CALIBRATE_ALGORITHM.parse(args)
    refuse_non_8bit_cache(thresholding)
    output = CALIBRATE_OUTPUT.parse(args)
    force = output.force
    out = Path(output.path) if output.path else Path("calib_caches") / f"{Path(args.model).stem}.cache"
    if not output.path:
        out.parent.mkdir(parents=True, exist_ok=True)
    fileio.check_output(out, force=force, inputs=[args.model])
    fileio.check_output(sidecar_path(out), force=force, inputs=[args.model])
    weights_out = out.with_name(out.name + ".weights.npz")  # EQ's per-channel weight scales
    eq = thresholding.eq
    if eq:
        fileio.check_output(weights_out, force=force, inputs=[args.model])
    if args.stats:
        fileio.check_output(args.stats, force=force, inputs=[args.model])
    data = CALIBRATE_DATA.parse(args)
    if eq and data["random"]:
        raise TrtcalError("--algorithm eq needs real data, not --random")
    result = calibrate(args.model, algorithm=thresholding.searched, trt_version=thresholding.trt_version,
                       progress=output.progress, memory_budget_mb=args.memory_budget,
                       include_constants=args.include_constants, expose_all=args.expose_all, **data,
                       **thresholding.options)
    weight_scales = _apply_eq(args.model, eq, result, data, thresholding.trt_version, output) if eq else None
    if weight_scales:
        result.metadata["eq"]["weight_scales"] = str(weights_out)
    result.cache.write(out, force=force, inputs=[args.model])
    write_sidecar(out, result.metadata, force=force)
    if weight_scales:
        fileio.write_npz_arrays(weights_out, weight_scales, force=force, inputs=[args.model])
    if args.stats:
        result.save_stats(args.stats, force=force)
    _print_result(result.cache, result.thresholds, result.histograms, out, args.stats, result.skipped,
                  result.warnings, output.json, result.metadata)
    if weight_scales and not output.json:
        print(f"wrote {weights_out} (EQ's per-channel weight scales, for trtcal qdq --weight-scales)")
    return 0


def _apply_eq(model: str, eq: EqSearch, result, data: dict, version, output: Output) -> dict:
    """Refine the --eq-init ranges in place with EQ on the first --eq-samples samples; return EQ's
    per-channel weight scales (weight name -> scales), which the cache cannot hold."""
    from trtcal.core.progress import Progress
    from trtcal.core.thresholds import ThresholdResult
    from trtcal.data.sources import samples_in
    from trtcal.ort import eq as easyquant
    from trtcal.ort.pipeline import ranges_to_cache
    from trtcal.ort.runner import first_batches

    feed = {k: v for k, v in data.items() if k not in ("random", "max_batches")}
    batches, specs = first_batches(model, samples=eq.samples, **feed)
    amaxes = {n: r.amax for n, r in result.thresholds.items()}
    with Progress(easyquant.layer_count(model), "EQ search", enabled=output.progress) as bar:
        refined = easyquant.refine(model, batches, amaxes, steps=eq.steps, progress=bar, inputs=specs,
                                   search=eq.search)
    for name, amax in refined.amaxes.items():
        if name in result.thresholds and amax != result.thresholds[name].amax:
            old = result.thresholds[name]
            result.thresholds[name] = ThresholdResult(amax, "eq", old.bits, old.unsigned,
                                                      {f"{eq.init}_amax": old.amax}, old.warnings)
    result.cache = ranges_to_cache(result.thresholds, algorithm="entropy2", version=version)
    result.metadata["algorithm"] = "eq"
    result.metadata["eq"] = {"samples": sum(samples_in(b, specs) for b in batches),
                             "steps": eq.steps, "search": eq.search, "init": eq.init,
                             "cosine": {k: [round(a, 6), round(b, 6)] for k, (a, b) in refined.cosines.items()}}
    return refined.weight_scales


def cmd_thresholds(args: argparse.Namespace) -> int:
    """recompute ranges from saved statistics (no inference)

    Compute thresholds with any algorithm from a statistics file written by
    `trtcal calibrate --stats`, so sweeping algorithms costs no inference."""
    from trtcal.core.stats import load_stats
    from trtcal.ort.pipeline import compute_thresholds, ranges_to_cache

    stats = THRESHOLDS_STATS.parse(args)
    thresholding = THRESHOLDS_ALGORITHM.parse(args)
    algorithm, options = thresholding.algorithm, thresholding.options
    output = THRESHOLDS_OUTPUT.parse(args)
    if output.path:
        refuse_non_8bit_cache(thresholding)
        fileio.check_output(output.path, force=output.force, inputs=[stats])
        fileio.check_output(sidecar_path(output.path), force=output.force, inputs=[stats])
    histograms, meta = load_stats(stats)
    results = compute_thresholds(histograms, algorithm, **options)
    cache = ranges_to_cache(results, algorithm=algorithm, version=thresholding.trt_version)
    if output.path:
        cache.write(output.path, force=output.force, inputs=[stats])
        # the statistics' provenance (model, data, random or not) travels on, with what made the ranges
        meta = dict(meta, algorithm=algorithm, options=options, stats=str(stats), header=cache.header_line)
        write_sidecar(output.path, meta, force=output.force)
    _print_result(cache, results, histograms, output.path, None, {}, [], output.json, meta)
    return 0


def register(sub) -> None:
    p = add_command(sub, "calibrate", cmd_calibrate, CALIBRATE_DATA, CALIBRATE_ALGORITHM, CALIBRATE_OUTPUT)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--memory-budget", type=MEGABYTES, default=256, metavar="MB",
                   help="bound on one batch's exposed tensors when choosing the batch size (default %(default)g MB; "
                        "an explicit --batch-size over it gets a warning with the measured size)")
    p.add_argument("--include-constants", action="store_true",
                   help="also calibrate the constant (weight) inputs of MatMul, which TensorRT's implicit INT8 "
                        "wants ranges for (transformers)")
    p.add_argument("--expose-all", action="store_true",
                   help="run every tensor out of ONNX Runtime, even aliases (Reshape, Transpose ...) and zero pads, "
                        "whose histograms are otherwise derived from their inputs' (same result, slower)")
    p.add_argument("--stats", help="also save the statistics (.npz) for `trtcal thresholds`")

    add_command(sub, "thresholds", cmd_thresholds, THRESHOLDS_STATS, THRESHOLDS_ALGORITHM, THRESHOLDS_OUTPUT)
