"""``trtcal demo``: the bundled example, end to end, with the commands it stands for."""

from __future__ import annotations

import argparse
import shlex
from importlib import resources
from pathlib import Path

from trtcal.cli.args.output import OutputArgs
from trtcal.cli.common import add_command

DEMO_MODEL = "fashion_cnn.onnx"
DEMO_DATA = "fashion_calib.npz"
DEMO_EVAL = "fashion_eval.npz"
EXAMPLE_MODEL = "tiny_cnn.onnx"
EXAMPLE_CACHE = "tiny_cnn.cache"

OUTPUT = OutputArgs(force=False, quiet=True, json=False)


def example_path(name: str) -> Path:
    return Path(str(resources.files("trtcal") / "examples" / name))


def _run(argv: list[str]) -> int:
    from trtcal.cli.main import main

    print(f"\n$ trtcal {shlex.join(argv)}", flush=True)
    return main(argv)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_demo(args: argparse.Namespace) -> int:
    """run the bundled example (no arguments needed)

    Quantize the bundled Fashion-MNIST CNN on the CPU (trtcal quantize), writing
    calib_caches/fashion_cnn.int8.onnx (Q/DQ), calib_caches/fashion_cnn.cache (TensorRT <= 10) and
    the statistics, lint the cache, and show what TensorRT's entropy2 would have done. With --caches:
    inspect, lint and fix a stale bundled cache instead, writing calib_caches/tiny_cnn.cache."""
    return cache_tour(args) if args.caches else calibration_demo(args)


def calibration_demo(args: argparse.Namespace) -> int:
    """Quantize the bundled Fashion-MNIST CNN, lint its cache, and show what TensorRT's entropy2
    would have done with the same statistics."""
    from trtcal.cache.format import DEFAULT_TRT_VERSION, format_version

    model, data, held_out = example_path(DEMO_MODEL), example_path(DEMO_DATA), example_path(DEMO_EVAL)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdq, cache, stats = out_dir / "fashion_cnn.int8.onnx", out_dir / "fashion_cnn.cache", out_dir / "fashion_cnn.stats.npz"
    trt = format_version(DEFAULT_TRT_VERSION)
    print("trtcal demo: quantize a small ReLU CNN trained on Fashion-MNIST (bundled with 512 calibration and "
          f"1000 held-out images) to INT8 on the CPU: a Q/DQ model for TensorRT 11 / TensorRT-RTX and the "
          f"calibration cache of the same ranges for TensorRT {trt}.")
    argv = ["quantize", _shown(model), "--data", _shown(data), "--eval-data", _shown(held_out), "--trt-version", trt,
            "-o", _shown(qdq), "--cache", _shown(cache), "--stats", _shown(stats), "--force"]
    if OUTPUT.parse(args).quiet:
        argv.append("--quiet")
    status = _run(argv)
    if status:
        return status
    status = _run(["cache", "lint", _shown(cache), "--model", _shown(model), "--trt-version", trt])
    print("\nFor comparison, TensorRT's own EntropyCalibration2 on the same statistics (no model run):")
    _run(["thresholds", "--stats", _shown(stats), "--algorithm", "entropy2"])
    print("\nWhat this shows:")
    print(f"- {_shown(qdq)} builds in TensorRT 11 or TensorRT-RTX (`trtcal build {_shown(qdq)}`, or trtexec "
          f"--onnx=); {_shown(cache)} is what `trtexec --int8 --calib=...` or a TensorRT <= 10 builder reads; "
          f"`cache lint` found {'nothing wrong with it' if status == 0 else 'problems (above)'}.")
    for line in _explain(stats, cache):
        print(f"- {line}")
    return status


def _explain(stats: Path, cache: Path) -> list[str]:
    """What the demo's ranges show, read back from its statistics and the cache quantize wrote (so
    the words match the numbers)."""
    from trtcal.cache.format import read
    from trtcal.core import thresholds
    from trtcal.core.findings import clipped_fraction, find
    from trtcal.core.stats import load_stats

    histograms, _ = load_stats(stats)
    results = thresholds.compute_all("entropy2", histograms)
    findings = find(histograms, results)
    lines = []
    onesided = [f.tensor for f in findings if f.kind == "one-sided"]
    if onesided:
        lines.append(f"{len(onesided)} of {len(results)} tensors are one-sided (ReLU-like): TensorRT's "
                     "int8 is symmetric, so they get 7 bits of resolution, not 8.")
        hurt = [n for n in onesided if any(f.tensor == n and f.kind == "clipped" for f in findings)]
        if hurt:
            lines.append(f"{len(hurt)} of them are clipped by more than 1%. `--algorithm onesided` picks, among "
                         "entropy2's range, the KL searches without the exact zeros and the max, the one with the "
                         "least expected error for a one-sided tensor: "
                         f"trtcal onesided {_shown(example_path(DEMO_MODEL))} --stats {_shown(stats)} --algorithm "
                         "onesided")
    clipped = sorted((f for f in findings if f.kind == "clipped"), key=lambda f: -f.value)
    if clipped:
        worst = clipped[0]
        h = histograms[worst.tensor]
        chosen = read(cache).amax(worst.tensor)
        lines.append(f"entropy2 clips on purpose, but it clips {100 * worst.value:.1f}% of {worst.tensor!r} "
                     f"(amax {results[worst.tensor].amax:.4g} of max |x| {h.abs_max:.4g}); quantize gave it amax "
                     f"{chosen:.4g} ({100 * clipped_fraction(h, chosen):.1f}% clipped), the range that cost its "
                     "consuming layer least. Any algorithm costs no inference from the statistics: "
                     f"trtcal thresholds --stats {_shown(stats)} --algorithm minmax")
    return lines


def cache_tour(args: argparse.Namespace) -> int:
    """Inspect, lint and fix the bundled stale cache for the tiny CNN."""
    from trtcal.cache.format import DEFAULT_TRT_VERSION, format_version

    model, cache = example_path(EXAMPLE_MODEL), example_path(EXAMPLE_CACHE)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = out_dir / "tiny_cnn.cache"
    trt = format_version(DEFAULT_TRT_VERSION)
    print("trtcal demo: a calibration cache for a small CNN, stamped for TensorRT 8.6.1, checked and "
          f"fixed for TensorRT {trt}.")
    _run(["cache", "inspect", str(cache)])
    status = _run(["cache", "lint", str(cache), "--model", str(model), "--trt-version", trt])
    print(f"(lint exit status {status}: findings)")
    _run(["cache", "edit", str(cache), "--drop", "/conv3/*", "--set",
          "/pool/GlobalAveragePool_output_0=1.0431297", "--allow-new", "--set", "logits=12.5",
          "-o", str(fixed) + ".tmp.cache", "--force"])
    _run(["cache", "restamp", str(fixed) + ".tmp.cache", "--trt-version", trt, "-o", str(fixed), "--force"])
    Path(str(fixed) + ".tmp.cache").unlink()
    status = _run(["cache", "lint", str(fixed), "--model", str(model), "--trt-version", trt])
    print(f"\nwrote {fixed} (lint exit status {status}: {'clean' if status == 0 else 'findings'})")
    return status


def register(sub) -> None:
    p = add_command(sub, "demo", cmd_demo, OUTPUT)
    p.add_argument("--caches", action="store_true", help="the cache toolkit tour instead of calibration")
    p.add_argument("--output-dir", default="calib_caches", help="where to write results (default %(default)s)")
