"""GPTQ weight rounding for an ONNX model's weighted layers: each layer's input matrix ``H``
gathered over calibration samples, its weights rounded by :func:`trtcal.core.weight_rounding.gptq_codes`
on the grid the Q/DQ writer gives them.

:func:`round_weights` contract:

- every Conv, Gemm and MatMul with a constant weight (:func:`trtcal.ort.layers.weighted_layers`)
  whose input has a range in ``amaxes`` and that has a linear form
  (:func:`trtcal.ort.layers.linear_form`: not ConvTranspose) is rounded; a weight read by more
  than one layer is left alone (one rounding cannot fit two inputs);
- ``H`` is summed from the layer's input as the INT8 model sees it: the FP32 model's values over
  ``batches`` (layer-wise: every layer sees FP32 inputs), fake-quantized at the tensor's range
  (unsigned: 256 levels on ``[0, amax]``), unfolded (:mod:`trtcal.core.layer_error`); from the
  integer codes (exact, float32 speed) where it can;
- the grid of each weight is the one :func:`trtcal.onnx.qdq.write_qdq` gives it: the scales in
  ``weight_scales`` where given, else max per channel (:func:`trtcal.core.weight_scales.per_channel_int8`);
- returns, per weight, its values on that grid (``codes * scale``, float32, the weight's own
  layout), which ``write_qdq(..., weight_scales=..., weight_values=...)`` stores as exactly those
  codes, and per layer the rounding's squared output error over the samples against rounding to
  nearest (:func:`trtcal.core.weight_rounding.output_error`).

Memory: the captured inputs within ``memory_mb`` (as the range choice), unfolded in chunks of
:data:`trtcal.ort.layers.CHUNK_BYTES`, one ``H`` (``groups * K^2`` float64) per layer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtcal.core.weight_rounding import DAMP, gptq_codes, output_error
from trtcal.ort.range_choice import MEMORY_MB, _Layers, quantize_codes


@dataclass
class WeightRounding:
    """What :func:`round_weights` found."""

    values: dict[str, np.ndarray] = field(default_factory=dict)  # weight -> values on its grid
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)  # weight -> (nearest, gptq) output error
    skipped: dict[str, str] = field(default_factory=dict)  # weight -> why it was not rounded

    def to_dict(self) -> dict:
        return {"rounded": len(self.values), "skipped": self.skipped,
                "output_error": {n: {"nearest": a, "gptq": b} for n, (a, b) in self.errors.items()}}


def round_weights(model_path, amaxes: dict[str, float], batches: list[dict], *,
                  weight_scales: dict[str, np.ndarray] | None = None, unsigned=frozenset(), inputs=None,
                  threads: int | None = None, memory_mb: float = MEMORY_MB, damp: float = DAMP,
                  act_order: bool = True, progress=None) -> WeightRounding:
    """GPTQ-rounded weights for every layer fed by a tensor of ``amaxes``, on the grids of
    ``weight_scales`` (``{weight: scales}``; max per channel for a weight it lacks); see the module
    doc. ``progress`` gets one update per input tensor."""
    from trtcal.ort.layers import GRAM_BYTES, linear_form

    layers = _Layers(model_path, batches, inputs, threads, memory_mb)
    readers = layers.readers
    out = WeightRounding()
    names = [n for n in amaxes if n in layers.consumers and amaxes[n] > 0]
    for name, x in layers.values(names):
        xq, step = quantize_codes(x, amaxes[name], name in unsigned)  # the input's integer codes
        del x
        for layer in layers.consumers[name]:
            form = linear_form(layer, xq.shape)
            why = (f"read by {readers[layer.w]} layers" if readers[layer.w] > 1 else
                   f"{layer.node.op_type}: no linear form" if form is None else
                   f"{form.k} inputs per channel: its input matrix would exceed {GRAM_BYTES >> 20} MB"
                   if form.groups * form.k * form.k * 8 > GRAM_BYTES else None)
            if why is not None:
                out.skipped[layer.w] = why
                continue
            h = _input_matrix(form, xq) * (float(step) * float(step))
            _round_layer(layer, form, h, (weight_scales or {}).get(layer.w), out, damp, act_order)
        del xq
        if progress is not None:
            progress.update()
    return out


def _input_matrix(form, codes: np.ndarray) -> np.ndarray:
    """``H / step^2`` ``[groups, K, K]``: the unfolded codes' Gram matrix over the output positions
    :meth:`trtcal.ort.layers.LinearForm.stride` keeps, unfolded in chunks of
    :data:`trtcal.ort.layers.CHUNK_BYTES`."""
    from trtcal.core.layer_error import integer_gram
    from trtcal.ort.layers import CHUNK_BYTES

    n = form.samples(codes)
    every = form.stride(codes)
    first = form.unfold(codes, 0, 1)  # one sample (conv) or row (matmul), unfolded
    chunk = max(1, int(CHUNK_BYTES // max(1, first.size * 4)))
    h = np.zeros((form.groups, form.k, form.k))
    for start in range(0, n, chunk):
        h += integer_gram(form.unfold(codes, start, min(n, start + chunk), every))
    return h


def _round_layer(layer, form, h: np.ndarray, scales, out: WeightRounding, damp: float, act_order: bool) -> None:
    """One layer's GPTQ codes on its grid (``scales``, or max per channel), into ``out``."""
    from trtcal.core.weight_scales import per_channel_int8

    amax = None if scales is None else np.asarray(scales, np.float64).reshape(-1) * 127.0
    nearest, scale, _zero = per_channel_int8(layer.weight, layer.axis, amax)  # the Q/DQ writer's own grid
    nearest_rows = form.rows(nearest).astype(np.float32)
    degenerate = ~nearest_rows.any(axis=1)  # all-zero channels (scale 1, codes 0) stay so
    rows = form.rows(layer.weight).astype(np.float64)
    s = np.where(degenerate, 0.0, scale.astype(np.float64))
    codes = gptq_codes(rows, s, h, groups=form.groups, damp=damp, act_order=act_order).astype(np.float32)
    codes[degenerate] = nearest_rows[degenerate]
    values = codes * scale.astype(np.float32)[:, None]
    rtn = nearest_rows * scale.astype(np.float32)[:, None]
    a2 = form.alpha * form.alpha  # Gemm's alpha scales the output
    out.errors[layer.w] = (a2 * float(output_error(rows, rtn, h, form.groups).sum()),
                           a2 * float(output_error(rows, values, h, form.groups).sum()))
    out.values[layer.w] = np.ascontiguousarray(values.T if form.trans_w else values.reshape(layer.weight.shape))
