"""Multi-head attention in an ONNX graph, as TensorRT's explicit quantization sees it.

An attention block is ``BMM1 -> [scale, mask] -> Softmax -> [cast, dropout] -> BMM2``:

- **BMM1** is a MatMul of two activations (``Q @ K^T``; neither input is a constant);
- between BMM1 and Softmax only elementwise ops that keep the scores' shape: ``Mul``/``Div`` (the
  ``1/sqrt(d)`` scale), ``Add``/``Sub``/``Where`` (the mask), ``Cast``, ``Identity``, ``Reshape``;
- between Softmax and BMM2 only ``Cast``, ``Identity``, ``Dropout``, ``Reshape``, ``Where`` or
  ``Mul`` (a head mask);
- **BMM2** is a MatMul whose first input is the (passed-through) Softmax output and whose second
  input is an activation (``V``).

TensorRT fuses such a block into one multi-head-attention kernel, INT8 when BMM1's two inputs and
BMM2's two inputs are quantized (Q/DQ on the Softmax output for BMM2's first input) and the
scale/mask/Softmax between them stay in float. :func:`find_attention` lists the blocks;
:mod:`trtcal.onnx.qdq` quantizes them so, or leaves both MatMuls in float (``attention="float"``,
as ModelOpt does for blocks it cannot fuse).

Pure graph reading (onnx protos only); nothing is modified.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtcal.onnx.model import node_label

#: Ops that may sit between BMM1 and Softmax (scale, mask, casts).
BEFORE_SOFTMAX = ("Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity", "Reshape")
#: Ops that may sit between Softmax and BMM2.
AFTER_SOFTMAX = ("Cast", "Identity", "Dropout", "Reshape", "Where", "Mul")
_MAX_HOPS = 8


@dataclass(frozen=True)
class Attention:
    """One attention block: node indices and names of its two batched MatMuls and its Softmax."""

    bmm1: int
    softmax: int
    bmm2: int
    names: tuple[str, str, str]  # (bmm1, softmax, bmm2) node labels

    def to_dict(self) -> dict:
        return {"bmm1": self.names[0], "softmax": self.names[1], "bmm2": self.names[2]}


def find_attention(model) -> list[Attention]:
    """The attention blocks of ``model``'s top-level graph (a ``ModelProto``), in graph order."""
    graph = model.graph
    nodes = list(graph.node)
    constant = {t.name for t in graph.initializer} - {vi.name for vi in graph.input}
    constant |= {n.output[0] for n in nodes if n.op_type == "Constant" and n.output}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers.setdefault(name, []).append(i)

    def two_activations(i: int) -> bool:
        n = nodes[i]
        return (n.op_type == "MatMul" and len(n.input) == 2 and all(n.input)
                and not any(x in constant for x in n.input))

    def bmm1_before(name: str, hops: int = 0) -> int | None:
        """The BMM1 that ``name`` (Softmax's input) comes from, through the allowed ops."""
        p = producer.get(name)
        if p is None or hops > _MAX_HOPS:
            return None
        if two_activations(p):
            return p
        node = nodes[p]
        if node.op_type not in BEFORE_SOFTMAX:
            return None
        for x in node.input[:2] if node.op_type != "Where" else node.input[1:3]:
            if x and x not in constant:
                found = bmm1_before(x, hops + 1)
                if found is not None:
                    return found
        return None

    def bmm2_after(name: str, hops: int = 0) -> int | None:
        """The BMM2 reading ``name`` (Softmax's output) as its first input, through the allowed ops."""
        users = consumers.get(name, [])
        if len(users) != 1 or hops > _MAX_HOPS:
            return None
        u = users[0]
        node = nodes[u]
        if node.op_type == "MatMul":
            return u if two_activations(u) and node.input[0] == name else None
        if node.op_type not in AFTER_SOFTMAX or not node.output:
            return None
        return bmm2_after(node.output[0], hops + 1)

    found = []
    for i, node in enumerate(nodes):
        if node.op_type != "Softmax" or not node.input or not node.output:
            continue
        first, second = bmm1_before(node.input[0]), bmm2_after(node.output[0])
        if first is not None and second is not None:
            found.append(Attention(first, i, second, (node_label(nodes[first], first), node_label(node, i),
                                                      node_label(nodes[second], second))))
    return found
