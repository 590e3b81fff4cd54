"""``quantize``: an FP32 ONNX model and data in, the best INT8 trtcal can make out: the Q/DQ model
(TensorRT 11, TensorRT-RTX, ONNX Runtime), the TensorRT cache of the same ranges (TensorRT <= 10),
the statistics, and a quality summary on held-out samples.

1. **Calibrate** once (:func:`trtcal.ort.pipeline.calibrate`, entropy2, statistics kept). Without
   separate evaluation data, every :data:`HOLDOUT_EVERY`-th batch is held out: never calibrated
   on, used for the summary only.
2. **Choose ranges per tensor** for every activation TensorRT's placement quantizes
   (:mod:`trtcal.ort.range_choice`), on the first ``select_samples`` calibration samples.
3. **Check the choice at the model's outputs**: the per-tensor choice and each single method
   applied to every tensor (entropy2 as TensorRT does, minmax, the percentiles, mse, ...) are
   written as Q/DQ models and scored (output SQNR: :mod:`trtcal.ort.sensitivity`) on the same
   calibration samples; the best wins, so the result is never worse there than any single method.
   With ``refine``, each tensor in turn then tries its per-tensor choice and the
   :data:`REFINE_LABELS` candidates at the outputs, keeping every change that scores better
   (about four Q/DQ models scored per tensor). With ``weight_rounding="gptq"`` (the default), the
   weights are then rounded by GPTQ (:mod:`trtcal.ort.weight_rounding`: codes chosen for each
   layer's output, its input quantized at the chosen range) on the max scales, and kept if the
   model scores better so, judged on samples it was not fit on. Where it is not kept (or not
   asked), with ``search_weights`` (the default) the weighted layers' per-channel weight scales
   are searched for the winning ranges (:func:`trtcal.ort.range_choice.search_weights`) and kept
   if the model scores better with them. (Until 2026-12-06 late the search ran first and GPTQ was
   compared with its result; GPTQ won wherever it was kept, so the search's time was spent for
   nothing on four of the five zoo models. GPTQ on the searched scales scored lower on the
   Fashion CNN, EfficientNet-Lite0 and YOLOv8n.) Weight scales and rounding live in
   the Q/DQ model only: a TensorRT <= 10 cache holds activation ranges, and TensorRT computes and
   rounds its weights itself.
4. **Fallback**, only when asked: ``max_float`` leaves the tensors whose float fallback gains most
   in float (:func:`trtcal.ort.sensitivity.analyse`, leave-one-out); ``target_sqnr`` leaves the
   fewest of them, in that order, that bring the output SQNR on the selection samples to the
   target (at most :data:`MAX_TARGET_FLOAT`; the summary says whether it was reached).
4b. **Shift** one-sided activations into their readers' biases (``shift_one_sided``, TensorRT
   target), kept if the model scores better; 4c. **correct the biases** layer by layer
   (``bias_correction``: ``"auto"``, the default, judged as GPTQ is; ``"on"`` always; ``"off"``).
5. **Write** the Q/DQ model, the TensorRT cache (the chosen ranges; entropy2 for the tensors the
   Q/DQ placement leaves alone, which TensorRT's implicit INT8 may still ask for), the statistics
   and the provenance sidecars, and **score** the written model and TensorRT's default (entropy2
   everywhere) on the held-out samples.

Nothing is written until everything has been computed; existing outputs are replaced only with
``force``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from trtcal.cache.format import DEFAULT_TRT_VERSION, CalibrationCache, Version, format_version
from trtcal.core.errors import TrtcalError

#: Without evaluation data, batch ``i`` is held out when ``i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1``.
HOLDOUT_EVERY = 5
TARGETS = ("tensorrt", "onnxruntime")
#: The candidates ``refine`` tries for each tensor, besides its per-tensor choice.
REFINE_LABELS = ("entropy2", "mse", "percentile 99.99")
#: The smoothed model is kept only when it scores this much (dB) above the original on the judging
#: samples: a smaller gain is within float rounding of the search, and the smoothed model is one
#: more file a TensorRT <= 10 build must use (PP-OCRv4 rec: 11.39 against 11.38 dB).
SMOOTH_MARGIN_DB = 0.1
#: The smoothed copy is quantized only when SmoothQuant's search gained this much (dB) on the
#: selection samples: less does not survive the judge (PP-OCRv4 rec: +0.16 dB in the search, +0.01
#: judged, a quantize run spent; all-MiniLM-L6-v2: +6.2 and +7.5).
SMOOTH_MIN_SEARCH_GAIN_DB = 0.5
#: When the search's own two Q/DQ models (the original and the smoothed, each with the search's
#: ranges and max weight scales) differ by this much (dB) on the judging samples, only the better
#: one is quantized in full. Range choice and weight search moved the two by 2.5 dB relative to
#: each other, in the smoothed model's favour (all-MiniLM-L6-v2 on the judging samples: 11.86 ->
#: 11.93 dB original, 16.91 -> 19.43 smoothed); closer than this, both are quantized and judged again.
SMOOTH_DECISIVE_DB = 3.0
#: How ``quantize`` may round the weights: ``"gptq"`` also tries GPTQ rounding
#: (:mod:`trtcal.ort.weight_rounding`) on the max weight scales and keeps it where it scores
#: better at the outputs; ``"nearest"`` rounds to nearest only (as TensorRT does).
WEIGHT_ROUNDINGS = ("gptq", "nearest")
#: ``quantize``'s layer-wise bias correction (step 4c): ``"auto"`` (the default: kept where the
#: model scores better on samples it was not fit on and on the selection samples), ``"on"`` (always
#: kept) or ``"off"``. Held out (docs/accuracy.md, "Layer-wise bias correction"): kept on YOLOv8n
#: (class scores 9.59 -> 12.93 dB) and EfficientNet-Lite0 (24.74 -> 25.35 dB, top-1 agreement
#: 93.8 -> 94.7%), refused on the Fashion CNN, its ResNet-8 and all-MiniLM-L6-v2.
BIAS_CORRECTIONS = ("off", "auto", "on")
#: The most tensors ``target_sqnr`` leaves in float.
MAX_TARGET_FLOAT = 20


@dataclass
class QuantizeResult:
    """What :func:`quantize` wrote and measured."""

    model: Path  # the Q/DQ model
    cache: Path  # the TensorRT cache of the same ranges
    stats: Path  # the calibration statistics
    chosen: str  # "per-tensor" or the single method that scored best at the outputs, with choice_record.STEPS suffixes
    choice: object  # the per-tensor RangeChoice (every tensor's candidates and errors)
    selection: dict[str, float]  # candidate range set -> output SQNR (dB) on the selection samples
    summary: dict | None  # held-out scores: the written model and TensorRT's entropy2 (None until committed)
    float_tensors: list[str] = field(default_factory=list)  # left in float by the fallback
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    final_db: float = math.nan  # the written model's output SQNR on the selection samples (after any fallback)
    smoothquant: dict | None = None  # with smoothquant: what was smoothed and which model won
    _commit: object = field(default=None, repr=False)  # scores on the held-out samples, writes the outputs (quantize's own use)
    _qdq: object = field(default=None, repr=False)  # the Q/DQ ModelProto

    def to_dict(self) -> dict:
        return {"model": str(self.model), "cache": str(self.cache), "stats": str(self.stats), "chosen": self.chosen,
                "selection_sqnr_db": self.selection, "final_selection_sqnr_db": self.final_db,
                "summary": self.summary, "float_tensors": self.float_tensors, "smoothquant": self.smoothquant,
                "ranges": self.choice.to_dict(), "warnings": self.warnings,
                "metadata": {**self.metadata, **({"bias_correction": _bias_summary(self.metadata["bias_correction"])}
                                                 if "bias_correction" in self.metadata else {})}}


def default_outputs(model: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``<model stem>.int8.onnx`` beside the model, ``calib_caches/<stem>.cache`` and its statistics."""
    m = Path(model)
    return (m.with_name(m.stem + ".int8.onnx"), Path("calib_caches") / f"{m.stem}.cache",
            Path("calib_caches") / f"{m.stem}.stats.npz")


def _held_out(index: int) -> bool:
    return index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def _quantize(model: str | os.PathLike, data: str | os.PathLike, *, output: str | os.PathLike | None = None,
             cache: str | os.PathLike | None = None, stats: str | os.PathLike | None = None,
             target: str = "tensorrt", eval_data: str | os.PathLike | None = None, eval_samples: int = 256,
             select_samples: int = 64, max_float: int = 0, target_sqnr: float | None = None, trt_version: Version = DEFAULT_TRT_VERSION,
             preprocess=None, batch_size: int | None = None, max_batches: int | None = None,
             batch_axes: dict | None = None, shapes: dict | None = None, allow_nonfinite: bool = False,
             score=None, classifiers=None, candidates=None, refine: bool = False, search_weights: bool = True,
             attention: str = "int8",
             weight_samples: int = 16, weight_rounding: str = "gptq", shift_one_sided: bool = True,
             bias_correction: str = "auto", force: bool = False, _moved_from: str | None = None,
             progress: bool | None = None, log=None, commit: bool = True, extra_meta: dict | None = None
             ) -> QuantizeResult:
    """Quantize ``model`` with ``data`` (any :mod:`trtcal.data` source); see the module doc.

    ``output``, ``cache``, ``stats``: where the Q/DQ model, the TensorRT cache and the statistics
    go (default :func:`default_outputs`). ``eval_data``: held-out samples for the summary (default:
    every fifth batch of ``data``, not calibrated on). ``select_samples``: calibration samples the
    ranges are chosen on; ``eval_samples``: held-out samples scored. ``max_float``: tensors the
    fallback may leave in float (0: all INT8); ``target_sqnr``: instead, the fewest that reach this
    output SQNR (dB) on the selection samples. ``score``, ``classifiers``: which outputs are
    scored (:func:`trtcal.ort.evaluate.choose_outputs`). ``attention``: ``"int8"`` (TensorRT's INT8
    fused attention) or ``"float"`` (both batched MatMuls of each attention block left in float;
    :func:`trtcal.onnx.qdq.write_qdq`). ``refine``: the tensor-by-tensor search at
    the outputs (module doc; slower). ``search_weights``: also search per-channel
    weight scales (module doc), on the first ``weight_samples`` of the selection samples (as good as
    64 on EfficientNet-Lite0 at a quarter of the time). ``weight_rounding``: ``"gptq"`` or
    ``"nearest"``; ``shift_one_sided``: step 4b; ``bias_correction``: ``"off"``, ``"auto"`` or
    ``"on"`` (step 4c, :data:`BIAS_CORRECTIONS`). ``log`` receives one line per phase.
    """
    from trtcal.cache.provenance import sidecar_path, write_sidecar
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.core.ranges import Range, from_thresholds
    from trtcal.core.stats import save_stats
    from trtcal.data.sources import samples_in
    from trtcal.onnx.model import load_model
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.evaluate import choose_outputs
    from trtcal.ort.pipeline import calibrate, file_sha256
    from trtcal.ort.range_choice import choose_ranges
    from trtcal.ort.range_choice import search_weights as search_weights_for
    from trtcal.ort.runner import first_batches
    from trtcal.ort.sensitivity import analyse, reference_outputs, score_model

    say = log or (lambda line: None)
    if target not in TARGETS:
        raise TrtcalError(f"--target {target!r}: choose from {', '.join(TARGETS)}")
    for name, value in (("--eval-samples", eval_samples), ("--select-samples", select_samples),
                        ("weight_samples", weight_samples)):
        if not isinstance(value, int) or value < 1:
            raise TrtcalError(f"{name} {value!r}: must be a whole number >= 1")
    if bias_correction not in BIAS_CORRECTIONS:
        raise TrtcalError(f"--bias-correction {bias_correction!r}: choose from {', '.join(BIAS_CORRECTIONS)}")
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise TrtcalError(f"--weight-rounding {weight_rounding!r}: choose from {', '.join(WEIGHT_ROUNDINGS)}")
    if not isinstance(max_float, int) or max_float < 0:
        raise TrtcalError(f"--max-float {max_float!r}: must be a whole number >= 0")
    if target_sqnr is not None and max_float:
        raise TrtcalError("--max-float and --target-sqnr exclude each other: give a count, or a target")
    if target_sqnr is not None and not math.isfinite(target_sqnr):
        raise TrtcalError(f"--target-sqnr {target_sqnr!r}: must be a number of dB")
    default = default_outputs(model)
    if cache is None or stats is None:
        default[1].parent.mkdir(exist_ok=True)  # calib_caches/, as trtcal calibrate makes it
    output, cache, stats = (Path(p) if p is not None else d for p, d in zip((output, cache, stats), default))
    inputs_read = [model, data] + ([eval_data] if eval_data is not None else [])
    for path in (output, cache, sidecar_path(cache), stats, sidecar_path(output)):
        fileio.check_output(path, force=force, inputs=inputs_read)
    fp32 = load_model(model, load_weights=True, fp32=True)
    choice_of_outputs = choose_outputs(fp32, str(model), score=score, classifiers=classifiers)
    feed = {"batch_axes": batch_axes, "shapes": shapes, "allow_nonfinite": allow_nonfinite}

    # 1. calibrate (held-out batches skipped when there is no evaluation data)
    say(f"calibrating {_moved_from or model} on {data}" + ("" if eval_data is not None else
                                             f" (every {HOLDOUT_EVERY}th batch held out for the summary)"))
    keep = None if eval_data is not None else (lambda i: not _held_out(i))
    cal = calibrate(model, data, algorithm="entropy2", batch_size=batch_size, max_batches=max_batches,
                    trt_version=trt_version, preprocess=preprocess, progress=progress, keep_batch=keep, **feed)
    if _moved_from is not None:  # quantize() converted the model's Constant weights: record the model given
        cal.metadata.update({k: v for k, v in (extra_meta or {}).items() if k in ("model", "model_sha256")})
    bs = cal.metadata["batch_size"]
    warnings = list(cal.warnings)
    selection, specs = first_batches(model, data, samples=select_samples, batch_size=bs, preprocess=preprocess,
                                     keep_batch=keep, **feed)
    held_note = None
    if eval_data is not None:
        held, _ = first_batches(model, eval_data, samples=eval_samples, batch_size=bs, preprocess=preprocess, **feed)
        held_from = str(eval_data)
    else:
        held, _ = first_batches(model, data, samples=eval_samples, batch_size=bs, preprocess=preprocess,
                                keep_batch=_held_out, **feed)
        held_from = f"{data} (every {HOLDOUT_EVERY}th batch, not calibrated on)"
        if not held:
            held, held_from = selection, f"{data} (calibration samples: fewer than {HOLDOUT_EVERY} batches to hold one out)"
            held_note = ("the summary is measured on calibration samples: the data has fewer than "
                         f"{HOLDOUT_EVERY} batches of {bs}; give held-out samples with --eval-data")
            warnings.append(held_note)

    # 2. the activations TensorRT's placement quantizes, and a range for each
    base_ranges = from_thresholds(cal.thresholds, cal.histograms, source="entropy2")
    placed = write_qdq(fp32, base_ranges, target=target, attention=attention, check_onnxruntime=False)
    tensors = [q.name for q in placed.activations]
    if not tensors:
        raise TrtcalError(f"{model}: TensorRT's placement quantizes no activation here (no Conv, Gemm, MatMul ... "
                          "with calibrated inputs): nothing to quantize")
    unsigned = {q.name for q in placed.activations if q.dtype == "uint8"}
    say(f"choosing ranges for {len(tensors)} tensors on {sum(samples_in(b, specs) for b in selection)} "
        "calibration samples")
    with Progress(len(tensors), "choosing ranges", enabled=progress) as bar:
        choice = choose_ranges(model, cal.histograms, selection, tensors, unsigned=unsigned,
                               candidates=candidates, inputs=specs, progress=bar)

    def ranges_of(amaxes: dict[str, float], label: str) -> dict[str, Range]:
        out = dict(base_ranges)
        for name, amax in amaxes.items():
            out[name] = Range(0.0, amax, 8, label) if base_ranges[name].low == 0 else Range.symmetric(amax, source=label)
        return out

    # 3. the per-tensor choice against every single method, at the model's outputs
    sets = {"per-tensor": ranges_of(choice.amaxes, "per-tensor")}
    labels = list(dict.fromkeys(label for c in choice.choices.values() for label in c.amaxes))
    for label in labels:
        sets[label] = ranges_of({n: c.amaxes.get(label, c.amaxes.get("entropy2", c.amax)) for n, c in choice.choices.items()},
                                label)  # a label a tensor lacks (onesided, unsigned) is entropy2 there
    refs, _ = reference_outputs(fp32, selection, choice_of_outputs, batch_axes=batch_axes)
    with Progress(len(sets), "scoring at the outputs", enabled=progress) as bar:
        scores = _score_sets(fp32, sets, selection, refs, choice_of_outputs, target=target, attention=attention,
                             progress=bar)
    chosen = max(scores, key=lambda k: (_finite(scores[k]), k == "per-tensor"))
    ranges = sets[chosen]
    if refine:
        current = {n: ranges[n].amax for n in choice.choices}
        best = scores[chosen]
        say(f"refining {len(current)} tensors one at a time at the outputs, from {chosen}")
        with Progress(len(current), "refining", enabled=progress) as bar:
            for name, c in choice.choices.items():
                for amax in dict.fromkeys([c.amax] + [c.amaxes[label] for label in REFINE_LABELS if label in c.amaxes]):
                    if amax == current[name]:
                        continue
                    trial = {**current, name: amax}
                    model_trial = write_qdq(fp32, ranges_of(trial, "refined"), target=target, attention=attention,
                                            check_onnxruntime=False)
                    got_score = score_model(model_trial.model, selection, refs, choice_of_outputs, sqnr_only=True).sqnr_db
                    if _finite(got_score) > _finite(best):
                        best, current = got_score, trial
                bar.update()
        if _finite(best) > _finite(scores[chosen]):
            chosen = f"{chosen} + refined"
            scores[chosen], ranges = best, ranges_of(current, "refined")
    weights: dict = {}
    rounding = None
    later = _later_samples(model, data, {"select_samples": select_samples, "eval_data": eval_data,
                                         "batch_size": bs, "preprocess": preprocess, **feed}) \
        if weight_rounding == "gptq" or bias_correction != "off" else []
    judging = _judging(selection, later, specs, fp32, choice_of_outputs, batch_axes)
    if weight_rounding == "gptq":
        rounding = _round_by_gptq(model, fp32, ranges, tensors, chosen, selection, judging, specs, refs,
                                  choice_of_outputs, scores, target=target, attention=attention, unsigned=unsigned,
                                  progress=progress, say=say)
        if rounding["kept"]:
            chosen, weights = rounding.pop("label"), {"weight_values": rounding.pop("values")}
    if search_weights and not weights:  # GPTQ's rounding is on the max scales: a search is for nearest rounding
        amaxes_chosen = {n: ranges[n].amax for n in tensors if n in ranges}
        say(f"searching per-channel weight scales for {chosen}")
        with Progress(len(tensors), "searching weight scales", enabled=progress) as bar:
            scales = search_weights_for(model, amaxes_chosen, _first_samples(selection, specs, weight_samples),
                                        unsigned=unsigned, inputs=specs, progress=bar)
        trial = write_qdq(fp32, ranges, target=target, attention=attention, check_onnxruntime=False, weight_scales=scales)
        label = f"{chosen} + weights"
        scores[label] = score_model(trial.model, selection, refs, choice_of_outputs, sqnr_only=True).sqnr_db
        if _finite(scores[label]) > _finite(scores[chosen]):
            chosen, weights = label, {"weight_scales": scales}
    say(f"ranges: {chosen} ({scores[chosen]:.2f} dB on the selection samples; entropy2 "
        f"{scores.get('entropy2', math.nan):.2f} dB)")

    # 4. fallback, if asked
    float_tensors: list[str] = []
    fallback = None
    if max_float > 0:
        with Progress(None, "fallback", enabled=progress) as bar:
            sens, final = analyse(model, ranges, selection, max_float=max_float, target=target, attention=attention, progress=bar,
                                  score=score, classifiers=classifiers, batch_axes=batch_axes, **weights)
        float_tensors = list(sens.chosen)
        fallback = {"max_float": max_float, "selection_sqnr_db": [sens.baseline_db, sens.final_db]}
    elif target_sqnr is not None and scores[chosen] < target_sqnr:
        with Progress(None, "fallback", enabled=progress) as bar:
            sens, final = analyse(model, ranges, selection, max_float=0, target=target, attention=attention, progress=bar,
                                  score=score, classifiers=classifiers, batch_axes=batch_axes, **weights)
        current = scores[chosen]
        for name in [n for n, g in sens.gains.items() if g > 0][:MAX_TARGET_FLOAT]:
            if current >= target_sqnr:
                break
            float_tensors.append(name)
            final = write_qdq(fp32, {n: r for n, r in ranges.items() if n not in float_tensors}, target=target,
                              attention=attention, **weights)
            current = score_model(final.model, selection, refs, choice_of_outputs, sqnr_only=True).sqnr_db
        fallback = {"target_sqnr_db": target_sqnr, "reached": current >= target_sqnr,
                    "selection_sqnr_db": [scores[chosen], current]}
        if current < target_sqnr:
            warnings.append(f"--target-sqnr {target_sqnr:g}: reached {current:.2f} dB on the selection samples with "
                            f"{len(float_tensors)} tensor(s) in float (at most {MAX_TARGET_FLOAT}, only those "
                            "whose fallback gains)")
    else:
        final = write_qdq(fp32, ranges, target=target, attention=attention, **weights)

    # 4b. shift one-sided activations into their readers' biases, if it scores better
    shift_record = None
    final_db = fallback["selection_sqnr_db"][1] if fallback is not None else scores[chosen]
    source, source_ranges, shifts = fp32, {n: r for n, r in ranges.items() if n not in float_tensors}, {}
    if shift_one_sided and target == "tensorrt":
        final, shift_record, shifted = _shift_one_sided(fp32, final, ranges, float_tensors, weights, selection, refs,
                                                        choice_of_outputs, final_db=final_db, attention=attention,
                                                        say=say)
        if shift_record is not None and shift_record["kept"]:
            final_db = shift_record["selection_sqnr_db"][1]
            source, source_ranges, shifts = shifted

    # 4c. layer-wise bias correction, if it scores better on samples it was not fit on
    bias_record = None
    if bias_correction != "off":
        final, bias_record = _correct_biases(model, fp32, final, source, source_ranges, shifts, weights, unsigned,
                                             selection, judging, specs, refs, choice_of_outputs, final_db=final_db,
                                             mode=bias_correction, target=target, attention=attention,
                                             progress=progress, say=say)
        if bias_record["kept"]:
            final_db = bias_record["selection_sqnr_db"][1]

    # 5. score on held-out samples (only the model kept: quantize(smoothquant=...) quantizes two), then write
    def summarize() -> dict:
        held_refs, held_samples = reference_outputs(fp32, held, choice_of_outputs, batch_axes=batch_axes)
        got = score_model(final.model, held, held_refs, choice_of_outputs)
        trt_default = score_model(write_qdq(fp32, base_ranges, target=target, attention=attention, check_onnxruntime=False).model,
                                  held, held_refs, choice_of_outputs)
        summary = {"data": held_from, "samples": held_samples, "sqnr_db": got.sqnr_db,
                   "weight_scales": "searched per channel (in the Q/DQ model only)" if "weight_scales" in weights else "max",
                   "weight_rounding": "gptq (in the Q/DQ model only)" if "weight_values" in weights else "nearest",
                   "bias_correction": (f"{bias_record['layers']} layers (in the Q/DQ model only)"
                                       if bias_record is not None and bias_record["kept"] else "none"),
                   "entropy2_sqnr_db": trt_default.sqnr_db,
                   "cosine_mean": _mean(c.cosine_mean for c in got.outputs.values()),
                   "entropy2_cosine_mean": _mean(c.cosine_mean for c in trt_default.outputs.values()),
                   "outputs": {n: {"sqnr_db": c.sqnr_db, "cosine_mean": c.cosine_mean, "cosine_min": c.cosine_min,
                                   **({"top1_agreement": c.top1_agreement}
                                                            if c.classifier else {}),
                                   **({"mixed_scales_axis": c.mixed_axis, "balanced_sqnr_db": c.balanced_sqnr_db}
                                      if c.mixed_axis is not None else {})} for n, c in got.outputs.items()}}
        if got.agreement is not None:
            summary.update(top1_agreement=got.agreement, entropy2_top1_agreement=trt_default.agreement)
        if held_note:
            summary["note"] = held_note
        if fallback is not None:
            summary["fallback"] = fallback
        return summary

    amaxes = {name: r.amax for name, r in cal.thresholds.items()}
    amaxes.update({name: r.amax for name, r in ranges.items() if name in amaxes})
    trt_cache = CalibrationCache.from_amaxes(amaxes, version=trt_version, algorithm="EntropyCalibration2")
    meta = dict(cal.metadata)
    meta.update(algorithm="quantize", ranges=chosen, target=target, attention=attention, weight_scales="searched" if "weight_scales" in weights else "max",
                weight_rounding=(f"gptq ({len(weights['weight_values'])} weights)" if "weight_values" in weights else "nearest"),
                model_sha256=file_sha256(model),
                float_tensors=float_tensors, held_out=held_from)
    from trtcal.ort.choice_record import SIDECAR_KEY, choice_record

    meta[SIDECAR_KEY] = choice_record(choice, ranges, chosen, scores, float_tensors)  # per tensor: what and why
    if shift_record is not None:  # the Q/DQ model quantizes <tensor>_shifted at amax / 2 where this says so
        meta["shift"] = shift_record
    if bias_record is not None:  # the Q/DQ model's biases differ from the FP32 model's where this says so
        meta["bias_correction"] = _bias_summary(bias_record)
    meta.update(extra_meta or {})

    def write() -> None:
        if result.summary is None:
            result.summary = summarize()
        save_stats(stats, cal.histograms, cal.metadata, force=force)
        trt_cache.write(cache, force=force)
        write_sidecar(cache, meta, force=force)
        final.save(output, force=force, inputs=inputs_read)
        write_sidecar(output, {**meta, "cache": str(cache), "stats": str(stats)}, force=force)

    result = QuantizeResult(output, cache, stats, chosen, choice, scores, None, float_tensors,
                            {"version": format_version(trt_version), "batch_size": bs, "calibration": cal.metadata,
                             **({"weight_rounding": rounding} if rounding is not None else {}),
                             **({"shift": shift_record} if shift_record is not None else {}),
                             **({"bias_correction": bias_record} if bias_record is not None else {})},
                            warnings, final_db=final_db, _commit=write, _qdq=final.model)
    if commit:
        write()
    return result


#: ``quantize``'s effort levels: ``"full"`` (the default: every step) and ``"fast"``, whose defaults
#: leave out the steps that cost most for what they gain (an option given explicitly still counts).
EFFORTS = ("full", "fast")
#: The defaults ``effort="fast"`` changes: no SmoothQuant search, no GPTQ rounding, no weight-scale
#: search, no bias correction. What remains: the calibration, the per-tensor range choice and its
#: check against every single method at the outputs, the shift, the fallback if asked.
FAST = {"smoothquant": "off", "weight_rounding": "nearest", "search_weights": False, "bias_correction": "off"}


def quantize(model: str | os.PathLike, data: str | os.PathLike, *, smoothquant: bool | str | None = None,
             smoothed: str | os.PathLike | None = None, alphas=None, effort: str = "full",
             **options) -> QuantizeResult:
    """Quantize ``model`` with ``data``; see the module doc. ``options``: those of :func:`_quantize`
    (``output``, ``cache``, ``stats``, ``target``, ``eval_data``, ``select_samples``, ``max_float``,
    ``target_sqnr``, ``refine``, ``attention``, data options, ``force``, ``progress``, ``log``...).

    ``smoothquant``: ``"on"`` (or True) also quantizes a SmoothQuant-ed copy of the model
    (:func:`trtcal.ort.smoothquant.smooth`, factors searched on the selection samples; ``alphas``
    the strengths tried) and keeps whichever of the two scores better at the outputs on
    calibration samples neither search saw (never on the held-out ones; the smoothed one must win by
    :data:`SMOOTH_MARGIN_DB`, and is not quantized at all when the search gained less than
    :data:`SMOOTH_MIN_SEARCH_GAIN_DB`). The search's own two Q/DQ models are judged first: when
    they are :data:`SMOOTH_DECISIVE_DB` apart, only the better is quantized in full (all-MiniLM-L6-v2:
    141 -> 108 s, the same model); only the kept model is scored on the held-out samples. ``"auto"`` (the default)
    does so for transformer-shaped models (:func:`trtcal.onnx.smooth.transformer_groups`: attention
    blocks, or LayerNorm outputs read by weighted MatMul/Gemm layers), ``"off"`` (or False) never.
    When the smoothed one wins, its FP32 model is written to ``smoothed`` (default ``<model
    stem>.smooth.onnx`` beside the Q/DQ model): the TensorRT cache is of that model's tensors, so a
    TensorRT <= 10 build must use it.

    ``effort``: ``"full"`` (the default) or ``"fast"`` (:data:`FAST`: the defaults of
    ``smoothquant``, ``weight_rounding``, ``search_weights`` and ``bias_correction`` become the
    cheap ones; those given explicitly are kept)."""
    if effort not in EFFORTS:
        raise TrtcalError(f"--effort {effort!r}: choose from {', '.join(EFFORTS)}")
    if effort == "fast":
        for key, value in FAST.items():
            if key != "smoothquant":
                options.setdefault(key, value)
        smoothquant = FAST["smoothquant"] if smoothquant is None else smoothquant
    mode = requested = smoothquant_mode("auto" if smoothquant is None else smoothquant)
    say = options.get("log") or (lambda line: None)
    from trtcal.onnx.model import load_model

    loaded = load_model(model, load_weights=True)  # read once: for Constant weights and for "auto"
    moved = _with_initializer_weights(model, loaded, options, say)
    if moved is not None:
        with moved as converted:
            return quantize(converted, data, smoothquant=smoothquant, smoothed=smoothed, alphas=alphas, **options)
    if mode == "auto":
        from trtcal.onnx.smooth import transformer_groups

        groups = transformer_groups(loaded)
        mode = "on" if groups else "off"
        if groups:
            say(f"smoothquant (auto): a transformer, {len(groups)} activation(s) feed weighted MatMul/Gemm layers: "
                "quantizing a smoothed copy too and keeping the better model (--smoothquant off skips it)")
    if mode == "off":
        return _quantize(model, data, **options)
    import shutil
    import tempfile

    from trtcal.cache.provenance import sidecar_path
    from trtcal.core import fileio
    from trtcal.ort.smoothquant import ALPHAS
    from trtcal.ort.smoothquant import smooth as smooth_model

    force = options.get("force", False)
    # the outputs are named after the original model, whichever model wins
    _resolve_outputs(model, options)
    output = options["output"]
    smoothed = Path(smoothed) if smoothed is not None else output.with_name(Path(model).stem + ".smooth.onnx")
    for p in (smoothed, sidecar_path(smoothed)):
        fileio.check_output(p, force=force, inputs=[model, data])
    feed = {k: options[k] for k in ("preprocess", "batch_size", "batch_axes", "shapes", "allow_nonfinite", "score",
                                    "classifiers") if options.get(k) is not None}
    with tempfile.TemporaryDirectory(prefix="trtcal-smooth-") as tmp:
        temp = Path(tmp) / smoothed.name
        say(f"smoothquant: searching factors for {options.get('_moved_from') or model} on "
            f"{options.get('select_samples', 64)} calibration samples")
        _, found = smooth_model(model, data, output=temp, alphas=alphas or ALPHAS,
                                select_samples=options.get("select_samples", 64),
                                target=options.get("target", "tensorrt"), attention=options.get("attention", "int8"),
                                progress=options.get("progress"), log=say, **feed)
        gain = found.final_db - found.baseline_db
        if not found.alphas or not gain >= SMOOTH_MIN_SEARCH_GAIN_DB:
            reason = ("no layer gained" if not found.alphas else
                      f"the search gained {gain:.2f} dB on the selection samples (under {SMOOTH_MIN_SEARCH_GAIN_DB:g}), "
                      "not worth a second model")
            say(f"smoothquant: {reason}; the original model is kept")
            say("quantizing the original model")
            plain = _quantize(model, data, **{**options, "commit": False})
            plain.smoothquant = {"mode": requested, "smoothed": 0, "kept": "original", "reason": reason,
                                 "search_gain_db": gain if found.alphas else 0.0}
            plain._commit()
            return plain
        base_meta = options.get("extra_meta") or {}
        info = {"smoothed_model": str(smoothed), "alphas": found.alphas,
                "original_model": options.get("_moved_from") or str(model)}
        # judged on calibration samples neither search saw (the next select_samples ones): both
        # searches fit the selection samples, the smoothing more so (Fashion CNN: +3 dB there, -4.5 dB held out)
        memo: dict = {}
        quick = _quick_judge(model, temp, found, data, options, memo)
        if quick is not None and abs(quick[0]["smoothed"] - quick[0]["original"]) >= SMOOTH_DECISIVE_DB:
            judged, on = quick
            keep_smooth = judged["smoothed"] > judged["original"]
            how = (f"the search's ranges (a {SMOOTH_DECISIVE_DB:g} dB difference or more decides: only the "
                   f"{'smoothed' if keep_smooth else 'original'} model is quantized in full)")
            say(f"smoothquant: output SQNR on {on} with {how}: {judged['original']:.2f} dB original, "
                f"{judged['smoothed']:.2f} dB smoothed")
            if keep_smooth:
                say(f"quantizing the smoothed model ({len(found.alphas)} activations smoothed)")
                winner = _quantize(temp, data, **{**options, "commit": False, "extra_meta": {**base_meta, "smoothquant": info}})
            else:
                say("quantizing the original model")
                winner = _quantize(model, data, **{**options, "commit": False})
        else:
            say("quantizing the original model")
            plain = _quantize(model, data, **{**options, "commit": False})
            say(f"quantizing the smoothed model ({len(found.alphas)} activations smoothed)")
            smooth = _quantize(temp, data, **{**options, "commit": False, "extra_meta": {**base_meta, "smoothquant": info}})
            judged = _validation_scores(model, data, {"original": plain._qdq, "smoothed": smooth._qdq}, options, memo)
            if judged is None:
                judged, on = {"original": plain.final_db, "smoothed": smooth.final_db}, "the selection samples"
            else:
                judged, on = judged
            how = "each model quantized in full"
            keep_smooth = _finite(judged["smoothed"]) > _finite(judged["original"]) + SMOOTH_MARGIN_DB
            say(f"smoothquant: output SQNR on {on}: {judged['original']:.2f} dB original, "
                f"{judged['smoothed']:.2f} dB smoothed")
            winner = smooth if keep_smooth else plain
        summary = {"mode": requested, "smoothed": len(found.alphas), "alphas": found.alphas, "judged_on": on,
                   "judged_with": how, "sqnr_db": judged, "search_gain_db": gain,
                   "kept": "smoothed" if keep_smooth else "original",
                   **({"smoothed_model": str(smoothed)} if keep_smooth else {})}
        say(f"smoothquant: the {summary['kept']} model is kept")
        winner.smoothquant = summary
        if keep_smooth:
            fileio.atomic_write(smoothed, temp.read_bytes(), force=force, inputs=[model, data])
            shutil.copyfile(sidecar_path(temp), sidecar_path(smoothed))
            if options.get("_moved_from"):  # the smoothed model's provenance names the model the user gave
                import json

                side = json.loads(sidecar_path(smoothed).read_text())
                side.update({k: base_meta[k] for k in ("model", "model_sha256") if k in base_meta})
                fileio.atomic_write(sidecar_path(smoothed), (json.dumps(side, indent=1) + "\n").encode(), force=True)
        winner._commit()
        return winner


def _resolve_outputs(model, options: dict) -> None:
    """Set ``options``' ``output``, ``cache`` and ``stats`` to paths, :func:`default_outputs` of
    ``model`` where not given (making ``calib_caches/`` for those), so that a quantize of another
    file (the smoothed or initializer copy) writes where one of ``model`` would."""
    default = default_outputs(model)
    if options.get("cache") is None or options.get("stats") is None:
        default[1].parent.mkdir(exist_ok=True)
    for key, path in zip(("output", "cache", "stats"), default):
        options[key] = Path(options[key]) if options.get(key) is not None else path


def _with_initializer_weights(model, loaded, options: dict, say):
    """Where ``model`` (``loaded``: its ModelProto, weights loaded) holds weights in Constant nodes (paddle2onnx and other exporters), a context
    manager giving a copy with them as initializers (:func:`trtcal.onnx.model.constants_as_initializers`:
    the same function), written to a temporary folder under the model's own file name, and
    ``options`` set up so that ``quantize`` of it writes and records as for ``model``: the default
    outputs named after ``model``, the provenance's ``model`` and ``model_sha256`` those of
    ``model``, ``model`` never overwritten. Else None. Without it the layer-wise steps (the range
    choice at each layer's output, GPTQ, the weight search, the shift, the bias correction) see no
    weighted layer (PP-OCRv4 rec: 420 Constant nodes, 0 weighted layers found, 47 after)."""
    import contextlib
    import tempfile

    from trtcal.cache.provenance import sidecar_path
    from trtcal.core import fileio
    from trtcal.onnx.model import constants_as_initializers
    from trtcal.ort.pipeline import file_sha256

    if options.get("_moved_from") is not None:
        return None
    converted = constants_as_initializers(loaded)
    if converted is loaded:
        return None
    _resolve_outputs(model, options)
    for path in (options["output"], options["cache"], options["stats"], sidecar_path(options["output"]),
                 sidecar_path(options["cache"])):
        fileio.check_output(path, force=options.get("force", False), inputs=[model])
    count = len(loaded.graph.node) - len(converted.graph.node)
    say(f"{model}: {count} Constant nodes (its weights among them) taken as initializers (the same model)")
    options["_moved_from"] = str(model)
    options["extra_meta"] = {**(options.get("extra_meta") or {}), "model": str(model),
                             "model_sha256": file_sha256(model), "constants_as_initializers": count}

    @contextlib.contextmanager
    def written():
        import onnx

        with tempfile.TemporaryDirectory(prefix="trtcal-initializers-") as tmp:
            path = Path(tmp) / Path(model).name
            onnx.save(converted, path)
            yield path
    return written()


def _quick_judge(model, smoothed_path, found, data, options: dict, memo: dict):
    """:func:`_validation_scores` of the search's two Q/DQ models: the original with the ranges
    the search started from, the smoothed one with the search's (no range choice, no weight
    search), or None without the search's ranges or validation samples."""
    from trtcal.onnx.model import load_model
    from trtcal.onnx.qdq import write_qdq

    if not found.input_ranges or not found.ranges:
        return None
    target, attention = options.get("target", "tensorrt"), options.get("attention", "int8")
    original = write_qdq(load_model(model, load_weights=True, fp32=True), found.input_ranges, target=target,
                         attention=attention, check_onnxruntime=False).model
    smoothed = write_qdq(load_model(smoothed_path, load_weights=True, fp32=True), found.ranges, target=target,
                         attention=attention, check_onnxruntime=False).model
    return _validation_scores(model, data, {"original": original, "smoothed": smoothed}, options, memo)


#: What ``quantize(smoothquant=...)`` takes.
SMOOTHQUANT_MODES = ("auto", "on", "off")


def smoothquant_mode(value) -> str:
    """``"auto"``, ``"on"`` or ``"off"`` from a mode name or a bool."""
    if value is True or value is False:
        return "on" if value else "off"
    if value in SMOOTHQUANT_MODES:
        return value
    raise TrtcalError(f"smoothquant {value!r}: choose from {', '.join(SMOOTHQUANT_MODES)}")


@dataclass
class _Judging:
    """The samples quantize's fitted steps (GPTQ, the bias correction) are judged on: the
    calibration samples after the selection samples (``half`` None: the step is fit on all the
    selection samples), else the last of the ``total`` selection samples (fit on the first
    ``half``); their FP32 outputs are computed once, for every step."""

    on: list[dict]
    described: str
    half: int | None
    total: int
    _outputs: tuple = field(default=(), repr=False)  # (fp32, choice, batch_axes) for reference_outputs
    _refs: object = field(default=None, repr=False)

    def refs(self):
        """The FP32 model's scored outputs on :attr:`on` (computed once)."""
        if self._refs is None:
            from trtcal.ort.sensitivity import reference_outputs

            fp32, choice, batch_axes = self._outputs
            self._refs, _ = reference_outputs(fp32, self.on, choice, batch_axes=batch_axes)
        return self._refs


def _judging(selection, later, specs, fp32, choice, batch_axes) -> _Judging | None:
    """:class:`_Judging` for ``selection`` and ``later`` (:func:`_later_samples`); None with one
    selection sample and no later ones (nothing to judge on)."""
    from trtcal.data.sources import samples_in

    total = sum(samples_in(b, specs) for b in selection)
    outputs = (fp32, choice, batch_axes)
    if later:
        return _Judging(later, f"{sum(samples_in(b, specs) for b in later)} calibration samples after the selection "
                        "samples", None, total, outputs)
    if total >= 2:
        half = total // 2
        return _Judging(_samples_after(selection, specs, half),
                        f"the last {total - half} selection samples (fit on the first {half})", half, total, outputs)
    return None


def _round_by_gptq(model, fp32, ranges, tensors, chosen: str, selection, judging: _Judging | None, specs, refs,
                   choice, scores: dict, *, target: str, attention: str, unsigned, progress, say) -> dict:
    """Step 3's GPTQ rounding (before any weight search: on the max scales), judged on samples it
    was not fit on (``judging``; fit on the first half of the selection samples when it judges on
    the second, then refit on all of them). Kept only when it scores better than rounding to
    nearest both there and on the selection samples. Returns a record: ``kept``, ``judged_on``,
    ``sqnr_db`` (the two on the judging samples), the rounding's per-layer errors and, when kept,
    ``label`` and ``values`` (taken by the caller) with ``scores[label]`` set."""
    from trtcal.core.progress import Progress
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.sensitivity import score_model
    from trtcal.ort.weight_rounding import round_weights

    amaxes = {n: ranges[n].amax for n in tensors if n in ranges}
    label = f"{chosen} + gptq"
    if judging is None:
        return {"kept": False, "reason": "one calibration sample: nothing to judge the rounding on"}
    fit_on = selection if judging.half is None else _first_samples(selection, specs, judging.half)
    judge_on, judged_on = judging.on, judging.described

    def fit(batches):
        with Progress(len(tensors), "rounding weights", enabled=progress) as bar:
            return round_weights(model, amaxes, batches, unsigned=unsigned, inputs=specs, progress=bar)

    say(f"rounding weights by GPTQ on the max weight scales, judged on {judged_on}")
    found = fit(fit_on)
    if not found.values:
        return {"kept": False, "reason": "no layer to round", **found.to_dict()}
    judge_refs = judging.refs()

    def model_with(**opts):
        return write_qdq(fp32, ranges, target=target, attention=attention, check_onnxruntime=False, **opts).model

    before = score_model(model_with(), judge_on, judge_refs, choice, sqnr_only=True).sqnr_db
    after = score_model(model_with(weight_values=found.values), judge_on, judge_refs, choice, sqnr_only=True).sqnr_db
    record = {"kept": False, "judged_on": judged_on, "sqnr_db": {chosen: before, label: after}}
    if not _finite(after) > _finite(before):
        say(f"GPTQ rounding: {after:.2f} dB against {before:.2f} on {judged_on}: not kept")
        return {**record, **found.to_dict()}
    if fit_on is not selection:
        found = fit(selection)
    scores[label] = score_model(model_with(weight_values=found.values), selection, refs, choice, sqnr_only=True).sqnr_db
    kept = _finite(scores[label]) > _finite(scores[chosen])
    say(f"GPTQ rounding: {after:.2f} dB against {before:.2f} on {judged_on}; {scores[label]:.2f} against "
        f"{scores[chosen]:.2f} on the selection samples: {'kept' if kept else 'not kept'}")
    record.update(kept=kept, **found.to_dict())
    if kept:
        record.update(label=label, values=found.values)
    return record


def _shift_one_sided(fp32, final, ranges: dict, float_tensors, weights: dict, selection, refs, choice, *,
                     final_db: float, attention: str, say):
    """Step 4b: the one-sided activations the written model quantizes whose readers can take a
    shift (:func:`trtcal.onnx.shift.shiftable`) are quantized as ``x - amax/2`` in ``[-amax/2,
    amax/2]``, the shift in their readers' biases computed with the weights as the Q/DQ model
    holds them; kept when the model scores better on the selection samples. Returns ``(the final
    Q/DQ result, a record)``; the record is None when no activation qualifies.

    Asymmetric activations (GELU, SiLU outputs: a small negative minimum) are not shifted: at the
    middle of their range 0 is no longer exact and their many near-zero values all round the same
    way (all-MiniLM-L6-v2 ``--smoothquant off``: sentence cosine 0.9857 -> 0.9777, though its SQNR
    rose 0.4 dB); shifted by a whole number of steps they scored lower (YOLOv8n held out 7.77 ->
    7.00 dB per channel; all-MiniLM-L6-v2 not kept)."""

    from trtcal.core.ranges import Range
    from trtcal.onnx.qdq import write_qdq
    from trtcal.onnx.shift import apply_shift, shiftable
    from trtcal.ort.sensitivity import score_model

    quantized = {q.name for q in final.activations}
    one_sided = [n for n, r in ranges.items() if n in quantized and n not in float_tensors and r.low == 0 and r.amax > 0]
    groups = shiftable(fp32, one_sided)
    if not groups:
        return final, None, None
    held = _held_weights(fp32, weights)  # the weights as the Q/DQ model holds them
    shifted = apply_shift(fp32, {n: ranges[n].amax / 2 for n in groups}, weights=held)
    moved = dict(ranges)
    for name, new in shifted.tensors.items():
        moved[new] = Range.symmetric(ranges[name].amax / 2, source=f"{ranges[name].source}, shifted")
        del moved[name]
    moved = {n: r for n, r in moved.items() if n not in float_tensors}
    trial = write_qdq(shifted.model, moved, target="tensorrt", attention=attention, **weights)
    got = score_model(trial.model, selection, refs, choice, sqnr_only=True).sqnr_db
    kept = _finite(got) > _finite(final_db)
    say(f"shifting {len(groups)} one-sided activation(s) into their readers' biases: {got:.2f} dB against "
        f"{final_db:.2f} on the selection samples: {'kept' if kept else 'not kept'}")
    record = {"kept": kept, "tensors": {n: {"shift": shifted.shifts[n], "reads_as": shifted.tensors[n]} for n in groups},
              "selection_sqnr_db": [final_db, got]}
    return (trial if kept else final), record, (shifted.model, moved, {n: (shifted.shifts[n], shifted.tensors[n]) for n in groups})


def _held_weights(fp32, weights: dict) -> dict:
    """``{weight initializer: values}`` of every weighted layer's weight as the Q/DQ model holds it:
    ``weights``' GPTQ values (``weight_values``) or the float weights, on the grid of the given
    scales (``weight_scales``) or else of the float weights' max per channel, quantized and
    dequantized as :func:`trtcal.onnx.qdq.write_qdq` does. (Before 2026-12-06 late, the shift
    took the grid of GPTQ's values' own max, which differs where rounding moved a channel's
    largest weight: its biases were off by up to a step of that weight times the shift.)"""
    import numpy as np

    from trtcal.core.weight_scales import channel_amax, per_channel_int8
    from trtcal.ort.layers import weighted_layers

    held: dict = {}
    for layer in weighted_layers(fp32):
        if layer.w in held or layer.node.op_type == "ConvTranspose":
            continue
        w = weights.get("weight_values", {}).get(layer.w)
        w = layer.weight if w is None else np.asarray(w, np.float32)
        scales = weights.get("weight_scales", {}).get(layer.w)
        # the grid is the given scales', else the float weights' max per channel (GPTQ's values lie on it)
        amax = channel_amax(layer.weight, layer.axis, "max") if scales is None else \
            np.asarray(scales, np.float64).reshape(-1) * 127.0
        codes, scale, _ = per_channel_int8(w, layer.axis, amax)
        shape = [1] * w.ndim
        shape[layer.axis] = -1
        held[layer.w] = codes.astype(np.float32) * scale.reshape(shape)
    return held


def _correct_biases(model, fp32, final, source, source_ranges: dict, shifts: dict, weights: dict, unsigned,
                    selection, judging: _Judging | None, specs, refs, choice, *, final_db: float, mode: str,
                    target: str, attention: str, progress, say):
    """Step 4c: layer-wise bias correction (:mod:`trtcal.ort.bias_correction`,
    :func:`trtcal.core.bias_correction.bias_deltas`): each weighted layer's systematic output error
    per channel, its input quantized and its weights held as in the written model, subtracted from
    its bias in the model the Q/DQ model is written from (``source``: the FP32 model, or its
    shifted copy, with ``source_ranges``; ``shifts``: tensor -> (shift, the tensor its layers
    read)). Judged as GPTQ is (``judging``): fit on the selection samples and judged on the
    calibration samples after them, or fit on the first half of the selection samples and judged
    on the second (then refit on all); with ``mode="auto"`` kept only when the model scores better both
    there and on the selection samples, with ``"on"`` kept whatever the scores (still measured
    and recorded). Returns ``(the final Q/DQ result, a record)``."""
    import numpy as np

    from trtcal.core.bias_correction import bias_deltas
    from trtcal.core.progress import Progress
    from trtcal.data.sources import samples_in
    from trtcal.onnx.bias import add_to_biases
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.bias_correction import InputQuant, layer_errors
    from trtcal.ort.sensitivity import score_model

    reads_as = {new: (x, c) for x, (c, new) in shifts.items()}
    inputs = {}  # per FP32 tensor, how the written model quantizes it
    for name, r in source_ranges.items():
        if name in reads_as:  # the layers read x - c, quantized at amax / 2, c added back through their biases
            x, c = reads_as[name]
            inputs[x] = InputQuant(r.amax, False, c)
        else:
            inputs[name] = InputQuant(r.amax, name in unsigned)
    held = _held_weights(fp32, weights)
    total = sum(samples_in(b, specs) for b in selection)
    if judging is None or (judging.half is not None and total < 4):
        return final, {"kept": False, "reason": f"{total} calibration samples: too few to judge a bias correction on"}
    half, judge_on, judged_on = judging.half, judging.on, judging.described
    with Progress(len(inputs), "correcting biases", enabled=progress) as bar:
        errors = layer_errors(model, inputs, selection, held, specs=specs, progress=bar)
    if half is not None and any(e.shape[0] != total for e in errors.values()):
        return final, {"kept": False, "reason": "the layers' outputs do not hold one sample per row of axis 0"}
    fit = errors if half is None else {w: e[:half] for w, e in errors.items()}

    node_of = {n.input[1]: i for i, n in enumerate(source.graph.node)
               if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1}

    def corrected(errs: dict):
        deltas = {w: bias_deltas(e) for w, e in errs.items() if w in node_of}
        deltas = {w: d for w, d in deltas.items() if d.any()}
        model_out = write_qdq(add_to_biases(source, {node_of[w]: d for w, d in deltas.items()}), source_ranges,
                              target=target, attention=attention, check_onnxruntime=False, **weights)
        return model_out, deltas

    def channels(deltas: dict) -> int:
        return int(sum(np.count_nonzero(d) for d in deltas.values()))

    trial, deltas = corrected(fit)
    if not deltas:
        say("bias correction: no layer's output error is significant")
        return final, {"kept": False, "reason": "no significant mean error", "judged_on": judged_on}
    judge_refs = judging.refs()
    before = score_model(final.model, judge_on, judge_refs, choice, sqnr_only=True).sqnr_db
    after = score_model(trial.model, judge_on, judge_refs, choice, sqnr_only=True).sqnr_db
    record = {"kept": False, "judged_on": judged_on, "sqnr_db": {"before": before, "after": after}}
    if not _finite(after) > _finite(before) and mode == "auto":
        say(f"bias correction: {after:.2f} dB against {before:.2f} on {judged_on}: not kept")
        return final, {**record, "layers": len(deltas), "channels": channels(deltas)}
    if half is not None:
        trial, deltas = corrected(errors)
    got = score_model(trial.model, selection, refs, choice, sqnr_only=True).sqnr_db
    kept = _finite(got) > _finite(final_db) or mode == "on"
    say(f"bias correction: {after:.2f} dB against {before:.2f} on {judged_on}; {got:.2f} against {final_db:.2f} on "
        f"the selection samples: {'kept' if kept else 'not kept'}")
    record.update(kept=kept, selection_sqnr_db=[final_db, got], layers=len(deltas), channels=channels(deltas),
                  deltas={w: d.tolist() for w, d in deltas.items()})
    return (trial if kept else final), record


def _bias_summary(record: dict) -> dict:
    """The bias correction's record for the sidecars: without the per-channel values."""
    return {k: v for k, v in record.items() if k != "deltas"}


def _score_sets(fp32, sets: dict, batches, refs, choice, *, target: str, attention: str, progress=None) -> dict:
    """``{label: output SQNR}`` of each range set's Q/DQ model on ``batches``, all run in ONE model
    whose activation scales are inputs (:meth:`trtcal.ort.qdq_variants.QdqVariants.switched`: the
    outputs of each are bit-identical to the model ``write_qdq`` writes for it; one model built and
    loaded instead of one per set)."""
    from trtcal.ort.qdq_variants import QdqVariants
    from trtcal.ort.sensitivity import _session, score_session

    labels = list(sets)
    variants = QdqVariants(fp32, sets[labels[0]], target=target, attention=attention)
    built = variants.switched([sets[label] for label in labels], scales_as_inputs=True)
    session = _session(built.model)
    scores = {}
    for j, label in enumerate(labels):
        scores[label] = score_session(session, batches, refs, choice, feeds=built.feeds(j), sqnr_only=True).sqnr_db
        if progress is not None:
            progress.update()
    return scores


def _validation_scores(model, data, candidates: dict, options: dict, memo: dict | None = None):
    """``({label: output SQNR}, description)`` of each candidate Q/DQ model on the calibration
    samples after the first ``select_samples`` (as many again; held-out batches excluded as
    quantize excludes them), or None when the data has none left. ``memo``: a dict kept between
    calls on the same model and data (the samples and FP32 outputs are computed once)."""
    from trtcal.onnx.model import load_model
    from trtcal.ort.evaluate import choose_outputs
    from trtcal.ort.sensitivity import reference_outputs, score_model

    memo = {} if memo is None else memo
    if "later" not in memo:
        memo["later"] = _later_samples(model, data, options)
        if memo["later"]:
            fp32 = load_model(model, load_weights=True, fp32=True)
            choice = choose_outputs(fp32, str(model), score=options.get("score"), classifiers=options.get("classifiers"))
            memo["choice"] = choice
            memo["refs"], memo["samples"] = reference_outputs(fp32, memo["later"], choice,
                                                              batch_axes=options.get("batch_axes"))
    later = memo["later"]
    if not later:
        return None
    refs, samples, choice = memo["refs"], memo["samples"], memo["choice"]
    scores = {label: score_model(m, later, refs, choice, sqnr_only=True).sqnr_db for label, m in candidates.items()}
    return scores, f"{samples} calibration samples after the selection samples"


def _later_samples(model, data, options: dict) -> list[dict]:
    """The calibration samples after the first ``select_samples`` (as many again; the batches
    quantize holds out excluded when there is no ``eval_data``): samples no search of quantize fit
    on, to judge a search by. Empty when the data has none."""
    from trtcal.ort.runner import first_batches

    n = options.get("select_samples", 64)
    keep = None if options.get("eval_data") is not None else (lambda i: not _held_out(i))
    batches, specs = first_batches(model, data, samples=2 * n, batch_size=options.get("batch_size"),
                                   preprocess=options.get("preprocess"), batch_axes=options.get("batch_axes"),
                                   shapes=options.get("shapes"), allow_nonfinite=options.get("allow_nonfinite", False),
                                   keep_batch=keep)
    return _samples_after(batches, specs, n)


def _first_samples(batches: list[dict], specs, n: int) -> list[dict]:
    """The first ``n`` samples of ``batches``, sliced along each input's batch axis."""
    from trtcal.data.sources import samples_in, take

    out, seen = [], 0
    for batch in batches:
        k = min(samples_in(batch, specs), n - seen)
        out.append(take(batch, specs, 0, k))
        seen += k
        if seen >= n:
            break
    return out


def _samples_after(batches: list[dict], specs, n: int) -> list[dict]:
    """The samples of ``batches`` after the first ``n`` (:func:`_first_samples`' complement)."""
    from trtcal.data.sources import samples_in, take

    out, seen = [], 0
    for batch in batches:
        k = samples_in(batch, specs)
        if seen + k > n:
            out.append(take(batch, specs, max(0, n - seen), k))
        seen += k
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _finite(x: float) -> float:
    return -1e300 if math.isnan(x) or x == -math.inf else x
