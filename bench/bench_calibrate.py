"""Benchmark of `trtcal calibrate` (the CPU backend) against its floor and ONNX Runtime's quantize_static.

Every figure is a whole process, started fresh, timed and measured by ``/usr/bin/time`` (wall
seconds, peak RSS), in the same run, median of ``--repeat`` runs:

- plain: ONNX Runtime runs the model over the data (outputs only);
- floor: ONNX Runtime runs the model over the same data with every tensor trtcal calibrates
  exposed as an output (the session trtcal itself builds), each batch's outputs dropped: what any
  calibrator that looks at every tensor pays before doing any work;
- trtcal: ``trtcal calibrate MODEL --data DATA --quiet`` (entropy2, 2048 bins, TensorRT's growth);
- ort-entropy-2048: ``quantize_static``'s entropy calibration at 2048 bins (the TensorRT-like
  setting) on the first ``--ort-samples`` samples, and trtcal on the same samples;
- memory with 4x the data: trtcal on a folder listing every batch file four times.

Usage: ``.venv/bin/python bench/bench_calibrate.py [--models fashion,effnet] [--repeat 3]
[--ort-samples 128] [--json out.json]``. Results are recorded in docs/benchmarks.md.
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
    "fashion": (ROOT / "trtcal/examples/fashion_cnn.onnx", ROOT / "trtcal/examples/fashion_calib.npz"),
    "effnet": (ROOT / ".cache/models/efficientnet_lite0.onnx", ROOT / ".cache/data/effnet_calib"),
    # ResNet-50's architecture, random weights (scripts/export_resnet50.py): for time and memory
    "resnet50": (ROOT / ".cache/models/resnet50_random.onnx", ROOT / ".cache/data/effnet_calib"),
}

RUN_ORT = r"""
import sys
sys.path.insert(0, {root!r})
import onnxruntime as ort
from trtcal.data import open_data
from trtcal.ort.runner import Runner
import trtcal.ort.runner as R
_session = R.cpu_session
R.cpu_session = lambda *a, **k: _session(*a, **dict(k, spinning={spin}))
# floor: every calibrated tensor an output; own: what trtcal exposes (derived tensors are not)
runner = Runner({model!r}, derive={derive})
if {plain}:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession({model!r}, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
else:
    session, names = runner.session, runner.output_names
for batch in open_data({data!r}, runner.inputs, batch_size={batch_size}):
    session.run(names, batch)
"""

ORT_ENTROPY = r"""
import sys, tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, {root!r})
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator
from trtcal.data import open_data
from trtcal.ort.runner import Runner
inputs = Runner({model!r}).inputs
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(list(open_data({data!r}, inputs)))
    def get_next(self):
        return next(self.it, None)
with tempfile.TemporaryDirectory() as tmp:
    cal = create_calibrator(Path({model!r}), None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                            calibrate_method=CalibrationMethod.Entropy, extra_options={{"num_bins": 2048,
                            "symmetric": True}})
    cal.collect_data(Reader())
    ranges = cal.compute_data()
print(len(ranges.data))
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a fresh process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name, *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:3]} failed: {proc.stderr.strip()[-500:]}")
        wall, kb = out.read().split()[-2:]
    return float(wall), float(kb) / 1024


def median_of(argv: list[str], repeat: int) -> tuple[float, float]:
    runs = [timed(argv) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def subset_folder(data: Path, samples: int, folder: Path, times: int = 1) -> Path:
    """A folder of batch files: the first ``samples`` samples of ``data`` (a folder of .npy or a .npz
    with one array), listed ``times`` times (symlinks, so 4x the data costs no disk)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if data.is_dir():
        files = sorted(data.glob("*.npy"))
    else:
        arrays = np.load(data)
        (key,) = [k for k in arrays.files if k != "labels"]
        x = arrays[key]
        files = []
        for i in range(0, len(x), 32):
            f = folder.parent / f"{folder.name}_src_{i // 32:04d}.npy"
            np.save(f, x[i:i + 32])
            files.append(f)
    seen, chosen = 0, []
    for f in files:
        if seen >= samples:
            break
        chosen.append(f)
        seen += len(np.load(f, mmap_mode="r"))
    for t in range(times):
        for i, f in enumerate(chosen):
            link = folder / f"{t:02d}_{i:04d}.npy"
            if not link.exists():
                link.symlink_to(f.resolve())
    return folder


def bench_model(name: str, model: Path, data: Path, repeat: int, ort_samples: int, work: Path,
                samples: int) -> dict:
    import numpy as np

    py = sys.executable
    out = {"model": name}
    full = subset_folder(data, samples, work / f"{name}_1x")
    four = subset_folder(data, samples, work / f"{name}_4x", times=4)
    small = subset_folder(data, max(ort_samples, 1), work / f"{name}_ort")
    cache = work / f"{name}.cache"

    def script(code: str, **kw) -> list[str]:
        return [py, "-c", code.format(root=str(ROOT), model=str(model), **kw)]

    calibrate = [str(TRTCAL), "calibrate", str(model), "--data", str(full), "-o", str(cache), "--force", "--quiet"]
    timed(calibrate)  # warm-up (numba's cache, the page cache); then every variant in turn, repeat times
    # plain and floor run the batches trtcal ran (its automatic batch size, from its sidecar)
    out["batch_size"] = json.loads(Path(str(cache) + ".trtcal.json").read_text())["batch_size"]

    def ort(plain: bool, derive: bool, spin: bool) -> list[str]:
        return script(RUN_ORT, data=str(full), plain=plain, batch_size=out["batch_size"], derive=derive, spin=spin)

    variants = {"trtcal": calibrate, "plain": ort(True, False, True),
                "floor_spinning": ort(False, False, True), "floor_no_spinning": ort(False, False, False),
                "floor_own": ort(False, True, False)}
    runs: dict[str, list] = {k: [] for k in variants}
    for _ in range(repeat):
        for key, argv in variants.items():
            runs[key].append(timed(argv))
    for key, rs in runs.items():
        out[key] = (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
    # the floor: all tensors exposed, ONNX Runtime's threads spinning or not, whichever is faster
    out["floor"] = min(out["floor_spinning"], out["floor_no_spinning"])
    out["trtcal_4x"] = median_of([str(TRTCAL), "calibrate", str(model), "--data", str(four), "-o", str(cache),
                                  "--force", "--quiet"], 1)
    if ort_samples <= 0:  # --ort-samples 0: no ONNX Runtime calibration (it holds every tensor)
        out["samples"] = sum(len(np.load(f, mmap_mode="r")) for f in sorted(full.glob("*.npy")))
        return out
    out["trtcal_ort_samples"] = median_of([str(TRTCAL), "calibrate", str(model), "--data", str(small), "-o",
                                           str(cache), "--force", "--quiet"], repeat)
    out["ort_entropy_2048"] = median_of(script(ORT_ENTROPY, data=str(small)), 1)
    out["samples"] = sum(len(np.load(f, mmap_mode="r")) for f in sorted(full.glob("*.npy")))
    out["ort_samples"] = sum(len(np.load(f, mmap_mode="r")) for f in sorted(small.glob("*.npy")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fashion,effnet")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ort-samples", type=int, default=128,
                        help="samples for ONNX Runtime's entropy calibration (0: skip it)")
    parser.add_argument("--samples", type=int, default=256, help="samples for the timings (4x for the memory check)")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, data = MODELS[name]
            if not model.exists():
                print(f"[{name}] skipped: {model} missing (run scripts/export_efficientnet_lite0.py)")
                continue
            r = bench_model(name, model, data, args.repeat, args.ort_samples, Path(tmp), args.samples)
            results.append(r)
            print(json.dumps(r), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(), "cpus": os.cpu_count(),
            "load": os.getloadavg()}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"\n{meta}")
    for r in results:
        t, f, p = r["trtcal"][0], r["floor"][0], r["plain"][0]
        print(f"[{r['model']}] floor spinning {r['floor_spinning'][0]:.2f} s, not spinning {r['floor_no_spinning'][0]:.2f} s; "
              f"with trtcal's exposure (derived tensors not exposed) {r['floor_own'][0]:.2f} s")
        print(f"[{r['model']}] {r['samples']} samples, batches of {r['batch_size']}: plain {p:.2f} s, floor {f:.2f} s, trtcal {t:.2f} s "
              f"= {t / f:.2f}x floor, {t / p:.2f}x plain; peak {r['trtcal'][1]:.0f} MB, 4x data "
              f"({4 * r['samples']} samples) {r['trtcal_4x'][1]:.0f} MB ({r['trtcal_4x'][1] / r['trtcal'][1]:.2f}x), "
              f"{r['trtcal_4x'][0]:.1f} s")
        if "ort_entropy_2048" not in r:
            continue
        o, ts = r["ort_entropy_2048"], r["trtcal_ort_samples"]
        print(f"[{r['model']}] {r['ort_samples']} samples: ORT entropy-2048 {o[0]:.1f} s / {o[1]:.0f} MB, trtcal "
              f"{ts[0]:.1f} s / {ts[1]:.0f} MB: {o[0] / ts[0]:.1f}x faster, {o[1] / ts[1]:.1f}x less memory")


if __name__ == "__main__":
    main()
