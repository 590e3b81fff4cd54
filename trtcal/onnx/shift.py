"""Shifting one-sided activations for symmetric int8: ``x`` in ``[0, amax]`` is quantized as ``x - c``
with ``c = amax / 2`` in ``[-amax/2, amax/2]``, and the shift goes back in through the bias of
the layers that read it.

TensorRT's Q/DQ is symmetric int8 (zero point 0): a ReLU output quantized as is uses the codes 0..127
only, half of them, at step ``amax / 127``. Shifted, it uses -127..127 at step ``amax / 254``: a
quarter of the rounding noise, the same clipping. A layer ``y = W' x + b`` that reads it (``W'``
the weights as the INT8 model holds them: quantized, dequantized) computes the same from the
shifted input with bias ``b + W' c``: ``W' (x - c) + (b + W' c) = W' x + b``. With the weights
in float the rewritten model equals the original up to float rounding; with quantized weights
its INT8 model differs from the unshifted one by the activation's rounding alone (the same
trade as Outlier Suppression+'s channel shifts, Wei et al. 2023, per tensor). Any ``c`` works the
same way; choosing ``c`` is the caller's (:mod:`trtcal.ort.quantize` shifts one-sided
activations by ``amax / 2``, which keeps 0 exact).

:func:`shiftable` contract: an activation (not an initializer) qualifies when every node that
reads it reads it once, as input 0, and is a layer it can be shifted into: a Gemm with a constant
2-D ``B``, ``beta`` not 0 and a constant ``C`` of shape ``[N]`` or ``[1, N]`` or none (any
``transA``/``transB``/``alpha``), a MatMul with a constant 2-D ``B`` whose output is no graph
output (its bias becomes an ``Add`` after it), or a Conv with a constant weight, a constant bias or
none, and no padding (padding would read zeros, not ``-c``). The activation itself may be a graph
output: it keeps its values.

:func:`apply_shift` rewrites a copy: a ``Sub`` of the constant ``c`` before the first reader,
output ``<x>_shifted``, which the readers read instead; each reader's bias raised by ``W' c``
summed over its inputs, ``W'`` given per weight (the values the Q/DQ writer will store; the
float weights where none is given; :func:`trtcal.onnx.bias.add_to_bias`: a MatMul's bias Add
takes it, else a new Add after the MatMul). Graph work only (onnx protos and numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.onnx.bias import add_to_bias, insert_nodes
from trtcal.onnx.model import Names, node_attr


@dataclass
class Shifted:
    """The rewritten model and where each shifted activation now is."""

    model: object  # onnx.ModelProto
    tensors: dict[str, str] = field(default_factory=dict)  # original activation -> the shifted tensor the layers read
    shifts: dict[str, float] = field(default_factory=dict)  # original activation -> c


def _readers(model) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, node in enumerate(model.graph.node):
        for name in dict.fromkeys(node.input):
            if name:
                out.setdefault(name, []).append(i)
    return out


def _input_sums(node, w: np.ndarray) -> np.ndarray | None:
    """Per output channel, the sum of the weights over the layer's inputs (what a shift ``c`` of
    every input adds, divided by ``c``), or None where the reader does not qualify."""
    op = node.op_type
    if op == "Conv":
        pads = node_attr(node, "pads")
        if w.ndim < 3 or (pads and any(pads)) or node_attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
            return None
        return w.reshape(w.shape[0], -1).sum(1, dtype=np.float64)
    if w.ndim != 2:
        return None
    if op == "MatMul":
        return w.sum(0, dtype=np.float64)
    if op == "Gemm":
        alpha = float(node_attr(node, "alpha", 1.0))
        return (w.sum(1, dtype=np.float64) if node_attr(node, "transB", 0) else w.sum(0, dtype=np.float64)) * alpha
    return None


def _takes_shift(node, name: str, inits: dict, outputs: set) -> bool:
    """Whether ``node`` reads ``name`` as a layer it can be shifted into (module doc)."""
    from onnx import numpy_helper

    if node.op_type not in ("Gemm", "MatMul", "Conv") or node.input[0] != name or list(node.input).count(name) != 1 \
            or len(node.input) < 2 or node.input[1] not in inits:
        return False
    w = numpy_helper.to_array(inits[node.input[1]])
    if _input_sums(node, w) is None:
        return False
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "Gemm":
        if float(node_attr(node, "beta", 1.0)) == 0.0:
            return False  # no bias to carry the shift
        n_out = w.shape[0] if node_attr(node, "transB", 0) else w.shape[1]
        return bias is None or (bias in inits and tuple(inits[bias].dims) in ((n_out,), (1, n_out)))
    if node.op_type == "Conv":
        return bias is None or bias in inits
    return node.output[0] not in outputs  # MatMul: its bias would need an Add after a graph output


def shiftable(model, tensors) -> dict[str, list[int]]:
    """``{activation: the indices of the nodes that read it}`` for each of ``tensors`` that
    qualifies (module doc)."""
    inits = {t.name: t for t in model.graph.initializer}
    readers = _readers(model)
    outputs = {o.name for o in model.graph.output}
    return {name: readers[name] for name in tensors
            if name not in inits and readers.get(name)
            and all(_takes_shift(model.graph.node[i], name, inits, outputs) for i in readers[name])}


def apply_shift(model, shifts: dict[str, float], *, weights: dict[str, np.ndarray] | None = None) -> Shifted:
    """A copy of ``model`` with each activation of ``shifts`` (``{tensor: c}``, tensors
    :func:`shiftable` accepts) shifted by ``c`` into its readers' biases; ``weights``: ``{weight
    initializer: the values the INT8 model holds}`` for the bias (default the float weights)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    groups = shiftable(m, list(shifts))
    missing = [n for n in shifts if n not in groups]
    if missing:
        raise TrtcalError(f"cannot shift {missing[0]!r}: some node that reads it is no Gemm, MatMul or unpadded Conv "
                          "with constant weights")
    weights = weights or {}
    graph = m.graph
    inits = {t.name: t for t in graph.initializer}
    names = Names(m)

    result = Shifted(m)
    before: dict[int, list] = {}
    after: dict[int, list] = {}
    for name, c in shifts.items():
        if not np.isfinite(c):
            raise TrtcalError(f"shift of {name!r}: {c!r} is not a finite number")
        nodes = groups[name]
        shifted = names.fresh(f"{name}_shifted")
        c_name = names.fresh(f"{name}_shift")
        graph.initializer.append(numpy_helper.from_array(np.array(c, np.float32), c_name))
        before.setdefault(min(nodes), []).append(helper.make_node("Sub", [name, c_name], [shifted],
                                                                  name=names.fresh(f"{name}_Sub")))
        for i in nodes:
            node = graph.node[i]
            node.input[0] = shifted
            w_name = node.input[1]
            w = np.asarray(weights.get(w_name, numpy_helper.to_array(inits[w_name])), np.float64)
            delta = _input_sums(node, w) * float(np.float32(c))
            add_to_bias(m, node, i, delta, inits, names, after)
        result.tensors[name] = shifted
        result.shifts[name] = float(np.float32(c))
    insert_nodes(m, before, after)
    return result

