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

import math
from dataclasses import dataclass

import numpy as np

from trtcal.core.errors import TrtcalError

LAYER_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": None}  # op -> weight output-channel axis


#: Elements :func:`fake_quant` treats at a time with one scale.
_FQ_CHUNK = 1 << 15


def fake_quant(x: np.ndarray, scale, axis: int | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize (round half to even, clamp to [-128, 127]). ``out``: a
    float32 array of ``x``'s shape to write into (one scale only)."""
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 and s > 0:  # one scale: the same arithmetic without the masks, in place, in
        x = np.asarray(x)      # cache-sized chunks (four passes over each chunk, not the array)
        q = out if out is not None and out.flags.c_contiguous else np.empty(x.shape, np.float32)
        xf, qf = x.reshape(-1), q.reshape(-1)
        for i in range(0, xf.size, _FQ_CHUNK):
            c = qf[i:i + _FQ_CHUNK]
            np.divide(xf[i:i + _FQ_CHUNK], s, dtype=np.float32, out=c)
            np.rint(c, out=c)
            np.clip(c, -128, 127, out=c)
            c *= s
        if out is not None and q is not out:
            out[...] = q
            return out
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
    inits = _other_initializers(model, node)
    graph = helper.make_graph(
        [node], "layer", [x_info, helper.make_tensor_value_info(layer.w, onnx.TensorProto.FLOAT, list(layer.weight.shape))],
        [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return cpu_session(m, f"layer {node.name or node.output[0]!r}", threads=threads)


def _other_initializers(model, node) -> list:
    """The initializers a weighted layer's node reads besides its input and weight (a bias)."""
    names = set(node.input[2:])
    return [t for t in model.graph.initializer if t.name in names]


class InputScaleScores:
    """The cosine of each layer's FP32 output with its output from the input quantized at a given
    amax, for the layers reading one input (EQ's activation search): one ONNX Runtime run per amax,
    in which the input's symmetric int8 Q/DQ (what :func:`fake_quant` computes, as
    ``QuantizeLinear``/``DequantizeLinear``: round half to even, saturate to [-128, 127]), every
    layer, and the per-channel sums ``y . ref`` and ``y . y`` happen; only the sums come back, in
    float32, and are added up in float64 (the cosine of :func:`trtcal.ort.eq._cosine` up to float
    rounding: float32 partial sums over the batch and positions of one channel).

    ``group``: the layers reading ``x_info``'s tensor; ``refs``: each layer's FP32 output (by the
    layer's output name); ``ref_norms``: their norms."""

    def __init__(self, model, group: list[Layer], x_info, refs: dict, ref_norms: dict, threads: int | None):
        import onnx
        from onnx import helper, numpy_helper

        from trtcal.ort.runner import cpu_session

        x_name = x_info.name
        default = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] + [13])
        scale, zero, q8, xq = "trtcal.scale", "trtcal.zero", "trtcal.x_int8", "trtcal.x_dq"
        nodes = [helper.make_node("QuantizeLinear", [x_name, scale, zero], [q8]),
                 helper.make_node("DequantizeLinear", [q8, scale, zero], [xq])]
        inputs = [x_info, helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, [])]
        inits = [numpy_helper.from_array(np.zeros((), np.int8), zero)]
        outputs, self.layers = [], []
        for i, layer in enumerate(group):
            out = layer.node.output[0]
            ref = refs[out]
            node = onnx.NodeProto()
            node.CopyFrom(layer.node)
            node.input[0] = xq
            nodes.append(node)
            held = {t.name for t in inits}
            inits += [t for t in _other_initializers(model, node) if t.name not in held]
            ref_name, dot, yy = f"trtcal.ref{i}", f"trtcal.dot{i}", f"trtcal.yy{i}"
            channel = layer.out_axis % ref.ndim
            axes = f"trtcal.axes{i}"
            inits.append(numpy_helper.from_array(np.array([a for a in range(ref.ndim) if a != channel], np.int64), axes))
            nodes += [helper.make_node("Mul", [out, ref_name], [f"{dot}.p"]),
                      helper.make_node("ReduceSum", [f"{dot}.p", axes], [dot], keepdims=0),
                      helper.make_node("Mul", [out, out], [f"{yy}.p"]),
                      helper.make_node("ReduceSum", [f"{yy}.p", axes], [yy], keepdims=0)]
            if layer.w not in {v.name for v in inputs}:
                inputs.append(helper.make_tensor_value_info(layer.w, onnx.TensorProto.FLOAT, list(layer.weight.shape)))
            inputs.append(helper.make_tensor_value_info(ref_name, onnx.TensorProto.FLOAT, list(ref.shape)))
            outputs += [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in (dot, yy)]
            self.layers.append((layer, ref_name, ref, float(ref_norms[out])))
        graph = helper.make_graph(nodes, "input_scale_scores", inputs, outputs, inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", default)], ir_version=model.ir_version)
        self.x_name = x_name
        self.session = cpu_session(m, f"the Q/DQ scoring of {x_name!r}", threads=threads, int8_kernels=False)

    def cosines(self, x: np.ndarray, amax: float, weights: dict) -> list[float]:
        """Each layer's cosine with ``x`` quantized at ``amax`` (scale ``amax / 127``) and the
        layers' weights ``weights`` (weight name -> array, e.g. fake-quantized)."""
        feeds = {self.x_name: x, "trtcal.scale": np.array(amax / 127, np.float32)}
        for layer, ref_name, ref, _ in self.layers:
            feeds[layer.w] = weights[layer.w]
            feeds[ref_name] = ref
        got = self.session.run(None, feeds)
        out = []
        for i, (_, _, _, norm) in enumerate(self.layers):
            dot = float(got[2 * i].astype(np.float64).sum())
            yy = float(got[2 * i + 1].astype(np.float64).sum())
            den = norm * np.sqrt(max(yy, 0.0))
            out.append(dot / den if den > 0 else 1.0)
        return out


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


def _score_per_channel(ref: np.ndarray, got: np.ndarray, axis: int, metric: str,
                       ref_norm: np.ndarray | None = None) -> np.ndarray:
    """Per output channel, larger is better: the cosine of ``got`` with ``ref``, or minus the
    squared error. ``ref`` may be given already per channel (``[C, -1]`` float64, with
    ``ref_norm`` its rows' norms)."""
    r = ref if ref_norm is not None else _per_channel(ref, axis)
    g = _per_channel(got, axis)
    if metric == "mse":
        return -((g - r) ** 2).sum(1)
    den = (ref_norm if ref_norm is not None else np.linalg.norm(r, axis=1)) * np.linalg.norm(g, axis=1)
    return np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 1.0)


def search_weight_scales(layer: Layer, session, x_name: str, xq: np.ndarray, ref: np.ndarray, s0: np.ndarray,
                         factors: np.ndarray, *, metric: str = "cosine", gram: bool | None = None,
                         search: str = "grid", x_step: float | None = None) -> np.ndarray:
    """Per output channel, the weight scale among ``s0`` and ``s0 * factors`` that scores best
    (``metric``: ``"cosine"``, EQ's, or ``"mse"``) for that channel of the layer's output, the
    input fixed at ``xq`` (already fake-quantized); output channel ``k`` depends on weight channel
    ``k`` alone, so every channel is searched in the same runs.

    Where the layer is a Conv, Gemm or MatMul whose unfolded input (:mod:`trtcal.core.layer_error`)
    makes it cheaper, every candidate is scored from the input's Gram matrix gathered once instead
    of a layer run (the same scores up to float rounding; a check against the session on the first
    positions falls back to the runs if they disagree). ``gram``: True forces it where the layer
    allows, False never; None chooses by cost. ``x_step``: ``xq``'s quantization step, if known
    (its Gram matrix is then summed from the integer codes:
    :meth:`trtcal.core.layer_error.ChannelErrors.add`).

    ``search="grid"`` scores every factor; ``"coarse"`` searches each channel's factor coarse to
    fine (:func:`trtcal.core.layer_error.coarse_to_fine_many`: every channel in the same calls,
    about 24 of 100 factors; each channel's own coarse-to-fine choice, the grid's where its score
    has one peak over the factors). Either way a channel keeps ``s0`` unless a factor scores
    strictly better."""
    from trtcal.core.layer_error import coarse_to_fine_many

    if metric not in ("cosine", "mse"):
        raise TrtcalError(f"weight search metric {metric!r}: cosine or mse")
    if search not in ("grid", "coarse"):
        raise TrtcalError(f"weight search {search!r}: grid or coarse")
    out_axis = layer.out_axis if layer.out_axis >= 0 else ref.ndim + layer.out_axis
    candidates = [s0.astype(np.float32)] + [(s0 * np.float32(f)).astype(np.float32) for f in factors]

    score = None
    if gram is not False:
        scores_needed = len(candidates) if search == "grid" else 2 * round(len(factors) ** 0.5) + 6
        errors = gram_errors(layer, session, x_name, xq, ref, s0, scores_needed, force=bool(gram),
                             x_step=x_step if GRAM_FROM_CODES else None)
        if errors is not None:
            form, errs = errors

            def score(scales: np.ndarray) -> np.ndarray:
                return errs.scores(form.rows(fake_quant(layer.weight, scales, layer.axis)), metric)
    if score is None:
        r = _per_channel(ref, out_axis)
        r_norm = np.linalg.norm(r, axis=1)

        def score(scales: np.ndarray) -> np.ndarray:
            got = session.run(None, {x_name: xq, layer.w: fake_quant(layer.weight, scales, layer.axis)})[0]
            return _score_per_channel(r, got, out_axis, metric, r_norm)

    if search == "coarse":
        s0f, f32 = candidates[0], np.asarray(factors, np.float32)
        base = score(s0f)
        found = s0f * f32[coarse_to_fine_many(lambda idx: score(s0f * f32[idx]), len(f32), s0f.size)]
        return np.where(score(found) > base, found, s0f).astype(np.float32)
    best, best_score = candidates[0].copy(), score(candidates[0])
    for s in candidates[1:]:
        got = score(s)
        better = got > best_score
        best = np.where(better, s, best)
        best_score = np.where(better, got, best_score)
    return best.astype(np.float32)


@dataclass
class LinearForm:
    """A weighted layer as a matrix product of its unfolded input: how to unfold a slice of
    samples, how to lay the weight out as rows ``[Cout, K]`` and the output as ``[P, Cout]``."""

    kind: str  # "conv" or "matmul"
    groups: int
    k: int
    alpha: float
    geom: object = None  # ConvGeometry for a Conv
    trans_a: bool = False
    trans_w: bool = False  # weight stored [K, Cout] (Gemm transB=0, MatMul)

    def rows(self, weight: np.ndarray) -> np.ndarray:
        return weight.T if self.trans_w else weight.reshape(weight.shape[0], -1)

    def samples(self, x: np.ndarray) -> int:
        return x.shape[0] if self.kind == "conv" else self.matrix(x).shape[0]

    def matrix(self, x: np.ndarray) -> np.ndarray:
        return x.T if self.trans_a else x.reshape(-1, x.shape[-1])

    def unfold(self, x: np.ndarray, start: int, stop: int, every: int = 1) -> np.ndarray:
        """``[P, groups, K]`` for samples (conv) or rows (matmul) ``start:stop``; ``every``: only
        every ``every``-th output position along each spatial axis (conv), or every ``every``-th
        row counted from row 0 (matmul)."""
        from trtcal.core.layer_error import im2col

        if self.kind == "conv":
            return im2col(x[start:stop], self.geom, every)
        return self.matrix(x)[start + (-start) % every:stop:every].reshape(-1, 1, self.k)

    def outputs(self, y: np.ndarray) -> np.ndarray:
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1]) if self.kind == "conv" else y.reshape(-1, y.shape[-1])

    def positions(self, x: np.ndarray) -> int:
        """Output positions (conv: per sample; matmul: rows in all) of input ``x``."""
        return math.prod(self.geom.output_shape(x.shape[2:])) if self.kind == "conv" else self.samples(x)

    def stride(self, x: np.ndarray) -> int:
        """The ``every`` that keeps about ``max(GRAM_MIN_ROWS, GRAM_ROWS_PER_INPUT * K)`` output
        positions of input ``x`` or more, evenly strided (along each spatial axis, or rows): an
        early convolution's hundreds of thousands of positions estimate a ``K x K`` Gram matrix
        no better than tens of thousands."""
        total = self.positions(x) * (self.samples(x) if self.kind == "conv" else 1)
        spare = total / max(GRAM_MIN_ROWS, GRAM_ROWS_PER_INPUT * self.k)
        axes = len(self.geom.kernel) if self.kind == "conv" else 1
        return max(1, round(spare ** (1 / axes))) if spare > 1 else 1


def linear_form(layer: Layer, x_shape: tuple) -> LinearForm | None:
    """The layer as a product of its unfolded input, or None where that is not supported
    (ConvTranspose, inputs of unexpected rank, attributes beyond ONNX's Conv/Gemm/MatMul)."""
    from trtcal.core.layer_error import conv_geometry

    attrs = {a.name: a for a in layer.node.attribute}

    def ints(name):
        return list(attrs[name].ints) if name in attrs else None

    w = layer.weight
    op = layer.node.op_type
    try:
        if op == "Conv":
            if len(x_shape) != w.ndim or len(x_shape) < 3:
                return None
            groups = attrs["group"].i if "group" in attrs else 1
            kernel = ints("kernel_shape") or list(w.shape[2:])
            if list(kernel) != list(w.shape[2:]) or x_shape[1] != w.shape[1] * groups or w.shape[0] % groups:
                return None
            auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
            geom = conv_geometry(x_shape[2:], kernel, strides=ints("strides"), dilations=ints("dilations"),
                                 pads=ints("pads"), groups=groups, auto_pad=auto_pad)
            return LinearForm("conv", groups, int(np.prod(w.shape[1:])), 1.0, geom)
        if op == "Gemm":
            trans_a = bool(attrs["transA"].i) if "transA" in attrs else False
            trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            k = w.shape[1] if trans_b else w.shape[0]
            if len(x_shape) != 2 or x_shape[0 if trans_a else 1] != k:
                return None
            return LinearForm("matmul", 1, k, float(alpha), trans_a=trans_a, trans_w=not trans_b)
        if op == "MatMul":
            if len(x_shape) < 2 or w.ndim != 2 or x_shape[-1] != w.shape[0]:
                return None
            return LinearForm("matmul", 1, w.shape[0], 1.0, trans_w=True)
    except TrtcalError:
        return None
    return None


#: Sum the Gram matrix from the input's integer codes where its step is known (float32 blocks,
#: exact); False: from the values in float64 (as before 2026-12-06; bench/bench_eq.py's eq-prev).
GRAM_FROM_CODES = True
#: GPTQ's input matrix (:mod:`trtcal.ort.weight_rounding`) sums over about ``max(GRAM_MIN_ROWS,
#: GRAM_ROWS_PER_INPUT * K)`` output positions or more, evenly strided (:meth:`LinearForm.stride`).
#: The weight search's Gram path (:func:`gram_errors`) sums over every position: strided the same
#: way it was 1.1x faster on YOLOv8n and chose scales that lost there held out (class scores 9.59
#: -> 8.43 dB, top box 14 -> 12 of 15 photos; 2026-12-06).
GRAM_MIN_ROWS = 16384
GRAM_ROWS_PER_INPUT = 256
#: Bounds of the Gram path: the Gram matrices held (bytes) and an unfolded chunk (bytes, float64).
GRAM_BYTES = 256 * 2**20
CHUNK_BYTES = 64 * 2**20


def gram_errors(layer: Layer, session, x_name: str, xq: np.ndarray, ref: np.ndarray, s0: np.ndarray,
                candidates: int, *, force: bool = False, x_step: float | None = None):
    """``(form, ChannelErrors)`` gathered over ``xq``, or None where the layer has no linear form,
    the Gram path would cost more than ``candidates`` layer runs (unless ``force``), would hold
    more than :data:`GRAM_BYTES`, or disagrees with the session on the first positions.
    ``x_step``: ``xq``'s quantization step, if known (:meth:`ChannelErrors.add`'s ``step``)."""
    from trtcal.core.layer_error import ChannelErrors

    form = linear_form(layer, xq.shape)
    if form is None:
        return None
    cout = layer.weight.shape[layer.axis]
    positions = ref.size // cout
    k, g = form.k, form.groups
    gram_cost = positions * k * k * g + 3.0 * positions * k * cout + candidates * k * k * cout
    run_cost = candidates * (positions * k * cout / 2.0 + 10.0 * positions * cout)
    if g * k * k * 8 > GRAM_BYTES or (not force and gram_cost >= run_cost):
        return None
    rows_ref = form.outputs(ref)
    yq = form.outputs(session.run(None, {x_name: xq, layer.w: layer.weight})[0])
    errs = ChannelErrors(form.rows(layer.weight), g, form.alpha)
    n = form.samples(xq)
    per = positions // n if n else 0
    if not per or per * n != positions:
        return None
    step = max(1, int(CHUNK_BYTES // max(1, per * g * k * 8)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        aq = form.unfold(xq, start, stop)
        lo, hi = start * per, stop * per
        if aq.shape != (hi - lo, g, k):  # the unfolding does not give the layer's output positions
            return None
        if start == 0 and not _agrees(form, layer, session, x_name, xq, s0, aq, yq, hi):
            return None
        errs.add(aq, yq[lo:hi], rows_ref[lo:hi], step=x_step)
    return form, errs


#: Output positions :func:`_agrees` compares.
CHECK_POSITIONS = 4096


def _agrees(form: LinearForm, layer: Layer, session, x_name, xq, s0, aq, yq, hi: int) -> bool:
    """The unfolded product's change of output for the ``s0`` weights equals the session's on the
    first positions (``:hi``, those of ``aq``): a check that the unfolding follows the layer's
    attributes. (The session's input shape is fixed: it runs on all of ``xq``.)"""
    # at most CHECK_POSITIONS of them, spread evenly from the first to the last (every edge of a
    # convolution's first sample: a misread pad, stride or dilation shifts the outputs)
    at = np.unique(np.linspace(0, hi - 1, min(hi, CHECK_POSITIONS)).astype(np.int64))
    q = fake_quant(layer.weight, s0, layer.axis)
    got = form.outputs(session.run(None, {x_name: xq, layer.w: q})[0])[at].astype(np.float64)
    e = (form.rows(q).astype(np.float64) - form.rows(layer.weight)) * form.alpha
    g, cg = form.groups, e.shape[0] // form.groups
    mine = (aq[at].astype(np.float64).transpose(1, 0, 2) @ e.reshape(g, cg, form.k).transpose(0, 2, 1))
    mine = mine.transpose(1, 0, 2).reshape(at.size, -1)
    theirs = got - yq[at]
    scale = float(np.abs(yq[at]).max(initial=0.0))
    return float(np.abs(mine - theirs).max(initial=0.0)) <= 1e-2 * float(np.abs(theirs).max(initial=0.0)) + 1e-5 * scale
