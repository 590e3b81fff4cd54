"""A model's weighted layers, one at a time: their inputs captured within a memory budget,
single-node sessions to run them, symmetric int8 fake quantization.

A weighted layer is a Conv, ConvTranspose, Gemm or MatMul whose weight is an initializer. Its
activation input is captured over calibration batches by running the FP32 model with that
tensor exposed; consecutive layer inputs are captured together while their values over all
batches fit a memory budget (:func:`input_runs`), so memory is bounded by the budget or by the
largest single layer input. Used by EQ (:mod:`trtcal.ort.eq`) and the per-tensor range choice
(:mod:`trtcal.ort.range_choice`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtcal.core.errors import TrtcalError

LAYER_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": None}  # op -> weight output-channel axis


def fake_quant(x: np.ndarray, scale, axis: int | None = None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize (round half to even, clamp to [-128, 127])."""
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 and s > 0:  # one scale: the same arithmetic without the masks, in place
        q = np.divide(x, s, dtype=np.float32)
        np.rint(q, out=q)
        np.clip(q, -128, 127, out=q)
        q *= s
        return q
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(np.where(s > 0, x / np.where(s > 0, s, 1), 0)), -128, 127)
    return (q * s).astype(np.float32)


@dataclass
class Layer:
    node: object
    x: str  # activation input
    w: str  # weight initializer
    weight: np.ndarray
    axis: int  # weight output-channel axis
    out_axis: int  # output-channel axis of the layer output


def weighted_layers(model) -> list[Layer]:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.input[0] in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if node.op_type in ("Conv", "ConvTranspose"):
            axis, out_axis = LAYER_OPS[node.op_type], 1
            if node.op_type == "ConvTranspose":
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                if group != 1:
                    continue  # grouped ConvTranspose: channel layout not worth the complexity here
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis, out_axis = (0 if trans_b else 1), 1
        else:
            if weight.ndim != 2:
                continue
            axis, out_axis = 1, -1
        layers.append(Layer(node, node.input[0], node.input[1], weight, axis, out_axis))
    return layers


def single_node_session(model, layer: Layer, x_info, threads: int | None):
    import onnx
    from onnx import helper

    from trtcal.ort.runner import cpu_session

    node = onnx.NodeProto()
    node.CopyFrom(layer.node)
    inits = [t for t in model.graph.initializer if t.name in set(node.input[2:])]
    graph = helper.make_graph(
        [node], "layer", [x_info, helper.make_tensor_value_info(layer.w, onnx.TensorProto.FLOAT, list(layer.weight.shape))],
        [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return cpu_session(m, f"layer {node.name or node.output[0]!r}", threads=threads)


def _exposing(model, names: list[str], threads: int | None, source: str):
    import onnx

    from trtcal.ort.runner import add_outputs, cpu_session

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    return cpu_session(add_outputs(exposed, names), source, threads=threads)


def default_specs(batch: dict) -> list:
    from trtcal.ort.runner import InputSpec

    return [InputSpec(name, np.asarray(a).dtype.type, tuple(np.shape(a))) for name, a in batch.items()]


def input_runs(model, names: list[str], batches: list[dict], memory_mb: float, threads, source: str,
            specs: list | None = None):
    """``names`` (layer inputs, graph order) in consecutive runs whose values over all batches fit
    ``memory_mb``, sized by one sample run through the model."""
    from trtcal.data.sources import samples_in, take

    specs = specs if specs is not None else default_specs(batches[0])
    samples = sum(samples_in(b, specs) for b in batches)
    one = take(batches[0], specs, 0, 1)
    inner = [n for n in names if n not in one]
    session = _exposing(model, inner, threads, source) if inner else None
    per_sample = {k: v.nbytes for k, v in one.items()}
    if session is not None:
        outs = [o.name for o in session.get_outputs()]
        per_sample.update((n, a.nbytes) for n, a in zip(outs, session.run(outs, one)))
    del session
    budget = memory_mb * 2**20
    run: list[str] = []
    size = 0.0
    for name in names:
        need = per_sample[name] * samples
        if run and size + need > budget:
            yield run
            run, size = [], 0.0
        run.append(name)
        size += need
    if run:
        yield run


def layer_inputs(model, names: list[str], batches: list[dict], threads, source: str,
                  specs: list | None = None) -> dict[str, np.ndarray]:
    """The values of ``names`` over all batches, joined along axis 0 (a graph input along its batch
    axis; one without a batch axis, e.g. a 0-d scalar, is the same in every batch and kept once)."""
    inner = [n for n in names if n not in batches[0]]
    session = _exposing(model, inner, threads, source) if inner else None
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches:
        values = {}
        if session is not None:
            outs = [o.name for o in session.get_outputs()]
            values = dict(zip(outs, session.run(outs, batch)))
        values.update(batch)
        for n in names:
            parts[n].append(values[n])
        del values
    axes = {spec.name: spec.batch_axis for spec in (specs if specs is not None else default_specs(batches[0]))}
    return {n: _join(p, axes.get(n, 0), n) for n, p in parts.items()}


def _join(parts: list[np.ndarray], axis: int | None, name: str) -> np.ndarray:
    """One tensor's values over the batches: a graph input along its batch axis (``axis``; None:
    the same array in every batch, kept once); an inner tensor along the one axis whose size
    differs between batches (a short last batch), else along ``axis`` (0): the values EQ scores
    are the same whichever axis holds the samples."""
    if len(parts) == 1 or axis is None or np.ndim(parts[0]) <= axis:
        return parts[0]
    shapes = {np.shape(p) for p in parts}
    if len(shapes) > 1:
        ranks = {len(sh) for sh in shapes}
        differ = {i for sh in shapes for i in range(len(sh)) if sh[i] != next(iter(shapes))[i]} if len(ranks) == 1 else None
        if not differ or len(differ) != 1:
            raise TrtcalError(f"EQ: tensor {name!r} has shapes {sorted(shapes)} in different batches; cannot join them")
        axis = differ.pop()
    return np.concatenate(parts, axis=axis)


def max_scale(weight: np.ndarray, axis: int) -> np.ndarray:
    a = np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)).max(axis=1)
    return (a / 127).astype(np.float32)


def layer_count(model_path) -> int:
    from trtcal.onnx.model import load_model

    return len(weighted_layers(load_model(model_path, load_weights=True)))


def _per_channel(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).astype(np.float64)


def _score_per_channel(ref: np.ndarray, got: np.ndarray, axis: int, metric: str) -> np.ndarray:
    """Per output channel, larger is better: the cosine of ``got`` with ``ref``, or minus the
    squared error."""
    r, g = _per_channel(ref, axis), _per_channel(got, axis)
    if metric == "mse":
        return -((g - r) ** 2).sum(1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    return np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 1.0)


def search_weight_scales(layer: Layer, session, x_name: str, xq: np.ndarray, ref: np.ndarray, s0: np.ndarray,
                         factors: np.ndarray, *, metric: str = "cosine") -> np.ndarray:
    """Per output channel, the weight scale among ``s0`` and ``s0 * factors`` that scores best
    (``metric``: ``"cosine"``, EQ's, or ``"mse"``) for that channel of the layer's output, the
    input fixed at ``xq`` (already fake-quantized); output channel ``k`` depends on weight channel
    ``k`` alone, so every channel is searched in the same runs."""
    if metric not in ("cosine", "mse"):
        raise TrtcalError(f"weight search metric {metric!r}: cosine or mse")
    out_axis = layer.out_axis if layer.out_axis >= 0 else ref.ndim + layer.out_axis

    def score(scales: np.ndarray) -> np.ndarray:
        got = session.run(None, {x_name: xq, layer.w: fake_quant(layer.weight, scales, layer.axis)})[0]
        return _score_per_channel(ref, got, out_axis, metric)

    best, best_score = s0.copy(), score(s0)
    for f in factors:
        s = (s0 * np.float32(f)).astype(np.float32)
        got = score(s)
        better = got > best_score
        best = np.where(better, s, best)
        best_score = np.where(better, got, best_score)
    return best.astype(np.float32)
