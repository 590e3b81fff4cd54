"""Many Q/DQ variants of one model, run without writing and loading a model per variant.

A *variant* is a set of activation ranges (``{tensor: amax or Range}``) given to the Q/DQ
writer's placement rules, exactly as :func:`trtcal.onnx.qdq.write_qdq` would be given them with
the same options: the same tensors quantized at the same nodes with the same scales, the same
weights per channel, the same nodes left in float (a tensor left out takes its consuming layers,
weights included, to float). :class:`QdqVariants` plans every variant with the writer's own
planner (:func:`trtcal.onnx.qdq._plan`) and builds ONNX models that run them:

- :meth:`QdqVariants.switched`: ONE model for many variants. Every node input that some variant
  quantizes reads ``Where(switch, DQ(Q(x)), x)`` where the variants disagree, the plain
  ``DQ(Q(x))`` where they all quantize it; one boolean graph input per distinct on/off pattern
  (:meth:`VariantModel.feeds` gives a variant's). With ``scales_as_inputs`` every activation's
  Q/DQ scale is a float32 graph input too, fed per variant, so variants may give a tensor
  different ranges (a set of candidate range sets); otherwise they must agree on each tensor's
  range. Contract: run in ONNX Runtime as :func:`trtcal.ort.sensitivity.score_model` runs models
  (``session.disable_quant_qdq``), variant ``j``'s outputs are **bit-identical** to the model
  ``write_qdq`` writes for it as long as all the variants quantize the same weights (the weights
  stay constants, which ONNX Runtime folds and lays out as it does for the written model:
  measured on YOLOv8n). Where variants disagree on a weight, the layer reads
  ``Where(switch, DQ(w_int8), w)``: the same values, but no longer a constant, so ONNX Runtime
  runs that layer with another convolution kernel (no NCHWc layout) and the outputs agree only to
  float rounding, which the next quantizer can turn into one step (measured on YOLOv8n: outputs
  up to 7 apart in box pixels).
- :meth:`QdqVariants.cut`: one variant run from the tensors of a *base* variant: only the nodes
  whose inputs the variant quantizes differently from the base, and everything downstream of
  them, are in the model; every other tensor they read is a graph input, fed from one run of the
  base variant's model with those tensors exposed (:meth:`QdqVariants.base_tensors`). Nodes
  upstream of the change compute the same values in both, so this is the variant's own model,
  minus work. Bit-identical on YOLOv8n (59 of 59 leave-one-out models), the tests' models and 49
  of EfficientNet-Lite0's 50 (the other within float rounding: docs/benchmarks.md); not guaranteed
  in general: ONNX Runtime may fuse a node across the cut (a Conv into the Add that reads it) in
  the written model, so a cut input read directly by a node that can absorb its producer (Add,
  BatchNormalization, an activation, MatMul...) has its producer recomputed in the model too
  (:data:`ABSORBING_OPS`), and tensors computed from constants only are always recomputed.

The leave-one-out sensitivity (:mod:`trtcal.ort.sensitivity`) scores one cut model per tensor
left in float: about half the network's work per tensor on YOLOv8n, no Q/DQ model written.

Models with control flow (If, Loop, Scan) are not cut (:attr:`QdqVariants.can_cut`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError

#: Operators ONNX Runtime may fuse with the node that produces their input (Conv + Add/BN/
#: activation, MatMul + Add/Mul, Transpose + MatMul, LayerNorm and GELU patterns, Pad + Conv...):
#: a cut input such an operator reads directly, as its producer's only consumer, is not cut there.
ABSORBING_OPS = frozenset({
    "Add", "Sum", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Relu", "Clip", "Sigmoid", "LeakyRelu",
    "HardSigmoid", "HardSwish", "Softmax", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
    "ReduceMean", "MatMul", "Gemm", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Where", "Gelu",
})
#: Consumers that absorb only these producers.
_ABSORBED_BY = {"Conv": {"Pad"}, "ConvTranspose": {"Pad"}, "MaxPool": {"Pad"}, "AveragePool": {"Pad"}}
_CONTROL_FLOW = {"If", "Loop", "Scan"}


@dataclass
class VariantModel:
    """A model that runs one or more variants: feed :meth:`feeds` (and, for a cut model, the
    base tensors named in :attr:`cut_inputs`) beside the batch."""

    model: object  # onnx.ModelProto
    switches: dict[str, np.ndarray]  # graph input -> its value per variant (bool; float32 scales)
    variants: int
    cut_inputs: list[str] = field(default_factory=list)  # tensors fed from the base variant's run
    outputs: list[str] = field(default_factory=list)  # the graph outputs it computes

    def feeds(self, j: int) -> dict[str, np.ndarray]:
        """The switch (and scale) inputs that select variant ``j``."""
        return {name: np.asarray(values[j]) for name, values in self.switches.items()}


class QdqVariants:
    """Variants of one FP32 model's Q/DQ placement (module doc).

    ``model``: an FP32 ``ModelProto`` (not modified) or a path; ``ranges``: the base variant
    (``{tensor: amax or Range}`` or a calibration cache); the keyword options are
    :func:`~trtcal.onnx.qdq.write_qdq`'s (its ``check_onnxruntime`` and ``unsigned`` aside:
    ``unsigned`` defaults as there). Errors the writer would raise for the base variant
    are raised here too only where planning needs them; write the base variant with
    ``write_qdq`` first to get every check.
    """

    def __init__(self, model, ranges, *, target: str = "tensorrt", exclude_nodes: Iterable[str] = (),
                 exclude_ops: Iterable[str] = (), unsigned: bool | None = None, attention: str = "int8",
                 weight_method: str = "max", weight_scales: Mapping[str, np.ndarray] | None = None,
                 weight_bits: Mapping[str, int] | None = None,
                 weight_values: Mapping[str, np.ndarray] | None = None):
        from trtcal.onnx import qdq as Q

        if target not in Q.TARGETS:
            raise TrtcalError(f"target {target!r}: choose from {', '.join(Q.TARGETS)}")
        self.target = target
        self.unsigned = (target == "onnxruntime") if unsigned is None else bool(unsigned)
        self.ranges, _ = Q._ranges_of(ranges, target)
        self.weight_method, self.weight_scales = weight_method, dict(weight_scales or {})
        self.weight_bits = dict(weight_bits or {})
        self.weight_values = dict(weight_values or {})
        model, where = Q._load(model)
        widths = sorted(({r.bits for r in self.ranges.values()} | set(self.weight_bits.values())) - {8})
        need, why = ((Q.NARROW_WIDE_OPSET, "narrow or wide Q/DQ") if widths else (Q.MIN_OPSET, "per-channel Q/DQ"))
        model, _ = Q._convert_opset(model, where, need, why)
        Q.distinct_input_dims(model)  # as write_qdq does
        self.model, self.where = model, where
        self.graph = Q._Graph(model, where)
        arrays: dict = {}
        read_array = self.graph.const_array

        def const_array(name: str):  # planning reads every weight once per variant: read it once
            if name not in arrays:
                arrays[name] = read_array(name)
            return arrays[name]

        self.graph.const_array = const_array
        self._arrays = arrays
        self.excluded, _ = Q._excluded(self.graph, list(exclude_nodes), Q._exclude_ops(exclude_ops), attention)
        self.base = self.plan(self.ranges)
        self.can_cut = not any(n.op_type in _CONTROL_FLOW for n in self.graph.nodes)
        self._weights: dict = {}  # (name, axis) -> (initializers, dq attributes)
        consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.graph.nodes):
            for name in node.input:
                if name:
                    consumers.setdefault(name, []).append(i)
        self.consumers = consumers
        self._shapes = None

    # ------------------------------------------------------------------ planning

    def plan(self, ranges) -> object:
        """The writer's plan for one variant's ranges."""
        from trtcal.onnx import qdq as Q

        if not isinstance(ranges, Mapping):
            raise TrtcalError(f"a variant is a dict of tensor -> amax or Range, not {type(ranges).__name__}")
        coerced = Q.coerce(ranges, widths=Q.TARGET_WIDTHS[self.target], why=f"target {self.target}")
        plan = Q._plan(self.graph, coerced, self.unsigned, self.excluded)
        for w in plan.weights.values():  # the planner's float32 copy of each weight: share one
            shared = self._arrays.get(w.name)
            if shared is not None and shared.dtype == np.float32:
                w.array = shared
        return plan

    @staticmethod
    def _slots(plan) -> dict[tuple[int, int], tuple]:
        """(node, input) -> what it reads: ("act", tensor, scale, (bits, unsigned)) or ("w", (name, axis))."""
        out = {}
        for name, a in plan.acts.items():
            scale = np.float32(a.range.scale(unsigned=a.unsigned))
            for use in a.uses:
                out[use] = ("act", name, scale, (a.range.bits, a.unsigned))
        for key, w in plan.weights.items():
            for use in w.uses:
                out[use] = ("w", key)
        return out

    # ------------------------------------------------------------------ building

    def switched(self, variants: list, *, scales_as_inputs: bool = False) -> VariantModel:
        """ONE model for all ``variants`` (module doc), the whole graph."""
        plans = [v if hasattr(v, "acts") else self.plan(v) for v in variants]
        return self._build(plans, keep=None, scales_as_inputs=scales_as_inputs)

    def cut(self, variant, outputs: Iterable[str], *, keep: set[int] | None = None) -> VariantModel:
        """The model of one ``variant`` computing only what differs from the base variant, for
        the graph ``outputs`` named (those it does not compute equal the base's); its
        :attr:`~VariantModel.cut_inputs` come from :meth:`base_tensors`. ``keep``: its
        :meth:`cone`, when already known."""
        if not self.can_cut:
            raise TrtcalError(f"{self.where}: a model with control flow (If, Loop, Scan) is not cut")
        plan = variant if hasattr(variant, "acts") else self.plan(variant)
        if keep is None:
            keep = self.cone([plan], outputs)
        return self._build([plan], keep=keep, scales_as_inputs=False)

    def cut_inputs(self, keep: set[int]) -> list[str]:
        """The tensors a model of the nodes ``keep`` (a :meth:`cone`) reads from the base run:
        what they read and do not compute, constants and graph inputs aside."""
        g = self.graph
        produced = {o for i in keep for o in g.nodes[i].output if o}
        out = []
        for i in sorted(keep):
            for name in g.nodes[i].input:
                if name and name not in produced and not g.is_const(name) and name not in g.inputs:
                    out.append(name)
        return list(dict.fromkeys(out))

    def cone(self, plans: list, outputs: Iterable[str]) -> set[int]:
        """The nodes a cut model of ``plans`` runs: those whose inputs some plan quantizes
        differently from the base, their descendants that lead to ``outputs``, and the producers
        that must be recomputed with them (module doc)."""
        g = self.graph
        base = self._slots(self.base)
        changed = set()
        for plan in plans:
            slots = self._slots(plan)
            for use in set(slots) | set(base):
                a, b = slots.get(use), base.get(use)
                if (a is None) != (b is None) or (a is not None and a[0] == "act" and
                                                  (a[1:] != b[1:] or a[2].tobytes() != b[2].tobytes())):
                    changed.add(use[0])
        down, stack = set(), list(changed)
        while stack:
            i = stack.pop()
            if i in down:
                continue
            down.add(i)
            for out in g.nodes[i].output:
                stack.extend(self.consumers.get(out, []))
        needed, stack = set(), [g.producer[o] for o in outputs if o in g.producer]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            stack.extend(g.producer[n] for n in g.nodes[i].input if n in g.producer)
        keep = down & needed
        # recompute producers ONNX Runtime could fuse across the cut, and constant-only tensors
        slots = [self._slots(p) for p in plans]
        stack = sorted(keep)
        while stack:
            i = stack.pop()
            node = g.nodes[i]
            for k, name in enumerate(node.input):
                p = g.producer.get(name)
                if not name or p is None or p in keep:
                    continue
                direct = all((i, k) not in s for s in slots)  # read as is, not through a Q/DQ
                users = [c for c in self.consumers.get(name, [])]
                absorbs = (node.op_type in ABSORBING_OPS or
                           g.nodes[p].op_type in _ABSORBED_BY.get(node.op_type, ()))
                if g.from_constants(name) or (direct and len(users) == 1 and absorbs):
                    keep.add(p)
                    stack.append(p)
        return keep

    def _weight_nodes(self, key, names):
        """The initializers and DequantizeLinear of a planned weight (quantized once, reused)."""
        from onnx import helper, numpy_helper

        from trtcal.core.weight_scales import per_channel_int8
        from trtcal.onnx import qdq as Q

        if key not in self._weights:
            name, axis = key
            plan = self._all_weights[key]
            amax, _ = Q._weight_amax(plan, self.weight_method, self.weight_scales)
            bits = self.weight_bits.get(name, 8)
            qw, scale, _zero = per_channel_int8(Q._weight_array(plan, self.weight_values), axis, amax, bits)
            self._weights[key] = (qw, scale, bits)
        qw, scale, bits = self._weights[key]
        name, axis = key
        base = f"{name}_axis{axis}" if sum(1 for n, _a in self._all_weights if n == name) > 1 else name
        qw_name, s_name = names.fresh(f"{base}_quantized"), names.fresh(f"{base}_scale")
        z_name, dq_out = names.fresh(f"{base}_zero_point"), names.fresh(f"{base}_dequantized")
        if bits == 4:
            int4 = Q._ACT_TYPES[(4, False)][1]
            codes = [helper.make_tensor(qw_name, int4, qw.shape, qw.reshape(-1).tolist()),
                     helper.make_tensor(z_name, int4, scale.shape, [0] * scale.size)]
        else:
            codes = [numpy_helper.from_array(qw, qw_name), numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name)]
        inits = [codes[0], numpy_helper.from_array(scale.astype(np.float32), s_name), codes[1]]
        dq = helper.make_node("DequantizeLinear", [qw_name, s_name, z_name], [dq_out],
                              name=names.fresh(f"{base}_DequantizeLinear"), **({} if axis is None else {"axis": int(axis)}))
        return inits, dq, dq_out

    def _build(self, plans: list, *, keep: set[int] | None, scales_as_inputs: bool) -> VariantModel:
        from onnx import TensorProto, helper, numpy_helper

        from trtcal.onnx import qdq as Q

        g, n_var = self.graph, len(plans)
        nodes = range(len(g.nodes)) if keep is None else sorted(keep)
        inside = set(nodes)
        self._all_weights = {}
        for p in plans:
            self._all_weights.update(p.weights)
        slots = [self._slots(p) for p in plans]
        uses = sorted({u for s in slots for u in s if u[0] in inside})
        act_reads: list[dict] = [{} for _ in plans]  # per variant: tensor -> its read
        first_use: dict = {}  # weight -> the first node (of the model) that reads it
        for j, s in enumerate(slots):
            for use, r in s.items():
                if r[0] == "act":
                    act_reads[j].setdefault(r[1], r)
                elif use[0] in inside:
                    first_use[r[1]] = min(first_use.get(r[1], use[0]), use[0])
        from trtcal.onnx.model import Names

        names = Names(self.model)
        before: dict[int, list] = {}
        after: dict[int, list] = {}
        at_start: list = []
        inits: list = []
        inputs: list = []
        switches: dict[str, np.ndarray] = {}
        flag_of: dict[bytes, str] = {}

        def place(tensor: str, new: list) -> None:
            p = g.producer.get(tensor)
            (after.setdefault(p, []) if p is not None and p in inside else at_start).extend(new)

        def flag(vector: np.ndarray) -> str:
            key = vector.tobytes()
            if key not in flag_of:
                flag_of[key] = names.fresh("qdq_variant_switch")
                inputs.append(helper.make_tensor_value_info(flag_of[key], TensorProto.BOOL, []))
                switches[flag_of[key]] = vector.copy()
            return flag_of[key]

        act_out: dict[str, str] = {}  # activation -> its DQ output
        weight_out: dict = {}  # (name, axis) -> (its DQ output, first node)
        where_out: dict = {}
        rewire: dict[tuple[int, int], str] = {}
        for use in uses:
            reads = [s.get(use) for s in slots]
            first = next(r for r in reads if r is not None)
            on = np.array([r is not None for r in reads])
            tensor = g.nodes[use[0]].input[use[1]]
            if first[0] == "act":
                if any(r is not None and r[3] != first[3] for r in reads):
                    raise TrtcalError(f"tensor {tensor!r}: the variants quantize it to different types")
                if tensor not in act_out:
                    bits, unsigned = first[3]
                    elem = Q._ACT_TYPES[(bits, unsigned)][1]
                    s_name, z_name = names.fresh(f"{tensor}_scale"), names.fresh(f"{tensor}_zero_point")
                    if scales_as_inputs:
                        inputs.append(helper.make_tensor_value_info(s_name, TensorProto.FLOAT, []))
                        scales = [a[tensor][2] if tensor in a else np.float32(1.0) for a in act_reads]
                        switches[s_name] = np.array(scales, dtype=np.float32)
                    else:
                        values = {a[tensor][2].tobytes() for a in act_reads if tensor in a}
                        if len(values) > 1:
                            raise TrtcalError(f"tensor {tensor!r}: the variants give it different ranges; "
                                              "build with scales_as_inputs=True")
                        inits.append(numpy_helper.from_array(np.array(first[2], dtype=np.float32), s_name))
                    inits.append(helper.make_tensor(z_name, elem, [], [0]))
                    q_out, dq_out = names.fresh(f"{tensor}_quantized"), names.fresh(f"{tensor}_dequantized")
                    place(tensor, [
                        helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out],
                                         name=names.fresh(f"{tensor}_QuantizeLinear")),
                        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                         name=names.fresh(f"{tensor}_DequantizeLinear"))])
                    act_out[tensor] = dq_out
                source = act_out[tensor]
            else:
                key = first[1]
                if key not in weight_out:
                    w_inits, dq, dq_out = self._weight_nodes(key, names)
                    inits.extend(w_inits)
                    wfirst = first_use[key]
                    before.setdefault(wfirst, []).append(dq)
                    weight_out[key] = (dq_out, wfirst)
                source = weight_out[key][0]
            if on.all():
                rewire[use] = source
                continue
            wkey = (source, on.tobytes())
            if wkey not in where_out:
                out = names.fresh(f"{tensor}_switched")
                node = helper.make_node("Where", [flag(on), source, tensor], [out], name=names.fresh(f"{tensor}_Where"))
                if first[0] == "act":
                    place(tensor, [node])
                else:
                    before.setdefault(weight_out[first[1]][1], []).append(node)
                where_out[wkey] = out
            rewire[use] = where_out[wkey]

        new_nodes = list(at_start)
        for i in nodes:
            node = g.nodes[i]
            if any((i, k) in rewire for k in range(len(node.input))):
                node = _copy_node(node)
                for k in range(len(node.input)):
                    if (i, k) in rewire:
                        node.input[k] = rewire[(i, k)]
            new_nodes += before.get(i, []) + [node] + after.get(i, [])

        produced = {o for n in new_nodes for o in n.output if o}
        read = [name for n in new_nodes for name in n.input if name and name not in produced]
        init_names = {t.name for t in inits}
        graph_inits = {t.name: t for t in self.model.graph.initializer}
        graph_inputs = {vi.name: vi for vi in self.model.graph.input}
        cut_inputs, seen = [], set()
        for name in read:
            if name in seen or name in init_names or name in inputs_named(inputs):
                continue
            seen.add(name)
            if name in graph_inits and name not in graph_inputs:
                inits.append(graph_inits[name])
            elif name in graph_inputs:
                inputs.append(graph_inputs[name])
            else:  # a tensor of the base variant's run
                cut_inputs.append(name)
                inputs.append(self._value_info(name))
        if keep is None:  # the whole graph: its inputs, in order, first
            outputs = list(self.model.graph.output)
            declared = [vi for vi in self.model.graph.input if vi.name not in graph_inits]
            inputs = declared + [vi for vi in inputs if vi.name not in inputs_named(declared)]
        else:
            outputs = [vi for vi in self.model.graph.output if vi.name in produced]
        graph = helper.make_graph(new_nodes, self.model.graph.name or "qdq_variants", inputs, outputs,
                                  initializer=inits,
                                  value_info=[vi for vi in self.model.graph.value_info if vi.name in produced])
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
        for f in self.model.functions:
            model.functions.append(f)
        return VariantModel(model, switches, n_var, cut_inputs, [vi.name for vi in outputs])

    def _value_info(self, name: str):
        """A graph input declaring ``name`` as the full model's shape inference sees it."""
        import onnx

        if self._shapes is None:
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
            except Exception:
                inferred = self.model
            self._shapes = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        if name in self._shapes:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(self._shapes[name])
            return vi
        elem = self.graph.types.get(name) or 1
        return onnx.helper.make_tensor_value_info(name, elem, None)

    # ------------------------------------------------------------------ the base run

    def base_tensors(self, base_model, tensors: Iterable[str], batches: list[dict], session_factory=None,
                     *, session=None) -> list[dict]:
        """``tensors`` of ``base_model`` (the base variant as written, a ModelProto) on each of
        ``batches``, from one session over it with them exposed: ``session`` (from
        :meth:`base_session`), else one made by ``session_factory(model)``."""
        tensors = list(dict.fromkeys(tensors))
        if not tensors or not batches:
            return [{} for _ in batches]
        if session is None:
            session = self.base_session(base_model, tensors, session_factory)
        return [dict(zip(tensors, session.run(tensors, b))) for b in batches]

    @staticmethod
    def base_session(base_model, tensors: Iterable[str], session_factory):
        """A session over ``base_model`` with ``tensors`` exposed as outputs (a copy is exposed)."""
        from trtcal.ort.runner import add_outputs

        return session_factory(add_outputs(copy.deepcopy(base_model), list(dict.fromkeys(tensors))))


def inputs_named(inputs: list) -> set[str]:
    return {vi.name for vi in inputs}


def _copy_node(node):
    import onnx

    new = onnx.NodeProto()
    new.CopyFrom(node)
    return new
