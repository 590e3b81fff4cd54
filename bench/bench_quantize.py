"""Benchmark of ``trtcal quantize`` against one ``trtcal calibrate`` pass (issue 16's "quantize <= 5x
calibrate"), optionally against the same commands at an earlier commit, all in one run: each
command runs in its own process, one after the other, so the ratios compare like with like on a
machine whose speed drifts from run to run. Not a test; results in docs/benchmarks.md.

Printed per command: wall time, peak memory (the process's max RSS), the ratio to the calibrate
pass of the same code (the median of three passes), and quantize's held-out output SQNR and cosine (the same figures are
expected from both codes unless a change is meant to move them).

Run: nice .venv/bin/python bench/bench_quantize.py MODEL.onnx DATA [--eval-data EVAL]
[--preprocess P] [--baseline-rev REV] [--smoothquant auto|on|off] [--json out.json] [-- extra quantize options]
(``--baseline-rev`` checks REV out into a temporary git worktree and runs its code from there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# runs the trtcal CLI, then writes its own peak RSS (kB) where the harness reads it
CHILD = r"""
import resource, runpy, sys
rss_file, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
sys.argv = ["trtcal"] + sys.argv[3:]
try:
    runpy.run_module("trtcal", run_name="__main__")
finally:
    open(rss_file, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def timed(root: Path, args: list[str], work: Path) -> dict:
    rss = work / "rss"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(rss), str(root), *args], capture_output=True, text=True,
                          cwd=work)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:2])} at {root} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "peak_gb": int(rss.read_text()) / 1e6, "stdout": proc.stdout}


def run_code(label: str, root: Path, args: argparse.Namespace, extra: list[str], work: Path) -> dict:
    out = work / label
    out.mkdir()
    data = ["--data", str(Path(args.data).resolve())] + (["--preprocess", args.preprocess] if args.preprocess else [])
    # the calibrate pass is short and its time varies most from run to run: the median of three
    cals = sorted((timed(root, ["calibrate", str(Path(args.model).resolve()), *data, "-o", str(out / "m.cache"), "-q",
                                "--force"], out) for _ in range(3)), key=lambda c: c["wall_s"])
    cal = cals[1]
    q_args = ["quantize", str(Path(args.model).resolve()), *data, "-o", str(out / "m.int8.onnx"),
              "--cache", str(out / "q.cache"), "--stats", str(out / "q.stats.npz"), "--json", "-q",
              "--smoothquant", args.smoothquant, *extra]
    if args.eval_data:
        q_args += ["--eval-data", str(Path(args.eval_data).resolve())]
    q = timed(root, q_args, out)
    result = json.loads(q.pop("stdout"))
    s = result["summary"]
    row = {"code": label, "calibrate_s": cal["wall_s"], "quantize_s": q["wall_s"], "ratio": q["wall_s"] / cal["wall_s"],
           "quantize_peak_gb": q["peak_gb"], "calibrate_peak_gb": cal["peak_gb"], "sqnr_db": s["sqnr_db"],
           "cosine_mean": s["cosine_mean"], "chosen": result["chosen"],
           "kept": (result.get("smoothquant") or {}).get("kept", "-")}
    print(f"{label:>10}: calibrate {row['calibrate_s']:6.1f} s, quantize {row['quantize_s']:6.1f} s "
          f"({row['ratio']:.1f}x, peak {row['quantize_peak_gb']:.2f} GB): {row['sqnr_db']:.2f} dB, cosine "
          f"{row['cosine_mean']:.4f}, {row['chosen']}, smoothquant kept {row['kept']}", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--eval-data")
    p.add_argument("--preprocess", help="given to calibrate and quantize (e.g. letterbox=320,scale=1/255 for YOLOv8n)")
    p.add_argument("--baseline-rev", help="also run the commands with the code of this git revision, first")
    p.add_argument("--smoothquant", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--json")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="trtcal-bench-") as tmp:
        work = Path(tmp)
        if args.baseline_rev:
            tree = work / "baseline-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline_rev],
                           check=True)
            try:
                rows.append(run_code(f"{args.baseline_rev[:10]}", tree, args, extra, work))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
        rows.append(run_code("worktree", ROOT, args, extra, work))
    if len(rows) == 2:
        print(f"quantize: {rows[0]['quantize_s']:.1f} -> {rows[1]['quantize_s']:.1f} s "
              f"({rows[0]['quantize_s'] / rows[1]['quantize_s']:.2f}x faster); ratio to calibrate "
              f"{rows[0]['ratio']:.1f}x -> {rows[1]['ratio']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
