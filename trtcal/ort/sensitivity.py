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

The outputs measured are those :func:`trtcal.ort.evaluate.choose_outputs` scores (every float
output, or those named; never integer or boolean ones), and the class scores among them are the
ones it finds or is told. The error (``metric``): ``"sqnr"``, the output SQNR: with one output
its SQNR, with several ``-10 log10`` of the mean of their noise-to-signal ratios (each output
weighs the same whatever its scale: boxes in pixels do not drown probabilities; one output that
mixes scales, boxes and scores in one tensor, is scored channel by channel the same way:
:attr:`trtcal.core.metrics.Comparison.noise_ratio`); or ``"kl"``,
the mean KL divergence of the class-score outputs' softmaxes (per position for ``[N, T, C]``,
averaged over those outputs: it weighs the logits by the reference's probabilities, as top-1
flips do, where SQNR weighs all 1000 logits alike). Gains are in dB either way: the SQNR
gained, or ``10 log10`` of the factor the KL divergence shrinks by.

An objective that is not a number is an error naming the output: an FP32 output that is all
zeros or holds NaN/Inf on the evaluation batches has no SQNR. A candidate whose INT8 outputs
hold NaN/Inf where FP32's do not scores ``-inf`` (the worst). Two infinite scores that are equal
gain 0 dB.

Everything runs in ONNX Runtime on the CPU: the FP32 outputs are computed once, and so is the
all-INT8 model's. A candidate (a set of tensors left in float) is not written as a Q/DQ model of
its own: :class:`trtcal.ort.qdq_variants.QdqVariants` plans it with the Q/DQ writer's rules and
builds a model of only the nodes it changes and those downstream of them, fed with the tensors
the all-INT8 model computes upstream (one run of it, with them exposed, per
:data:`BASE_TENSOR_BUDGET` of them). The gains are the same, bit for bit, as those of the
candidates' own Q/DQ models, written and run whole (every gain on YOLOv8n and in the tests; 49 of
50 on EfficientNet-Lite0, the other 0.006 dB apart: see that module for where ONNX Runtime's
fusions make them differ in float rounding); models with control flow are run whole, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.metrics import Comparison

METRICS = ("sqnr", "kl")
MODES = ("leave-one-out", "one-at-a-time")
#: Bytes of the all-INT8 model's tensors kept at a time for the candidates' models (module doc):
#: more evaluation batches than fit are taken a chunk at a time, each chunk's models made anew.
BASE_TENSOR_BUDGET = 512 * 2**20


@dataclass
class Score:
    """One model's scored outputs against FP32 on the evaluation batches."""

    outputs: dict[str, Comparison]  # scored output -> its comparison
    broken: dict[str, int] = field(default_factory=dict)  # output -> INT8 NaN/Inf values where FP32 is finite

    @property
    def sqnr_db(self) -> float:
        """The output SQNR (module doc): -inf when an output is broken."""
        if self.broken:
            return -math.inf
        for name, c in self.outputs.items():
            if not c.signal > 0 or math.isnan(c.noise):
                raise TrtcalError(f"output {name!r}: its SQNR is not a number (FP32 signal {c.signal:g}, "
                                  f"error {c.noise:g}); leave it out with --score")
        ratio = sum(c.noise_ratio for c in self.outputs.values()) / len(self.outputs)
        return math.inf if ratio == 0 else -10.0 * math.log10(ratio)

    @property
    def classes(self) -> list[Comparison]:
        return [c for c in self.outputs.values() if c.classifier]

    @property
    def agreement(self) -> float | None:
        """Top-1 agreement, averaged over the class-score outputs (None without any)."""
        return sum(c.top1_agreement for c in self.classes) / len(self.classes) if self.classes else None

    @property
    def kl(self) -> float | None:
        """Mean KL(softmax(ref) || softmax(test)), averaged over the class-score outputs."""
        if not self.classes:
            return None
        for c in self.classes:
            if math.isnan(c.kl_mean):
                raise TrtcalError(f"output {c.name!r}: its KL divergence is not a number "
                                  f"({c.positions} positions scored)")
        return sum(c.kl_mean for c in self.classes) / len(self.classes)

    def value(self, metric: str) -> float:
        """Larger is better, in dB: the SQNR, or -10 log10 of the KL divergence."""
        if metric == "sqnr":
            return self.sqnr_db
        kl = self.kl
        if self.broken:
            return -math.inf
        return math.inf if kl == 0 else -10.0 * math.log10(kl)


@dataclass
class Sensitivity:
    baseline_db: float  # output SQNR with every tensor quantized
    gains: dict[str, float]  # tensor -> gain (dB, see metric) when it alone stays in float, largest first
    chosen: list[str] = field(default_factory=list)
    final_db: float = math.nan  # output SQNR with the chosen tensors in float
    agreement: tuple[float, float] | None = None  # top-1 agreement (baseline, final), class-score outputs' mean
    layers: list[str] = field(default_factory=list)  # outputs of the nodes left in float (a fallback list)
    metric: str = "sqnr"  # what the gains measure
    mode: str = "leave-one-out"  # how they were measured
    kl: tuple[float, float] | None = None  # mean KL divergence (baseline, final), class-score outputs' mean
    outputs: dict[str, dict] = field(default_factory=dict)  # scored output -> its numbers, baseline and final
    not_scored: dict[str, str] = field(default_factory=dict)  # output -> why it is not scored
    samples: int = 0  # evaluation samples

    def to_dict(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "baseline_sqnr_db": self.baseline_db, "final_sqnr_db": self.final_db,
                "chosen": self.chosen, "fallback_layers": self.layers, "gains_db": self.gains,
                "top1_agreement": list(self.agreement) if self.agreement else None,
                "kl_mean": list(self.kl) if self.kl else None, "outputs": self.outputs,
                "not_scored": self.not_scored, "samples": self.samples}


def _session(model):
    from trtcal.ort.runner import cpu_session

    return cpu_session(model, "the Q/DQ model under test", int8_kernels=False)  # TensorRT's arithmetic


def reference_outputs(model, batches: list[dict], choice, *, batch_axes: dict | None = None
                      ) -> tuple[list[list[np.ndarray]], int]:
    """The FP32 model's scored outputs (``choice.names``) on each batch, and the samples counted
    along the inputs' batch axes; an output that holds NaN/Inf or is all zeros is an error (no
    SQNR can be measured on it)."""
    from trtcal.data.sources import configure_inputs, samples_in
    from trtcal.ort.runner import input_specs

    ref_session = _session(model)
    specs, _ = configure_inputs(input_specs(ref_session), batch_axes=batch_axes)
    names = choice.names
    refs = [ref_session.run(names, b) for b in batches]
    samples = sum(samples_in(b, specs) for b in batches)
    for i, name in enumerate(names):
        choice.first_batch(name, refs[0][i].shape)
        bad = sum(int(np.count_nonzero(~np.isfinite(r[i]))) for r in refs)
        if bad:
            raise TrtcalError(f"output {name!r}: the FP32 model gives {bad} NaN/Inf values on the {samples} "
                              "evaluation samples, so no error can be measured on it; leave it out with --score")
        if not any(np.any(r[i] != 0) for r in refs):
            raise TrtcalError(f"output {name!r}: all zeros in FP32 on the {samples} evaluation samples, so its SQNR "
                              "is not a number; leave it out with --score, or measure on other data")
    return refs, samples


def score_model(model, batches, refs, choice, *, keep: list | None = None, sqnr_only: bool = False) -> Score:
    """``model`` (a Q/DQ ModelProto, run as written: TensorRT's arithmetic) scored against the FP32
    outputs ``refs`` (:func:`reference_outputs`) on ``batches``. ``keep``: a list that gets each
    batch's outputs. ``sqnr_only``: only :attr:`Score.sqnr_db` is wanted (no cosine, top-1 or KL
    computed: on PP-OCRv4 rec's [N, 40, 6625] class scores they took 4/5 of a search's time)."""
    return score_session(_session(model), batches, refs, choice, keep=keep, sqnr_only=sqnr_only)


def score_session(session, batches, refs, choice, *, feeds: dict | None = None, keep: list | None = None,
                  sqnr_only: bool = False) -> Score:
    """:func:`score_model` on a session already made; ``feeds``: more inputs given with every batch."""
    names = choice.names

    def runs():  # one batch at a time: only one batch's outputs are held
        for batch in batches:
            got = session.run(names, {**batch, **feeds} if feeds else batch)
            if keep is not None:
                keep.append(got)
            yield got

    return score_outputs(runs(), refs, choice, sqnr_only=sqnr_only)


def score_outputs(got, refs, choice, *, sqnr_only: bool = False) -> Score:
    """Outputs (``choice.names`` per batch, an iterable of lists) scored against FP32's ``refs``."""
    names = choice.names
    score = Score({n: choice.comparison(n, sqnr_only=sqnr_only) for n in names})
    for ref, g in zip(refs, got):  # refs first: a generator of runs is not run past the last reference
        _update(score, names, ref, g)
    return score


def _update(score: Score, names: list[str], ref: list[np.ndarray], got: list[np.ndarray]) -> None:
    """One batch's outputs ``got`` into ``score``, against FP32's ``ref``."""
    for name, r, g in zip(names, ref, got):
        bad = int(np.count_nonzero(~np.isfinite(g)))
        if bad:
            score.broken[name] = score.broken.get(name, 0) + bad
        try:
            score.outputs[name].update(r, g)
        except ValueError as exc:
            raise TrtcalError(str(exc)) from None


class _Candidates:
    """Scores of variants of the all-INT8 model (subsets of its ranges) from cut models
    (:meth:`trtcal.ort.qdq_variants.QdqVariants.cut`), against the all-INT8 model's own run."""

    def __init__(self, model, ranges, full_model, batches, refs, base_outputs, choice, qdq_options):
        from trtcal.ort.qdq_variants import QdqVariants

        self.variants = QdqVariants(model, ranges, **qdq_options)
        self.full_model, self.batches, self.refs, self.base_outputs = full_model, batches, refs, base_outputs
        self.choice = choice

    @property
    def usable(self) -> bool:
        return self.variants.can_cut

    def scores(self, subsets: list[dict], progress=None) -> list[Score]:
        """Each of ``subsets`` scored as its own Q/DQ model would score (module doc)."""
        V, names, batches = self.variants, self.choice.names, self.batches
        if not subsets:
            return []
        plans = [V.plan(s) for s in subsets]
        keeps = [V.cone([p], names) for p in plans]
        needed = list(dict.fromkeys(t for k in keeps for t in V.cut_inputs(k)))
        out = [Score({n: self.choice.comparison(n) for n in names}) for _ in subsets]
        start, size = 0, 1
        while start < len(batches):
            # the all-INT8 model's tensors for a chunk of batches, as many as BASE_TENSOR_BUDGET holds
            exposed = V.base_session(self.full_model, needed, _session) if needed else None
            chunk = V.base_tensors(self.full_model, needed, batches[start:start + 1], session=exposed)
            if start == 0:
                size = max(1, int(BASE_TENSOR_BUDGET // max(1, sum(a.nbytes for a in chunk[0].values()))))
            stop = min(start + size, len(batches))
            chunk += V.base_tensors(self.full_model, needed, batches[start + 1:stop], session=exposed)
            del exposed
            for j, (plan, keep) in enumerate(zip(plans, keeps)):
                model = V.cut(plan, names, keep=keep)
                session = _session(model.model)
                wanted = [n for n in model.outputs if n in names]
                graph_inputs = {vi.name for vi in model.model.graph.input}
                for i, tensors in zip(range(start, stop), chunk):
                    feeds = {k: v for k, v in batches[i].items() if k in graph_inputs}
                    feeds.update((t, tensors[t]) for t in model.cut_inputs)
                    got = dict(zip(wanted, session.run(wanted, feeds))) if wanted else {}
                    _update(out[j], names, self.refs[i],
                            [got[n] if n in got else self.base_outputs[i][k] for k, n in enumerate(names)])
                del session
                if stop == len(batches) and progress is not None:
                    progress.update()
            start = stop
        return out


def _per_output(base: Score, end: Score) -> dict[str, dict]:
    out = {}
    for name, b in base.outputs.items():
        e = end.outputs[name]
        d = {"classes": b.classes, "sqnr_db": [b.sqnr_db, e.sqnr_db]}
        if b.classifier:
            d.update(top1_agreement=[b.top1_agreement, e.top1_agreement], kl_mean=[b.kl_mean, e.kl_mean],
                     positions=b.positions)
        for label, score in (("nonfinite_baseline", base), ("nonfinite_final", end)):
            if name in score.broken:
                d[label] = score.broken[name]
        out[name] = d
    return out


def analyse(model_path, ranges, batches: list[dict], *, max_float: int = 5, target: str = "tensorrt",
            greedy: bool = False, metric: str = "sqnr", mode: str = "leave-one-out", progress=None,
            score=None, classifiers=None, batch_axes: dict | None = None, _whole_models: bool = False,
            **qdq_options) -> tuple[Sensitivity, object]:
    """Sensitivity of every quantized activation (``mode`` and ``metric``: see the module doc);
    returns it and the Q/DQ result with the ``max_float`` most harmful tensors left in float (only
    those that gain; at most all but one).

    ``score``, ``classifiers``: which outputs are measured and which are class scores
    (:func:`trtcal.ort.evaluate.choose_outputs`). ``batch_axes``: input -> the axis its samples are
    on (``--batch-axis``; default 0), to count the samples. ``greedy``: instead of taking the top of the
    ranking, pick one tensor at a time,
    each time the one (among the ``3 * max_float`` best ranked) whose fallback, together with the
    ones already picked, gains most; stop when none gains. Costs about ``3 * max_float**2`` more
    evaluations; catches tensors whose errors interact. ``qdq_options`` go to every
    :func:`~trtcal.onnx.qdq.write_qdq` (e.g. ``weight_method``). ``_whole_models``: write and run
    each candidate's whole Q/DQ model, as before cut models (the benchmark's and tests' reference).
    """
    from trtcal.core.ranges import from_cache
    from trtcal.onnx.model import load_model
    from trtcal.onnx.qdq import write_qdq
    from trtcal.ort.evaluate import choose_outputs

    if max_float < 0:
        raise TrtcalError(f"--max-float {max_float}: must be >= 0")
    if metric not in METRICS:
        raise TrtcalError(f"metric {metric!r}: choose from {', '.join(METRICS)}")
    if mode not in MODES:
        raise TrtcalError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    if not batches:
        raise TrtcalError("no evaluation batches for the sensitivity analysis")
    model = load_model(model_path, load_weights=True, fp32=True)
    choice = choose_outputs(model, str(model_path), score=score, classifiers=classifiers)
    if not isinstance(ranges, dict):
        ranges = from_cache(ranges)
    refs, samples = reference_outputs(model, batches, choice, batch_axes=batch_axes)
    names = choice.names
    if metric == "kl" and not any(choice.classes.values()):
        shapes = ", ".join(f"{n} {list(refs[0][i].shape)}" for i, n in enumerate(names))
        raise TrtcalError(f"metric kl needs a classifier output, and no scored output is class scores ({shapes}): "
                          "name one with --classifier, or use --metric sqnr")
    full = write_qdq(model, ranges, target=target, **qdq_options)
    base_outputs: list = []
    base = score_model(full.model, batches, refs, choice, keep=base_outputs)
    baseline = base.value(metric)
    gains: dict[str, float] = {}
    candidates = [q.name for q in full.activations]
    if progress is not None and getattr(progress, "total", 0) is None:
        progress.total = len(candidates)  # known only now: a caller need not write the model to size its bar
    cut = None if _whole_models else _Candidates(model, ranges, full.model, batches, refs, base_outputs, choice,
                                                  dict(qdq_options, target=target))
    if cut is not None and not cut.usable:
        cut = None

    def values_of(subsets: list[dict], bar=None) -> list[float]:
        """The metric's value with only each of ``subsets`` of the ranges quantized."""
        if cut is not None:
            return [s.value(metric) for s in cut.scores(subsets, bar)]
        out = []
        for subset in subsets:
            trial = write_qdq(model, subset, target=target, check_onnxruntime=False, **qdq_options)
            out.append(score_model(trial.model, batches, refs, choice).value(metric))
            if bar is not None:
                bar.update()
        return out

    def without(dropped: set[str]) -> dict:
        return {k: v for k, v in ranges.items() if k not in dropped}

    if mode == "leave-one-out":
        values = values_of([without({name}) for name in candidates], progress)
        gains = {name: _gain(baseline, v) for name, v in zip(candidates, values)}
    else:
        values = values_of([{name: ranges[name]} for name in candidates], progress)
        gains = {name: _additive_gain(baseline, v) for name, v in zip(candidates, values)}
    ordered = dict(sorted(gains.items(), key=lambda kv: (-_finite(kv[1]), kv[0])))
    # one tensor stays quantized: with none, the model is the FP32 one and no Q/DQ model can be written
    max_float = max(0, min(max_float, len(candidates) - 1))
    chosen = [n for n, g in ordered.items() if g > 0][:max_float]
    if greedy:
        pool = [n for n, g in ordered.items() if g > 0][:3 * max_float]
        chosen, current = [], baseline
        while len(chosen) < max_float:
            tried = [n for n in pool if n not in chosen]
            trials = dict(zip(tried, values_of([without(set(chosen) | {n}) for n in tried])))
            best = max(trials, key=lambda n: _finite(trials[n]), default=None)
            if best is None or not _gain(current, trials[best]) > 0:
                break
            chosen.append(best)
            current = trials[best]
    final = write_qdq(model, {k: v for k, v in ranges.items() if k not in set(chosen)}, target=target,
                      **qdq_options)
    end = score_model(final.model, batches, refs, choice)
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
                         metric, mode, (base.kl, end.kl) if base.kl is not None else None,
                         _per_output(base, end), dict(choice.not_scored), samples)
    return result, final


def _gain(before: float, after: float) -> float:
    """``after - before`` (dB), 0 when both are the same infinity (nothing to gain)."""
    return 0.0 if before == after else after - before


def _additive_gain(all_db: float, alone_db: float) -> float:
    """The gain (dB) of removing an error source that alone scores ``alone_db`` from a whole that
    scores ``all_db`` (scores: larger is better, 10 log10 of signal over error), if errors add."""
    if alone_db == math.inf or all_db == -math.inf and alone_db > -math.inf:
        return 0.0  # it causes no error alone, or none of the whole's broken outputs
    if all_db == math.inf or alone_db == -math.inf:
        return math.inf  # an exact whole is not made worse by it alone; or it alone breaks an output
    share = 10.0 ** ((all_db - alone_db) / 10.0)
    return math.inf if share >= 1.0 else -10.0 * math.log10(1.0 - share)


def _finite(x: float) -> float:
    return 1e9 if x == math.inf else (-1e9 if x == -math.inf or math.isnan(x) else x)
