"""Benchmark of SmoothQuant's search (``trtcal smooth``; the step ``quantize`` adds for transformers):
every candidate on the whole parametric model against only the part downstream of each
activation (``search_smoothing(cut=False)`` vs ``cut=True``), timed in one process, with one
``trtcal calibrate`` pass over the same data as the baseline of the ratios. Not a test; results in
docs/benchmarks.md.

For the model: its first ``--samples`` samples of ``--data``, mse ranges from a calibration of
them (as ``trtcal smooth`` does), then each variant of the search; printed: wall time, the output
SQNR on the samples before and after, the alphas kept, and how many of them differ between the
variants (float rounding may tip near-ties).

Run: nice .venv/bin/python bench/bench_smooth.py MODEL.onnx DATA [--samples 64] [--json out.json]
(all-MiniLM-L6-v2: .cache/models/minilm.onnx .cache/data/minilm_calib.npz, from
scripts/export_minilm.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from trtcal.onnx.model import load_model
    from trtcal.ort.pipeline import calibrate
    from trtcal.ort.runner import first_batches
    from trtcal.ort.smoothquant import search_smoothing

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args()

    t = time.perf_counter()
    calibrate(args.model, args.data, algorithm="entropy2", progress=False)
    calib_s = time.perf_counter() - t
    batches, _ = first_batches(args.model, args.data, samples=args.samples)
    cal = calibrate(args.model, args.data, algorithm="mse", max_batches=len(batches), progress=False)
    ranges = {n: r.amax for n, r in cal.thresholds.items()}
    fp32 = load_model(args.model, load_weights=True, fp32=True)
    rows = {"calibrate_s": calib_s}
    print(f"calibrate (whole data, entropy2): {calib_s:.1f} s")
    for label, cut in (("whole", False), ("cut", True)):
        t = time.perf_counter()
        r = search_smoothing(fp32, batches, ranges, cut=cut)
        s = time.perf_counter() - t
        rows[label] = {"seconds": s, "x_calibrate": s / calib_s, "baseline_db": r.baseline_db,
                       "final_db": r.final_db, "alphas": r.alphas}
        print(f"{label}: {s:.1f} s ({s / calib_s:.1f}x calibrate), {len(r.alphas)} smoothed, "
              f"{r.baseline_db:.2f} -> {r.final_db:.2f} dB on the samples", flush=True)
    a, b = rows["whole"]["alphas"], rows["cut"]["alphas"]
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    rows["alphas_differ"] = differ
    print(f"alphas that differ: {len(differ)} of {len(set(a) | set(b))}; speed-up "
          f"{rows['whole']['seconds'] / rows['cut']['seconds']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
