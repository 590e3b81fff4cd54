"""Q/DQ models by TensorRT's placement rules, and reading their scales back.

:func:`write_qdq` takes an FP32 ONNX model and per-tensor ranges (a calibration cache, or a dict
``{tensor: amax or Range}``) and inserts ``QuantizeLinear``/``DequantizeLinear`` pairs where
TensorRT's explicit quantization wants them (docs/qdq.md, REFERENCE.md section 5):

- on the **inputs** of Conv, ConvTranspose, Gemm and MatMul: activations per tensor, with the
  range's scale (``amax / 127``, the cache's float32 scale bit for bit);
- their constant weights per output channel, symmetric int8 (``max|w| / 127`` per channel, an
  all-zero channel gets scale 1): Conv axis 0, ConvTranspose axis 1, Gemm axis 0 with
  ``transB=1`` (B is [N, K]) else 1 (B is [K, N]), MatMul the last axis of a constant B [.., K, N].
  Weights are stored as int8 initializers followed by a DequantizeLinear;
- never on a bias (TensorRT rejects an int32 bias DequantizeLinear) nor on any node's output;
- on the residual input of an Add whose other input comes from a quantized Conv/ConvTranspose
  (directly or through a BatchNormalization), so that TensorRT can fuse the add into the conv.

A node is quantized only when all its quantized inputs can be: a node whose activation input has
no usable range (missing, zero, infinite, NaN, denormal scale) stays in float, and the result
lists it with the reason. A tensor with several quantized consumers gets one Q and one DQ that
all of them read: it is quantized once, with one scale, and TensorRT's optimizer propagates a DQ
into each consumer it fuses with (see docs/qdq.md). The graph keeps its node names and order; new
nodes get unique names derived from the tensor (``<tensor>_QuantizeLinear``).

Targets: ``tensorrt`` (int8, zero point 0 everywhere) and ``onnxruntime`` (the same placement;
one-sided ranges, ``min >= 0``, get uint8 with zero point 0 and scale ``max / 255``).

Models below opset 13 (no per-axis Q/DQ) are converted with ONNX's version converter first, or
refused when it fails. The output passes ``onnx.checker`` and loads in ONNX Runtime, or
:func:`write_qdq` raises.

An adapter (imports onnx, and onnxruntime to check its output); the range arithmetic lives in the
pure :mod:`trtcal.ranges`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trtcal import patterns
from trtcal.cache import DEFAULT_TRT_VERSION, CacheEntry, CalibrationCache, float_to_bits, parse
from trtcal.errors import TrtcalError
from trtcal.ranges import FLOAT32_TINY, Range, coerce, from_cache

#: The operators whose inputs are quantized.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Operators ``exclude_ops`` may name: the above, and Add (no residual quantization).
EXCLUDABLE_OPS = QUANTIZED_OPS + ("Add",)
TARGETS = ("tensorrt", "onnxruntime")
#: Per-axis QuantizeLinear/DequantizeLinear (per-channel weights) exist from opset 13 on.
MIN_OPSET = 13
#: The key of the model metadata entry recording how the Q/DQ model was made.
METADATA_KEY = "trtcal.qdq"

_MAX_PROTO = 2**31 - 1


@dataclass
class QuantizedTensor:
    """A tensor the model now quantizes."""

    name: str
    kind: str  # "activation" or "weight"
    dtype: str  # "int8" or "uint8"
    scale: float | None  # per-tensor scale (None for per-channel)
    axis: int | None = None  # per-channel axis of a weight
    channels: int = 0  # number of per-channel scales
    zero_channels: int = 0  # all-zero weight channels (scale 1)
    consumers: list[str] = field(default_factory=list)  # node names, with "(residual)" for Add inputs
    amax: float | None = None  # activations: the range used
    source: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "scale": self.scale, "axis": self.axis,
                "channels": self.channels, "zero_channels": self.zero_channels, "consumers": self.consumers,
                "amax": self.amax, "source": self.source}


@dataclass
class QdqResult:
    """What :func:`write_qdq` did: the new model and which tensors and nodes stay in float, and why."""

    model: object  # onnx.ModelProto
    target: str
    quantized: list[QuantizedTensor]
    float_tensors: dict[str, str]  # tensor -> why it is not quantized
    float_nodes: dict[str, str]  # node -> why it runs in float
    quantized_nodes: list[str]
    warnings: list[str] = field(default_factory=list)
    unknown_ranges: list[str] = field(default_factory=list)  # range names the model lacks
    opset: int = 0
    converted_from: int | None = None

    @property
    def activations(self) -> list[QuantizedTensor]:
        return [q for q in self.quantized if q.kind == "activation"]

    @property
    def weights(self) -> list[QuantizedTensor]:
        return [q for q in self.quantized if q.kind == "weight"]

    def save(self, path: str | os.PathLike, *, force: bool = False, inputs: Iterable = ()) -> Path:
        """Write the model atomically (an existing file is replaced only with ``force``)."""
        from trtcal import fileio

        return fileio.atomic_write(path, self.model.SerializeToString(), force=force, inputs=inputs)

    def to_dict(self) -> dict:
        return {"target": self.target, "opset": self.opset, "converted_from": self.converted_from,
                "quantized_nodes": self.quantized_nodes, "quantized": [q.to_dict() for q in self.quantized],
                "float_tensors": self.float_tensors, "float_nodes": self.float_nodes,
                "unknown_ranges": self.unknown_ranges, "warnings": self.warnings}


# ---------------------------------------------------------------------- helpers


def _load(model):
    """A private copy of ``model`` (a ModelProto or a path), with its weights."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model), "the model"
    from trtcal.model import load_model

    return load_model(model, load_weights=True), str(model)


def default_opset(model) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _convert_opset(model, where: str) -> tuple[object, int]:
    import onnx
    from onnx import version_converter

    opset = default_opset(model)
    if opset is None:
        raise TrtcalError(f"{where}: the model imports no default ONNX opset")
    if opset >= MIN_OPSET:
        return model, opset
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:
        message = " ".join(str(exc).split())
        message = re.sub(r"^\S+:\d+: \w+: (Assertion `.*?` failed: )?", "", message)[:200]
        raise TrtcalError(f"{where}: opset {opset} has no per-channel Q/DQ (needs opset {MIN_OPSET}) and ONNX's "
                          f"version converter cannot convert it ({type(exc).__name__}: {message}); "
                          f"export the model at opset {MIN_OPSET} or later") from None
    return converted, opset


def _node_label(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


class _Names:
    """Fresh, unique tensor and node names derived from a base name."""

    def __init__(self, model):
        self.used: set[str] = set()

        def walk(graph):
            for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
                self.used.add(vi.name)
            for t in graph.initializer:
                self.used.add(t.name)
            for node in graph.node:
                self.used.add(node.name)
                self.used.update(node.input)
                self.used.update(node.output)
                for attr in node.attribute:
                    for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                        walk(g)

        walk(model.graph)

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name


def _constant_value(node):
    """The array a Constant node holds (only the ``value`` form), or None."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return numpy_helper.to_array(attr.t)
    return None


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _subgraph_inputs(model) -> set[str]:
    """Names read inside subgraphs (If/Loop/Scan bodies): outer-scope tensors they may use."""
    names: set[str] = set()

    def walk(graph, top: bool):
        for node in graph.node:
            if not top:
                names.update(node.input)
            for attr in node.attribute:
                for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    walk(g, False)

    walk(model.graph, True)
    return names


def per_channel_int8(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric int8 weights: ``(q, scale, zero_channels)``, ``scale = max|w| / 127`` per slice
    along ``axis`` (float32, computed in double and rounded once), or per tensor for ``axis=None``.
    An all-zero (or denormal) slice gets scale 1 and codes 0. ``q = clip(rint(w / scale), -127, 127)``
    in float32, rounding half to even as QuantizeLinear does."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        m = np.max(np.abs(w), keepdims=False).reshape(1) if w.size else np.zeros(1, np.float32)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        m = np.max(np.abs(w), axis=reduce) if w.size else np.zeros(w.shape[axis], np.float32)
    scale = (m.astype(np.float64) / 127.0).astype(np.float32)
    zero = ~(scale >= FLOAT32_TINY)
    scale[zero] = np.float32(1.0)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
        s = scale.reshape(shape)
    else:
        s = scale[0]
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, (scale if axis is not None else scale.reshape(())), int(zero.sum())


def weight_axis(op_type: str, node, rank: int) -> int | None:
    """The output-channel axis of a constant weight input (input 1) of a quantized node."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    if op_type == "MatMul":
        return rank - 1 if rank >= 2 else None
    raise ValueError(op_type)


# ---------------------------------------------------------------------- the writer


@dataclass
class _ActPlan:
    name: str
    range: Range
    unsigned: bool
    uses: list[tuple[int, int]] = field(default_factory=list)  # (node index, input index)
    consumers: list[str] = field(default_factory=list)


@dataclass
class _WeightPlan:
    name: str
    array: np.ndarray
    axis: int | None
    uses: list[tuple[int, int]] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    first: int = 0


def write_qdq(model, ranges, *, target: str = "tensorrt", exclude_nodes: Iterable[str] = (),
              exclude_ops: Iterable[str] = (), unsigned: bool | None = None,
              check_onnxruntime: bool = True) -> QdqResult:
    """Insert Q/DQ into ``model`` (an FP32 ONNX ``ModelProto`` or a path) by TensorRT's rules.

    ``ranges``: a :class:`~trtcal.cache.CalibrationCache`, or ``{tensor: amax | Range}``.
    ``target``: ``"tensorrt"`` (int8, zero point 0) or ``"onnxruntime"`` (``unsigned``, default
    true there, gives one-sided ranges uint8 with zero point 0). ``exclude_nodes``: globs over
    node names (each must match a node); ``exclude_ops``: op types left in float (Conv,
    ConvTranspose, Gemm, MatMul, and Add for the residual rule).

    Returns a :class:`QdqResult`; the input model is not modified. Raises
    :class:`~trtcal.errors.TrtcalError` for a model or ranges it cannot use.
    """
    import onnx
    from onnx import helper, numpy_helper

    if target not in TARGETS:
        raise TrtcalError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    if unsigned is None:
        unsigned = target == "onnxruntime"
    if unsigned and target == "tensorrt":
        raise TrtcalError("TensorRT's Q/DQ is symmetric int8 only (no uint8, zero point 0); unsigned needs "
                          "target onnxruntime")
    exclude_ops = [o.strip() for o in exclude_ops if o.strip()]
    for op in exclude_ops:
        if op not in EXCLUDABLE_OPS:
            raise TrtcalError(f"exclude op {op!r}: the Q/DQ writer quantizes {', '.join(EXCLUDABLE_OPS)} only")
    exclude_nodes = list(exclude_nodes)

    header = None
    if isinstance(ranges, CalibrationCache):
        header = ranges.header_text
        ranges = from_cache(ranges)
    elif isinstance(ranges, Mapping):
        ranges = coerce(ranges)
    else:
        raise TrtcalError(f"ranges must be a CalibrationCache or a dict of tensor -> amax, not {type(ranges).__name__}")
    if not ranges:
        raise TrtcalError("no ranges given: the cache or statistics hold no tensor")

    model, where = _load(model)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise TrtcalError(f"{where}: already has QuantizeLinear/DequantizeLinear nodes; start from the FP32 model")
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise TrtcalError(f"{where}: onnx.checker rejects the input model: {' '.join(str(exc).split())[:200]}") from None
    model, opset_in = _convert_opset(model, where)
    converted_from = opset_in if opset_in < MIN_OPSET else None
    warnings: list[str] = []
    if converted_from is not None:
        warnings.append(f"converted the model from opset {converted_from} to {MIN_OPSET} (per-channel Q/DQ needs "
                        f"{MIN_OPSET}) with ONNX's version converter")

    graph = model.graph
    nodes = list(graph.node)
    labels = [_node_label(n, i) for i, n in enumerate(nodes)]

    # ---- what the graph holds
    from trtcal.model import model_tensors

    tensors = model_tensors(model)
    float_acts = set(tensors.activations)
    known = tensors.all_names() | {vi.name for vi in graph.output}
    unknown = [n for n in ranges if n not in known]
    if len(unknown) == len(ranges):
        shown = ", ".join(repr(n) for n in list(ranges)[:3]) + (" ..." if len(ranges) > 3 else "")
        raise TrtcalError(f"{where}: the ranges name no tensor of the model ({len(ranges)} names, e.g. {shown}); "
                          "is the cache for another model?")
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {vi.name for vi in graph.input}
    constants: dict[str, int] = {}  # Constant node outputs -> node index
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = i
        if node.op_type == "Constant" and node.output:
            constants[node.output[0]] = i

    def const_array(name: str):
        if name in inits and name not in graph_inputs:
            return numpy_helper.to_array(inits[name])
        if name in constants:
            return _constant_value(nodes[constants[name]])
        return None

    excluded: dict[int, str] = {}
    for pattern in exclude_nodes:
        hit = [i for i, n in enumerate(nodes) if n.name and patterns.matches(pattern, n.name)]
        if not hit:
            raise TrtcalError(f"exclude nodes {pattern!r} matches no node of {where}")
        for i in hit:
            excluded.setdefault(i, f"excluded by node pattern {pattern!r}")
    for i, n in enumerate(nodes):
        if n.op_type in exclude_ops:
            excluded.setdefault(i, f"excluded op type {n.op_type}")

    float_tensors: dict[str, str] = {}
    float_nodes: dict[str, str] = {}
    acts: dict[str, _ActPlan] = {}
    weights: dict[tuple[str, int | None], _WeightPlan] = {}
    quantized_nodes: list[int] = []

    def act_problem(name: str) -> str | None:
        if name in inits and name not in graph_inputs or name in constants:
            return None
        if name not in float_acts:
            return "not a float tensor" if name in tensors.non_float else "its type is unknown"
        r = ranges.get(name)
        if r is None:
            return "no range"
        one = unsigned and r.one_sided
        return r.problem(unsigned=one)

    # ---- pass 1: the inputs of Conv, ConvTranspose, Gemm, MatMul
    for i, node in enumerate(nodes):
        if node.op_type not in QUANTIZED_OPS:
            continue
        label = labels[i]
        if i in excluded:
            float_nodes[label] = excluded[i]
            continue
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            float_nodes[label] = "missing inputs"
            continue
        slots = []  # (input index, tensor, weight axis or "act")
        why = None
        for k in (0, 1):
            name = node.input[k]
            w = const_array(name)
            if w is None:
                problem = act_problem(name)
                if problem is not None:
                    why = f"input {name!r}: {problem}"
                    float_tensors.setdefault(name, problem)
                    break
                slots.append((k, name, "act"))
                continue
            if w.dtype != np.float32:
                why = f"input {name!r} is {w.dtype}, not float32 (only float32 models are supported)"
                float_tensors.setdefault(name, f"{w.dtype} constant")
                break
            if not np.all(np.isfinite(w)):
                why = f"weights {name!r} hold NaN or Inf"
                float_tensors.setdefault(name, "weights hold NaN or Inf")
                break
            axis = weight_axis(node.op_type, node, w.ndim) if k == 1 else None
            if axis is not None and not 0 <= axis < w.ndim:
                why = f"weights {name!r} have rank {w.ndim}, no axis {axis}"
                break
            slots.append((k, name, axis))
        if why is not None:
            float_nodes[label] = why
            continue
        quantized_nodes.append(i)
        for k, name, axis in slots:
            if axis == "act":
                plan = acts.get(name)
                if plan is None:
                    r = ranges[name]
                    plan = acts[name] = _ActPlan(name, r, bool(unsigned and r.one_sided))
                plan.uses.append((i, k))
                plan.consumers.append(label)
            else:
                key = (name, axis)
                wp = weights.get(key)
                if wp is None:
                    wp = weights[key] = _WeightPlan(name, const_array(name).astype(np.float32), axis, first=i)
                wp.uses.append((i, k))
                wp.consumers.append(label)

    # ---- pass 2: the residual input of an Add after a quantized conv
    quantized_set = set(quantized_nodes)

    def from_quantized_conv(name: str) -> int | None:
        p = producer.get(name)
        if p is not None and nodes[p].op_type == "BatchNormalization" and nodes[p].input:
            p = producer.get(nodes[p].input[0])
        if p is not None and p in quantized_set and nodes[p].op_type in ("Conv", "ConvTranspose"):
            return p
        return None

    for i, node in enumerate(nodes):
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = node.input
        pa, pb = from_quantized_conv(a), from_quantized_conv(b)
        if pa is None and pb is None:
            continue
        if pa is not None and pb is not None:
            k = 0 if pa < pb else 1  # the later conv takes the add; the earlier output is the residual
        else:
            k = 1 if pa is not None else 0
        name = node.input[k]
        label = labels[i]
        if i in excluded:
            float_nodes[label] = excluded[i] + " (residual input not quantized)"
            continue
        if const_array(name) is not None:
            continue  # a constant addend is a bias, not a residual
        problem = act_problem(name)
        if problem is not None:
            float_tensors.setdefault(name, problem)
            float_nodes[label] = f"residual input {name!r}: {problem}"
            continue
        plan = acts.get(name)
        if plan is None:
            r = ranges[name]
            plan = acts[name] = _ActPlan(name, r, bool(unsigned and r.one_sided))
        plan.uses.append((i, k))
        plan.consumers.append(f"{label} (residual)")

    if not acts and not weights:
        reasons = "; ".join(f"{n}: {why}" for n, why in list(float_nodes.items())[:3])
        raise TrtcalError(f"{where}: nothing to quantize" + (f" ({reasons})" if reasons else
                          " (no Conv, ConvTranspose, Gemm or MatMul node)"))

    # ---- apply
    names = _Names(model)
    before: dict[int, list] = {}  # node index -> nodes to emit just before it
    after: dict[int, list] = {}  # node index -> nodes to emit just after it
    at_start: list = []
    new_inits = []
    quantized: list[QuantizedTensor] = []
    rewire: dict[tuple[int, int], str] = {}

    for name, plan in acts.items():
        r = plan.range
        scale = r.scale(unsigned=plan.unsigned)
        s_name, z_name = names.fresh(f"{name}_scale"), names.fresh(f"{name}_zero_point")
        q_out, dq_out = names.fresh(f"{name}_quantized"), names.fresh(f"{name}_dequantized")
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name))
        new_inits.append(numpy_helper.from_array(np.array(0, dtype=np.uint8 if plan.unsigned else np.int8), z_name))
        q = helper.make_node("QuantizeLinear", [name, s_name, z_name], [q_out], name=names.fresh(f"{name}_QuantizeLinear"))
        dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                              name=names.fresh(f"{name}_DequantizeLinear"))
        p = producer.get(name)  # None for graph inputs
        (after.setdefault(p, []) if p is not None else at_start).extend([q, dq])
        for use in plan.uses:
            rewire[use] = dq_out
        quantized.append(QuantizedTensor(name, "activation", "uint8" if plan.unsigned else "int8", float(scale),
                                         consumers=plan.consumers, amax=float(r.high if plan.unsigned else r.amax),
                                         source=r.source))

    for (name, axis), wp in weights.items():
        qw, scale, zero = per_channel_int8(wp.array, axis)
        base = name if axis is None or len([k for k in weights if k[0] == name]) == 1 else f"{name}_axis{axis}"
        qw_name, s_name = names.fresh(f"{base}_quantized"), names.fresh(f"{base}_scale")
        z_name, dq_out = names.fresh(f"{base}_zero_point"), names.fresh(f"{base}_dequantized")
        new_inits.append(numpy_helper.from_array(qw, qw_name))
        new_inits.append(numpy_helper.from_array(scale.astype(np.float32), s_name))
        new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8), z_name))
        kwargs = {} if axis is None else {"axis": int(axis)}
        dq = helper.make_node("DequantizeLinear", [qw_name, s_name, z_name], [dq_out],
                              name=names.fresh(f"{base}_DequantizeLinear"), **kwargs)
        before.setdefault(wp.first, []).append(dq)
        for use in wp.uses:
            rewire[use] = dq_out
        quantized.append(QuantizedTensor(name, "weight", "int8", float(scale) if axis is None else None, axis=axis,
                                         channels=0 if axis is None else int(scale.size), zero_channels=zero,
                                         consumers=wp.consumers, source="weights"))

    for (i, k), new in rewire.items():
        nodes[i].input[k] = new

    # weights no node reads any more: drop the float copy (initializers) or the Constant node
    still_read = set(_subgraph_inputs(model)) | {vi.name for vi in graph.output}
    for node in nodes:
        still_read.update(node.input)
    dropped_constants = {constants[n] for (n, _), _wp in weights.items() if n in constants and n not in still_read}
    kept_inits = [t for t in graph.initializer
                  if t.name in still_read or t.name in graph_inputs or t.name not in {k[0] for k in weights}]

    order = list(at_start)
    for i, node in enumerate(nodes):
        if i in dropped_constants:
            continue
        order.extend(before.get(i, []))
        order.append(node)
        order.extend(after.get(i, []))
    del graph.node[:]
    graph.node.extend(order)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + new_inits)

    opset = default_opset(model)
    meta = {"target": target, "writer": "trtcal", "header": header}
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(meta)))

    if model.ByteSize() > _MAX_PROTO:
        raise TrtcalError(f"{where}: the Q/DQ model would exceed 2 GB, which needs external data (not supported yet)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # a bug in this module, not a user error
        raise RuntimeError(f"trtcal wrote a Q/DQ model that onnx.checker rejects: {exc}") from exc
    if check_onnxruntime:
        _check_onnxruntime(model, where)

    if unknown:
        warnings.append(f"{len(unknown)} range name(s) are not tensors of the model and were ignored, e.g. "
                        + ", ".join(repr(n) for n in unknown[:3]))
    return QdqResult(model=model, target=target, quantized=quantized, float_tensors=float_tensors,
                     float_nodes=float_nodes, quantized_nodes=[labels[i] for i in quantized_nodes],
                     warnings=warnings, unknown_ranges=unknown, opset=opset or 0, converted_from=converted_from)


def _check_onnxruntime(model, where: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        message = " ".join(str(exc).split())[:300]
        raise TrtcalError(f"{where}: ONNX Runtime rejects the Q/DQ model ({message}); nothing written") from None


# ---------------------------------------------------------------------- reading scales back


def _scalar(model, name: str, inits: dict, constants: dict):
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    if name in constants:
        return _constant_value(constants[name])
    return None


def read_qdq_scales(model) -> CalibrationCache:
    """The activation ranges of a Q/DQ model as a TensorRT cache (scale = amax / 127).

    Every QuantizeLinear on an activation with a per-tensor scale gives one entry, named after
    the quantized tensor, in graph order (the first Q of a tensor wins). An int8 zero-point-0
    scale is kept bit for bit; a uint8 one (zero point 0) becomes ``amax = 255 * scale``; other
    zero points give ``amax = scale * max(|qmin - zp|, |qmax - zp|)``. Weights are not activations
    and are left out. A model written by :func:`write_qdq` from a cache carries that cache's
    header in its metadata, which the result keeps.
    """
    model, where = (model, "the model") if _is_proto(model) else _load(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    header = None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                header = json.loads(prop.value).get("header")
            except (ValueError, AttributeError):
                header = None
    cache = CalibrationCache(version=DEFAULT_TRT_VERSION, algorithm="EntropyCalibration2")
    if isinstance(header, str):
        with contextlib.suppress(TrtcalError):  # a header we cannot read: keep the default
            cache = parse(header + "\n", source=f"{where} metadata")
    seen: set[str] = set()
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        name = node.input[0]
        if name in seen or name in inits or name in constants:
            continue
        scale = _scalar(model, node.input[1], inits, constants)
        if scale is None or scale.size != 1:
            continue
        zp = _scalar(model, node.input[2], inits, constants) if len(node.input) > 2 and node.input[2] else None
        z = 0 if zp is None else int(np.asarray(zp).reshape(-1)[0])
        unsigned = zp is None or zp.dtype == np.uint8
        s = np.float32(np.asarray(scale).reshape(-1)[0])
        if not unsigned and z == 0:
            bits = int(np.array([s], dtype=np.float32).view(np.uint32)[0])
        else:
            qmin, qmax = (0, 255) if unsigned else (-128, 127)
            amax = float(s) * max(abs(qmin - z), abs(qmax - z))
            bits = float_to_bits(amax / 127.0)
        seen.add(name)
        cache.entries.append(CacheEntry(name, bits))
    return cache


def _is_proto(model) -> bool:
    import onnx

    return isinstance(model, onnx.ModelProto)

