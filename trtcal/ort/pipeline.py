"""The CPU calibration pipeline: data -> ONNX Runtime -> histograms -> thresholds -> cache.

One streaming pass: each batch runs through the FP32 model with every tensor exposed, updates
one histogram per tensor, and is dropped, so memory is bounded by the histograms. Histogram
updates run in a worker thread while ONNX Runtime computes the next batch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from trtcal.cache.format import DEFAULT_TRT_VERSION, CalibrationCache, Version, format_version
from trtcal.core import thresholds as thr
from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram, update_all
from trtcal.core.progress import Progress
from trtcal.data import open_data, random_data
from trtcal.data.checks import BatchChecks
from trtcal.data.sources import check_batch, configure_inputs, is_loader_script, samples_in, take

#: The header name each algorithm's cache carries. TensorRT has no MSE or ACIQ calibrator; their
#: caches carry EntropyCalibration2, the calibrator trtexec --calib uses to read a cache.
TRT_ALGORITHM = {
    "entropy2": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "LegacyCalibration",
}


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found: the cache, the statistics and per-tensor diagnostics."""

    cache: CalibrationCache
    histograms: dict[str, Histogram]
    thresholds: dict[str, object]  # tensor -> ThresholdResult
    metadata: dict
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def save_stats(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        from trtcal.core.stats import save_stats

        return save_stats(path, self.histograms, self.metadata, force=force)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trt_algorithm_name(algorithm: str) -> str:
    return TRT_ALGORITHM.get(algorithm, "EntropyCalibration2")


def ranges_to_cache(results: dict, *, algorithm: str, version: Version = DEFAULT_TRT_VERSION) -> CalibrationCache:
    """A TensorRT cache from per-tensor threshold results (``result.amax``)."""
    return CalibrationCache.from_amaxes({name: r.amax for name, r in results.items()},
                                        version=version, algorithm=trt_algorithm_name(algorithm))


def compute_thresholds(histograms: dict[str, Histogram], algorithm: str, **options) -> dict:
    """Per-tensor :class:`~trtcal.core.thresholds.ThresholdResult` in the histograms' order."""
    return thr.compute_all(algorithm, histograms, **options)


#: Default bound on the exposed tensors of one batch, which sets the batch size of models with a
#: dynamic batch axis when none is given (see :func:`auto_batch_size`).
MEMORY_BUDGET_MB = 256
#: The largest automatic batch size.
MAX_AUTO_BATCH = 32
#: Below this many values in all (first batch x batches) the histograms use numpy: loading the
#: compiled kernels costs about 0.8 s and 110 MB, more than they save on a small model.
NUMBA_MIN_VALUES = 150_000_000


def _size_text(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MB"


def auto_batch_size(runner, source, budget_mb: float = MEMORY_BUDGET_MB, inputs=None, *,
                    finite: bool = False) -> tuple[int, int]:
    """The batch size whose exposed tensors fit in ``budget_mb``: one sample of the first batch
    runs through the model to measure its bytes. Returns ``(batch size, bytes per sample)``.
    ``inputs``: the input specs (default the runner's), ``finite``: as for ``check_batch``."""
    inputs = runner.inputs if inputs is None else inputs
    first = next(iter(source), None)
    if first is None:
        raise TrtcalError(f"{source.description}: produced no batches")
    first = check_batch(first, inputs, f"{source.description}: batch 0", finite=finite)
    one = take(first, inputs, 0, 1)
    per_sample = sum(a.nbytes for _, a in runner.run(one)) or 1
    return max(1, min(MAX_AUTO_BATCH, int(budget_mb * 2**20 // per_sample))), per_sample


def calibrate(model: str | os.PathLike, data: str | os.PathLike | None = None, *, algorithm: str = "entropy2",
              batch_size: int | None = None, max_batches: int | None = None,
              trt_version: Version = DEFAULT_TRT_VERSION, preprocess=None, random: bool = False,
              progress: bool | None = None, threads: int | None = None, growth: str = "power2",
              bins: int = 2048, memory_budget_mb: float = MEMORY_BUDGET_MB, include_constants: bool = False,
              expose_all: bool = False, batch_axes: dict | None = None, shapes: dict | None = None,
              allow_nonfinite: bool = False, keep_batch=None, **options) -> CalibrationResult:
    """Calibrate ``model`` (an FP32 ONNX file) on ``data``; see :mod:`trtcal.data` for sources.

    ``algorithm`` is one of :data:`trtcal.core.thresholds.METHODS`; ``options`` go to it (e.g.
    ``percentile=99.99``). ``random=True`` uses random inputs (smoke tests only; the result is
    marked as fake). ``batch_size``: samples per batch; by default the model's fixed batch, else
    as many samples as keep one batch's exposed tensors within ``memory_budget_mb`` (at most 32):
    memory is bounded by a batch of activations plus the histograms, whatever the data's size.
    ``include_constants``: also calibrate the constant inputs of MatMul (initializers, Constant
    nodes), which TensorRT's implicit INT8 asks ranges for; their histogram is their values.
    Aliases (Reshape, Transpose ...) and zero pads get their histograms from their inputs' without
    being run out of ONNX Runtime (:mod:`trtcal.onnx.derived`; the same counts); ``expose_all`` runs
    every tensor out instead.

    ``batch_axes``: input -> the axis its samples are on (None: fed whole with every batch; 0-d
    inputs always are); ``shapes``: input -> the shape of one batch, fixing dynamic dimensions
    (random data takes it; its batch-axis entry is the batch size). See
    :func:`trtcal.data.sources.configure_inputs`. NaN/Inf in the inputs are an error unless
    ``allow_nonfinite`` (then they are counted and left out of the ranges). An explicit
    ``batch_size`` whose exposed tensors exceed ``memory_budget_mb`` gets a warning with the
    measured size. ``keep_batch``: a function of the batch index; batches it rejects are skipped
    (held out for evaluation, as :func:`trtcal.ort.quantize.quantize` does).
    """
    from trtcal.ort.runner import Runner

    if algorithm not in thr.METHODS:
        raise TrtcalError(f"--algorithm {algorithm!r}: choose from {', '.join(thr.METHODS)}")
    if max_batches is not None and max_batches < 1:
        raise TrtcalError(f"--max-batches {max_batches}: must be at least 1")
    if data is None and not random:
        raise TrtcalError("no calibration data: give --data PATH (or --random for a smoke test with fake data)")
    if memory_budget_mb <= 0:
        raise TrtcalError(f"--memory-budget {memory_budget_mb:g}: must be > 0")
    runner = Runner(model, threads=threads, include_constants=include_constants, derive=not expose_all)
    inputs, batch_size = configure_inputs(runner.inputs, batch_axes=batch_axes, shapes=shapes, batch_size=batch_size)
    finite = not allow_nonfinite
    auto = None
    scripted = data is not None and is_loader_script(data)  # a loader script makes its own batches
    dynamic = not {i.fixed_batch for i in inputs} - {None}
    explicit = batch_size is not None and dynamic and not scripted  # the user's choice, not the model's
    if batch_size is None and not random and not scripted and dynamic:
        probe = open_data(data, inputs, batch_size=1, preprocess=preprocess)
        auto = auto_batch_size(runner, probe, memory_budget_mb, inputs, finite=finite)
        batch_size = auto[0]
    if random:
        source = random_data(inputs, batch_size=batch_size, num_batches=max_batches or 8)
    else:
        source = open_data(data, inputs, batch_size=batch_size, preprocess=preprocess)
    total = source.num_batches if max_batches is None else min(max_batches, source.num_batches or max_batches)

    histograms: dict[str, Histogram] = {}
    engine = None  # the histogram engine, chosen at the first batch (see NUMBA_MIN_VALUES)
    checks = BatchChecks(inputs, runner.scaled_inputs)
    over_budget = None  # (bytes of the first batch's exposed tensors, its samples) past the budget
    # One batch at a time: ONNX Runtime runs it on every core, then the histograms count it on
    # every core (update_all spreads the tensors over a thread pool). Running the two side by
    # side was slower on 2 cores (ONNX Runtime's parallel sections wait for a thread the
    # histograms hold: docs/benchmarks.md), and this keeps one batch alive, not two.
    workers = os.cpu_count() or 1
    batches = 0
    padded: dict[str, int] = {}  # derived pad -> zeros it added over all batches
    with Progress(total, "calibrating", enabled=progress) as bar:
        for index, batch in enumerate(source):
            if max_batches is not None and index >= max_batches:
                break
            if keep_batch is not None and not keep_batch(index):
                continue
            batch = check_batch(batch, inputs, f"{source.description}: batch {index}", finite=finite)
            checks.observe(index, batch)
            tensors = dict(runner.run(batch))
            if index == 0:
                values = sum(a.size for a in tensors.values())
                engine = None if total is None or values * total >= NUMBA_MIN_VALUES else "numpy"
                nbytes = sum(a.nbytes for a in tensors.values())
                if explicit and nbytes > memory_budget_mb * 2**20:
                    over_budget = (nbytes, samples_in(batch, inputs))
            del batch
            update_all(histograms, tensors, bins=bins, growth=growth, engine=engine, workers=workers)
            del tensors
            for name, zeros in runner.last_padding.items():
                padded[name] = padded.get(name, 0) + zeros
            batches += 1
            bar.update()
    if batches == 0:
        raise TrtcalError(f"{source.description}: produced no batches")

    for name, d in runner.plan.derived.items():  # graph order: an alias of an alias finds its source
        if d.source in histograms:
            histograms[name] = histograms[d.source].copy().add_zeros(padded.get(name, 0))
            histograms[name].name = name
        else:  # its input turned out not to be a float tensor at run time
            runner.plan.skipped[name] = runner.plan.skipped.get(d.source, "its input was not calibrated")
    for name, value in runner.plan.constants.items():  # the same values every batch: counted once
        histograms[name] = Histogram(bins=bins, growth=growth, name=name).update(value)
    histograms = {n: histograms[n] for n in runner.plan.calibrated if n in histograms}  # graph order
    results = compute_thresholds(histograms, algorithm, **options)
    cache = ranges_to_cache(results, algorithm=algorithm, version=trt_version)
    warnings = checks.general() + checks.too_few()
    if over_budget is not None:
        nbytes, n = over_budget
        estimate = nbytes / max(n, 1) * batch_size
        warnings.append(f"--batch-size {batch_size}: one batch's exposed tensors take about {_size_text(estimate)} "
                        f"({_size_text(nbytes / max(n, 1))} a sample), over --memory-budget "
                        f"{memory_budget_mb:g} MB; peak memory grows with the batch size (leave --batch-size "
                        "out to have it chosen within the budget)")
    # one line per tensor: what the input checks found in it, its threshold's warnings, its NaN/Inf
    found = checks.by_input()
    for name in [n for n in found if n not in results]:  # inputs not calibrated (integer, or skipped)
        warnings.append(f"input {name!r}: " + "; ".join(found[name]))
    for name, r in results.items():
        parts = found.get(name, []) + list(r.warnings)
        h = histograms[name]
        bad = h.nan + h.posinf + h.neginf
        if bad:
            parts.append(f"{bad} NaN/Inf values ({h.nan} NaN, {h.posinf} +Inf, {h.neginf} -Inf) were left out of "
                         "its range")
        said_nan = False
        for i, part in enumerate(parts):  # NaN/Inf said once, by the first (the input checks name the batches)
            if "NaN" in part:
                parts[i] = None if said_nan else part
                said_nan = True
        parts = [p for p in parts if p]
        if parts:
            warnings.append(f"{'input' if name in found else 'tensor'} {name!r}: " + "; ".join(parts))
    metadata = {
        "model": str(model),
        "model_sha256": file_sha256(model),
        "data": source.description,
        "fake_data": source.fake,
        "batches": batches,
        "samples": checks.samples,
        "inputs": checks.shape_report(inputs),
        "algorithm": algorithm,
        "options": {k: v for k, v in options.items()},
        "trt_version": format_version(trt_version),
        "growth": growth,
        "bins": bins,
        "batch_size": batch_size,
        "constants": list(runner.plan.constants),
        "derived": {name: d.source for name, d in runner.plan.derived.items()},
    }
    if auto is not None:
        metadata["batch_size_auto"] = {"budget_mb": memory_budget_mb, "bytes_per_sample": auto[1]}
    return CalibrationResult(cache, histograms, results, metadata, dict(runner.plan.skipped),
                             list(runner.plan.notes) + warnings)
