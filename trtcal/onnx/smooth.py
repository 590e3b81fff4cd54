"""SmoothQuant's graph rewrite: move per-channel scale from an activation into the weights that read it.

For an activation ``X`` (channels on the last axis) read by MatMul/Gemm nodes with constant
weights, and a per-channel factor ``s > 0``: ``X @ W == (X / s) @ (diag(s) W)``. The weights'
rows (input channels) are multiplied by ``s``; ``X / s`` is made

- **exactly, by folding**: when ``X`` is the output of a ``LayerNormalization`` over the last axis
  with constant scale (and bias) and nothing but the smoothed products reads ``X``, its scale and
  bias are divided by ``s`` (``X`` keeps its name; its values change);
- **else by a ``Mul``** by the constant ``1 / s`` inserted before the first reader, whose output
  (``<X>_smoothed``) the smoothed products read instead (other readers keep ``X``).

:func:`smoothable` lists the activations this applies to, with their readers; :func:`apply_smoothing`
rewrites a copy of the model. The factors themselves are chosen from data elsewhere
(:mod:`trtcal.ort.smoothquant`). Graph work only (onnx protos and numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError


@dataclass
class SmoothGroup:
    """An activation and the products that read it with constant weights."""

    tensor: str
    channels: int
    readers: list[int]  # node indices (MatMul with a 2-D constant B, Gemm with a constant B)
    weights: list[str]  # their weight initializers, in the same order
    fold_into: int | None = None  # the LayerNormalization whose scale/bias absorb 1/s, when exact


@dataclass
class Smoothed:
    """The rewritten model and where each smoothed activation now is."""

    model: object  # onnx.ModelProto
    tensors: dict[str, str] = field(default_factory=dict)  # original activation -> the tensor the products read
    folded: list[str] = field(default_factory=list)  # activations whose 1/s went into a LayerNormalization
    inserted: list[str] = field(default_factory=list)  # activations that got a Mul


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == 2 else a.f if a.type == 1 else default
    return default


def _weight_rows(node, w: np.ndarray) -> np.ndarray | None:
    """``w`` as [K, N] (input channels first) for this reader, or None when its layout is unusual."""
    if w.ndim != 2:
        return None
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            return None
        return w.T if _attr(node, "transB", 0) else w
    return w


def smoothable(model) -> list[SmoothGroup]:
    """The activations SmoothQuant can rescale: float tensors read as input 0 by MatMul/Gemm nodes
    with a constant 2-D weight (input 1, an initializer: weights held by Constant nodes count once
    :func:`trtcal.onnx.model.constants_as_initializers` has made them initializers); each with those
    readers and, where the rescaling folds exactly, the LayerNormalization that makes it."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {vi.name for vi in graph.input}
    readers: dict[str, list[int]] = {}
    all_readers: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name:
                all_readers[name] = all_readers.get(name, 0) + 1
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        x, w = node.input[0], node.input[1]
        if not x or x in inits or w not in inits or w in graph_inputs:
            continue
        arr = numpy_helper.to_array(inits[w])
        if arr.dtype != np.float32 or _weight_rows(node, arr) is None:
            continue
        readers.setdefault(x, []).append(i)
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    out = []
    for x, idx in readers.items():
        shapes = {_weight_rows(graph.node[i], numpy_helper.to_array(inits[graph.node[i].input[1]])).shape[0]
                  for i in idx}
        weights = [graph.node[i].input[1] for i in idx]
        if len(shapes) != 1 or len(set(weights)) != len(weights):
            continue  # readers disagree on the channels, or share a weight: not rescaled
        fold = None
        p = producer.get(x)
        if p is not None and all_readers.get(x, 0) == len(idx):
            ln = graph.node[p]
            if (ln.op_type == "LayerNormalization" and _attr(ln, "axis", -1) == -1 and len(ln.output) >= 1
                    and ln.output[0] == x and len(ln.input) >= 2 and ln.input[1] in inits
                    and (len(ln.input) < 3 or not ln.input[2] or ln.input[2] in inits)
                    and all_readers.get(ln.input[1], 0) == 1
                    and (len(ln.input) < 3 or not ln.input[2] or all_readers.get(ln.input[2], 0) == 1)):
                fold = p
        out.append(SmoothGroup(x, shapes.pop(), idx, weights, fold))
    return out


def weight_row_max(model, group: SmoothGroup) -> np.ndarray:
    """max |w| per input channel over all of the group's weights."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    rows = [np.abs(_weight_rows(model.graph.node[i], numpy_helper.to_array(inits[w]))).max(axis=1)
            for i, w in zip(group.readers, group.weights)]
    return np.max(rows, axis=0)


def scaled_weight(node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A reader's weight ``w`` with its input-channel rows multiplied by ``s`` (float32, computed in float64)."""
    arr = np.asarray(w, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    arr = arr * s[None, :] if node.op_type == "Gemm" and _attr(node, "transB", 0) else arr * s[:, None]
    return arr.astype(np.float32)


def apply_smoothing(model, factors: dict[str, np.ndarray], groups: list[SmoothGroup] | None = None, *,
                    fold: bool = True) -> Smoothed:
    """A copy of ``model`` with each activation in ``factors`` divided by its per-channel factor
    and its readers' weights multiplied by it (module doc). Factors must be finite and > 0.
    ``fold=False``: every activation gets a ``Mul``, also where a LayerNormalization could absorb it."""
    import onnx
    from onnx import helper, numpy_helper

    groups = {g.tensor: g for g in (groups if groups is not None else smoothable(model))}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    result = Smoothed(out)
    inserts: dict[int, list] = {}
    used = {n for node in graph.node for n in list(node.input) + list(node.output)} | set(inits)
    for x, s in factors.items():
        g = groups.get(x)
        if g is None:
            raise TrtcalError(f"{x!r} cannot be smoothed: no MatMul/Gemm with a constant weight reads it")
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.size != g.channels or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise TrtcalError(f"smoothing factors of {x!r}: need {g.channels} finite values > 0")
        for i, w in zip(g.readers, g.weights):
            arr = scaled_weight(graph.node[i], numpy_helper.to_array(inits[w]), s)
            inits[w].CopyFrom(numpy_helper.from_array(arr, w))
        if fold and g.fold_into is not None:
            ln = graph.node[g.fold_into]
            for name in ln.input[1:3]:
                if name:
                    v = numpy_helper.to_array(inits[name]).astype(np.float64) / s
                    inits[name].CopyFrom(numpy_helper.from_array(v.astype(np.float32), name))
            result.tensors[x] = x
            result.folded.append(x)
            continue
        base, k = f"{x}_smoothed", 1
        while base in used:
            base, k = f"{x}_smoothed_{k}", k + 1
        inv = f"{base}_inverse_scale"
        used.update({base, inv})
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        first = min(g.readers)
        inserts.setdefault(first, []).append(helper.make_node("Mul", [x, inv], [base], name=f"{base}_Mul"))
        for i in g.readers:
            graph.node[i].input[0] = base
        result.tensors[x] = base
        result.inserted.append(x)
    if inserts:
        nodes = list(graph.node)
        del graph.node[:]
        for i, node in enumerate(nodes):
            graph.node.extend(inserts.get(i, []))
            graph.node.append(node)
    return result


def transformer_groups(model) -> list[SmoothGroup]:
    """The :func:`smoothable` activations of a transformer-shaped model, where SmoothQuant is worth
    trying: every one when the model has an attention block (:func:`trtcal.onnx.attention.find_attention`)
    or a LayerNormalization whose output weighted MatMul/Gemm nodes read; else none. (A post-LN
    BERT's LayerNorm outputs also feed the residual Add, so they do not fold: they count all the same.)"""
    from trtcal.onnx.attention import find_attention
    from trtcal.onnx.model import constants_as_initializers

    model = constants_as_initializers(model)
    groups = smoothable(model)
    if not groups:
        return []
    producer = {out: n.op_type for n in model.graph.node for out in n.output if out}
    if any(producer.get(g.tensor) == "LayerNormalization" for g in groups) or find_attention(model):
        return groups
    return []
