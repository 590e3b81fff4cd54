"""Which MatMul/Gemm nodes TensorRT would not run as INT8 matrix products.

- **GEMV-shaped**: a product whose static shapes make it a matrix-vector product (``M``, ``K`` or
  ``N`` is 1: a rank-1 operand, a sequence of length 1, a single output column). TensorRT runs it
  on CUDA cores, where Q/DQ only adds work; ModelOpt leaves such MatMuls in float too.
- **Shape paths**: a product whose operand is computed from tensor shapes and constants only
  (``Shape``/``Size`` -> ``Cast`` -> ... position arithmetic): shape computation, not data, with no
  calibration range worth the name.

``M``, ``K`` and ``N`` come from ONNX shape inference and the weights' own shapes; a dynamic
dimension (a batch axis, a sequence axis) is unknown and never makes a node GEMV-shaped: the
shapes a user runs are the deployment's business, not the exporter's.

An adapter over ``onnx`` protos; nothing is modified.
"""

from __future__ import annotations

#: Ops whose output is a function of an input's shape only.
SHAPE_OPS = ("Shape", "Size")


def _static_shapes(model) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where dynamic or unknown), from shape inference and initializers."""
    from trtcal.onnx.light import inferred_values

    out: dict[str, list[int | None]] = {}
    for vi in inferred_values(model).values():
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    for t in model.graph.initializer:
        out[t.name] = list(t.dims)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = list(a.t.dims)
    return out


def product_dims(model) -> dict[int, tuple[int | None, int | None, int | None]]:
    """Node index -> ``(M, K, N)`` of every MatMul and Gemm of the top-level graph; None where unknown."""
    shapes = _static_shapes(model)
    dims = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        m = k = n = None
        if node.op_type == "Gemm":
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            trans_b = any(x.name == "transB" and x.i for x in node.attribute)
            if a is not None and len(a) == 2:
                m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
            if b is not None and len(b) == 2:
                kb, n = (b[1], b[0]) if trans_b else (b[0], b[1])
                k = k if k is not None else kb
        else:
            if a is not None:
                m, k = (1, a[0]) if len(a) == 1 else (a[-2], a[-1]) if len(a) >= 2 else (None, None)
            if b is not None:
                if len(b) == 1:
                    n, k = 1, k if k is not None else b[0]
                elif len(b) >= 2:
                    n, k = b[-1], k if k is not None else b[-2]
        dims[i] = (m, k, n)
    return dims


def gemv_nodes(model) -> dict[int, str]:
    """Node index -> why, for the MatMul/Gemm nodes whose static shapes make them GEMV-shaped."""
    out = {}
    for i, (m, k, n) in product_dims(model).items():
        ones = [name for name, d in (("M", m), ("K", k), ("N", n)) if d == 1]
        if ones:
            out[i] = (f"GEMV-shaped ({', '.join(ones)} = 1 in M x K x N = {m or '?'} x {k or '?'} x {n or '?'}): "
                      "TensorRT runs it without INT8 tensor cores")
    return out


def shape_derived(model, from_constants) -> set[str]:
    """Tensors computed from tensor shapes and constants only (at least one ``Shape``/``Size`` on
    the way); ``from_constants(name)`` says whether a tensor is constant or derived from constants."""
    found: set[str] = set()
    for node in model.graph.node:
        inputs = [n for n in node.input if n]
        if node.op_type in SHAPE_OPS or inputs and any(n in found for n in inputs) and all(n in found or from_constants(n) for n in inputs):
            found.update(o for o in node.output if o)
    return found
