"""Evaluate an INT8 model against its FP32 original in ONNX Runtime on the CPU.

The adapter around :mod:`trtcal.metrics`: both models run over the same batches; each graph
output is compared (SQNR, cosine, top-1 agreement, top-1 accuracy with labels) and, with
``per_tensor``, every float tensor the two models share by name, worst first by the lower of
the two SQNRs below (a per-layer SQNR
analysis). For a tensor that the INT8 model quantizes (QuantizeLinear -> DequantizeLinear), the
value its consumers see (the DequantizeLinear output) is compared too, so a tensor's own
quantization error shows apart from the error it inherits.

The outputs come from a plain session of the INT8 model, run as ONNX Runtime runs it in
deployment (integer kernels where it fuses Q/DQ); the per-tensor values come from a second
session with the tensors exposed, where exposed tensors stop those fusions (Q/DQ simulated in
float). Memory is a few sums per tensor, not the data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from trtcal.errors import TrtcalError
from trtcal.metrics import Comparison
from trtcal.progress import Progress


@dataclass
class Evaluation:
    """What :func:`evaluate` measured."""

    outputs: list[Comparison]  # graph outputs, in the model's order
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

        from trtcal.runner import add_outputs, cpu_session

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


def dequantized_views(model) -> dict[str, str]:
    """Tensor -> the output of a DequantizeLinear fed by QuantizeLinear(tensor) (the first one)."""
    producers = {}
    for node in model.graph.node:
        for out in node.output:
            producers[out] = node
    views: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            views.setdefault(q.input[0], node.output[0])
    return views


def evaluate(reference: str | os.PathLike, test: str | os.PathLike, data: str | os.PathLike, *,
             labels=None, batch_size: int | None = None, max_batches: int | None = None,
             per_tensor: bool = True, preprocess=None, progress: bool | None = None,
             threads: int | None = None, int8_kernels: bool = False, confidence: float = 0.5) -> Evaluation:
    """Compare ``test`` (e.g. a Q/DQ INT8 model) with ``reference`` (its FP32 original) on ``data``.

    The Q/DQ model runs as written (quantize, dequantize, float op: TensorRT's int8 arithmetic to
    float rounding, the same on every CPU); ``int8_kernels=True`` lets ONNX Runtime fuse it into its
    own integer kernels instead (what an ONNX Runtime deployment runs; CPU-dependent).

    ``labels``: a 1-D integer array (or a path for :func:`trtcal.data.sources.load_labels`), one
    per sample in data order, for top-1 accuracy of classifier outputs. ``confidence``: classifier
    outputs also report top-1 agreement over the samples whose reference top-1 probability is at
    least this (see :mod:`trtcal.metrics`).
    """
    from trtcal.data.sources import check_batch, load_labels, open_data
    from trtcal.model import load_model, model_tensors
    from trtcal.runner import input_specs

    ref_model = load_model(reference, load_weights=True)
    test_model = load_model(test, load_weights=True)
    ref_outputs = [o.name for o in ref_model.graph.output]
    test_outputs = {o.name for o in test_model.graph.output}
    missing = [n for n in ref_outputs if n not in test_outputs]
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
    exposed = _Session(test, test_model, shared + list(views.values()), threads, int8_kernels) \
        if (shared or views) else None

    specs = input_specs(ref_session.session)
    # an array named "labels" beside the inputs in a .npz is not an input (pass it as labels= to use it)
    source = open_data(data, specs, batch_size=batch_size, preprocess=preprocess, ignore={"labels"})
    total = source.num_batches if max_batches is None else min(max_batches, source.num_batches or max_batches)

    if not 0 < confidence <= 1:
        raise TrtcalError(f"confidence {confidence!r}: must be a probability in (0, 1]")
    outputs = {n: Comparison(n, confidence=confidence) for n in ref_outputs}
    inputs_viewed = [n for n in views if n not in shared]  # quantized graph inputs: exact until Q/DQ
    tensors = {n: Comparison(n) for n in inputs_viewed + shared}
    quantized = {n: Comparison(n) for n in views}
    seen = 0
    batches = 0
    with Progress(total, "evaluating", enabled=progress) as bar:
        for index, batch in enumerate(source):
            if max_batches is not None and index >= max_batches:
                break
            batch = check_batch(batch, specs, f"{source.description}: batch {index}")
            n = next(iter(batch.values())).shape[0]
            batch_labels = None
            if labels is not None:
                if seen + n > labels.shape[0]:
                    raise TrtcalError(f"{label_source or 'labels'}: {labels.shape[0]} labels, but the data has more "
                                      f"samples (batch {index} ends at sample {seen + n})")
                batch_labels = labels[seen:seen + n]
            ref = ref_session.run(batch)
            got = plain.run(batch)
            for name, c in outputs.items():
                _update(c, ref[name], got[name], batch_labels)
            if exposed is not None:
                got = exposed.run(batch)
                for name, c in tensors.items():
                    _update(c, ref[name] if name in ref else batch[name],
                            got[name] if name in got else batch[name], None)
                for name, c in quantized.items():
                    _update(c, ref[name] if name in ref else batch[name], got[views[name]], None)
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
            "arithmetic": "onnxruntime-int8-kernels" if int8_kernels else "qdq-as-written"}
    return Evaluation([outputs[n] for n in ref_outputs], ordered, quantized, meta)


def _update(c: Comparison, ref, got, labels) -> None:
    try:
        c.update(ref, got, labels)
    except ValueError as exc:
        raise TrtcalError(str(exc)) from None


def _key(sqnr: float) -> float:
    return math.inf if math.isnan(sqnr) else sqnr
