"""The accuracy study: trtcal's ranges vs ONNX Runtime's quantize_static, as INT8 Q/DQ models.

For each model (the bundled Fashion-MNIST CNN; EfficientNet-Lite0 and all-MiniLM-L6-v2 when
their export scripts have written them under .cache/), in one run:

- trtcal: one calibration pass with statistics, then every threshold method from the statistics
  (plus EQ, which needs the model); each cache becomes a Q/DQ model (``trtcal.onnx.qdq``, TensorRT's
  rules: symmetric int8, per-channel weights, no bias quantization).
- ONNX Runtime ``quantize_static`` in QDQ format with the TensorRT-compatible settings (symmetric
  int8 activations and weights, per-channel, bias not quantized): MinMax, Entropy at its default
  128 bins and at 2048 bins, Percentile 99.99. Each runs in its own process; wall time and peak
  RSS are measured there.
- Every INT8 model is compared with FP32 on held-out data by ``trtcal.ort.evaluate``: top-1 (with
  labels) and top-1 agreement for classifiers (over all samples, and over those FP32 is sure of:
  top-1 probability at least 0.5), mean KL divergence of the softmaxes, output SQNR, cosine similarity.

- With ``--modelopt-python PY`` (a venv with ``nvidia-modelopt[onnx]``): NVIDIA ModelOpt's ONNX PTQ,
  int8, entropy and max calibration, on the first ``--modelopt-samples`` samples, in its own process
  (on a copy of the model: ModelOpt 0.47 rewrites its input file).

Usage: ``.venv/bin/python bench/accuracy.py [--models fashion,effnet,minilm] [--ort-samples N]
[--modelopt-python .venv-modelopt/bin/python] [--json out.json]``. Results are recorded in
docs/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "fashion": dict(model=ROOT / "trtcal/examples/fashion_cnn.onnx", calib=ROOT / "trtcal/examples/fashion_calib.npz",
                    eval=ROOT / "trtcal/examples/fashion_eval.npz", labels=ROOT / "trtcal/examples/fashion_eval.npz"),
    "effnet": dict(model=ROOT / ".cache/models/efficientnet_lite0.onnx", calib=ROOT / ".cache/data/effnet_calib",
                   eval=ROOT / ".cache/data/effnet_eval", labels=None),
    "minilm": dict(model=ROOT / ".cache/models/minilm.onnx", calib=ROOT / ".cache/data/minilm_calib.npz",
                   eval=ROOT / ".cache/data/minilm_eval.npz", labels=None),
}

TRTCAL_METHODS = [("entropy2", {}), ("entropy2 keep", {"zero_bin": "keep"}), ("minmax", {}), ("percentile 99.99", {"q": 0.9999}),
                  ("percentile 99.999", {"q": 0.99999}), ("mse", {}), ("aciq", {}), ("onesided", {})]

ORT_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from trtcal.data import open_data
from trtcal.ort.runner import cpu_session, input_specs
specs = input_specs(cpu_session({model!r}, {model!r}))
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = self.gen()
    def gen(self):
        seen = 0
        for batch in open_data({calib!r}, specs, batch_size=16):
            n = next(iter(batch.values())).shape[0]
            take = min(n, {samples} - seen)
            yield {{k: v[:take] for k, v in batch.items()}}
            seen += take
            if seen >= {samples}:
                return
    def get_next(self):
        return next(self.it, None)
method = {method!r}
extra = {{"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}}
cm = {{"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
      "percentile": CalibrationMethod.Percentile}}[method.split("-")[0]]
if method.startswith("percentile"):
    extra["CalibPercentile"] = 99.99
t = time.perf_counter()
if method == "entropy-2048":
    # quantize_static has no key for the bin count (it ignores num_bins, ASSETS.md): run its entropy
    # calibrator with 2048 bins and hand the ranges over as its calibration cache.
    import tempfile
    from pathlib import Path
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    with tempfile.TemporaryDirectory() as tmp:
        cal = create_calibrator(Path({model!r}), None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=cm, extra_options={{"num_bins": 2048, "symmetric": True}})
        cal.collect_data(Reader())
        save_tensors_data(cal.compute_data(), Path(tmp) / "ranges.json")
        del cal
        quantize_static({model!r}, {out!r}, None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=cm,
                        extra_options=extra, calibration_cache_path=str(Path(tmp) / "ranges.json"))
else:
    quantize_static({model!r}, {out!r}, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=cm,
                    extra_options=extra)
print(json.dumps({{"seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure(fn):
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def score(spec, int8_path) -> dict:
    from trtcal.ort.evaluate import evaluate

    ev = evaluate(spec["model"], int8_path, spec["eval"], labels=spec["labels"], per_tensor=False, progress=False)
    d = ev.outputs[0].to_dict()
    return {k: d.get(k) for k in ("sqnr_db", "cosine_mean", "top1_agreement", "top1_reference", "top1_test",
                                  "kl_mean", "top1_agreement_sure", "sure_samples")}


def run_model(name: str, spec: dict, work: Path, ort_samples: int, with_eq: bool, eq_steps: int = 100,
              methods: list[str] | None = None, no_ort: bool = False, eq_init: str = "entropy2") -> list[dict]:
    from trtcal.core import thresholds
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.pipeline import calibrate, ranges_to_cache

    rows = []
    calib, seconds = measure(lambda: calibrate(spec["model"], spec["calib"], progress=False))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{name}] trtcal calibration pass: {seconds:.1f} s ({calib.metadata['samples']} samples)", flush=True)
    for label, options in TRTCAL_METHODS:
        method = label.split()[0]
        if methods is not None and label not in methods:
            continue
        results, t_thr = measure(lambda m=method, o=options: thresholds.compute_all(m, calib.histograms, **o))
        cache = ranges_to_cache(results, algorithm=method)
        out = work / f"{name}-trtcal-{label.replace(' ', '')}.onnx"
        write_qdq(spec["model"], cache).save(out, force=True)
        rows.append({"model": name, "tool": "trtcal", "method": label, "calib_seconds": seconds + t_thr,
                     "peak_rss_mb": peak, "samples": calib.metadata["samples"], **score(spec, out)})
        print(f"[{name}] trtcal {label}: {rows[-1]}", flush=True)
    if with_eq:
        from trtcal.ort import eq
        from trtcal.ort.runner import first_samples

        batches = first_samples(spec["model"], spec["calib"], samples=64)
        amaxes = {n: r.amax for n, r in thresholds.compute_all(eq_init, calib.histograms).items()}
        refined, t_eq = measure(lambda: eq.refine(spec["model"], batches, amaxes, steps=eq_steps))
        cache = ranges_to_cache({n: thresholds.ThresholdResult(a, "eq") for n, a in refined.amaxes.items()},
                                algorithm="entropy2")
        out = work / f"{name}-trtcal-eq.onnx"
        write_qdq(spec["model"], cache, weight_scales=refined.weight_scales).save(out, force=True)
        label = f"eq ({eq_steps} steps" + (f", from {eq_init})" if eq_init != "entropy2" else ")")
        rows.append({"model": name, "tool": "trtcal", "method": label, "calib_seconds": seconds + t_eq,
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "samples": calib.metadata["samples"], **score(spec, out)})
        print(f"[{name}] trtcal eq: {rows[-1]}", flush=True)
    for method in () if no_ort else ("minmax", "entropy-128", "entropy-2048", "percentile-99.99"):
        out = work / f"{name}-ort-{method}.onnx"
        script = ORT_SCRIPT.format(root=str(ROOT), model=str(spec["model"]), calib=str(spec["calib"]), out=str(out),
                                   method=method, samples=ort_samples)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"model": name, "tool": "onnxruntime", "method": method, "error": tail[:300]})
            print(f"[{name}] ort {method}: FAILED {tail[:300]}", flush=True)
            continue
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"model": name, "tool": "onnxruntime", "method": method, "calib_seconds": stats["seconds"],
                     "peak_rss_mb": stats["peak_rss_mb"], "samples": ort_samples, **score(spec, out)})
        print(f"[{name}] ort {method}: {rows[-1]}", flush=True)
    return rows


def modelopt_rows(name: str, spec: dict, work: Path, samples: int, python: str) -> list[dict]:
    """NVIDIA ModelOpt's ONNX PTQ (int8; entropy and max), run by ``python`` (a venv with
    ``nvidia-modelopt[onnx]``) on a copy of the model: ModelOpt 0.47 rewrites its input file."""
    import shutil

    import numpy as np

    from trtcal.ort.runner import first_samples

    batches = first_samples(spec["model"], spec["calib"], samples=samples)
    data = work / f"{name}-modelopt-calib.npz"
    np.savez(data, **{k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
    count = sum(len(next(iter(b.values()))) for b in batches)
    rows = []
    for method in ("entropy", "max"):
        copy, out = work / f"{name}-modelopt-in-{method}.onnx", work / f"{name}-modelopt-{method}.onnx"
        shutil.copyfile(spec["model"], copy)
        timing = work / "modelopt.time"
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(timing), python, "-m",
                               "modelopt.onnx.quantization", f"--onnx_path={copy}", "--quantize_mode=int8",
                               f"--calibration_data={data}", f"--calibration_method={method}",
                               "--calibration_eps=cpu", f"--output_path={out}"], capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"model": name, "tool": "modelopt", "method": method, "error": tail[:300]})
            print(f"[{name}] modelopt {method}: FAILED {tail[:300]}", flush=True)
            continue
        wall, kb = timing.read_text().split()[-2:]
        rows.append({"model": name, "tool": "modelopt", "method": method, "calib_seconds": float(wall),
                     "peak_rss_mb": float(kb) / 1024, "samples": count, **score(spec, out)})
        print(f"[{name}] modelopt {method}: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fashion,effnet,minilm")
    parser.add_argument("--ort-samples", type=int, default=512,
                        help="samples for quantize_static (its histogram methods keep every tensor in memory)")
    parser.add_argument("--no-eq", action="store_true")
    parser.add_argument("--eq-steps", type=int, default=100)
    parser.add_argument("--eq-init", default="entropy2", help="the ranges EQ starts from (default entropy2)")
    parser.add_argument("--methods", help="only these trtcal columns, comma-separated labels (e.g. 'mse,onesided'); "
                        "'none' for none")
    parser.add_argument("--no-ort", action="store_true", help="trtcal columns only")
    parser.add_argument("--modelopt-python", metavar="PYTHON",
                        help="a Python with nvidia-modelopt[onnx] installed: adds ModelOpt's entropy and max columns")
    parser.add_argument("--modelopt-samples", type=int, default=512, help="calibration samples for ModelOpt")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            spec = MODELS[name]
            if not Path(spec["model"]).exists():
                print(f"[{name}] skipped: {spec['model']} is missing (run its export script)", flush=True)
                continue
            methods = None if args.methods is None else [m for m in args.methods.split(",") if m and m != "none"]
            rows += run_model(name, spec, Path(tmp), args.ort_samples, not args.no_eq, args.eq_steps, methods=methods,
                              no_ort=args.no_ort, eq_init=args.eq_init)
            if args.modelopt_python:
                rows += modelopt_rows(name, spec, Path(tmp), args.modelopt_samples, args.modelopt_python)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cpus": os.cpu_count()}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"\n{'model':<8} {'tool':<12} {'method':<18} {'top-1':>7} {'agree':>7} {'sure':>7} {'KL':>7} {'SQNR dB':>8} "
          f"{'cosine':>7} {'calib s':>8} {'peak MB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<8} {r['tool']:<12} {r['method']:<18} failed: {r['error'][:60]}")
            continue
        top1 = f"{100 * r['top1_test']:.2f}" if r.get("top1_test") is not None else "-"
        agree = f"{100 * r['top1_agreement']:.2f}" if r.get("top1_agreement") is not None else "-"
        sure = f"{100 * r['top1_agreement_sure']:.2f}" if r.get("sure_samples") else "-"
        kl = f"{r['kl_mean']:.4f}" if r.get("kl_mean") is not None else "-"
        print(f"{r['model']:<8} {r['tool']:<12} {r['method']:<18} {top1:>7} {agree:>7} {sure:>7} {kl:>7} "
              f"{r['sqnr_db']:>8.2f} {r['cosine_mean']:>7.4f} {r['calib_seconds']:>8.1f} {r['peak_rss_mb']:>8.0f}")


if __name__ == "__main__":
    main()
