"""Benchmark of `trtcal fallback` against one `trtcal calibrate` pass (issue 17: <= 5x).

On the same model and the same first ``--samples`` samples, in one run, each command a whole
process timed by wall clock (median of ``--repeat`` runs, interleaved):

- calibrate: ``trtcal calibrate MODEL --data DATA`` (entropy2);
- fallback: ``trtcal fallback MODEL --cache <that cache> --data DATA --samples N --max-float 3``
  (cut models, :mod:`trtcal.ort.qdq_variants`);
- fallback-whole: the same with the hidden ``--whole-models``: every candidate's whole Q/DQ model
  written and run in a fresh session (the way before issue 17).

Prints fallback / calibrate for both, and whether the two fallbacks' ``--json`` results are
identical (gains, choice, final SQNR). Image folders are linked (first N files), array data is
cut to its first N samples in a temporary .npy.

Usage: ``nice .venv/bin/python bench/bench_fallback.py [--models yolo,effnet] [--samples 12]
[--repeat 2] [--json out.json]``. Results are recorded in docs/benchmarks.md.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRTCAL = Path(sys.executable).with_name("trtcal")

MODELS = {
    # AGPL: unpacked under .cache by bench/accuracy.py --prepare-yolo, never bundled
    "yolo": (ROOT / ".cache/zoo/nudenet_pkg/nudenet/320n.onnx", ROOT / ".cache/data/yolo_calib",
             "letterbox=320,scale=1/255"),
    "effnet": (ROOT / ".cache/models/efficientnet_lite0.onnx", ROOT / ".cache/data/effnet_calib", None),
    "fashion": (ROOT / "trtcal/examples/fashion_cnn.onnx", ROOT / "trtcal/examples/fashion_calib.npz", None),
}


def first_samples(data: Path, samples: int, tmp: Path) -> Path:
    """The first ``samples`` samples of ``data``: a folder of links to images, or a .npy/.npz."""
    if data.is_dir() and not any(p.suffix in (".npy", ".npz") for p in data.iterdir()):
        out = tmp / "images"
        out.mkdir()
        for p in sorted(data.iterdir())[:samples]:
            (out / p.name).symlink_to(p.resolve())
        return out
    if data.is_dir():
        arrays = [np.load(p) for p in sorted(data.glob("*.npy"))]
        x = np.concatenate(arrays)[:samples]
        np.save(tmp / "first.npy", x)
        return tmp / "first.npy"
    z = np.load(data)
    np.savez(tmp / "first.npz", **{k: z[k][:samples] for k in z.files})
    return tmp / "first.npz"


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall, r.stdout


def bench(name: str, samples: int, repeat: int, max_float: int) -> dict:
    model, data, preprocess = MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        d = first_samples(data, samples, tmp)
        pre = ["--preprocess", preprocess] if preprocess else []
        cal = [str(TRTCAL), "calibrate", str(model), "--data", str(d), *pre, "-o", str(tmp / "m.cache"),
               "--quiet", "--force"]
        fb = [str(TRTCAL), "fallback", str(model), "--cache", str(tmp / "m.cache"), "--data", str(d), *pre,
              "--samples", str(samples), "--max-float", str(max_float), "-o", str(tmp / "fb.onnx"), "--json",
              "--quiet", "--force"]
        times: dict[str, list[float]] = {"calibrate": [], "fallback": [], "fallback-whole": []}
        outputs = {}
        for _ in range(repeat):
            times["calibrate"].append(timed(cal)[0])
            for key, cmd in (("fallback", fb), ("fallback-whole", fb + ["--whole-models"])):
                wall, out = timed(cmd)
                times[key].append(wall)
                outputs[key] = json.loads(out)
    med = {k: statistics.median(v) for k, v in times.items()}
    a, b = outputs["fallback"], outputs["fallback-whole"]
    for doc in (a, b):
        doc.pop("output", None)
    return {"model": name, "samples": samples, "max_float": max_float, "repeat": repeat, "seconds": times,
            "median_s": med, "ratio": med["fallback"] / med["calibrate"],
            "ratio_whole": med["fallback-whole"] / med["calibrate"],
            "identical": json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True),
            "max_gain_difference_db": max(abs(a["gains_db"][k] - b["gains_db"][k]) for k in b["gains_db"]),
            "same_choice": a["chosen"] == b["chosen"], "chosen": a["chosen"],
            "sqnr_db": [a["baseline_sqnr_db"], a["final_sqnr_db"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="yolo,effnet")
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--max-float", type=int, default=3)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    results = []
    for name in args.models.split(","):
        if not MODELS[name][0].exists():
            print(f"{name}: {MODELS[name][0]} missing, skipped", file=sys.stderr)
            continue
        r = bench(name, args.samples, args.repeat, args.max_float)
        results.append(r)
        m = r["median_s"]
        print(f"{name}: calibrate {m['calibrate']:.1f} s, fallback {m['fallback']:.1f} s ({r['ratio']:.2f}x), "
              f"whole models {m['fallback-whole']:.1f} s ({r['ratio_whole']:.2f}x); results identical: "
              f"{r['identical']} (max gain difference {r['max_gain_difference_db']:.2g} dB, same choice: "
              f"{r['same_choice']})", flush=True)
    doc = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
           "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
