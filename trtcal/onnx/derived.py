"""Tensors whose histogram follows exactly from another tensor's, so they need not be exposed.

Exposing a tensor costs ONNX Runtime a copy (and blocks fusions) and costs the histogram a pass
over its values. Two kinds of node outputs hold nothing new:

- an **alias**: Identity, Reshape, Flatten, Squeeze, Unsqueeze or Transpose output holds the same
  values as its data input, so its histogram is the input's;
- a **zero pad**: a Pad in constant mode with value 0 (TensorRT-style "same" padding) outputs the
  input's values plus ``numel(out) - numel(in)`` zeros; zeros fall in bin 0 whatever the range,
  and do not move max|x|, so its histogram is the input's plus that many zeros in bin 0 (the same
  batches give the same range growth). The pads may be computed at run time (then the pads tensor
  is exposed: a few integers per batch) but must not be negative (a crop drops values).

Only graph-internal float tensors are derived; a tensor that is a graph output is computed and
returned anyway. Sources must themselves be calibrated; chains (an alias of an alias) resolve
in graph order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.onnx.model import node_attr

ALIAS_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


@dataclass(frozen=True)
class Derived:
    """``tensor``'s histogram is ``source``'s (kind "alias"), or ``source``'s plus the padded zeros
    (kind "pad": ``pads`` static, or read from the tensor ``pads_input`` each batch; ``axes``
    the padded axes, None for all)."""

    tensor: str
    source: str
    kind: str
    pads: tuple[int, ...] | None = None
    pads_input: str | None = None
    axes: tuple[int, ...] | None = None

    def padded_zeros(self, source_shape: tuple[int, ...], pads=None) -> int:
        """Zeros a pad adds to a batch whose source has ``source_shape`` (``pads``: the run-time
        pads when they are not static)."""
        pads = self.pads if self.pads is not None else tuple(int(p) for p in np.asarray(pads).reshape(-1))
        rank = len(source_shape)
        axes = [a % rank for a in self.axes] if self.axes is not None else list(range(rank))
        if len(pads) != 2 * len(axes):
            raise TrtcalError(f"tensor {self.tensor!r}: Pad has {len(pads)} pads for {len(axes)} axes")
        if min(pads, default=0) < 0:
            raise TrtcalError(f"tensor {self.tensor!r}: Pad with negative pads {list(pads)} (a crop) cannot be "
                              "derived from its input; calibrate with --expose-all")
        out = list(source_shape)
        for i, axis in enumerate(axes):
            out[axis] += pads[i] + pads[i + len(axes)]
        return int(np.prod(out, dtype=np.int64)) - int(np.prod(source_shape, dtype=np.int64))


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs with their values (small ones: pads, axes, values)."""
    from onnx import numpy_helper

    from trtcal.onnx.model import constant_tensors

    return {name: numpy_helper.to_array(t) for name, t in constant_tensors(model).items()
            if np.prod(t.dims, dtype=np.int64) <= 64}


def _zero_pad(node, consts) -> tuple[tuple | None, str | None, tuple | None] | None:
    """(static pads, pads tensor, axes) when ``node`` is a zero pad that can be derived, else None."""
    mode = node_attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(node.input) < 2 or not node.input[1]:  # opset < 11: pads and value are attributes
        pads = node_attr(node, "pads")
        if pads is None or float(node_attr(node, "value", 0.0)) != 0.0 or min(pads, default=0) < 0:
            return None
        return tuple(int(p) for p in pads), None, None
    if len(node.input) > 2 and node.input[2]:
        value = consts.get(node.input[2])
        if value is None or value.size != 1 or float(value.reshape(-1)[0]) != 0.0:
            return None
    axes = None
    if len(node.input) > 3 and node.input[3]:
        if node.input[3] not in consts:
            return None
        axes = tuple(int(a) for a in consts[node.input[3]].reshape(-1))
    if node.input[1] in consts:
        pads = tuple(int(p) for p in consts[node.input[1]].reshape(-1))
        return (pads, None, axes) if min(pads, default=0) >= 0 else None
    return None, node.input[1], axes


def find_derived(model, calibrated) -> dict[str, Derived]:
    """The tensors of ``calibrated`` (names, graph order) whose histogram follows from another
    calibrated tensor's, in graph order. Pads' sources are never themselves derived (their shape
    is read from the batch)."""
    wanted = set(calibrated)
    outputs = {o.name for o in model.graph.output}
    consts = _constants(model)
    derived: dict[str, Derived] = {}
    for node in model.graph.node:
        if len(node.output) != 1 or not node.input:
            continue
        out, src = node.output[0], node.input[0]
        if out not in wanted or src not in wanted or out in outputs:
            continue
        if node.op_type in ALIAS_OPS:
            derived[out] = Derived(out, src, "alias")
        elif node.op_type == "Pad" and src not in derived:
            found = _zero_pad(node, consts)
            if found is not None:
                pads, pads_input, axes = found
                derived[out] = Derived(out, src, "pad", pads, pads_input, axes)
    return derived
