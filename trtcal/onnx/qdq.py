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
- never on a bias (TensorRT rejects an int32 bias DequantizeLinear) nor on any node's output; a
  tensor computed from constants only (an initializer, a Constant, or any deterministic node of
  such tensors: paddle2onnx's bias ``Reshape(Constant)``) is never an activation;
- on the residual input of an Add whose other input comes from a quantized Conv/ConvTranspose
  (directly or through a BatchNormalization or an Add/Mul of a constant), so that TensorRT can
  fuse the add into the conv; not when the residual is computed from that conv's output
  (``y + gate(y)``), which no fusion can use.

Transformers: the two batched MatMuls of an attention block (``Q @ K^T`` and ``softmax @ V``,
:mod:`trtcal.onnx.attention`) get all four inputs quantized, the Softmax output included, as
TensorRT's INT8 fused attention wants; the scale, mask, Softmax, LayerNorm and GELU between the
products stay in float (no Q/DQ is ever placed on their inputs). ``attention="float"`` leaves both
batched MatMuls in float instead. A MatMul/Gemm whose static shapes make it GEMV-shaped (M, K or N
is 1) or whose operand is computed from tensor shapes only stays in float
(:mod:`trtcal.onnx.gemm_shapes`), with the reason.

Graph inputs whose dynamic axes share one name (``[-1, 3, ?, ?]``) get a distinct name per axis,
so TensorRT profiles may size them differently (:func:`distinct_input_dims`).

A node is quantized only when all its quantized inputs can be: a node whose activation input has
no usable range (missing, zero, infinite, NaN, denormal scale) stays in float, and the result
lists it with the reason. A tensor with several quantized consumers gets one Q and one DQ that
all of them read: it is quantized once, with one scale, and TensorRT's optimizer propagates a DQ
into each consumer it fuses with (see docs/qdq.md). The graph keeps its node names and order; new
nodes get unique names derived from the tensor (``<tensor>_QuantizeLinear``).

Targets: ``tensorrt`` (int8, zero point 0 everywhere) and ``onnxruntime`` (the same placement;
one-sided ranges, ``min >= 0``, get uint8 with zero point 0 and scale ``max / 255``). For
ONNX Runtime an activation range may also be 4 or 16 bits wide (``Range.bits``, as chosen by
``trtcal bits``): int4/uint4 or int16/uint16 Q/DQ (opset 21; the model is converted), scale
``amax / (2**(bits-1) - 1)`` (``max / (2**bits - 1)`` unsigned).

Models below opset 13 (no per-axis Q/DQ) are converted with ONNX's version converter first, or
refused when it fails. The output passes ``onnx.checker`` and loads in ONNX Runtime, or
:func:`write_qdq` raises.

An adapter (imports onnx, and onnxruntime to check its output); the range arithmetic lives in the
pure :mod:`trtcal.core.ranges`.
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

from trtcal.cache.format import (
    DEFAULT_TRT_VERSION,
    CacheEntry,
    CalibrationCache,
    float_to_bits,
    parse,
)
from trtcal.core import patterns
from trtcal.core.errors import TrtcalError
from trtcal.core.ranges import Range, coerce, from_cache
from trtcal.core.weight_scales import WEIGHT_METHODS, channel_amax, per_channel_int8
from trtcal.onnx.attention import find_attention
from trtcal.onnx.gemm_shapes import gemv_nodes, shape_derived
from trtcal.onnx.light import light_view
from trtcal.onnx.model import Names, node_attr, node_label, refuse_quantized

#: The operators whose inputs are quantized.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: How attention blocks (:mod:`trtcal.onnx.attention`) are placed: both batched MatMuls quantized
#: (TensorRT's INT8 fused attention), or both left in float.
ATTENTION_MODES = ("int8", "float")
#: Operators ``exclude_ops`` may name: the above, and Add (no residual quantization).
EXCLUDABLE_OPS = QUANTIZED_OPS + ("Add",)
TARGETS = ("tensorrt", "onnxruntime")
#: Per-axis QuantizeLinear/DequantizeLinear (per-channel weights) exist from opset 13 on.
MIN_OPSET = 13
#: 4- and 16-bit QuantizeLinear/DequantizeLinear exist from opset 21 on.
NARROW_WIDE_OPSET = 21
#: Activation widths each target stores.
TARGET_WIDTHS = {"tensorrt": (8,), "onnxruntime": (4, 8, 16)}
#: Weight widths each target stores (per channel, signed).
TARGET_WEIGHT_WIDTHS = {"tensorrt": (8,), "onnxruntime": (4, 8)}
#: (bits, unsigned) -> (dtype name, onnx.TensorProto element type) of an activation's Q/DQ.
_ACT_TYPES = {(8, False): ("int8", 3), (8, True): ("uint8", 2), (16, False): ("int16", 5), (16, True): ("uint16", 4),
              (4, False): ("int4", 22), (4, True): ("uint4", 21)}
#: element type -> (qmin, qmax), for reading scales back
_CODE_RANGES = {3: (-128, 127), 2: (0, 255), 5: (-32768, 32767), 4: (0, 65535), 22: (-8, 7), 21: (0, 15)}
#: Said when ONNX Runtime's target gets a cache: its ranges are symmetric (a cache keeps no sign).
CACHE_HAS_NO_SIGNS = ("a calibration cache holds no sign information, so its tensors are all int8; uint8 for one-sided "
                      "tensors (ReLU outputs) needs statistics: trtcal calibrate --stats, then trtcal qdq --stats")
#: The key of the model metadata entry recording how the Q/DQ model was made.
METADATA_KEY = "trtcal.qdq"

_MAX_PROTO = 2**31 - 1
#: Operators whose output is not a function of their inputs: never counted as constant.
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_FLOAT32 = 1  # onnx.TensorProto.FLOAT
_OTHER_FLOATS = {10: "float16", 16: "bfloat16", 11: "float64"}


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
    attention: list[dict] = field(default_factory=list)  # attention blocks: bmm1, softmax, bmm2, "int8"/"float"
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
        from trtcal.core import fileio

        return fileio.atomic_write(path, self.model.SerializeToString(), force=force, inputs=inputs)

    def to_dict(self) -> dict:
        return {"target": self.target, "opset": self.opset, "converted_from": self.converted_from,
                "quantized_nodes": self.quantized_nodes, "quantized": [q.to_dict() for q in self.quantized],
                "float_tensors": self.float_tensors, "float_nodes": self.float_nodes,
                "attention": self.attention, "unknown_ranges": self.unknown_ranges, "warnings": self.warnings}


# ---------------------------------------------------------------------- helpers


def _load(model):
    """A private copy of ``model`` (a ModelProto or a path), with its weights."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model), "the model"
    from trtcal.onnx.model import load_model

    return load_model(model, load_weights=True), str(model)


def default_opset(model) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _convert_opset(model, where: str, need: int = MIN_OPSET, why: str = "per-channel Q/DQ") -> tuple[object, int]:
    import onnx
    from onnx import version_converter

    opset = default_opset(model)
    if opset is None:
        raise TrtcalError(f"{where}: the model imports no default ONNX opset")
    if opset >= need:
        return model, opset
    try:
        converted = version_converter.convert_version(model, need)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:
        message = " ".join(str(exc).split())
        message = re.sub(r"^\S+:\d+: \w+: (Assertion `.*?` failed: )?", "", message)[:200]
        raise TrtcalError(f"{where}: opset {opset} has no {why} (needs opset {need}) and ONNX's "
                          f"version converter cannot convert it ({type(exc).__name__}: {message}); "
                          f"export the model at opset {need} or later") from None
    return converted, opset


def _elem_types(model) -> dict[str, int]:
    """Tensor name -> ONNX element type, from the declarations and shape inference (best effort)."""
    from trtcal.onnx.light import inferred_values

    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in inferred_values(model).values():
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _constant_value(node):
    """The array a Constant node holds (only the ``value`` form), or None."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return numpy_helper.to_array(attr.t)
    return None


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


def distinct_input_dims(model) -> list[str]:
    """Give the dynamic axes of each graph input that share one symbolic name (paddle2onnx writes
    ``[-1, 3, ?, ?]``) a name of their own, in place; returns one note per input renamed.

    TensorRT takes axes with the same name to be one dimension, so ``[?, ?]`` cannot get a profile
    with H != W. An axis keeps its name unless the name is ``?`` (paddle2onnx's "unknown") or
    names another axis of the same input; names shared between inputs (a common batch) stay.
    The new name is ``<input>_dim<axis>`` (made unique among the model's dimension names).
    """
    graph = model.graph
    used = {d.dim_param for vi in list(graph.input) + list(graph.output) + list(graph.value_info)
            for d in vi.type.tensor_type.shape.dim if d.dim_param}
    inits = {t.name for t in graph.initializer}
    notes = []
    for vi in graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims = list(vi.type.tensor_type.shape.dim)
        count: dict[str, int] = {}
        for d in dims:
            if d.dim_param:
                count[d.dim_param] = count.get(d.dim_param, 0) + 1
        renamed = []
        for axis, d in enumerate(dims):
            if d.dim_param and (d.dim_param == "?" or count[d.dim_param] > 1):
                name, i = f"{vi.name}_dim{axis}", 1
                while name in used:
                    name, i = f"{vi.name}_dim{axis}_{i}", i + 1
                used.add(name)
                renamed.append(f"axis {axis} {d.dim_param!r} -> {name!r}")
                d.dim_param = name
        if renamed:
            notes.append(f"input {vi.name!r}: gave its dynamic axes distinct names ({', '.join(renamed)}) so that "
                         "TensorRT profiles may give them different sizes (trtcal build --shapes)")
    return notes


def weight_axis(op_type: str, node, rank: int) -> int | None:
    """The output-channel axis of a constant weight input (input 1) of a quantized node."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if node_attr(node, "transB", 0) else 1
    if op_type == "MatMul":
        return rank - 1 if rank >= 2 else None
    raise ValueError(op_type)


# ---------------------------------------------------------------------- the writer


class _Graph:
    """The top-level graph as the planner sees it: nodes by index, producers, constants, types."""

    def __init__(self, model, where: str):
        from trtcal.onnx.model import model_tensors

        self.model, self.where = model, where
        graph = model.graph
        self.nodes = list(graph.node)
        self.labels = [node_label(n, i) for i, n in enumerate(self.nodes)]
        self.inits = {t.name: t for t in graph.initializer}
        self.inputs = {vi.name for vi in graph.input}
        self.producer: dict[str, int] = {}
        self.constants: dict[str, int] = {}  # Constant node outputs -> node index
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
            if node.op_type == "Constant" and node.output:
                self.constants[node.output[0]] = i
        # tensors computed from constants only (one walk in graph order): an initializer, a
        # Constant, or the output of a deterministic node whose inputs all are such tensors
        self.derived: set[str] = set()
        for node in self.nodes:
            inputs = [name for name in node.input if name]
            if node.op_type in _RANDOM_OPS or any(a.type in (5, 10) for a in node.attribute):  # GRAPH(S)
                continue
            if node.op_type == "Constant" or (inputs and all(self.from_constants(n) for n in inputs)):
                self.derived.update(out for out in node.output if out)
        self.shape_paths = shape_derived(model, self.from_constants)
        tensors = model_tensors(model)
        self.known = tensors.all_names() | {vi.name for vi in graph.output}
        self.types = _elem_types(model)

    def from_constants(self, name: str) -> bool:
        """Whether ``name`` is constant or computed from constants only (a bias ``Reshape(Constant)``,
        ``Unsqueeze``/``Cast``/``Identity``/``Mul`` of initializers...): never an activation."""
        return self.is_const(name) or name in self.derived

    def depends_on(self, name: str, index: int) -> bool:
        """Whether tensor ``name`` is computed from the outputs of node ``index`` (the graph is
        topologically sorted, so nodes before ``index`` are not searched)."""
        stack, seen = [name], set()
        while stack:
            p = self.producer.get(stack.pop())
            if p is None or p < index or p in seen:
                continue
            if p == index:
                return True
            seen.add(p)
            stack.extend(n for n in self.nodes[p].input if n)
        return False

    def is_const(self, name: str) -> bool:
        """Whether ``name`` is a constant tensor (an initializer that is no graph input, or a Constant)."""
        return (name in self.inits and name not in self.inputs) or name in self.constants

    def const_array(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (an initializer that is no graph input, or a Constant)."""
        from onnx import numpy_helper

        if name in self.inits and name not in self.inputs:
            return numpy_helper.to_array(self.inits[name])
        if name in self.constants:
            return _constant_value(self.nodes[self.constants[name]])
        return None

    def type_problem(self, name: str) -> str | None:
        elem = self.types.get(name)
        if elem in (None, 0, _FLOAT32):
            return None  # float32, or unknown (ONNX Runtime's check at the end has the last word)
        if elem in _OTHER_FLOATS:
            return f"{_OTHER_FLOATS[elem]} tensor (only float32 models are supported)"
        return "not a float tensor"


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
    first: int  # the first node that reads it
    uses: list[tuple[int, int]] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    acts: dict[str, _ActPlan] = field(default_factory=dict)
    weights: dict[tuple[str, int | None], _WeightPlan] = field(default_factory=dict)
    nodes: list[int] = field(default_factory=list)  # quantized nodes (indices)
    float_tensors: dict[str, str] = field(default_factory=dict)
    float_nodes: dict[str, str] = field(default_factory=dict)

    def use_act(self, name: str, r: Range, unsigned: bool, use: tuple[int, int], consumer: str) -> None:
        plan = self.acts.get(name)
        if plan is None:
            plan = self.acts[name] = _ActPlan(name, r, bool(unsigned and r.one_sided))
        plan.uses.append(use)
        plan.consumers.append(consumer)


def _excluded(g: _Graph, exclude_nodes: list[str], exclude_ops: list[str],
              attention: str = "int8") -> tuple[dict[int, str], list[dict]]:
    """Nodes left in float (index -> why), and the attention blocks with how each is placed."""
    if attention not in ATTENTION_MODES:
        raise TrtcalError(f"attention {attention!r}: choose from {', '.join(ATTENTION_MODES)}")
    out: dict[int, str] = {}
    for pattern in exclude_nodes:
        hit = [i for i, n in enumerate(g.nodes) if n.name and patterns.matches(pattern, n.name)]
        if not hit:
            raise TrtcalError(f"exclude nodes {pattern!r} matches no node of {g.where}")
        for i in hit:
            out.setdefault(i, f"excluded by node pattern {pattern!r}")
    for i, n in enumerate(g.nodes):
        if n.op_type in exclude_ops:
            out.setdefault(i, f"excluded op type {n.op_type}")
    blocks = []
    for block in find_attention(g.model):
        if attention == "float":
            for i in (block.bmm1, block.bmm2):
                out.setdefault(i, "attention kept in float (attention='float')")
        blocks.append({**block.to_dict(), "placement": attention})
    for i, why in gemv_nodes(g.model).items():
        out.setdefault(i, why)
    return out, blocks


def _plan(g: _Graph, ranges: dict[str, Range], unsigned: bool, excluded: dict[int, str]) -> _Plan:
    """Where Q/DQ go: every decision, before the graph is touched."""
    plan = _Plan()

    def act_problem(name: str) -> str | None:
        problem = g.type_problem(name)
        if problem is not None:
            return problem
        r = ranges.get(name)
        if r is None and name in g.shape_paths:
            return "computed from tensor shapes only (a shape path, not data)"
        if r is None and g.from_constants(name):
            return ("no range, and it is computed from constants only (fold constants first, e.g. polygraphy "
                    "surgeon sanitize --fold-constants, to make it a weight)")
        if r is None:
            return "no range"
        return r.problem(unsigned=unsigned and r.one_sided)

    # pass 1: the inputs of Conv, ConvTranspose, Gemm, MatMul
    for i, node in enumerate(g.nodes):
        if node.op_type not in QUANTIZED_OPS:
            continue
        label = g.labels[i]
        if i in excluded:
            plan.float_nodes[label] = excluded[i]
            continue
        if len(node.input) < 2 or not node.input[0] or not node.input[1]:
            plan.float_nodes[label] = "missing inputs"
            continue
        slots: list[tuple[int, str, object]] = []  # (input index, tensor, "act" or weight axis)
        why = None
        for k in (0, 1):
            name = node.input[k]
            w = g.const_array(name)
            if w is None:
                problem = act_problem(name)
                if problem is not None:
                    plan.float_tensors.setdefault(name, problem)
                    why = f"input {name!r}: {problem}"
                    break
                slots.append((k, name, "act"))
                continue
            if w.dtype != np.float32:
                plan.float_tensors.setdefault(name, f"{w.dtype} constant")
                why = f"input {name!r} is {w.dtype}, not float32 (only float32 models are supported)"
                break
            if not np.all(np.isfinite(w)):
                plan.float_tensors.setdefault(name, "weights hold NaN or Inf")
                why = f"weights {name!r} hold NaN or Inf"
                break
            # a constant weight (input 1) per output channel; a constant in the activation slot per tensor
            slots.append((k, name, weight_axis(node.op_type, node, w.ndim) if k == 1 else None))
        if why is not None:
            plan.float_nodes[label] = why
            continue
        plan.nodes.append(i)
        for k, name, axis in slots:
            if axis == "act":
                plan.use_act(name, ranges[name], unsigned, (i, k), label)
                continue
            wp = plan.weights.get((name, axis))
            if wp is None:
                wp = plan.weights[(name, axis)] = _WeightPlan(name, g.const_array(name).astype(np.float32), axis, i)
            wp.uses.append((i, k))
            wp.consumers.append(label)

    # pass 2: the residual input of an Add after a quantized conv (so TensorRT can fuse the add)
    quantized = set(plan.nodes)

    def fused_conv(name: str) -> int | None:
        """The quantized Conv/ConvTranspose that ``name`` comes from, directly or through a
        BatchNormalization or a bias or scale (an Add or Mul of a constant), all of which TensorRT
        fuses into the conv; None otherwise."""
        p = g.producer.get(name)
        for _ in range(16):
            if p is None:
                return None
            node = g.nodes[p]
            if node.op_type in ("Conv", "ConvTranspose"):
                return p if p in quantized else None
            if node.op_type == "BatchNormalization" and node.input:
                name = node.input[0]
            elif node.op_type in ("Add", "Mul") and len(node.input) == 2:
                const = [g.from_constants(n) for n in node.input]
                if const.count(True) != 1:
                    return None
                name = node.input[const.index(False)]
            else:
                return None
            p = g.producer.get(name)
        return None

    for i, node in enumerate(g.nodes):
        if node.op_type != "Add" or len(node.input) != 2 or node.input[0] == node.input[1]:
            continue
        if any(g.from_constants(n) for n in node.input):
            continue  # an addend computed from constants only is a bias, never a residual
        # (residual input, the conv that takes the add): the residual must not be computed from
        # that conv's output (x + f(conv(x)) cannot run as one conv with the add fused)
        options = [(1 - j, c) for j, c in enumerate(fused_conv(n) for n in node.input)
                   if c is not None and not g.depends_on(node.input[1 - j], c)]
        if not options:
            continue
        # both inputs from quantized convs: the later conv takes the add, the earlier one's output is the residual
        k = max(options, key=lambda o: o[1])[0]
        name, label = node.input[k], g.labels[i]
        if i in excluded:
            plan.float_nodes[label] = f"{excluded[i]} (residual input {name!r} not quantized)"
            continue
        problem = act_problem(name)
        if problem is not None:
            plan.float_tensors.setdefault(name, problem)
            plan.float_nodes[label] = f"residual input {name!r}: {problem}"
            continue
        plan.use_act(name, ranges[name], unsigned, (i, k), f"{label} (residual)")
    return plan


def _weight_amax(wp: _WeightPlan, method: str, given: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """Per-channel amax of a planned weight: given as scales (``amax = 127 * scale``), or by ``method``."""
    channels = 1 if wp.axis is None else wp.array.shape[wp.axis]
    if wp.name in given:
        scale = np.asarray(given[wp.name], dtype=np.float64).reshape(-1)
        if scale.size != channels:
            raise TrtcalError(f"weight {wp.name!r}: {scale.size} scales given for {channels} channels "
                              f"(axis {wp.axis})")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise TrtcalError(f"weight {wp.name!r}: given scales must be finite and >= 0")
        return scale * 127.0, "weights:given"
    return channel_amax(wp.array, wp.axis, method), f"weights:{method}"


def _weight_array(wp: _WeightPlan, values: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """The values a planned weight is quantized from: ``values[name]`` where given (e.g. GPTQ's
    rounded weights, on the grid of the scales the original gets), else the model's own."""
    if not values or wp.name not in values:
        return wp.array
    got = np.asarray(values[wp.name], dtype=np.float32)
    if got.shape != wp.array.shape:
        raise TrtcalError(f"weight {wp.name!r}: values of shape {list(got.shape)} given for a weight of shape "
                          f"{list(wp.array.shape)}")
    if not np.all(np.isfinite(got)):
        raise TrtcalError(f"weight {wp.name!r}: given values must be finite")
    return got


def _apply(g: _Graph, plan: _Plan, weight_method: str = "max",
           weight_scales: Mapping[str, np.ndarray] | None = None,
           weight_bits: Mapping[str, int] | None = None,
           weight_values: Mapping[str, np.ndarray] | None = None) -> list[QuantizedTensor]:
    """Insert the planned Q/DQ nodes; keep every other node, its name and its place."""
    from onnx import helper, numpy_helper

    model, graph = g.model, g.model.graph
    names = Names(model)
    before: dict[int, list] = {}  # node index -> nodes to emit just before it (weight DQs)
    after: dict[int, list] = {}  # node index -> nodes to emit just after it (Q/DQ of its outputs)
    at_start: list = []  # Q/DQ of graph inputs
    new_inits = []
    rewire: dict[tuple[int, int], str] = {}
    quantized: list[QuantizedTensor] = []

    for name, a in plan.acts.items():
        scale = a.range.scale(unsigned=a.unsigned)
        dtype, elem = _ACT_TYPES[(a.range.bits, a.unsigned)]
        s_name, z_name = names.fresh(f"{name}_scale"), names.fresh(f"{name}_zero_point")
        q_out, dq_out = names.fresh(f"{name}_quantized"), names.fresh(f"{name}_dequantized")
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name))
        new_inits.append(helper.make_tensor(z_name, elem, [], [0]))
        q = helper.make_node("QuantizeLinear", [name, s_name, z_name], [q_out], name=names.fresh(f"{name}_QuantizeLinear"))
        dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                              name=names.fresh(f"{name}_DequantizeLinear"))
        p = g.producer.get(name)
        (after.setdefault(p, []) if p is not None else at_start).extend([q, dq])
        for use in a.uses:
            rewire[use] = dq_out
        quantized.append(QuantizedTensor(name, "activation", dtype, float(scale),
                                         consumers=a.consumers, source=a.range.source,
                                         amax=float(a.range.high if a.unsigned else a.range.amax)))

    axes_of: dict[str, int] = {}
    for name, _axis in plan.weights:
        axes_of[name] = axes_of.get(name, 0) + 1
    for (name, axis), wp in plan.weights.items():
        amax, how = _weight_amax(wp, weight_method, weight_scales or {})
        bits = (weight_bits or {}).get(name, 8)
        qw, scale, zero = per_channel_int8(_weight_array(wp, weight_values), axis, amax, bits)
        base = name if axes_of[name] == 1 else f"{name}_axis{axis}"
        qw_name, s_name = names.fresh(f"{base}_quantized"), names.fresh(f"{base}_scale")
        z_name, dq_out = names.fresh(f"{base}_zero_point"), names.fresh(f"{base}_dequantized")
        if bits == 4:  # int4 codes: ONNX packs them two to a byte
            codes = [helper.make_tensor(qw_name, _ACT_TYPES[(4, False)][1], qw.shape, qw.reshape(-1).tolist()),
                     helper.make_tensor(z_name, _ACT_TYPES[(4, False)][1], scale.shape, [0] * scale.size)]
        else:
            codes = [numpy_helper.from_array(qw, qw_name), numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name)]
        new_inits += [codes[0], numpy_helper.from_array(scale.astype(np.float32), s_name), codes[1]]
        dq = helper.make_node("DequantizeLinear", [qw_name, s_name, z_name], [dq_out],
                              name=names.fresh(f"{base}_DequantizeLinear"), **({} if axis is None else {"axis": int(axis)}))
        before.setdefault(wp.first, []).append(dq)
        for use in wp.uses:
            rewire[use] = dq_out
        quantized.append(QuantizedTensor(name, "weight", f"int{bits}", None if axis is not None else float(scale),
                                         axis=axis, channels=0 if axis is None else int(scale.size),
                                         zero_channels=zero, consumers=wp.consumers, source=how))

    for (i, k), new in rewire.items():
        g.nodes[i].input[k] = new

    # float weights no node reads any more: drop the initializer or the Constant node
    still_read = _subgraph_inputs(model) | {vi.name for vi in graph.output}
    for node in g.nodes:
        still_read.update(node.input)
    replaced = {name for name, _axis in plan.weights} - still_read
    dropped = {g.constants[n] for n in replaced if n in g.constants}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in g.inputs]

    order = list(at_start)
    for i, node in enumerate(g.nodes):
        if i not in dropped:
            order += before.get(i, []) + [node] + after.get(i, [])
    del graph.node[:]
    graph.node.extend(order)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return quantized


def _ranges_of(ranges, target: str) -> tuple[dict[str, Range], str | None]:
    if isinstance(ranges, CalibrationCache):
        return from_cache(ranges), ranges.header_text
    if isinstance(ranges, Mapping):
        widths = TARGET_WIDTHS[target]
        why = ("TensorRT's Q/DQ is int8 only (leave the tensor in float instead)" if target == "tensorrt" else
               f"target {target} stores {', '.join(map(str, widths))}-bit activations")
        return coerce(ranges, widths=widths, why=why), None
    raise TrtcalError(f"ranges must be a CalibrationCache or a dict of tensor -> amax, not {type(ranges).__name__}")


def _exclude_ops(exclude_ops: Iterable[str]) -> list[str]:
    out = [o.strip() for o in exclude_ops if o.strip()]
    for op in out:
        if op not in EXCLUDABLE_OPS:
            raise TrtcalError(f"exclude op {op!r}: the Q/DQ writer quantizes {', '.join(EXCLUDABLE_OPS)} only")
    return out


def range_coverage(model, ranges, *, target: str = "tensorrt", exclude_nodes: Iterable[str] = (),
                   exclude_ops: Iterable[str] = (), attention: str = "int8") -> tuple[list[str], list[str]]:
    """``(covered, missing)``: the activations :func:`write_qdq` would quantize with ``ranges``, and
    those its placement rules want but ``ranges`` lack (a cache of another model, or a partial one,
    covers few). Plans only; nothing is written."""
    if target not in TARGETS:
        raise TrtcalError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    ranges, _ = _ranges_of(ranges, target)
    model, where = _load(model)
    refuse_quantized(model, where)
    g = _Graph(model, where)
    plan = _plan(g, ranges, target == "onnxruntime",
                 _excluded(g, list(exclude_nodes), _exclude_ops(exclude_ops), attention)[0])
    return list(plan.acts), [n for n, why in plan.float_tensors.items() if why == "no range"]


def write_qdq(model, ranges, *, target: str = "tensorrt", exclude_nodes: Iterable[str] = (),
              exclude_ops: Iterable[str] = (), unsigned: bool | None = None, attention: str = "int8",
              check_onnxruntime: bool = True, weight_method: str = "max",
              weight_scales: Mapping[str, np.ndarray] | None = None,
              weight_bits: Mapping[str, int] | None = None,
              weight_values: Mapping[str, np.ndarray] | None = None) -> QdqResult:
    """Insert Q/DQ into ``model`` (an FP32 ONNX ``ModelProto`` or a path) by TensorRT's rules.

    ``ranges``: a :class:`~trtcal.cache.format.CalibrationCache`, or ``{tensor: amax | Range}``.
    ``target``: ``"tensorrt"`` (int8, zero point 0) or ``"onnxruntime"`` (``unsigned``, default
    true there, gives one-sided ranges uint8 with zero point 0). ``exclude_nodes``: globs over
    node names (each must match a node); ``exclude_ops``: op types left in float (Conv,
    ConvTranspose, Gemm, MatMul, and Add for the residual rule). ``attention``: ``"int8"``
    quantizes both batched MatMuls of each attention block (TensorRT's INT8 fused attention),
    ``"float"`` leaves them in float. ``weight_method``: how weight
    channels get their range, ``"max"`` (max|w|) or ``"mse"`` (:mod:`trtcal.core.weight_scales`);
    ``weight_scales``: ``{weight initializer: per-channel scales}`` that take precedence (e.g.
    EQ's); a name that is no quantized weight is an error. ``weight_bits``: ``{weight: 4 or 8}``
    (ONNX Runtime only for 4: int4 per channel, scale ``amax / 7``, opset 21); others are 8.
    ``weight_values``: ``{weight initializer: float values}`` quantized instead of the model's own
    on the scales the weight gets (given or computed from its own values): e.g. GPTQ's rounded
    weights (:mod:`trtcal.ort.weight_rounding`), which lie on that grid and keep their codes.

    Returns a :class:`QdqResult`; the input model is not modified. Raises
    :class:`~trtcal.core.errors.TrtcalError` for a model or ranges it cannot use.
    """
    import onnx

    if target not in TARGETS:
        raise TrtcalError(f"target {target!r}: choose from {', '.join(TARGETS)}")
    if unsigned is None:
        unsigned = target == "onnxruntime"
    if unsigned and target == "tensorrt":
        raise TrtcalError("TensorRT's Q/DQ is symmetric int8 only (no uint8, zero point 0); unsigned needs "
                          "target onnxruntime")
    exclude_ops = _exclude_ops(exclude_ops)
    ranges_in = ranges
    ranges, header = _ranges_of(ranges, target)
    if not ranges:
        raise TrtcalError("no ranges given: the cache or statistics hold no tensor")

    model, where = _load(model)
    refuse_quantized(model, where)
    try:
        onnx.checker.check_model(light_view(model), full_check=False)
    except Exception as exc:
        raise TrtcalError(f"{where}: onnx.checker rejects the input model: {' '.join(str(exc).split())[:200]}") from None
    weight_bits = dict(weight_bits or {})
    stored = TARGET_WEIGHT_WIDTHS[target]
    bad_bits = {n: b for n, b in weight_bits.items() if b not in stored}
    if bad_bits:
        name, b = next(iter(bad_bits.items()))
        raise TrtcalError(f"weight {name!r}: {b}-bit weights; target {target} stores "
                          f"{' or '.join(map(str, stored))}-bit weights")
    narrow_wide = sorted(({r.bits for r in ranges.values()} | set(weight_bits.values())) - {8})
    need, why = ((NARROW_WIDE_OPSET, f"{'- and '.join(map(str, narrow_wide))}-bit Q/DQ") if narrow_wide
                 else (MIN_OPSET, "per-channel Q/DQ"))
    model, opset_in = _convert_opset(model, where, need, why)
    warnings: list[str] = []
    converted_from = opset_in if opset_in < need else None
    if converted_from is not None:
        warnings.append(f"converted the model from opset {converted_from} to {need} ({why} needs "
                        f"{need}) with ONNX's version converter")

    g = _Graph(model, where)
    unknown = [n for n in ranges if n not in g.known]
    if len(unknown) == len(ranges):
        shown = ", ".join(repr(n) for n in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise TrtcalError(f"{where}: the ranges name no tensor of the model ({len(unknown)} names, e.g. {shown}); "
                          "is the cache for another model?")
    if unknown:
        warnings.append(f"{len(unknown)} range name(s) are not tensors of the model and were ignored, e.g. "
                        + ", ".join(repr(n) for n in unknown[:3]))
    excluded, blocks = _excluded(g, list(exclude_nodes), exclude_ops, attention)
    plan = _plan(g, ranges, unsigned, excluded)
    quantized_at = set(plan.nodes)
    for block in blocks:  # "int8" only where both MatMuls were quantized
        if block["placement"] == "int8" and not {g.labels.index(block["bmm1"]), g.labels.index(block["bmm2"])} <= quantized_at:
            block["placement"] = "float"
    if not plan.acts and not plan.weights:
        reasons = "; ".join(f"{n}: {why}" for n, why in list(plan.float_nodes.items())[:3])
        raise TrtcalError(f"{where}: nothing to quantize" + (f" ({reasons})" if reasons else
                          " (no Conv, ConvTranspose, Gemm or MatMul node)"))
    if weight_method not in WEIGHT_METHODS:
        raise TrtcalError(f"weight method {weight_method!r}: choose from {', '.join(WEIGHT_METHODS)}")
    # any constant weight of a Conv/ConvTranspose/Gemm/MatMul may be named (its node may stay in
    # float this time, e.g. in a fallback); anything else is a mistake
    weights = {n.input[1] for n in g.nodes if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and g.is_const(n.input[1])}
    for what, given in (("weight scales", weight_scales), ("weight bits", weight_bits),
                        ("weight values", weight_values)):
        stray = sorted(set(given or {}) - weights)
        if stray:
            raise TrtcalError(f"{what} given for {len(stray)} tensor(s) that are no weight of a Conv, ConvTranspose, "
                              f"Gemm or MatMul of {where}, e.g. {stray[0]!r}")
    quantized = _apply(g, plan, weight_method, weight_scales, weight_bits, weight_values)
    warnings.extend(distinct_input_dims(model))
    if isinstance(ranges_in, CalibrationCache) and unsigned:
        warnings.append(CACHE_HAS_NO_SIGNS)

    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.append(onnx.StringStringEntryProto(
        key=METADATA_KEY, value=json.dumps({"writer": "trtcal", "target": target, "header": header})))
    if model.ByteSize() > _MAX_PROTO:
        raise TrtcalError(f"{where}: the Q/DQ model would exceed 2 GB, which needs external data (not supported yet)")
    try:
        onnx.checker.check_model(light_view(model), full_check=True)
    except Exception as exc:  # a bug in this module, not a user error
        raise RuntimeError(f"trtcal wrote a Q/DQ model that onnx.checker rejects: {exc}") from exc
    if check_onnxruntime:
        warning = _check_onnxruntime(model, where)
        if warning:
            warnings.append(warning)
    return QdqResult(model=model, target=target, quantized=quantized, float_tensors=plan.float_tensors,
                     float_nodes=plan.float_nodes, quantized_nodes=[g.labels[i] for i in plan.nodes],
                     attention=blocks, warnings=warnings, unknown_ranges=unknown, opset=default_opset(model) or 0,
                     converted_from=converted_from)


def _check_onnxruntime(model, where: str) -> str | None:
    """Load the model in ONNX Runtime; a TrtcalError if it cannot. When only the session that keeps
    Q/DQ as written loads it (ONNX Runtime's Q/DQ rewrites fail on some 4-bit graphs), a warning."""
    import onnxruntime as ort

    def load(as_written: bool) -> str | None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if as_written:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            return " ".join(str(exc).split())[:300]
        return None

    message = load(False)
    if message is None:
        return None
    if load(True) is None:
        return ("ONNX Runtime's default session rejects this model (its Q/DQ rewrites: " + message[:160] +
                "); it runs with the session option session.disable_quant_qdq=1, as trtcal eval runs it")
    raise TrtcalError(f"{where}: ONNX Runtime rejects the Q/DQ model ({message}); nothing written")


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
    scale is kept bit for bit; other signed types with zero point 0 (int4, int16) give
    ``amax = qmax * scale``; a uint8 one (zero point 0) becomes ``amax = 255 * scale`` (uint4,
    uint16 alike); other zero points give ``amax = scale * max(|qmin - zp|, |qmax - zp|)``. Weights are not activations
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
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp = _scalar(model, zp_name, inits, constants) if zp_name else None
        z = 0 if zp is None else int(np.asarray(zp).astype(np.int64).reshape(-1)[0])
        elem = 2 if zp is None else _elem_type(zp_name, inits, constants)  # no zero point: uint8
        s = np.float32(np.asarray(scale).reshape(-1)[0])
        if elem == 3 and z == 0:  # int8, zero point 0: the cache's own scale, bit for bit
            bits = int(np.array([s], dtype=np.float32).view(np.uint32)[0])
        elif elem in _CODE_RANGES:
            qmin, qmax = _CODE_RANGES[elem]
            # signed with zero point 0: symmetric, amax = scale * qmax (as it was written)
            amax = float(s) * (qmax if qmin < 0 and z == 0 else max(abs(qmin - z), abs(qmax - z)))
            bits = float_to_bits(amax / 127.0)
        else:
            continue  # a float8 or other exotic Q: no int8 range to give
        seen.add(name)
        cache.entries.append(CacheEntry(name, bits))
    return cache


def _elem_type(name: str, inits: dict, constants: dict) -> int:
    """The ONNX element type of a constant tensor (initializer or Constant node's value)."""
    if name in inits:
        return int(inits[name].data_type)
    attr = next((a for a in constants[name].attribute if a.name == "value"), None)
    return int(attr.t.data_type) if attr is not None else 0


def _is_proto(model) -> bool:
    import onnx

    return isinstance(model, onnx.ModelProto)

