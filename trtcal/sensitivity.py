"""Which quantized tensors hurt the output most: leave-one-out sensitivity and the float fallback.

For a Q/DQ model written from some ranges, each quantized activation tensor is left in float in
turn (its consuming layers then run in float, weights included, as TensorRT would run a layer
kept in higher precision), and the model's output error against FP32 is measured on a few
evaluation batches. The tensors whose removal gains the most are the ones to keep in float. The
chosen set is then applied together and measured again.

Two ways to measure a tensor (``mode``): ``"leave-one-out"`` quantizes everything but that
tensor and measures the gain directly; ``"one-at-a-time"`` quantizes that tensor alone (and so
its consuming layers) and turns the error it causes into the gain its fallback would bring if
the tensors' errors added up (the share ``s`` of the all-INT8 error it causes alone gives
``-10 log10(1 - s)`` dB; infinite when it alone causes at least as much). Leave-one-out sees
interactions with the other quantized tensors; one-at-a-time sees each tensor on clean inputs.

The error (``metric``): ``"sqnr"``, the SQNR of all outputs (any model); or ``"kl"``, the mean
KL divergence of the softmaxes of the first output (classifiers: it weighs the logits by the
reference's probabilities, as top-1 flips do, where SQNR weighs all 1000 logits alike). Gains are
in dB either way: the SQNR gained, or ``10 log10`` of the factor the KL divergence shrinks by.

Everything runs in ONNX Runtime on the CPU: the FP32 outputs are computed once; each candidate is
a fresh session over an in-memory model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trtcal.errors import TrtcalError
from trtcal.metrics import Comparison

METRICS = ("sqnr", "kl")
MODES = ("leave-one-out", "one-at-a-time")


@dataclass
class Score:
    """One model's outputs against FP32 on the evaluation batches."""

    sqnr_db: float  # over all outputs
    agreement: float | None = None  # top-1 agreement of the first output, for classifiers
    kl: float | None = None  # mean KL(softmax(ref) || softmax(test)) of the first output, for classifiers

    def value(self, metric: str) -> float:
        """Larger is better, in dB: the SQNR, or -10 log10 of the KL divergence."""
        if metric == "sqnr":
            return self.sqnr_db
        return math.inf if self.kl == 0 else -10.0 * math.log10(self.kl)


@dataclass
class Sensitivity:
    baseline_db: float  # output SQNR with every tensor quantized
    gains: dict[str, float]  # tensor -> gain (dB, see metric) when it alone stays in float, largest first
    chosen: list[str] = field(default_factory=list)
    final_db: float = math.nan  # output SQNR with the chosen tensors in float
    agreement: tuple[float, float] | None = None  # top-1 agreement (baseline, final) for classifiers
    layers: list[str] = field(default_factory=list)  # outputs of the nodes left in float (a fallback list)
    metric: str = "sqnr"  # what the gains measure
    mode: str = "leave-one-out"  # how they were measured
    kl: tuple[float, float] | None = None  # mean KL divergence (baseline, final) for classifiers

    def to_dict(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "baseline_sqnr_db": self.baseline_db, "final_sqnr_db": self.final_db,
                "chosen": self.chosen, "fallback_layers": self.layers, "gains_db": self.gains,
                "top1_agreement": list(self.agreement) if self.agreement else None,
                "kl_mean": list(self.kl) if self.kl else None}


def _session(model):
    from trtcal.runner import cpu_session

    return cpu_session(model, "the Q/DQ model under test", int8_kernels=False)  # TensorRT's arithmetic


def _score(model, batches, refs) -> Score:
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    total = Comparison("all")
    first = Comparison(names[0])
    for batch, ref in zip(batches, refs):
        got = session.run(names, batch)
        for r, g in zip(ref, got):
            total.update(r.reshape(r.shape[0], -1) if r.ndim > 1 else r, g.reshape(g.shape[0], -1) if g.ndim > 1 else g)
        first.update(ref[0], got[0])
    if not first.classifier:
        return Score(total.sqnr_db)
    return Score(total.sqnr_db, first.agree / first.samples, first.kl_mean)


def analyse(model_path, ranges, batches: list[dict], *, max_float: int = 5, target: str = "tensorrt",
            greedy: bool = False, metric: str = "sqnr", mode: str = "leave-one-out", progress=None,
            **qdq_options) -> tuple[Sensitivity, object]:
    """Sensitivity of every quantized activation (``mode`` and ``metric``: see the module doc);
    returns it and the Q/DQ result with the ``max_float`` most harmful tensors left in float (only
    those that gain).

    ``greedy``: instead of taking the top of the ranking, pick one tensor at a time,
    each time the one (among the ``3 * max_float`` best ranked) whose fallback, together with the
    ones already picked, gains most; stop when none gains. Costs about ``3 * max_float**2`` more
    evaluations; catches tensors whose errors interact. ``qdq_options`` go to every
    :func:`~trtcal.qdq.write_qdq` (e.g. ``weight_method``).
    """
    from trtcal.model import load_model
    from trtcal.qdq import write_qdq
    from trtcal.ranges import from_cache

    if max_float < 0:
        raise TrtcalError(f"--max-float {max_float}: must be >= 0")
    if metric not in METRICS:
        raise TrtcalError(f"metric {metric!r}: choose from {', '.join(METRICS)}")
    if mode not in MODES:
        raise TrtcalError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    if not batches:
        raise TrtcalError("no evaluation batches for the sensitivity analysis")
    model = load_model(model_path, load_weights=True)
    if not isinstance(ranges, dict):
        ranges = from_cache(ranges)
    ref_session = _session(model)
    names = [o.name for o in ref_session.get_outputs()]
    refs = [ref_session.run(names, b) for b in batches]
    full = write_qdq(model, ranges, target=target, **qdq_options)
    base = _score(full.model, batches, refs)
    if metric == "kl" and base.kl is None:
        raise TrtcalError(f"metric kl needs a classifier as the first output ({names[0]!r}: rank 2, "
                          "more than one class); use sqnr")
    baseline = base.value(metric)
    gains: dict[str, float] = {}
    candidates = [q.name for q in full.activations]
    if progress is not None and getattr(progress, "total", 0) is None:
        progress.total = len(candidates)  # known only now: a caller need not write the model to size its bar

    def score_of(subset: dict) -> float:
        """The metric's value with only ``subset`` of the ranges quantized."""
        trial = write_qdq(model, subset, target=target, check_onnxruntime=False, **qdq_options)
        return _score(trial.model, batches, refs).value(metric)

    def score_without(dropped: set[str]) -> float:
        return score_of({k: v for k, v in ranges.items() if k not in dropped})

    for name in candidates:
        if mode == "leave-one-out":
            gains[name] = score_without({name}) - baseline
        else:
            gains[name] = _additive_gain(baseline, score_of({name: ranges[name]}))
        if progress is not None:
            progress.update()
    ordered = dict(sorted(gains.items(), key=lambda kv: (-_finite(kv[1]), kv[0])))
    chosen = [n for n, g in ordered.items() if g > 0][:max_float]
    if greedy:
        pool = [n for n, g in ordered.items() if g > 0][:3 * max_float]
        chosen, current = [], baseline
        while len(chosen) < max_float:
            trials = {n: score_without(set(chosen) | {n}) for n in pool if n not in chosen}
            best = max(trials, key=lambda n: _finite(trials[n]), default=None)
            if best is None or not trials[best] > current:
                break
            chosen.append(best)
            current = trials[best]
    final = write_qdq(model, {k: v for k, v in ranges.items() if k not in set(chosen)}, target=target,
                      **qdq_options)
    end = _score(final.model, batches, refs)
    consumers = {q.name: q.consumers for q in full.activations}
    outputs_of = {(n.name or n.output[0]): n.output[0] for n in model.graph.node}
    layers = []
    for name in chosen:
        for c in consumers.get(name, []):
            node = c.replace(" (residual)", "")
            if node in outputs_of and outputs_of[node] not in layers:
                layers.append(outputs_of[node])
    result = Sensitivity(base.sqnr_db, ordered, chosen, end.sqnr_db,
                         (base.agreement, end.agreement) if base.agreement is not None else None, layers,
                         metric, mode, (base.kl, end.kl) if base.kl is not None else None)
    return result, final


def _additive_gain(all_db: float, alone_db: float) -> float:
    """The gain (dB) of removing an error source that alone scores ``alone_db`` from a whole that
    scores ``all_db`` (scores: larger is better, 10 log10 of signal over error), if errors add."""
    if alone_db == math.inf:
        return 0.0  # it causes no error alone
    if all_db == math.inf:
        return math.inf
    share = 10.0 ** ((all_db - alone_db) / 10.0)
    return math.inf if share >= 1.0 else -10.0 * math.log10(1.0 - share)


def _finite(x: float) -> float:
    return 1e9 if x == math.inf else (-1e9 if x == -math.inf or math.isnan(x) else x)
