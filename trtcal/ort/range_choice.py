"""Per-tensor range choice by measured effect: each quantized activation gets, among several
threshold methods, the range whose quantization costs least where it matters.

No single threshold method is best on every model, nor on every tensor of one model; and the
tensor's own error (what ``mse`` minimises) is not what the model feels: a Conv or MatMul sums
thousands of quantized inputs times quantized weights. So for every activation the Q/DQ placement
quantizes, each candidate's amax (computed from the tensor's histogram: :data:`CANDIDATES`;
equal amaxes measured once) is tried on a few calibration samples and scored by its *relative error*
(noise power over signal power):

- a tensor feeding weighted layers (Conv, ConvTranspose, Gemm, MatMul with an initializer
  weight): the error of those layers' outputs, the input fake-quantized at the candidate amax and
  the weights at their per-channel max scales (what :func:`~trtcal.onnx.qdq.write_qdq` writes),
  against the FP32 layer outputs; averaged over the layers it feeds;
- a tensor feeding no weighted layer (a residual Add, pooling, an activation x activation
  MatMul: consumers linear in it, or multiplying it by another activation): the error of its own
  values.

:func:`search_weights` then searches each weighted layer's per-channel weight scales, the input
quantized at the range finally chosen: for every output channel, the scale among ``max|w| / 127``
times :data:`WEIGHT_FACTORS` (0.5 to 2, as EasyQuant's search) with the least squared error of
that channel's output (:func:`trtcal.ort.layers.search_weight_scales`).

Layers run one at a time as single-node ONNX Runtime sessions (:mod:`trtcal.ort.layers`), each
input captured over the samples within a memory budget, as EQ does; every tensor sees FP32
inputs (layer-wise). The smallest error wins; ties keep the earlier candidate (entropy2 first).
Tensors quantized unsigned (ONNX Runtime targets, one-sided tensors) are scored with 256 levels
on ``[0, amax]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtcal.core import thresholds as thr
from trtcal.core.errors import TrtcalError
from trtcal.ort.layers import (
    default_specs,
    fake_quant,
    input_runs,
    layer_inputs,
    max_scale,
    search_weight_scales,
    single_node_session,
    weighted_layers,
)

#: The candidates, in order of preference on ties: label -> (threshold method, its options).
CANDIDATES: dict[str, tuple[str, dict]] = {
    "entropy2": ("entropy2", {}),
    "minmax": ("minmax", {}),
    "percentile 99.9": ("percentile", {"q": 0.999}),
    "percentile 99.99": ("percentile", {"q": 0.9999}),
    "percentile 99.999": ("percentile", {"q": 0.99999}),
    "mse": ("mse", {}),
    "aciq": ("aciq", {}),
    "onesided": ("onesided", {}),
}
#: Weight scale factors tried per output channel (times the max scale).
WEIGHT_FACTORS = np.linspace(0.5, 2.0, 20)
#: How each channel's factor is searched: every one ("grid") or coarse to fine ("coarse", about
#: 11 of the 20 scores; :func:`trtcal.core.layer_error.coarse_to_fine_many`). Grid: on YOLOv8n
#: (64 samples) coarse saved 1.2x of this step's 13 s and changed 1212 of 5447 channels' scales.
WEIGHT_SEARCH = "grid"
#: Default bound on the captured tensor values held at once (MB).
MEMORY_MB = 512


@dataclass
class Choice:
    """One tensor's choice: the winning candidate, its amax, and every candidate's error."""

    tensor: str
    method: str  # the winning candidate's label
    amax: float
    errors: dict[str, float]  # candidate label -> relative error (noise / signal)
    amaxes: dict[str, float]  # candidate label -> its amax
    measured_at: list[str]  # the layer outputs scored, or [tensor] for its own values
    unsigned: bool = False

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "method": self.method, "amax": self.amax, "unsigned": self.unsigned,
                "measured_at": self.measured_at, "errors": self.errors, "amaxes": self.amaxes}


@dataclass
class RangeChoice:
    """The choice for every tensor (graph order), and the samples it was measured on."""

    choices: dict[str, Choice] = field(default_factory=dict)
    samples: int = 0

    @property
    def amaxes(self) -> dict[str, float]:
        return {name: c.amax for name, c in self.choices.items()}

    def counts(self) -> dict[str, int]:
        """How many tensors each candidate won."""
        out: dict[str, int] = {}
        for c in self.choices.values():
            out[c.method] = out.get(c.method, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict:
        return {"samples": self.samples, "counts": self.counts(),
                "tensors": {name: c.to_dict() for name, c in self.choices.items()}}


def candidate_amaxes(hist, *, unsigned: bool = False, candidates=None) -> dict[str, float]:
    """Each candidate's amax for ``hist`` (candidates whose amax is not a positive number are left
    out; ``onesided``, a symmetric quantizer's method, is left out for an unsigned tensor)."""
    out: dict[str, float] = {}
    for label, (method, options) in (candidates or CANDIDATES).items():
        if method == "onesided" and unsigned:
            continue
        opts = dict(options)
        if method != "onesided":
            opts["unsigned"] = unsigned
        amax = float(thr.compute(method, hist, **opts).amax)
        if amax > 0 and np.isfinite(amax):
            out[label] = amax
    return out


def quantize_values(x: np.ndarray, amax: float, unsigned: bool) -> np.ndarray:
    """``x`` fake-quantized to 8 bits: symmetric int8 at ``amax / 127``, or unsigned (256 levels
    on ``[0, amax]``, zero point 0) at ``amax / 255``."""
    if not unsigned:
        return fake_quant(x, amax / 127)
    q, s = quantize_codes(x, amax, True)
    q *= s
    return q


def input_step(amax: float, unsigned: bool) -> np.float32:
    """The quantization step of an activation at ``amax``: ``amax / 127``, unsigned ``amax / 255``."""
    return np.float32(amax / (255 if unsigned else 127))


def quantize_codes(x: np.ndarray, amax: float, unsigned: bool) -> tuple[np.ndarray, np.float32]:
    """``(codes, step)``: the integer codes of :func:`quantize_values` (float32; ``codes * step``
    are its values)."""
    s = input_step(amax, unsigned)
    q = np.divide(x, s, dtype=np.float32)
    np.rint(q, out=q)
    np.clip(q, 0 if unsigned else -128, 255 if unsigned else 127, out=q)
    return q, s


def _relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Noise power over signal power (float32 dot products: a ranking, not a report)."""
    r = np.ravel(ref).astype(np.float32, copy=False)
    d = np.ravel(got).astype(np.float32, copy=False) - r
    signal = float(np.dot(r, r))
    noise = float(np.dot(d, d))
    if signal > 0:
        return noise / signal
    return 0.0 if noise == 0 else float("inf")


class _Layers:
    """The model's weighted layers by input tensor, and each tensor's values over ``batches``,
    captured a run at a time within ``memory_mb`` (graph order)."""

    def __init__(self, model_path, batches: list[dict], inputs, threads: int | None, memory_mb: float):
        from trtcal.onnx.model import load_model

        if not batches:
            raise TrtcalError("no samples to choose ranges on")
        self.path, self.batches, self.threads, self.memory_mb = str(model_path), batches, threads, memory_mb
        self.model = load_model(model_path, load_weights=True)
        self.specs = list(inputs) if inputs is not None else default_specs(batches[0])
        self.consumers: dict[str, list] = {}
        self.readers: dict[str, int] = {}  # weight initializer -> the layers that read it
        for layer in weighted_layers(self.model):
            self.consumers.setdefault(layer.x, []).append(layer)
            self.readers[layer.w] = self.readers.get(layer.w, 0) + 1

    def values(self, names: list[str]):
        """``(name, its values over all batches)`` for each of ``names``, in order."""
        runs = iter(input_runs(self.model, names, self.batches, self.memory_mb, self.threads, self.path, self.specs))
        xs: dict[str, np.ndarray] = {}
        for name in names:
            if name not in xs:  # the next run of tensors whose values fit the memory budget
                xs.clear()
                xs.update(layer_inputs(self.model, next(runs), self.batches, self.threads, self.path, self.specs))
            yield name, xs.pop(name)

    def runs(self, name: str, x: np.ndarray) -> list[tuple]:
        """For each layer ``x`` feeds: (layer, its single-node session, FP32 output, int8 weights at the max scales)."""
        import onnx

        x_info = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(x.shape))
        out = []
        for layer in self.consumers.get(name, []):
            session = single_node_session(self.model, layer, x_info, self.threads)
            ref = session.run(None, {name: x, layer.w: layer.weight})[0]
            out.append((layer, session, ref, fake_quant(layer.weight, max_scale(layer.weight, layer.axis), layer.axis)))
        return out


def choose_ranges(model_path, histograms: dict, batches: list[dict], tensors: list[str], *,
                  unsigned: set[str] | frozenset = frozenset(), candidates=None, inputs=None,
                  threads: int | None = None, memory_mb: float = MEMORY_MB, progress=None) -> RangeChoice:
    """Choose a range for each of ``tensors`` (the activations the Q/DQ placement quantizes, in
    graph order) from ``histograms`` (the calibration statistics), measured on ``batches``
    (checked model input dicts: a few calibration samples). ``unsigned``: tensors quantized
    unsigned. ``inputs``: the model's :class:`~trtcal.ort.runner.InputSpec` list with batch axes
    (default axis 0). ``progress`` gets one update per tensor."""
    from trtcal.data.sources import samples_in

    missing = [t for t in tensors if t not in histograms]
    if missing:
        raise TrtcalError(f"no statistics for tensor {missing[0]!r} (and {len(missing) - 1} more): calibrate "
                          "the same model")
    layers = _Layers(model_path, batches, inputs, threads, memory_mb)
    result = RangeChoice(samples=sum(samples_in(b, layers.specs) for b in batches))
    amaxes = {t: candidate_amaxes(histograms[t], unsigned=t in unsigned, candidates=candidates) for t in tensors}
    for name, x in layers.values([t for t in tensors if amaxes[t]]):
        cands = amaxes[name]
        is_unsigned = name in unsigned
        scored = layers.runs(name, x)
        if scored:
            def error(amax: float, x=x, name=name, is_unsigned=is_unsigned, scored=scored) -> float:
                xq = quantize_values(x, amax, is_unsigned)
                return float(np.mean([_relative_error(ref, session.run(None, {name: xq, layer.w: wq})[0])
                                      for layer, session, ref, wq in scored]))
            where = [layer.node.output[0] for layer, *_ in scored]
        else:
            def error(amax: float, x=x, is_unsigned=is_unsigned) -> float:
                return _relative_error(x, quantize_values(x, amax, is_unsigned))
            where = [name]
        by_amax: dict[float, float] = {}  # candidates with equal amaxes are measured once
        for a in cands.values():
            if a not in by_amax:
                by_amax[a] = error(a)
        errors = {label: by_amax[a] for label, a in cands.items()}
        best = min(errors, key=lambda label: errors[label])  # first of equals: the candidates' order
        result.choices[name] = Choice(name, best, cands[best], errors, cands, where, is_unsigned)
        if progress is not None:
            progress.update()
    return result


def search_weights(model_path, amaxes: dict[str, float], batches: list[dict], *,
                   unsigned: set[str] | frozenset = frozenset(), inputs=None, threads: int | None = None,
                   memory_mb: float = MEMORY_MB, progress=None) -> dict[str, np.ndarray]:
    """Per-channel weight scales of every weighted layer whose input has a range in ``amaxes``
    (its input quantized at that range): for each output channel, the scale among the max scale
    times :data:`WEIGHT_FACTORS` with the least squared error of that channel's output, on
    ``batches``. Returns weight initializer -> scales. ``progress`` gets one update per input."""
    layers = _Layers(model_path, batches, inputs, threads, memory_mb)
    out: dict[str, np.ndarray] = {}
    names = [n for n in amaxes if n in layers.consumers and amaxes[n] > 0]
    for name, x in layers.values(names):
        xq = quantize_values(x, amaxes[name], name in unsigned)
        for layer, session, ref, _ in layers.runs(name, x):
            out[layer.w] = search_weight_scales(layer, session, name, xq, ref, max_scale(layer.weight, layer.axis),
                                                WEIGHT_FACTORS, metric="mse", search=WEIGHT_SEARCH,
                                                x_step=input_step(amaxes[name], name in unsigned))
        if progress is not None:
            progress.update()
    return out
