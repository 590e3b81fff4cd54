"""Benchmark of the threshold methods on saved statistics, measured in one run (not a test;
results in docs/benchmarks.md).

Over every tensor of each statistics file: entropy2, the mse method as it was before its fast
path (``mse_reference`` in tests/oracle.py, the literal reference the tests hold it to) and
``trtcal.core.thresholds.mse``, timed in turn within each repeat (best of the repeats), and
whether the new mse chooses the reference's amax on every tensor.

Run: .venv/bin/python bench/bench_thresholds.py STATS.npz [STATS.npz ...] [--repeat 3]
     [--bits 8] [--unsigned] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from trtcal.core import thresholds
from trtcal.core.stats import load_stats

ORACLE = Path(__file__).resolve().parents[1] / "tests" / "oracle.py"


def load_reference():
    spec = importlib.util.spec_from_file_location("trtcal_test_oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mse_reference


def time_all(fn, hists) -> float:
    t = time.perf_counter()
    for h in hists:
        fn(h)
    return time.perf_counter() - t


def bench_file(path: str, repeat: int, bits: int, unsigned: bool, reference) -> dict:
    hists = list(load_stats(path)[0].values())
    runs = {
        "entropy2": lambda h: thresholds.entropy2(h, bits=bits, unsigned=unsigned),
        "mse_reference": lambda h: reference(h, bits, unsigned),
        "mse": lambda h: thresholds.mse(h, bits=bits, unsigned=unsigned),
    }
    times = {name: [] for name in runs}
    for _ in range(repeat):  # interleaved: a slow moment of the machine hits all three alike
        for name, fn in runs.items():
            times[name].append(time_all(fn, hists))
    same = worst = 0
    for h in hists:
        want, want_err = reference(h, bits, unsigned)
        r = thresholds.mse(h, bits=bits, unsigned=unsigned)
        same += r.amax == want
        err = r.diagnostics.get("mse")
        if err is not None:
            ok = np.isfinite(want_err) & (want_err > 0)
            if ok.any():
                worst = max(worst, float(np.max(np.abs(err[ok] - want_err[ok]) / want_err[ok])))
    best = {name: min(t) for name, t in times.items()}
    return {"file": path, "tensors": len(hists), "bits": bits, "unsigned": unsigned, "repeat": repeat,
            "seconds": best, "all_seconds": times,
            "mse_reference_over_entropy2": best["mse_reference"] / best["entropy2"],
            "mse_over_entropy2": best["mse"] / best["entropy2"],
            "speedup": best["mse_reference"] / best["mse"],
            "same_amax": same, "curve_max_rel_diff": worst}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stats", nargs="+", help="trtcal statistics files (.npz)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats (best time is kept)")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--unsigned", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"numpy {np.__version__}")
    reference = load_reference()
    out = []
    for path in args.stats:
        r = bench_file(path, args.repeat, args.bits, args.unsigned, reference)
        out.append(r)
        s = r["seconds"]
        print(f"{path}: {r['tensors']} tensors, {args.bits} bits{' unsigned' if args.unsigned else ''}, "
              f"best of {args.repeat}")
        print(f"  entropy2          {s['entropy2']:8.3f} s")
        print(f"  mse, reference    {s['mse_reference']:8.3f} s  {r['mse_reference_over_entropy2']:5.2f}x entropy2")
        print(f"  mse, now          {s['mse']:8.3f} s  {r['mse_over_entropy2']:5.2f}x entropy2 "
              f"(target <= 3x), {r['speedup']:.1f}x faster than the reference")
        print(f"  same amax as the reference on {r['same_amax']} of {r['tensors']} tensors; "
              f"curves within {r['curve_max_rel_diff']:.1e} relative")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
