"""Evaluate an INT8 model against its FP32 original in ONNX Runtime on the CPU.

The adapter around :mod:`trtcal.core.metrics`: both models run over the same batches; each scored
graph output (see :func:`choose_outputs`) is compared (SQNR, cosine; for class scores top-1
agreement, KL divergence, top-1 accuracy with labels) and, with
``per_tensor``, every float tensor the two models share by name, worst first by the lower of
the two SQNRs below (a per-layer SQNR
analysis). For a tensor that the INT8 model quantizes (QuantizeLinear -> DequantizeLinear), the
value its consumers see (the DequantizeLinear output) is compared too, so a tensor's own
quantization error shows apart from the error it inherits.

The outputs come from a plain session of the INT8 model, run as ONNX Runtime runs it in
deployment (integer kernels where it fuses Q/DQ); the per-tensor values come from a second
session with the tensors exposed, where exposed tensors stop those fusions (Q/DQ simulated in
float). Memory is a few sums per tensor, not the data.

Which outputs are scored, and which of them as class scores (:func:`choose_outputs`, shared
with :mod:`trtcal.ort.sensitivity`): every float output, or those named (``--score``); integer and
boolean outputs never (ids, masks, counts passed through are exact and say nothing about the
quantization). Class scores (top-1, KL) are float outputs of rank >= 2 with a last axis > 1
that are either named (``--classifier``; then no other output is) or, by default:

1. made by Softmax or LogSoftmax over the last axis (through Identity, Reshape, Flatten,
   Squeeze, Unsqueeze): class probabilities or log-probabilities, per position for ``[N, T, C]``;
2. else, when no output is made so, the model's only float output if it is ``[N, C]`` and made
   by a linear layer (Gemm, MatMul, or MatMul/Gemm plus a constant bias): a classifier's logits.

Everything else gets SQNR and cosine only: boxes, landmarks, embeddings, feature maps. A lone
``[N, 4]`` box regressor or ``[N, D]`` embedding made by a linear layer looks like logits to
rule 2; ``--classifier none`` says that no output is class scores.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.metrics import Comparison, has_class_axis
from trtcal.core.progress import Progress

#: Ops that pass a tensor's values on unchanged (the class axis stays last).
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16
_TYPE_NAMES = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               12: "uint32", 13: "uint64", 8: "string"}


@dataclass
class OutputChoice:
    """Which graph outputs are scored, and how (see the module doc)."""

    classes: dict[str, str | None]  # scored output -> None, "logits" or "probabilities"; model order
    told: bool = False  # the class-score outputs were named (--classifier), not found by the rules
    not_scored: dict[str, str] = field(default_factory=dict)  # output -> why it is not scored

    @property
    def names(self) -> list[str]:
        return list(self.classes)

    def comparison(self, name: str, **kwargs) -> Comparison:
        return Comparison(name, classes=self.classes[name], **kwargs)

    def first_batch(self, name: str, shape) -> None:
        """Check an output's first values: a class-score output needs a class axis; one found by
        rule 2 without it (a dynamic dimension that turned out 1) is scored without."""
        if self.classes.get(name) is not None and not has_class_axis(shape):
            if self.told:
                raise TrtcalError(f"--classifier {name}: its values have shape {list(shape)}, no class axis "
                                  "(class scores need rank >= 2 and a last axis > 1)")
            self.classes[name] = None

    def to_dict(self) -> dict:
        return {"scored": dict(self.classes), "not_scored": dict(self.not_scored)}


def choose_outputs(model, source: str, *, score=None, classifiers=None) -> OutputChoice:
    """The outputs of ``model`` to score and which of them are class scores (module doc).

    ``score``: output names to score (default every float output). ``classifiers``: the outputs
    that are class scores, scored whether named in ``score`` or not; ``["none"]``: none are.
    Names that are not outputs, and integer or boolean outputs named, are errors naming them.
    """
    outputs = list(model.graph.output)
    by_name = {o.name: o for o in outputs}
    elem = {o.name: o.type.tensor_type.elem_type for o in outputs}
    listed = ", ".join(by_name)
    score = list(score or [])
    classifiers = list(classifiers or [])
    if "none" in classifiers and "none" not in by_name:
        if len(classifiers) > 1:
            raise TrtcalError("--classifier none: says no output is class scores; do not name outputs with it")
        classifiers = []
        told = True
    else:
        told = bool(classifiers)
    for option, names in (("--score", score), ("--classifier", classifiers)):
        seen = set()
        for name in names:
            if name not in by_name:
                raise TrtcalError(f"{option} {name}: {source} has no output {name!r} (its outputs: {listed})")
            if name in seen:
                raise TrtcalError(f"{option} {name}: given twice")
            seen.add(name)
            if elem[name] not in _FLOAT_TYPES and elem[name] != 0:
                raise TrtcalError(f"{option} {name}: output {name!r} is {_TYPE_NAMES.get(elem[name], 'not float')}; "
                                  "integer and boolean outputs are not scored")
    not_scored = {}
    floats = []
    for o in outputs:
        if elem[o.name] in _FLOAT_TYPES or elem[o.name] == 0:  # 0: undeclared, taken for float
            floats.append(o.name)
        else:
            not_scored[o.name] = f"{_TYPE_NAMES.get(elem[o.name], 'not float')} (not a float output)"
    if not floats:
        raise TrtcalError(f"{source}: no float output to score (outputs: "
                          + ", ".join(f"{n} {v.split(' ')[0]}" for n, v in not_scored.items()) + ")")
    wanted = set(score or floats) | set(classifiers)
    for name in floats:
        if name not in wanted:
            not_scored[name] = "not chosen (--score)"
    if told:
        kinds = {n: _told_kind(model, n) if n in classifiers else None for n in floats if n in wanted}
        return OutputChoice(kinds, True, not_scored)
    ranks = _ranks(model)
    found = {n: _class_kind(model, n, ranks) for n in floats}
    if not any(found.values()) and len(floats) == 1 and _rank(by_name[floats[0]], ranks) == 2 \
            and _is_linear(model, floats[0]) and _last_dim(by_name[floats[0]]) != 1:
        found[floats[0]] = "logits"
    return OutputChoice({n: found[n] for n in floats if n in wanted}, False, not_scored)


def _producers(model) -> dict:
    return {out: node for node in model.graph.node for out in node.output if out}


def _through(model, name: str):
    """The node that makes ``name``'s values, behind pass-through ops."""
    made = _producers(model)
    node = made.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = made.get(node.input[0])
    return node


def _ranks(model) -> dict[str, int]:
    from trtcal.onnx.light import inferred_values

    return {vi.name: len(vi.type.tensor_type.shape.dim) for vi in inferred_values(model).values()
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}


def _rank(value_info, ranks) -> int | None:
    t = value_info.type.tensor_type
    return len(t.shape.dim) if t.HasField("shape") else ranks.get(value_info.name)


def _last_dim(value_info) -> int | None:
    t = value_info.type.tensor_type
    return t.shape.dim[-1].dim_value or None if t.HasField("shape") and t.shape.dim else None


def _class_kind(model, name: str, ranks: dict | None = None) -> str | None:
    """"probabilities" or "logits" when ``name`` is made by Softmax or LogSoftmax over its last
    axis (rule 1 of the module doc), else None."""
    from trtcal.onnx.model import node_attr

    node = _through(model, name)
    if node is None or node.op_type not in ("Softmax", "LogSoftmax") or node.domain not in ("", "ai.onnx"):
        return None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = node_attr(node, "axis", -1 if opset >= 13 else 1)
    if axis != -1:
        ranks = ranks if ranks is not None else _ranks(model)
        rank = ranks.get(node.input[0], ranks.get(node.output[0]))  # a softmax keeps its input's rank
        if rank is None or axis != rank - 1:
            return None
    return "probabilities" if node.op_type == "Softmax" else "logits"


def _told_kind(model, name: str) -> str:
    node = _through(model, name)
    return "probabilities" if node is not None and node.op_type == "Softmax" else "logits"


def _is_linear(model, name: str) -> bool:
    """Whether ``name`` is made by Gemm, MatMul, or MatMul/Gemm plus a constant (rule 2)."""
    from trtcal.onnx.model import constant_tensors

    node = _through(model, name)
    if node is None:
        return False
    if node.op_type in ("Gemm", "MatMul"):
        return True
    if node.op_type != "Add" or len(node.input) != 2:
        return False
    consts = constant_tensors(model)
    made = _producers(model)
    a, b = node.input
    other = a if b in consts else (b if a in consts else None)
    return other is not None and made.get(other) is not None and made[other].op_type in ("Gemm", "MatMul")


@dataclass
class Evaluation:
    """What :func:`evaluate` measured."""

    outputs: list[Comparison]  # the scored graph outputs (choose_outputs), in the model's order
    tensors: list[Comparison] = field(default_factory=list)  # shared tensors, worst SQNR first
    quantized: dict[str, Comparison] = field(default_factory=dict)  # tensor -> its dequantized view
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"outputs": [c.to_dict() for c in self.outputs],
                "tensors": [dict(c.to_dict(), **({"sqnr_quantized_db": self.quantized[c.name].sqnr_db}
                                                 if c.name in self.quantized else {}))
                            for c in self.tensors],
                "metadata": self.metadata}


class _Session:
    """An ONNX Runtime CPU session over an ONNX file, optionally with extra tensors as outputs."""

    def __init__(self, path, model, expose: list[str], threads: int | None, int8_kernels: bool):
        import onnx

        from trtcal.ort.runner import add_outputs, cpu_session

        self.source = str(path)
        if expose:
            model = add_outputs(onnx.ModelProto.FromString(model.SerializeToString()), expose)
        self.session = cpu_session(model, self.source, threads=threads, int8_kernels=int8_kernels)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise TrtcalError(f"{self.source}: ONNX Runtime failed on a batch: {str(exc).splitlines()[0][:200]}") from None
        return dict(zip(self.output_names, values))


def dequantized_views(model) -> dict[str, tuple[str, float]]:
    """Tensor -> ``(view, offset)``: the output of a DequantizeLinear fed by QuantizeLinear(tensor)
    (the first one), offset 0; or, for a tensor quantized shifted (:mod:`trtcal.onnx.shift`: a
    ``Sub`` of a constant scalar ``c`` before the Q/DQ pair), the DequantizeLinear's output of the
    shifted tensor, to which ``c`` is added back to compare it with the tensor."""
    from onnx import numpy_helper

    producers = {}
    for node in model.graph.node:
        for out in node.output:
            producers[out] = node
    inits = {t.name: t for t in model.graph.initializer}
    views: dict[str, tuple[str, float]] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        views.setdefault(q.input[0], (node.output[0], 0.0))
        sub = producers.get(q.input[0])
        if sub is not None and sub.op_type == "Sub" and sub.input[1] in inits:
            c = numpy_helper.to_array(inits[sub.input[1]])
            if c.size == 1 and np.isfinite(c).all():
                views.setdefault(sub.input[0], (node.output[0], float(c.reshape(()))))
    return views


def evaluate(reference: str | os.PathLike, test: str | os.PathLike, data: str | os.PathLike, *,
             labels=None, batch_size: int | None = None, max_batches: int | None = None,
             per_tensor: bool = True, preprocess=None, progress: bool | None = None,
             threads: int | None = None, int8_kernels: bool = False, confidence: float = 0.5,
             score=None, classifiers=None, batch_axes: dict | None = None, shapes: dict | None = None,
             allow_nonfinite: bool = False) -> Evaluation:
    """Compare ``test`` (e.g. a Q/DQ INT8 model) with ``reference`` (its FP32 original) on ``data``.

    The Q/DQ model runs as written (quantize, dequantize, float op: TensorRT's int8 arithmetic to
    float rounding, the same on every CPU); ``int8_kernels=True`` lets ONNX Runtime fuse it into its
    own integer kernels instead (what an ONNX Runtime deployment runs; CPU-dependent).

    ``score``, ``classifiers``: which outputs are scored and which as class scores
    (:func:`choose_outputs`). ``labels``: a 1-D integer array (or a path for
    :func:`trtcal.data.sources.load_labels`), one per sample in data order, for top-1 accuracy
    of ``[N, C]`` class-score outputs. ``confidence``: class-score outputs also report top-1
    agreement over the positions whose reference top-1 probability is at least this (see
    :mod:`trtcal.core.metrics`). ``batch_axes``, ``shapes``, ``allow_nonfinite``: how the data feeds
    the inputs, as for :func:`trtcal.ort.pipeline.calibrate`.
    """
    from trtcal.data.sources import (
        check_batch,
        configure_inputs,
        load_labels,
        open_data,
        samples_in,
    )
    from trtcal.onnx.model import load_model, model_tensors
    from trtcal.ort.runner import input_specs

    if not 0 < confidence <= 1:
        raise TrtcalError(f"confidence {confidence!r}: must be a probability in (0, 1]")
    ref_model = load_model(reference, load_weights=True, fp32=True)
    test_model = load_model(test, load_weights=True)
    choice = choose_outputs(ref_model, str(reference), score=score, classifiers=classifiers)
    ref_outputs = [o.name for o in ref_model.graph.output]
    scored = choice.names
    test_outputs = {o.name for o in test_model.graph.output}
    missing = [n for n in scored if n not in test_outputs]
    if missing:
        raise TrtcalError(f"{test}: has no output {', '.join(map(repr, missing))} (outputs of {reference}); "
                          "compare a model with its own quantized version")
    label_source = None
    if labels is not None and not isinstance(labels, np.ndarray):
        label_source = str(labels)
        labels = load_labels(labels)

    shared: list[str] = []
    views: dict[str, str] = {}
    if per_tensor:
        ref_float = model_tensors(ref_model).activations
        test_float = set(model_tensors(test_model).activations)
        inputs = {i.name for i in ref_model.graph.input}
        shared = [n for n in ref_float if n in test_float and n not in inputs and n not in ref_outputs]
        views = {n: v for n, v in dequantized_views(test_model).items() if n in set(shared) | inputs}
    ref_session = _Session(reference, ref_model, shared + [n for n in views if n not in shared], threads, True)
    plain = _Session(test, test_model, [], threads, int8_kernels)
    exposed = _Session(test, test_model, list(dict.fromkeys(shared + [v for v, _ in views.values()])), threads,
                       int8_kernels) if (shared or views) else None

    specs = input_specs(ref_session.session)
    specs, batch_size = configure_inputs(specs, batch_axes=batch_axes, shapes=shapes, batch_size=batch_size)
    # an array named "labels" beside the inputs in a .npz is not an input (pass it as labels= to use it)
    source = open_data(data, specs, batch_size=batch_size, preprocess=preprocess, ignore={"labels"})
    total = source.num_batches if max_batches is None else min(max_batches, source.num_batches or max_batches)

    outputs: dict[str, Comparison] = {}
    inputs_viewed = [n for n in views if n not in shared]  # quantized graph inputs: exact until Q/DQ
    tensors = {n: Comparison(n) for n in inputs_viewed + shared}
    quantized = {n: Comparison(n) for n in views}
    seen = 0
    batches = 0
    with Progress(total, "evaluating", enabled=progress) as bar:
        for index, batch in enumerate(source):
            if max_batches is not None and index >= max_batches:
                break
            batch = check_batch(batch, specs, f"{source.description}: batch {index}", finite=not allow_nonfinite)
            n = samples_in(batch, specs)
            batch_labels = None
            if labels is not None:
                if seen + n > labels.shape[0]:
                    raise TrtcalError(f"{label_source or 'labels'}: {labels.shape[0]} labels, but the data has more "
                                      f"samples (batch {index} ends at sample {seen + n})")
                batch_labels = labels[seen:seen + n]
            ref = ref_session.run(batch)
            got = plain.run(batch)
            if not outputs:
                for name in scored:
                    choice.first_batch(name, np.shape(ref[name]))
                    outputs[name] = choice.comparison(name, confidence=confidence)
                if labels is not None and not any(c.classifier and np.ndim(ref[c.name]) == 2 for c in outputs.values()):
                    raise TrtcalError(f"{label_source or 'labels'}: labels are one class per sample, and no scored "
                                      "output is [N, C] class scores (see --classifier)")
            for name, c in outputs.items():
                _update(c, ref[name], got[name], batch_labels if c.classifier and np.ndim(ref[name]) == 2 else None)
            if exposed is not None:
                got = exposed.run(batch)
                for name, c in tensors.items():
                    _update(c, ref[name] if name in ref else batch[name],
                            got[name] if name in got else batch[name], None)
                for name, c in quantized.items():
                    view, offset = views[name]
                    _update(c, ref[name] if name in ref else batch[name],
                            got[view] + np.float32(offset) if offset else got[view], None)
            seen += n
            batches += 1
            bar.update()
    if batches == 0:
        raise TrtcalError(f"{source.description}: produced no batches")
    stopped_early = max_batches is not None and batches == max_batches
    if labels is not None and seen != labels.shape[0] and not stopped_early:
        raise TrtcalError(f"{label_source or 'labels'}: {labels.shape[0]} labels for {seen} samples")
    def worst(c: Comparison) -> tuple:
        own = _key(c.sqnr_db)
        return (min(own, _key(quantized[c.name].sqnr_db)) if c.name in quantized else own, c.name)

    ordered = sorted(tensors.values(), key=worst)
    meta = {"reference": str(reference), "test": str(test), "data": source.description, "batches": batches,
            "samples": seen, "labels": label_source, "per_tensor": per_tensor,
            "arithmetic": "onnxruntime-int8-kernels" if int8_kernels else "qdq-as-written",
            "not_scored": dict(choice.not_scored), "classifiers": "named" if choice.told else "by the rules"}
    return Evaluation([outputs[n] for n in scored], ordered, quantized, meta)


def _update(c: Comparison, ref, got, labels) -> None:
    try:
        c.update(ref, got, labels)
    except ValueError as exc:
        raise TrtcalError(str(exc)) from None


def _key(sqnr: float) -> float:
    return math.inf if math.isnan(sqnr) else sqnr
