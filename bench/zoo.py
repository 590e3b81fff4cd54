"""The zoo study: ``trtcal quantize`` against every single trtcal method, ONNX Runtime and ModelOpt, per model.

For each model of bench/accuracy.py's ``MODELS`` (one per run is best: ``--models resnet``), on the
same calibration and held-out data and with the same scoring (``accuracy.score``: the INT8 Q/DQ
model against FP32, run as written), the columns of docs/accuracy.md's zoo table:

- ``quantize`` and ``quantize --max-float 5`` (:func:`trtcal.quantize`, ``accuracy.quantize_rows``);
- every single trtcal method (``accuracy.TRTCAL_METHODS``: TensorRT's entropy2 among them) applied
  to every tensor, from one calibration pass;
- ONNX Runtime ``quantize_static`` (``accuracy.ORT_METHODS``; the summary shows the best by SQNR);
- with ``--modelopt-python PY``: ModelOpt's int8 entropy and max (``accuracy.modelopt_rows``).

Each column also gets its wall time and peak memory, each measured in a process of its own: the
quantize runs, ONNX Runtime and ModelOpt as in bench/accuracy.py; the single trtcal methods in one
child process that calibrates once and writes every method's Q/DQ model (a method's seconds are
the shared pass plus its thresholds; its peak is that process's so far, which the pass sets).
Scoring happens here, outside those times.

For YOLOv8n (``yolo``) the rows also get the top-box agreement: for each held-out photo, whether
the INT8 model's highest-scoring box has FP32's class and an IoU of at least 0.5 with FP32's
(:func:`top_box_agreement`; the model's output is [batch, 4 + classes, boxes]: cx, cy, w, h,
then the class scores), over all photos and over those where FP32's top box is a detection
(score at least 0.2, nudenet's threshold; on the other photos the top box is background noise);
and the SQNR of the class scores apart from the box coordinates, which dominate the output's.

Usage: ``nice .venv/bin/python bench/zoo.py --models resnet --modelopt-python .venv-modelopt/bin/python
[--ort-samples 128] [--modelopt-samples 128] [--json out.json] [--work DIR]``. The resnet model comes from
``scripts/train_fashion_resnet.py``, yolo from ``bench/accuracy.py --prepare-yolo``. Results are
recorded in docs/accuracy.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import accuracy  # noqa: E402  (bench/accuracy.py, beside this file)

# ---------------------------------------------------------------------------- top-box agreement


def top_boxes(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's highest-scoring box of a YOLOv8 output ``pred`` [batch, 4 + classes, boxes]
    (cx, cy, w, h, then one score per class): its corners [batch, 4] (x0, y0, x1, y1), class
    [batch] and score [batch]. A box's score is its best class score; ties go to the first box."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[1] < 5:
        raise ValueError(f"expected [batch, 4 + classes, boxes], got shape {pred.shape}")
    scores = pred[:, 4:, :]                               # [B, C, N]
    best_class = scores.argmax(axis=1)                    # [B, N]
    best_score = scores.max(axis=1)                       # [B, N]
    top = best_score.argmax(axis=1)                       # [B]
    rows = np.arange(pred.shape[0])
    cx, cy, w, h = (pred[rows, i, top] for i in range(4))
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return corners, best_class[rows, top], best_score[rows, top]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` and ``b`` [n, 4] (x0, y0, x1, y1), pair by pair: [n]."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def top_box_agreement(reference: np.ndarray, test: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Per image [batch] (bool): whether ``test``'s highest-scoring box matches ``reference``'s,
    i.e. has the same class and an IoU of at least ``iou`` with it (YOLOv8 outputs, see
    :func:`top_boxes`)."""
    ref_box, ref_class, _ = top_boxes(reference)
    test_box, test_class, _ = top_boxes(test)
    return (ref_class == test_class) & (box_iou(ref_box, test_box) >= iou)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); inf when they are equal."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    noise = float(np.sum((reference - test) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference ** 2) / noise))


def part_sqnr(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """The output SQNR of a YOLOv8 output's two parts (see :func:`top_boxes`): the box coordinates
    (rows 0-3, pixels) and the class scores (rows 4-, 0..1). The whole output's SQNR is nearly the
    boxes' alone: their values are hundreds of times the scores'."""
    return sqnr_db(reference[:, :4], test[:, :4]), sqnr_db(reference[:, 4:], test[:, 4:])


_FP32_OUTPUTS: dict[str, np.ndarray] = {}


def _outputs(spec: dict, model: Path) -> np.ndarray:
    """The first output of ``model`` over the held-out data, every batch concatenated (ONNX
    Runtime CPU, Q/DQ as written)."""
    from trtcal.data import open_data
    from trtcal.ort.runner import cpu_session, input_specs

    session = cpu_session(str(model), str(model), int8_kernels=False)
    name = session.get_outputs()[0].name
    source = open_data(spec["eval"], input_specs(session), preprocess=accuracy._preprocess(spec), ignore={"labels"})
    return np.concatenate([session.run([name], batch)[0] for batch in source])


#: a top box counts as a detection from this score on (nudenet's own threshold for YOLOv8n)
DETECTED = 0.2


def top_box_score(spec: dict, int8_path) -> dict:
    """``accuracy.score``'s extra scores for a detector: the SQNR of the box coordinates and of
    the class scores apart (:func:`part_sqnr`); the share of held-out images whose top box the
    INT8 model keeps (:func:`top_box_agreement`), over all images and over those where FP32's top
    box is a detection (score at least ``DETECTED``); each image's result; FP32's median top score."""
    key = str(spec["model"])
    if key not in _FP32_OUTPUTS:
        _FP32_OUTPUTS[key] = _outputs(spec, Path(spec["model"]))
    reference = _FP32_OUTPUTS[key]
    test = _outputs(spec, Path(int8_path))
    agree = top_box_agreement(reference, test)
    fp32_scores = top_boxes(reference)[2]
    detected = fp32_scores >= DETECTED
    box_db, score_db = part_sqnr(reference, test)
    return {"box_sqnr_db": box_db, "score_sqnr_db": score_db, "top_box_agreement": float(agree.mean()), "top_box_images": int(agree.size),
            "top_box_detected_agreement": float(agree[detected].mean()) if detected.any() else None,
            "top_box_detected_images": int(detected.sum()), "top_box_per_image": agree.tolist(),
            "top_box_fp32_score_median": float(np.median(fp32_scores))}


# ---------------------------------------------------------------------------- columns

METHODS_SCRIPT = r"""
import json, resource, sys
sys.path[:0] = [{root!r}, {bench!r}]
from pathlib import Path
import accuracy
spec = accuracy.MODELS[{name!r}]
calib, seconds = accuracy.calibrate_spec(spec)
methods = []
for label, options in accuracy.TRTCAL_METHODS:
    path, t = accuracy.write_method_model({name!r}, spec, Path({work!r}), calib, label, options)
    methods.append({{"method": label, "path": str(path), "seconds": seconds + t,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}})
print(json.dumps({{"pass_seconds": seconds, "samples": calib.metadata["samples"], "methods": methods}}))
"""


def method_rows(name: str, spec: dict, work: Path) -> tuple[list[dict], float | None]:
    """Every single trtcal method's column (one calibration pass in a child process, see the
    module's docstring), scored here; and the pass's seconds (quantize's baseline)."""
    rows: list[dict] = []
    script = METHODS_SCRIPT.format(root=str(accuracy.ROOT), bench=str(BENCH), name=name, work=str(work))
    info = accuracy.run_script(script, rows, {"model": name, "tool": "trtcal", "method": "single methods"})
    if info is None:
        return rows, None
    print(f"[{name}] trtcal calibration pass: {info['pass_seconds']:.1f} s ({info['samples']} samples)", flush=True)
    for m in info["methods"]:
        rows.append({"model": name, "tool": "trtcal", "method": m["method"], "calib_seconds": m["seconds"],
                     "peak_rss_mb": m["peak_rss_mb"], "samples": info["samples"], **accuracy.score(spec, m["path"])})
        print(f"[{name}] trtcal {m['method']}: {rows[-1]}", flush=True)
    return rows, info["pass_seconds"]


def zoo_rows(name: str, spec: dict, work: Path, *, ort_samples: int, modelopt_python: str | None,
             modelopt_samples: int, no_ort: bool = False) -> list[dict]:
    """All the columns of one model (see the module's docstring)."""
    if name == "yolo":
        spec = {**spec, "extra_score": top_box_score}
    rows, pass_seconds = method_rows(name, spec, work)
    rows += accuracy.quantize_rows(name, spec, work, pass_seconds or float("nan"))
    if not no_ort:
        rows += accuracy.ort_rows(name, spec, work, ort_samples)
    if modelopt_python:
        rows += accuracy.modelopt_rows(name, spec, work, modelopt_samples, modelopt_python)
    return rows


# ---------------------------------------------------------------------------- summary

def _cell(row: dict | None) -> str:
    """SQNR dB / top-1 agreement (/ top-box agreement), wall s, peak MB."""
    if row is None:
        return "-"
    if "error" in row:
        return "failed"
    parts = [f"{row['sqnr_db']:.2f} dB"]
    if row.get("top1_agreement") is not None:
        parts.append(f"{100 * row['top1_agreement']:.1f}%")
    if row.get("score_sqnr_db") is not None:
        parts.append(f"scores {row['score_sqnr_db']:.2f} dB")
    if row.get("top_box_agreement") is not None:
        box = f"top box {round(row['top_box_agreement'] * row['top_box_images'])}/{row['top_box_images']}"
        if row.get("top_box_detected_images"):
            n = row["top_box_detected_images"]
            box += f" ({round(row['top_box_detected_agreement'] * n)}/{n} detected)"
        parts.append(box)
    return " / ".join(parts) + f" ({row['calib_seconds']:.1f} s, {row['peak_rss_mb']:.0f} MB)"


def summary(rows: list[dict]) -> list[str]:
    """docs/accuracy.md's zoo columns, one markdown line per model: quantize, ``--max-float 5``,
    the best single trtcal method, ONNX Runtime's best, ModelOpt max and entropy, TensorRT's
    entropy2 (best: by output SQNR)."""
    lines = ["| model | trtcal quantize | + `--max-float 5` | best single trtcal method | ONNX Runtime best | "
             "ModelOpt max | ModelOpt entropy | TensorRT's entropy2 |", "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and "error" not in r]

        def pick(tool, method=None, among=None, ok=ok):
            found = [r for r in ok if r["tool"] == tool and (method is None or r["method"] == method)
                     and (among is None or r["method"] in among)]
            return max(found, key=lambda r: r["sqnr_db"]) if found else None

        single = pick("trtcal", among={label for label, _ in accuracy.TRTCAL_METHODS})
        ort = pick("onnxruntime")
        cells = [_cell(pick("trtcal", "quantize")), _cell(pick("trtcal", "quantize --max-float 5")),
                 _cell(single) + (f" ({single['method']})" if single else ""),
                 _cell(ort) + (f" ({ort['method']})" if ort else ""),
                 _cell(pick("modelopt", "max")), _cell(pick("modelopt", "entropy")), _cell(pick("trtcal", "entropy2"))]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet", help="comma-separated names of bench/accuracy.py's MODELS "
                        f"({', '.join(accuracy.MODELS)}); one per run keeps the times apart")
    parser.add_argument("--ort-samples", type=int, default=512,
                        help="samples for quantize_static (its histogram methods keep every tensor in memory)")
    parser.add_argument("--no-ort", action="store_true", help="leave out ONNX Runtime's columns")
    parser.add_argument("--modelopt-python", metavar="PYTHON",
                        help="a Python with nvidia-modelopt[onnx] installed: adds ModelOpt's entropy and max columns")
    parser.add_argument("--modelopt-samples", type=int, default=512, help="calibration samples for ModelOpt")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--work", metavar="DIR", help="keep the INT8 models here (default: a temporary folder)")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.work:
            tmp = args.work
            Path(tmp).mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            spec = accuracy.MODELS[name]
            if not Path(spec["model"]).exists():
                print(f"[{name}] skipped: {spec['model']} is missing (run its export script)", flush=True)
                continue
            rows += zoo_rows(name, spec, Path(tmp), ort_samples=args.ort_samples, no_ort=args.no_ort,
                             modelopt_python=args.modelopt_python, modelopt_samples=args.modelopt_samples)
    accuracy.write_json(args.json, rows, command=sys.argv)
    accuracy.print_rows(rows)
    print()
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
