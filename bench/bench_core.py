"""Benchmark of the calibration core, measured in one run (not a test; results in docs/core.md).

(a) entropy threshold at 2048 bins: ONNX Runtime's HistogramCollector.get_entropy_threshold
    vs trtcal.core.thresholds.entropy2 on the same data;
(b) histogram update: np.histogram vs trtcal's Histogram.update (numpy path, numba path with
    one thread and with the default threads) on the same float32 data.

Run: .venv/bin/python bench/bench_core.py [--values 50000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

from trtcal.core import thresholds
from trtcal.core.histogram import Histogram, numba_available


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_entropy(repeat: int) -> dict:
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1_000_000), rng.laplace(0, 0.5, 200_000)]).astype(np.float32)
    # ORT: its own signed histogram of 2048 bins, 128 quantized bins (as its EntropyCalibrater)
    collector = HistogramCollector("entropy", symmetric=True, num_bins=2048, num_quantized_bins=128,
                                   percentile=99.999, scenario="same")
    collector.collect_value({"t": x})
    ort_hist = collector.histogram_dict["t"]
    ort_s = best_of(lambda: collector.get_entropy_threshold(ort_hist, 128), max(1, repeat))
    hist = Histogram().update(x)
    thresholds.entropy2(hist)  # warm-up (grid cache)
    ours_s = best_of(lambda: thresholds.entropy2(hist), repeat * 20)
    return {"ort_s": ort_s, "trtcal_s": ours_s, "ratio": ort_s / ours_s,
            "trtcal_amax": thresholds.entropy2(hist).amax}


def first_call_s() -> float:
    """Import plus first numba update in a fresh process (JIT compile, or numba's disk cache)."""
    code = ("import time; t = time.perf_counter(); import numpy as np; "
            "from trtcal.core.histogram import Histogram; Histogram().update(np.ones(10, np.float32)); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def bench_update(n: int, repeat: int) -> dict:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n, dtype=np.float32)
    out = {"values": n}
    out["np_histogram_s"] = best_of(lambda: np.histogram(x, bins=2048), repeat)
    h = Histogram().update(x[:1000], engine="numpy")
    h.update(x, engine="numpy")  # range set: steady state
    out["numpy_path_s"] = best_of(lambda: h.update(x, engine="numpy"), repeat)
    if numba_available():
        h = Histogram().update(x, engine="numba")
        out["numba_1thread_s"] = best_of(lambda: h.update(x, engine="numba", threads=1), repeat)
        out["numba_default_s"] = best_of(lambda: h.update(x, engine="numba"), repeat)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=50_000_000, help="float32 values for (b)")
    ap.add_argument("--repeat", type=int, default=3, help="repeats (best time is kept)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}, "
          f"numba {'yes' if numba_available() else 'no'}")
    u = bench_update(args.values, args.repeat)
    n = u["values"]

    def rate(key):
        return n / u[key] / 1e6

    print(f"(b) histogram update, {n / 1e6:.0f} M float32 values, 2048 bins")
    print(f"  np.histogram                       {rate('np_histogram_s'):9.0f} M values/s")
    print(f"  trtcal numpy path                  {rate('numpy_path_s'):9.0f} M values/s"
          f"  {u['np_histogram_s'] / u['numpy_path_s']:5.2f}x")
    if "numba_1thread_s" in u:
        print(f"  trtcal numba, 1 thread             {rate('numba_1thread_s'):9.0f} M values/s"
              f"  {u['np_histogram_s'] / u['numba_1thread_s']:5.2f}x  (target >= 5x)")
        print(f"  trtcal numba, default threads      {rate('numba_default_s'):9.0f} M values/s"
              f"  {u['np_histogram_s'] / u['numba_default_s']:5.2f}x")
        print(f"  import + first update, new process {first_call_s():9.2f} s  (numba cache warm)")
    # (a) last: importing onnxruntime.quantization can slow numpy work that runs after it
    e = bench_entropy(args.repeat)
    print("(a) entropy threshold, 2048 bins")
    print(f"  onnxruntime get_entropy_threshold  {e['ort_s'] * 1e3:9.2f} ms")
    print(f"  trtcal entropy2                    {e['trtcal_s'] * 1e3:9.3f} ms")
    print(f"  ratio                              {e['ratio']:9.0f}x  (target >= 100x)")


if __name__ == "__main__":
    main()
