"""EQ ("EasyQuant", as in ncnn): refine entropy2 scales layer by layer for the best layer outputs.

For every quantizable layer (Conv, ConvTranspose, Gemm, MatMul whose weight is an initializer),
starting from the entropy2 activation scale and the per-channel max weight scales:

1. the activation scale of its input is searched over ``steps`` values in ``[lo, hi] x scale``
   for the highest cosine similarity between the FP32 layer output and the output computed from
   fake-quantized (symmetric int8) input and weights; a tensor feeding several layers is searched
   once, for the best mean cosine over them. ``search="golden"`` (default) scores every
   ``steps / 5``-th factor through factor 1 (the starting range, scored anyway), then narrows
   the bracket around the best by golden sections (about 11 more of 100 factors,
   :func:`trtcal.core.layer_error.golden_peak`); ``"coarse"`` scores every
   ``sqrt(steps)``-th factor, then finer steps around the best (about 21 of 100,
   :func:`trtcal.core.layer_error.coarse_to_fine`). Both give the full grid's choice wherever the
   cosine rises to one peak over the grid, else a local best; ``search="grid"`` scores every
   factor. Each score is one ONNX Runtime run in which the input's Q/DQ, the layers and the
   cosine's sums happen (:class:`trtcal.ort.layers.InputScaleScores`: only per-channel sums come
   back; the same cosine as numpy's fake quantization and float64 sums, up to float rounding);
2. then, with that activation scale, each output channel's weight scale is searched the same way,
   channel by channel (output channel ``k`` depends only on weight channel ``k``), all channels
   in the same scores: with ``search="golden"`` or ``"coarse"`` each channel coarse to fine over
   the factors
   (:func:`trtcal.core.layer_error.coarse_to_fine_many`, about 24 scores), with ``"grid"``
   every factor; where cheaper than a layer run per factor, each factor is scored from the
   unfolded input's Gram matrix (:func:`trtcal.ort.layers.search_weight_scales`; the same scores
   up to float rounding).

The layers run one at a time as single-node ONNX Runtime sessions, on at most ``samples``
calibration samples, so memory is one layer's input and output for those samples. Layers come in
graph order; each sees FP32 inputs (layer-wise, as EasyQuant does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.layer_error import coarse_to_fine, golden_peak
from trtcal.ort.layers import (
    InputScaleScores,
    Layer,
    default_specs,
    fake_quant,
    input_runs,
    layer_count,
    layer_inputs,
    max_scale,
    search_weight_scales,
    single_node_session,
    weighted_layers,
)

__all__ = ["EqResult", "fake_quant", "layer_count", "refine"]

#: How the activation scale is searched over the ``steps`` factors: golden sections after a
#: coarse grid, coarse to fine, or every one.
SEARCHES = ("coarse", "golden", "grid")

#: Default bound on the layer inputs held at once (all samples of a run of consecutive layers).
MEMORY_MB = 512


@dataclass
class EqResult:
    amaxes: dict[str, float]  # activation tensor -> refined amax
    weight_scales: dict[str, np.ndarray] = field(default_factory=dict)  # weight initializer -> per-channel scale
    cosines: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> (before, after)


#: Elements of a tensor converted to float64 at a time by :func:`_chunks64`.
_CHUNK = 1 << 16


def _cosine(ref: np.ndarray, got: np.ndarray, ref_norm: float | None = None) -> float:
    """The cosine of two tensors, summed in float64 (``ref_norm``: ``||ref||``, if known).

    ``einsum`` with a float64 result type casts in its own small buffers (no float64 copy of the
    tensor, no BLAS call: a threaded BLAS dot may stall a busy machine)."""
    r, g = ref.reshape(-1), got.reshape(-1)
    dot = float(np.einsum("i,i->", g, r, dtype=np.float64))
    gg = float(np.einsum("i,i->", g, g, dtype=np.float64))
    rr = float(np.einsum("i,i->", r, r, dtype=np.float64)) if ref_norm is None else None
    den = (np.sqrt(rr) if ref_norm is None else ref_norm) * np.sqrt(gg)
    return dot / den if den > 0 else 1.0


def refine(model_path: str | os.PathLike, batches: list[dict], amaxes: dict[str, float], *, steps: int = 100,
           lo: float = 0.5, hi: float = 2.0, weights: bool = True, progress=None,
           threads: int | None = None, memory_mb: float = MEMORY_MB, inputs=None, search: str = "golden",
           _gram: bool | None = None, _fused: bool = True) -> EqResult:
    """EQ-refine ``amaxes`` (entropy2 results, or another method's) on ``batches`` (model input dicts, already checked).
    ``inputs``: the model's :class:`~trtcal.ort.runner.InputSpec` list saying each input's batch axis
    (as :func:`trtcal.ort.runner.first_batches` returns it); default: axis 0, none for 0-d arrays.

    Layer inputs over all ``batches`` are held for a run of consecutive layers at a time, as many
    as fit ``memory_mb`` (the FP32 model runs once per run): memory is bounded by the budget, or
    by the largest single layer input when that alone is larger.
    """
    import onnx

    from trtcal.onnx.model import constants_as_initializers, load_model

    if search not in SEARCHES:
        raise TrtcalError(f"EQ search {search!r}: {' or '.join(SEARCHES)}")
    if steps < 2 or not 0 < lo < 1 < hi:
        raise TrtcalError(f"EQ search: need steps >= 2 and 0 < lo < 1 < hi, not steps={steps}, lo={lo}, hi={hi}")
    # weights held in Constant nodes (paddle2onnx) as initializers: the same function, layers EQ can see
    model = constants_as_initializers(load_model(model_path, load_weights=True))
    layers = weighted_layers(model)
    if not layers:
        raise TrtcalError(f"{model_path}: no Conv/ConvTranspose/Gemm/MatMul with an initializer weight: nothing for EQ")
    factors = np.linspace(lo, hi, steps).astype(np.float64)
    result = EqResult(dict(amaxes))
    by_input: dict[str, list[Layer]] = {}
    for layer in layers:
        by_input.setdefault(layer.x, []).append(layer)
    xs: dict[str, np.ndarray] = {}
    specs = list(inputs) if inputs is not None else default_specs(batches[0])
    chunks = iter(input_runs(model, list(by_input), batches, memory_mb, threads, str(model_path), specs))
    for x_name, group in by_input.items():
        if x_name not in xs:  # the next run of layer inputs that fits the memory budget
            xs.clear()
            xs.update(layer_inputs(model, next(chunks), batches, threads, str(model_path), specs))
        x = xs[x_name]
        a0 = amaxes.get(x_name)
        if a0 is None or not a0 > 0:
            continue
        x_info = onnx.helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, list(x.shape))
        sessions = {}
        for layer in group:
            sessions[layer.node.output[0]] = single_node_session(model, layer, x_info, threads)
        ref = {lay.node.output[0]: sessions[lay.node.output[0]].run(None, {x_name: x, lay.w: lay.weight})[0]
               for lay in group}
        wscale = {lay.w: max_scale(lay.weight, lay.axis) for lay in group}

        ref_norm = {out: float(np.sqrt(sum(float(np.einsum("i,i->", c, c)) for c in _chunks64(r)))) for out, r in ref.items()}
        wq = {lay.w: fake_quant(lay.weight, wscale[lay.w], lay.axis) for lay in group}
        buffer = None if _fused else np.empty_like(x)  # the quantized input, rewritten for every candidate

        fused = InputScaleScores(model, group, x_info, ref, ref_norm, threads) if _fused else None

        known: dict[float, float] = {}  # the activation search's scores (with the max-scale weights)

        def mean_cos(amax: float, group=group, x=x, x_name=x_name, ref=ref, wq=wq, sessions=sessions,
                     ref_norm=ref_norm, buffer=buffer, fused=fused, known=known) -> float:
            if fused is not None:  # the input's Q/DQ and the sums in the session
                if amax not in known:
                    known[amax] = float(np.mean(fused.cosines(x, amax, wq)))
                return known[amax]
            xq = fake_quant(x, amax / 127, out=buffer)
            total = 0.0
            for lay in group:
                out = lay.node.output[0]
                total += _cosine(ref[out], sessions[out].run(None, {x_name: xq, lay.w: wq[lay.w]})[0], ref_norm[out])
            return total / len(group)

        before = mean_cos(a0)
        if search == "grid":
            scores = [mean_cos(a0 * f) for f in factors]
            best = int(np.argmax(scores))
            best_score = scores[best]
        else:
            def at(i: int, mean_cos=mean_cos, a0=a0) -> float:
                return mean_cos(a0 * factors[i])

            if search == "golden":  # the grid through factor 1, whose score (a0's) is known
                best, seen = golden_peak(at, len(factors), start=int(np.argmin(np.abs(factors - 1.0))))
            else:
                best, seen = coarse_to_fine(at, len(factors))
            best_score = seen[best]
        amax = a0 * float(factors[best]) if best_score > before else a0
        result.amaxes[x_name] = amax
        for lay in group:
            out = lay.node.output[0]
            if weights:
                wscale[lay.w] = search_weight_scales(lay, sessions[out], x_name, fake_quant(x, amax / 127), ref[out],
                                                     wscale[lay.w], factors, metric="cosine", gram=_gram,
                                                     search="grid" if search == "grid" else "coarse",
                                                     x_step=np.float32(amax / 127))
            result.weight_scales[lay.w] = wscale[lay.w]
            wq[lay.w] = fake_quant(lay.weight, wscale[lay.w], lay.axis)
        known.clear()  # the weights changed
        after = mean_cos(amax)
        for lay in group:
            result.cosines[lay.node.name or lay.node.output[0]] = (before, after)
        if progress is not None:
            progress.update(len(group))
    return result


def _chunks64(a: np.ndarray):
    flat = a.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        yield flat[i:i + _CHUNK].astype(np.float64)
