"""Benchmark of `trtcal report` against one `trtcal calibrate` pass on the same model and data
(issue 17: report <= 3x calibrate, page <= 5 MB), measured in one run (not a test; results in
docs/benchmarks.md).

Every figure is a whole process, started fresh, wall seconds by ``time.perf_counter`` around it,
median of the repeats (each repeat runs every variant in turn, so a slow moment of the machine
hits them alike):

- calibrate: ``trtcal calibrate MODEL --data DATA --stats S -o C`` (entropy2, the automatic batch
  size), which writes the statistics and cache the reports read;
- report: ``trtcal report MODEL --stats S --cache C`` as it is now (full plots for the tensors that
  matter, a small inline histogram for the others, ``--jobs`` processes);
- report-all: the same with ``--plots all`` (every tensor drawn in full, small, in parallel);
- report-old: ``--plots all --plot-size large --jobs 1``, the page as it was before issue 17
  (every tensor drawn at ``trtcal plot``'s size, one after the other, no thumbnails: on
  EfficientNet-Lite0 the same PNGs byte for byte as the old code drew, the page 168 bytes of
  style longer), run ``--old-repeat`` times (it is the slow one).

Models: ``effnet`` (EfficientNet-Lite0, 112 tensors, the first ``--samples`` samples of
.cache/data/effnet_calib) and ``yolo`` (YOLOv8n, 296 tensors, the photos in .cache/data/yolo_calib
letterboxed to 320), or ``PATH.onnx:DATA[:PREPROCESS]``.

Usage: ``nice .venv/bin/python bench/bench_report.py [--models effnet,yolo] [--samples 64]
[--repeat 3] [--old-repeat 1] [--variants report,report-all,report-old] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRTCAL = Path(sys.executable).with_name("trtcal")

MODELS = {
    "effnet": (ROOT / ".cache/models/efficientnet_lite0.onnx", ROOT / ".cache/data/effnet_calib", None),
    "yolo": (ROOT / ".cache/zoo/nudenet_pkg/nudenet/320n.onnx", ROOT / ".cache/data/yolo_calib",
             "letterbox=320,scale=1/255"),
}

VARIANTS = {
    "report": [],
    "report-all": ["--plots", "all"],
    "report-old": ["--plots", "all", "--plot-size", "large", "--jobs", "1"],
}


def timed(argv: list[str]) -> float:
    """Wall seconds of a fresh process; its failure is an error."""
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-500:]}")
    return wall


def subset(data: Path, samples: int, folder: Path) -> Path:
    """A folder of the first batch files of ``data`` (a folder of .npy) holding ``samples`` samples
    (symlinks); image folders and other data are used whole."""
    import numpy as np

    files = sorted(data.glob("*.npy")) if data.is_dir() else []
    if not files:
        return data
    folder.mkdir(parents=True, exist_ok=True)
    seen = 0
    for i, f in enumerate(files):
        if seen >= samples:
            break
        (folder / f"{i:04d}.npy").symlink_to(f.resolve())
        seen += len(np.load(f, mmap_mode="r"))
    return folder


def bench_model(name: str, model: Path, data: Path, preprocess: str | None, work: Path, samples: int,
                repeat: int, old_repeat: int, variants: list[str]) -> dict:
    data = subset(data, samples, work / f"{name}_data")
    stats, cache = work / f"{name}.npz", work / f"{name}.cache"
    calibrate = [str(TRTCAL), "calibrate", str(model), "--data", str(data), "--stats", str(stats), "-o", str(cache),
                 "--force", "--quiet"] + (["--preprocess", preprocess] if preprocess else [])

    def report(variant: str) -> list[str]:
        return [str(TRTCAL), "report", str(model), "--stats", str(stats), "--cache", str(cache), "-o",
                str(work / f"{name}_{variant}"), "--force", "--quiet", *VARIANTS[variant]]

    timed(calibrate)  # warm-up (numba's cache, the page cache), and the statistics the reports read
    timed(report("report"))
    runs: dict[str, list[float]] = {k: [] for k in ["calibrate", *variants]}
    for i in range(max(repeat, old_repeat)):
        if i < repeat:
            runs["calibrate"].append(timed(calibrate))
        for v in variants:
            if i < (old_repeat if v == "report-old" else repeat):
                runs[v].append(timed(report(v)))
    out = {"model": name, "path": str(model), "data": str(data), "preprocess": preprocess,
           "samples": json.loads(Path(str(cache) + ".trtcal.json").read_text()).get("samples"),
           "runs": runs, "seconds": {k: statistics.median(v) for k, v in runs.items()}}
    out["ratio"] = {v: out["seconds"][v] / out["seconds"]["calibrate"] for v in variants}
    out["html_bytes"] = {v: (work / f"{name}_{v}" / "index.html").stat().st_size for v in variants}
    page = (work / f"{name}_report" / "index.html").read_text()  # written by the warm-up at least
    out["tensors"] = page.count("<section class='tensor'")
    out["full_plots"] = page.count('<img alt="histogram of ')
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet,yolo", help="effnet, yolo or PATH.onnx:DATA[:PREPROCESS], comma-separated")
    parser.add_argument("--samples", type=int, default=64, help="calibration samples of .npy data (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of calibrate and the new reports (median kept)")
    parser.add_argument("--old-repeat", type=int, default=1, help="runs of report-old (median kept)")
    parser.add_argument("--variants", default="report,report-all,report-old")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_before": os.getloadavg()}
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load {meta['load_before'][0]:.1f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            if spec in MODELS:
                name, (model, data, pre) = spec, MODELS[spec]
            else:
                path, data, *pre = spec.split(":")
                name, model, data, pre = Path(path).stem, Path(path), Path(data), (pre[0] if pre else None)
            if not model.exists() or not data.exists():
                print(f"[{name}] skipped: {model} or {data} missing")
                continue
            r = bench_model(name, model, data, pre, Path(tmp), args.samples, args.repeat, args.old_repeat, variants)
            results.append(r)
            s = r["seconds"]
            print(f"[{name}] {r['tensors']} tensors, {r['samples']} samples: calibrate {s['calibrate']:.2f} s "
                  f"(median of {len(r['runs']['calibrate'])})", flush=True)
            for v in variants:
                print(f"[{name}]   {v:<11} {s[v]:7.2f} s = {r['ratio'][v]:5.2f}x calibrate, "
                      f"{r['html_bytes'][v] / 1e6:6.2f} MB (median of {len(r['runs'][v])})", flush=True)
            if "report" in variants:
                print(f"[{name}]   full plots by default: {r['full_plots']} of {r['tensors']} tensors")
    meta["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
