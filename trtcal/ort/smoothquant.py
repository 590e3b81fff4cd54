"""SmoothQuant (Xiao et al. 2023) with the migration strength searched per layer at the model's outputs.

For each activation that MatMul/Gemm nodes read with constant weights
(:func:`trtcal.onnx.smooth.smoothable`), the per-channel factor is
``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)`` (``max|X_j|`` over the samples given,
``max|W_j|`` over the input channel's row in every reader's weight): ``X / s`` has flatter channels
and ``diag(s) W`` takes the outliers, where per-channel weight quantization absorbs them.

``alpha`` is searched **per layer, at the model's outputs**: in graph order, each activation
tries values of ``alphas`` (:func:`climb`: from the middle one toward the better neighbour while the
score rises; ``climb_alphas=False``: every one): the whole model in Q/DQ (the other tensors keep their
``ranges``; the smoothed tensor gets the least-squared-error range of its smoothed values,
:func:`mse_amax`) is scored (output SQNR against FP32 on the same samples,
:mod:`trtcal.ort.sensitivity`); a factor is kept only when the model scores better with it. The
candidates run in one Q/DQ model whose factors, ranges and weights are inputs
(:mod:`trtcal.ort.smooth_variants`: no model written or loaded per candidate). The local error of the layer alone is
no guide: on all-MiniLM-L6-v2 it rose from 14 to 36 dB for a feed-forward input at
``alpha = 1`` while the model's output SQNR fell from 16.4 to 9.7 dB.

The result is an FP32 model equal to the input in float (checked on the samples: output SQNR
above :data:`FLOAT_EQUAL_DB`, else an error) that ``calibrate``, ``qdq`` and ``quantize`` then
take like any model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError

#: The migration strengths tried per layer. 0.9 and 1.0 since 2026-12-06: on all-MiniLM-L6-v2,
#: with (0.25, 0.5, 0.75) most layers took 0.75, the largest, and the quantized model reached a
#: sentence-embedding cosine of 0.9934; with these 16 of the 22 smoothed layers take 0.9 or 1.0
#: and it reaches 0.9970 (all-INT8, held out).
ALPHAS = (0.25, 0.5, 0.75, 0.9, 1.0)
#: The smoothed model must match the input in float to this output SQNR (dB) on the samples.
FLOAT_EQUAL_DB = 60.0
#: Values of each activation kept (rows of its last axis) to choose its range after smoothing.
ROWS = 4096
_FLOOR = 1e-5


@dataclass
class SmoothResult:
    """What :func:`search_smoothing` chose."""

    model: object  # the smoothed FP32 onnx.ModelProto
    alphas: dict[str, float]  # activation -> alpha kept (only those smoothed)
    tensors: dict[str, str]  # activation -> the tensor its products now read
    ranges: dict  # the ranges for the smoothed model (the input ranges, smoothed tensors re-ranged)
    baseline_db: float  # output SQNR of the unsmoothed Q/DQ model on the samples
    final_db: float  # and of the smoothed one
    float_db: float  # output SQNR of the smoothed FP32 model against the input (float equivalence)
    tried: dict[str, dict[str, float]] = field(default_factory=dict)  # activation -> alpha -> output SQNR
    input_ranges: dict = field(default_factory=dict)  # the ranges searched from (baseline_db's, the input model's)

    def to_dict(self) -> dict:
        return {"alphas": self.alphas, "tensors": self.tensors, "baseline_sqnr_db": self.baseline_db,
                "final_sqnr_db": self.final_db, "float_sqnr_db": self.float_db, "tried": self.tried}


def factors(xmax: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel factor ``max|X| ** alpha / max|W| ** (1 - alpha)`` (floored)."""
    x = np.maximum(np.asarray(xmax, np.float64), _FLOOR)
    w = np.maximum(np.asarray(wmax, np.float64), _FLOOR)
    return x ** alpha / w ** (1.0 - alpha)


def mse_amax(values: np.ndarray, candidates: int = 64) -> float:
    """The symmetric int8 range of ``values`` with the least squared error among ``candidates``
    clipping points from 2% of max|x| up to max|x| (geometric). The values are counted once in
    65536 equal bins of |x| and each candidate's error is taken at the occupied bins' centres:
    the bins are at least 10x finer than the finest candidate's step, so the error is the
    values' own to a fraction of a step (a brute force over the values themselves took 52 of the
    search's 133 s on all-MiniLM-L6-v2)."""
    v = np.abs(np.asarray(values, np.float32).reshape(-1))
    top = float(v.max()) if v.size else 0.0
    if not top > 0:
        return 0.0
    index = np.minimum((v * np.float32(_BINS / top)).astype(np.int64), _BINS - 1)
    counts = np.bincount(index, minlength=_BINS)
    occupied = np.flatnonzero(counts)
    centres = (occupied + 0.5) * (top / _BINS)
    weights = counts[occupied].astype(np.float64)
    amaxes = top * np.geomspace(0.02, 1.0, candidates)
    errs = np.empty(candidates)
    for j, amax in enumerate(amaxes):
        step = amax / 127
        e = np.minimum(np.rint(centres / step), 127) * step - centres
        errs[j] = float(np.dot(weights, e * e))
    return float(amaxes[int(np.argmin(errs))])


#: Bins of |x| :func:`mse_amax` counts the values in.
_BINS = 1 << 16


def _capture(model, names: list[str], batches: list[dict], rows: int, seed: int = 0):
    """Per-channel max|x| of each tensor over all batches, and up to ``rows`` rows of its values."""
    from trtcal.ort.layers import _exposing

    inputs = {vi.name for vi in model.graph.input}
    inner = [n for n in names if n not in inputs]
    session = _exposing(model, inner, None, "smoothquant") if inner else None
    rng = np.random.default_rng(seed)
    cmax: dict[str, np.ndarray] = {}
    kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
    per_batch = max(1, rows // max(1, len(batches)))
    for batch in batches:
        values = dict(zip(inner, session.run(inner, batch))) if session is not None else {}
        values.update((n, batch[n]) for n in names if n in inputs)
        for name in names:
            value = values[name]
            flat = np.asarray(value, np.float32).reshape(-1, value.shape[-1])
            if not np.all(np.isfinite(flat)):
                raise TrtcalError(f"smoothquant: tensor {name!r} holds NaN or Inf on the samples")
            m = np.abs(flat).max(axis=0)
            cmax[name] = m if name not in cmax else np.maximum(cmax[name], m)
            pick = rng.choice(len(flat), min(len(flat), per_batch), replace=False)
            kept[name].append(flat[pick])
    return cmax, {n: np.concatenate(v) for n, v in kept.items()}


def climb(alphas, score) -> dict:
    """Score ``alphas`` (any order) by walking the sorted values from the middle one: up while each
    step scores higher than the last, and down the same way when the first step up did not.
    ``score(alpha) -> float``; returns ``{alpha: score}`` of those scored, in the order scored.
    For a score that rises to one peak and falls this finds the peak; otherwise a local best.
    On all-MiniLM-L6-v2 (5 alphas, 24 activations) it scored 73 of the 120 candidates and chose
    within 0.15 dB of the exhaustive best at every layer."""
    order = sorted(set(alphas))
    start = len(order) // 2
    scores = {order[start]: score(order[start])}
    for step in (1, -1):
        at = start
        while 0 <= at + step < len(order):
            nxt = order[at + step]
            scores[nxt] = score(nxt)
            if not scores[nxt] > scores[order[at]]:
                break
            at += step
        if at != start:  # climbed up: the other side is not tried
            break
    return scores


def search_smoothing(model, batches: list[dict], ranges: dict, *, alphas=ALPHAS, target: str = "tensorrt",
                     attention: str = "int8", score=None, classifiers=None, batch_axes: dict | None = None,
                     cut: bool = True, climb_alphas: bool = True, progress=None, log=None) -> SmoothResult:
    """Search a SmoothQuant factor per activation (module doc). ``model``: the FP32 ``ModelProto``
    (weights loaded); ``batches``: the samples to measure on (input feeds); ``ranges``: ``{tensor:
    amax or Range}`` for every activation the Q/DQ placement quantizes (e.g. a calibration's).
    ``cut``: score each activation's candidates on the model downstream of it only
    (:class:`trtcal.ort.smooth_variants.SuffixRuns`), fed from one run of the whole model; else every
    candidate runs the whole model. ``climb_alphas``: the alphas tried per activation by :func:`climb`,
    else every one."""

    from trtcal.core.ranges import Range, coerce
    from trtcal.onnx.model import constants_as_initializers
    from trtcal.onnx.qdq import write_qdq
    from trtcal.onnx.smooth import apply_smoothing, smoothable, weight_row_max
    from trtcal.ort.evaluate import choose_outputs
    from trtcal.ort.runner import cpu_session
    from trtcal.ort.sensitivity import reference_outputs, score_model, score_outputs, score_session
    from trtcal.ort.smooth_variants import SmoothVariants, SuffixRuns, can_cut

    say = log or (lambda line: None)
    if not batches:
        raise TrtcalError("smoothquant needs samples to measure on")
    if not alphas or any(not (0.0 <= a <= 1.0) for a in alphas):
        raise TrtcalError(f"smoothquant alphas {list(alphas)!r}: each must be in [0, 1]")
    model = constants_as_initializers(model)  # paddle2onnx and others hold weights in Constant nodes
    ranges = coerce(dict(ranges))
    placed = write_qdq(model, ranges, target=target, attention=attention, check_onnxruntime=False)
    quantized = {q.name for q in placed.activations}
    groups = [g for g in smoothable(model) if g.tensor in quantized]
    choice = choose_outputs(model, "smoothquant", score=score, classifiers=classifiers)
    refs, _ = reference_outputs(model, batches, choice, batch_axes=batch_axes)
    if not groups:
        baseline = _db(score_model(placed.model, batches, refs, choice, sqnr_only=True))
        say(f"smoothquant: no activation read by weighted MatMul/Gemm; output SQNR {baseline:.2f} dB")
        return SmoothResult(model, {}, {}, ranges, baseline, baseline, math.inf, input_ranges=ranges)
    variants = SmoothVariants(model, groups, ranges, target=target, attention=attention)
    session = cpu_session(variants.model, "the SmoothQuant candidates' Q/DQ model", int8_kernels=False)
    feeds = dict(variants.base)

    def sqnr(trial: dict) -> float:
        return _db(score_session(session, batches, refs, choice, feeds=trial, sqnr_only=True))

    baseline = sqnr(feeds)
    say(f"smoothquant: {len(groups)} activations read by weighted MatMul/Gemm; output SQNR {baseline:.2f} dB "
        "before smoothing")
    cmax, rows = _capture(model, [g.tensor for g in groups], batches, ROWS)
    cuts = SuffixRuns(variants, [g.tensor for g in groups], batches, feeds, choice.names) \
        if cut and can_cut(variants.model) else None
    chosen: dict[str, np.ndarray] = {}
    best_feeds, kept = feeds, None
    alphas_kept: dict[str, float] = {}
    amaxes: dict[str, float] = {}
    tried: dict[str, dict[str, float]] = {}
    carried = baseline
    for g in groups:
        if cuts is not None:  # only the nodes downstream of this activation run per candidate
            cuts.start(g.tensor)

            def score_of(trial: dict) -> float:
                return _db(score_outputs(cuts.run(trial), refs, choice, sqnr_only=True))
            current = score_of(feeds)  # the candidates are compared on the same model as the current state
        else:
            score_of = sqnr
            current = carried  # the whole model's score of the current state: known
        wmax = weight_row_max(model, g)
        tried[g.tensor] = {}

        def attempt(alpha: float, g=g, wmax=wmax, feeds=feeds, score_of=score_of) -> float:  # this layer's
            nonlocal current, best_feeds, kept
            s = factors(cmax[g.tensor], wmax, alpha)
            amax = mse_amax(rows[g.tensor] / s)
            trial = {**feeds, **variants.group_feeds(g.tensor, s, amax)}
            db = score_of(trial)
            tried[g.tensor][f"{alpha:g}"] = db
            if db > current:  # the best so far, and better than leaving the tensor as it is
                current, best_feeds = db, trial
                kept = cuts.last if cuts is not None else None
                chosen[g.tensor], alphas_kept[g.tensor], amaxes[g.tensor] = s, alpha, amax
            return db

        if climb_alphas:
            climb(alphas, attempt)
        else:
            for alpha in alphas:
                attempt(alpha)
        if g.tensor in chosen:
            feeds = best_feeds
            if cuts is not None:
                cuts.accept(kept)
        carried = current
        if progress is not None:
            progress.update()
    best = sqnr(feeds) if cuts is not None else carried
    final = apply_smoothing(model, chosen, groups)
    ranges_out = dict(ranges)
    for x, amax in amaxes.items():
        ranges_out[final.tensors[x]] = Range.symmetric(amax, source=f"smoothquant alpha {alphas_kept[x]:g}")
    float_db = _float_equal(model, final.model, batches, choice, refs)
    say(f"smoothquant: {len(chosen)} of {len(groups)} activations smoothed; output SQNR {baseline:.2f} -> "
        f"{best:.2f} dB on the samples; the smoothed FP32 model matches the input to {float_db:.1f} dB")
    return SmoothResult(final.model, alphas_kept, {k: final.tensors[k] for k in chosen}, ranges_out, baseline, best,
                        float_db, tried, input_ranges=ranges)


def _db(score) -> float:
    db = score.sqnr_db
    return -math.inf if math.isnan(db) else db


def _float_equal(model, smoothed, batches, choice, refs) -> float:
    """Output SQNR of the smoothed FP32 model against the input's; an error below :data:`FLOAT_EQUAL_DB`."""
    from trtcal.ort.sensitivity import score_model

    db = score_model(smoothed, batches, refs, choice, sqnr_only=True).sqnr_db
    if not db >= FLOAT_EQUAL_DB:
        raise TrtcalError(f"smoothquant: the smoothed FP32 model differs from the input ({db:.1f} dB output SQNR, "
                          f"below {FLOAT_EQUAL_DB:g}); not written")
    return db


def smooth(model, data, *, output=None, alphas=ALPHAS, climb_alphas: bool = True, select_samples: int = 64,
           target: str = "tensorrt", attention: str = "int8", preprocess=None, batch_size: int | None = None,
           batch_axes: dict | None = None,
           shapes: dict | None = None, allow_nonfinite: bool = False, score=None, classifiers=None,
           force: bool = False, progress=None, log=None):
    """``trtcal smooth``: SmoothQuant on ``model`` (a path) with ``data`` (any :mod:`trtcal.data`
    source): mse ranges from a calibration of the first ``select_samples`` samples, the factors
    searched there (:func:`search_smoothing`), the smoothed FP32 model and its provenance sidecar
    written atomically to ``output`` (default ``<model stem>.smooth.onnx`` beside the model).
    Returns ``(path, SmoothResult)``."""
    from pathlib import Path

    from trtcal.cache.provenance import sidecar_path, write_sidecar
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.onnx.model import load_model
    from trtcal.ort.pipeline import calibrate, file_sha256
    from trtcal.ort.runner import first_batches

    model = Path(model)
    path = Path(output) if output is not None else model.with_name(model.stem + ".smooth.onnx")
    for p in (path, sidecar_path(path)):
        fileio.check_output(p, force=force, inputs=[model, data])
    feed = {"batch_axes": batch_axes, "shapes": shapes, "allow_nonfinite": allow_nonfinite}
    batches, _ = first_batches(model, data, samples=select_samples, batch_size=batch_size, preprocess=preprocess,
                               **feed)
    cal = calibrate(model, data, algorithm="mse", batch_size=batch_size, max_batches=len(batches),
                    preprocess=preprocess, progress=progress, **feed)
    fp32 = load_model(model, load_weights=True, fp32=True)
    with Progress(None, "smoothing", enabled=progress) as bar:
        result = search_smoothing(fp32, batches, {n: r.amax for n, r in cal.thresholds.items()}, alphas=alphas,
                                  climb_alphas=climb_alphas, target=target, attention=attention, progress=bar,
                                  batch_axes=batch_axes,
                                  score=score, classifiers=classifiers, log=log)
    fileio.atomic_write(path, result.model.SerializeToString(), force=force, inputs=[model, data])
    write_sidecar(path, {"algorithm": "smoothquant", "model": str(model), "model_sha256": file_sha256(model),
                         "data": str(data), "samples": select_samples, **result.to_dict()}, force=force)
    return path, result
