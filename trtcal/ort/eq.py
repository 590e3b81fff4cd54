"""EQ ("EasyQuant", as in ncnn): refine entropy2 scales layer by layer for the best layer outputs.

For every quantizable layer (Conv, ConvTranspose, Gemm, MatMul whose weight is an initializer),
starting from the entropy2 activation scale and the per-channel max weight scales:

1. the activation scale of its input is searched over ``steps`` values in ``[lo, hi] x scale``
   for the highest cosine similarity between the FP32 layer output and the output computed from
   fake-quantized (symmetric int8) input and weights; a tensor feeding several layers is searched
   once, for the best mean cosine over them;
2. then, with that activation scale, each output channel's weight scale is searched the same way,
   channel by channel (output channel ``k`` depends only on weight channel ``k``).

The layers run one at a time as single-node ONNX Runtime sessions, on at most ``samples``
calibration samples, so memory is one layer's input and output for those samples. Layers come in
graph order; each sees FP32 inputs (layer-wise, as EasyQuant does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError

#: Default bound on the layer inputs held at once (all samples of a run of consecutive layers).
MEMORY_MB = 512
LAYER_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": None}  # op -> weight output-channel axis


@dataclass
class EqResult:
    amaxes: dict[str, float]  # activation tensor -> refined amax
    weight_scales: dict[str, np.ndarray] = field(default_factory=dict)  # weight initializer -> per-channel scale
    cosines: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> (before, after)


def fake_quant(x: np.ndarray, scale, axis: int | None = None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize (round half to even, clamp to [-128, 127])."""
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(np.where(s > 0, x / np.where(s > 0, s, 1), 0)), -128, 127)
    return (q * s).astype(np.float32)


def _cosine_per_channel(ref: np.ndarray, got: np.ndarray, axis: int) -> np.ndarray:
    r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1).astype(np.float64)
    g = np.moveaxis(got, axis, 0).reshape(got.shape[axis], -1).astype(np.float64)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    return np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 1.0)


def _cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
    den = np.linalg.norm(r) * np.linalg.norm(g)
    return float(r @ g / den) if den > 0 else 1.0


@dataclass
class _Layer:
    node: object
    x: str  # activation input
    w: str  # weight initializer
    weight: np.ndarray
    axis: int  # weight output-channel axis
    out_axis: int  # output-channel axis of the layer output


def _layers(model) -> list[_Layer]:
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
        layers.append(_Layer(node, node.input[0], node.input[1], weight, axis, out_axis))
    return layers


def _single_node_session(model, layer: _Layer, x_info, threads: int | None):
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


def refine(model_path: str | os.PathLike, batches: list[dict], amaxes: dict[str, float], *, steps: int = 100,
           lo: float = 0.5, hi: float = 2.0, weights: bool = True, progress=None,
           threads: int | None = None, memory_mb: float = MEMORY_MB, inputs=None) -> EqResult:
    """EQ-refine ``amaxes`` (entropy2 results, or another method's) on ``batches`` (model input dicts, already checked).
    ``inputs``: the model's :class:`~trtcal.ort.runner.InputSpec` list saying each input's batch axis
    (as :func:`trtcal.ort.runner.first_batches` returns it); default: axis 0, none for 0-d arrays.

    Layer inputs over all ``batches`` are held for a run of consecutive layers at a time, as many
    as fit ``memory_mb`` (the FP32 model runs once per run): memory is bounded by the budget, or
    by the largest single layer input when that alone is larger.
    """
    import onnx

    from trtcal.onnx.model import load_model

    if steps < 2 or not 0 < lo < 1 < hi:
        raise TrtcalError(f"EQ search: need steps >= 2 and 0 < lo < 1 < hi, not steps={steps}, lo={lo}, hi={hi}")
    model = load_model(model_path, load_weights=True)
    layers = _layers(model)
    if not layers:
        raise TrtcalError(f"{model_path}: no Conv/ConvTranspose/Gemm/MatMul with an initializer weight: nothing for EQ")
    factors = np.linspace(lo, hi, steps).astype(np.float64)
    result = EqResult(dict(amaxes))
    by_input: dict[str, list[_Layer]] = {}
    for layer in layers:
        by_input.setdefault(layer.x, []).append(layer)
    xs: dict[str, np.ndarray] = {}
    specs = list(inputs) if inputs is not None else _default_specs(batches[0])
    chunks = iter(_chunks(model, list(by_input), batches, memory_mb, threads, str(model_path), specs))
    for x_name, group in by_input.items():
        if x_name not in xs:  # the next run of layer inputs that fits the memory budget
            xs.clear()
            xs.update(_layer_inputs(model, next(chunks), batches, threads, str(model_path), specs))
        x = xs[x_name]
        a0 = amaxes.get(x_name)
        if a0 is None or not a0 > 0:
            continue
        x_info = onnx.helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, list(x.shape))
        sessions = {}
        for layer in group:
            sessions[layer.node.output[0]] = _single_node_session(model, layer, x_info, threads)
        ref = {lay.node.output[0]: sessions[lay.node.output[0]].run(None, {x_name: x, lay.w: lay.weight})[0]
               for lay in group}
        wscale = {lay.w: _max_scale(lay.weight, lay.axis) for lay in group}

        def mean_cos(amax: float, group=group, x=x, x_name=x_name, ref=ref, wscale=wscale, sessions=sessions) -> float:
            xq = fake_quant(x, amax / 127)
            total = 0.0
            for lay in group:
                out = lay.node.output[0]
                wq = fake_quant(lay.weight, wscale[lay.w], lay.axis)
                total += _cosine(ref[out], sessions[out].run(None, {x_name: xq, lay.w: wq})[0])
            return total / len(group)

        before = mean_cos(a0)
        scores = [mean_cos(a0 * f) for f in factors]
        best = int(np.argmax(scores))
        amax = a0 * float(factors[best]) if scores[best] > before else a0
        result.amaxes[x_name] = amax
        for lay in group:
            out = lay.node.output[0]
            if weights:
                wscale[lay.w] = _search_weights(lay, sessions[out], x_name, fake_quant(x, amax / 127), ref[out],
                                                wscale[lay.w], factors)
            result.weight_scales[lay.w] = wscale[lay.w]
        after = mean_cos(amax)
        for lay in group:
            result.cosines[lay.node.name or lay.node.output[0]] = (before, after)
        if progress is not None:
            progress.update(len(group))
    return result


def _exposing(model, names: list[str], threads: int | None, source: str):
    import onnx

    from trtcal.ort.runner import add_outputs, cpu_session

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    return cpu_session(add_outputs(exposed, names), source, threads=threads)


def _default_specs(batch: dict) -> list:
    from trtcal.ort.runner import InputSpec

    return [InputSpec(name, np.asarray(a).dtype.type, tuple(np.shape(a))) for name, a in batch.items()]


def _chunks(model, names: list[str], batches: list[dict], memory_mb: float, threads, source: str,
            specs: list | None = None):
    """``names`` (layer inputs, graph order) in consecutive runs whose values over all batches fit
    ``memory_mb``, sized by one sample run through the model."""
    from trtcal.data.sources import samples_in, take

    specs = specs if specs is not None else _default_specs(batches[0])
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


def _layer_inputs(model, names: list[str], batches: list[dict], threads, source: str,
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
    axes = {spec.name: spec.batch_axis for spec in (specs if specs is not None else _default_specs(batches[0]))}
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


def _max_scale(weight: np.ndarray, axis: int) -> np.ndarray:
    a = np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)).max(axis=1)
    return (a / 127).astype(np.float32)


def _search_weights(layer: _Layer, session, x_name: str, xq: np.ndarray, ref: np.ndarray, s0: np.ndarray,
                    factors: np.ndarray) -> np.ndarray:
    """Per output channel, the weight scale factor with the best cosine of that channel's output."""
    out_axis = layer.out_axis if layer.out_axis >= 0 else ref.ndim + layer.out_axis
    best_cos = _cosine_per_channel(ref, session.run(None, {x_name: xq, layer.w: fake_quant(layer.weight, s0, layer.axis)})[0],
                                   out_axis)
    best = s0.copy()
    for f in factors:
        s = (s0 * np.float32(f)).astype(np.float32)
        got = session.run(None, {x_name: xq, layer.w: fake_quant(layer.weight, s, layer.axis)})[0]
        cos = _cosine_per_channel(ref, got, out_axis)
        better = cos > best_cos
        best = np.where(better, s, best)
        best_cos = np.where(better, cos, best_cos)
    return best.astype(np.float32)


def layer_count(model_path) -> int:
    from trtcal.onnx.model import load_model

    return len(_layers(load_model(model_path, load_weights=True)))
