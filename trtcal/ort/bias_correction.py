"""Per-sample output errors of each weighted layer as the INT8 model computes it, layer by layer:
what :func:`trtcal.core.bias_correction.bias_deltas` turns into bias corrections.

:func:`layer_errors` contract:

- every Conv, Gemm and MatMul with a constant weight (:func:`trtcal.ort.layers.weighted_layers`)
  whose input is in ``inputs`` is measured; a layer whose weight has no entry in ``held`` or is
  read by more than one layer is left out;
- the layer runs alone (a single-node session) on the FP32 model's values of its input over
  ``batches`` (layer-wise: every layer sees FP32 inputs, so the errors of the layers before it are
  not counted twice), once with the float weights on the float input (the reference) and once
  with the weights ``held`` (as the Q/DQ model holds them) on the input quantized as the Q/DQ model
  quantizes it: :class:`InputQuant` (``amax``, unsigned, and a shift ``c``: ``x - c`` quantized
  at ``amax``, then ``c`` added back, as :mod:`trtcal.onnx.shift` rewrites one-sided tensors);
- per layer, ``[samples, Cout]`` float64: each sample's mean over its output positions of the
  difference, per output channel. Samples are counted along the output's axis 0.

Memory: the captured inputs within ``memory_mb`` (as the range choice), one layer's outputs at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtcal.ort.range_choice import MEMORY_MB, _Layers, quantize_values


@dataclass(frozen=True)
class InputQuant:
    """How the Q/DQ model quantizes a layer input: at ``amax`` (unsigned: 256 levels on ``[0,
    amax]``), after subtracting ``shift``."""

    amax: float
    unsigned: bool = False
    shift: float = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        if not self.shift:
            return quantize_values(x, self.amax, self.unsigned)
        q = quantize_values(x - np.float32(self.shift), self.amax, self.unsigned)
        q += np.float32(self.shift)
        return q


def per_sample_means(y: np.ndarray, out_axis: int) -> np.ndarray:
    """``[N, C]``: per sample (axis 0) and output channel (``out_axis``), the mean over every other axis."""
    y = np.moveaxis(np.asarray(y), out_axis if out_axis >= 0 else y.ndim + out_axis, -1)
    if y.ndim == 1:
        return y.reshape(1, -1).astype(np.float64)
    return y.reshape(y.shape[0], -1, y.shape[-1]).mean(axis=1, dtype=np.float64)


def layer_errors(model_path, inputs: dict[str, InputQuant], batches: list[dict], held: dict[str, np.ndarray], *,
                 specs=None, threads: int | None = None, memory_mb: float = MEMORY_MB,
                 progress=None) -> dict[str, np.ndarray]:
    """``{weight initializer: [samples, Cout] mean output errors}`` (module doc). ``progress`` gets
    one update per input tensor."""
    layers = _Layers(model_path, batches, specs, threads, memory_mb)
    readers = layers.readers
    out: dict[str, np.ndarray] = {}
    names = [n for n in inputs if n in layers.consumers and inputs[n].amax > 0]
    for name, x in layers.values(names):
        xq = inputs[name].apply(x)
        for layer, session, ref, _ in layers.runs(name, x):
            if layer.w not in held or readers[layer.w] > 1:
                continue
            got = session.run(None, {name: xq, layer.w: np.asarray(held[layer.w], np.float32)})[0]
            out[layer.w] = per_sample_means(got.astype(np.float64) - ref, layer.out_axis)
        if progress is not None:
            progress.update()
    return out
