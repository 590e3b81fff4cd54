"""Reading ONNX models: which tensors exist, and which of them want a calibration range.

An adapter around ``onnx`` (the pure modules never import it). Errors a user can cause (missing
file, not an ONNX model) are :class:`~trtcal.core.errors.TrtcalError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trtcal.core.errors import TrtcalError

#: ONNX element types TensorRT calibrates: float32, float16, bfloat16, float64.
FLOAT_TYPES = {1, 10, 16, 11}

#: Operators that mean a model is already quantized: calibrating or quantizing it again is a mistake.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                 "MatMulInteger", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                 "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool",
                 "QLinearConcat", "QLinearSoftmax", "QGemm", "QAttention", "MatMulIntegerToFloat"}


def node_label(node, index: int) -> str:
    """How trtcal names a node in messages and results: its name, or ``<op type>#<index>``."""
    return node.name or f"{node.op_type}#{index}"


@dataclass
class ModelTensors:
    """Tensor names of a model, grouped by what calibration does with them."""

    activations: list[str] = field(default_factory=list)  # float graph inputs and node outputs
    non_float: list[str] = field(default_factory=list)  # int/bool tensors: never calibrated
    initializers: list[str] = field(default_factory=list)  # weights and constants
    untyped: list[str] = field(default_factory=list)  # outputs whose type shape inference could not tell

    def all_names(self) -> set[str]:
        return set(self.activations) | set(self.non_float) | set(self.initializers) | set(self.untyped)


def load_model(path: str | os.PathLike, *, load_weights: bool = False, fp32: bool = False):
    """Load an ONNX model (by default without external weight files), with one-line errors.
    ``fp32``: the caller needs the unquantized model; an already quantized one is refused
    (:func:`refuse_quantized`)."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise TrtcalError(f"{p}: no such model file")
    if p.is_dir():
        raise TrtcalError(f"{p}: is a directory, expected an ONNX model file")
    try:
        model = onnx.load(str(p), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises several types for garbage input
        raise TrtcalError(f"{p}: not an ONNX model ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not model.graph.node and not model.graph.input:
        raise TrtcalError(f"{p}: not an ONNX model (no graph)")
    if fp32:
        refuse_quantized(model, str(p))
    return model


def quantized_ops(model) -> list[str]:
    """The quantized operator types in ``model`` (sorted; empty for a float model)."""
    return sorted({node.op_type for node in model.graph.node} & QUANTIZED_OPS)


def refuse_quantized(model, where: str) -> None:
    """The one message every command gives for an already quantized model where it needs FP32."""
    ops = quantized_ops(model)
    if ops:
        raise TrtcalError(f"{where}: the model is already quantized ({', '.join(ops)} present); "
                          "give the FP32 model it was made from")


def model_tensors(model) -> ModelTensors:
    """Group the tensors of an ONNX ``ModelProto`` (types from shape inference where missing)."""
    from trtcal.onnx.light import inferred_values

    graph = model.graph
    types: dict[str, int] = {}
    for vi in inferred_values(model).values():
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    out = ModelTensors()
    inits = {t.name for t in graph.initializer}
    out.initializers = sorted(inits)
    seen: set[str] = set(inits)

    def place(name: str, elem: int | None) -> None:
        if not name or name in seen:
            return
        seen.add(name)
        if elem in FLOAT_TYPES:
            out.activations.append(name)
        elif elem in (None, 0):
            out.untyped.append(name)
        else:
            out.non_float.append(name)

    for vi in graph.input:
        place(vi.name, types.get(vi.name))
    for node in graph.node:
        for name in node.output:
            elem = types.get(name)
            if node.op_type == "Constant":
                out.initializers.append(name)
                seen.add(name)
                continue
            place(name, elem)
    return out


def producers(model) -> dict[str, str]:
    """Tensor name -> op type of the node that makes it ("input" for graph inputs)."""
    out = {vi.name: "input" for vi in model.graph.input}
    for node in model.graph.node:
        for name in node.output:
            if name:
                out[name] = node.op_type
    return out


def constant_tensors(model) -> dict:
    """Initializers and Constant-node outputs (the ``value`` form), as ``{name: TensorProto}``."""
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = attr.t
    return values


def constants_as_initializers(model):
    """A copy of ``model`` whose top-level Constant nodes (the ``value`` form) are initializers of the
    same names (exporters such as paddle2onnx write every weight so); the same function. Returns
    ``model`` itself when it has none."""
    import onnx

    graph = model.graph
    outputs = {o.name for o in graph.output}
    movable = [i for i, n in enumerate(graph.node) if n.op_type == "Constant" and len(n.output) == 1
               and n.output[0] not in outputs and any(a.name == "value" and a.HasField("t") for a in n.attribute)]
    if not movable:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    moved = set(movable)
    for i in movable:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(next(a.t for a in nodes[i].attribute if a.name == "value"))
        tensor.name = nodes[i].output[0]
        out.graph.initializer.append(tensor)
    del out.graph.node[:]
    out.graph.node.extend(n for i, n in enumerate(nodes) if i not in moved)
    return out


def node_attr(node, name: str, default=None):
    """The value of ``node``'s attribute ``name`` (as onnx.helper gives it), or ``default``."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class Names:
    """Fresh, unique tensor and node names derived from a base name: ``base``, else ``base_1``,
    ``base_2`` ... (every name the model uses, its subgraphs' too, is taken)."""

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
