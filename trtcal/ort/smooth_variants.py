"""Every SmoothQuant candidate of a model in ONE Q/DQ model, its factors, ranges and weights fed as inputs.

SmoothQuant's search (:func:`trtcal.ort.smoothquant.search_smoothing`) scores a few candidates per
smoothable activation at the model's outputs: a per-channel factor ``s`` and the range of ``X / s``.
Written out, each candidate is a new Q/DQ model to serialise and load (on all-MiniLM-L6-v2, 121
candidates: 91 of the search's 226 s went to writing and loading). :class:`SmoothVariants` writes
one model that runs all of them:

- every activation of ``groups`` is divided by a ``Mul`` whose ``1/s`` is a graph input (ones: not
  smoothed), also where :func:`trtcal.onnx.smooth.apply_smoothing` would fold it into a
  LayerNormalization (the same values, to float rounding);
- the Q/DQ scale of ``X / s`` is a graph input;
- its readers (MatMul/Gemm) read their weights from graph inputs: ``diag(s) W`` fake-quantized per
  output channel by the Q/DQ writer's own rule (max per channel, :func:`trtcal.core.weight_scales.per_channel_int8`:
  exactly the values its ``DequantizeLinear`` gives), or ``diag(s) W`` itself where the placement
  leaves the weight in float.

Every other tensor is placed and quantized as :func:`trtcal.onnx.qdq.write_qdq` does with ``ranges``.
Contract: a candidate's outputs equal those of ``write_qdq(apply_smoothing(model, factors).model,
ranges)`` to float rounding (not bit for bit: the weights are inputs, not constants ONNX Runtime
can pre-pack, and a Mul replaces a folded LayerNormalization), which a later quantizer can turn into
one step; the search's winner is written and scored as a real model afterwards.

The search decides the activations in graph order, so when it reaches one, nothing upstream of its
``Mul`` changes any more: :class:`Suffix` is the model of the nodes downstream of it, and
:class:`SuffixRuns` feeds each suffix the tensors it reads from upstream, known at the current
feeds (one run of the whole model, then what each accepted candidate's suffix run returned). A candidate then costs
its suffix's work only: on PP-OCRv4 rec, whose attention layers sit after a convolutional
backbone, a fraction of the model's. Models with control flow are not cut (:func:`can_cut`).
"""

from __future__ import annotations

import numpy as np

from trtcal.core.errors import TrtcalError


class SmoothVariants:
    """One parametric Q/DQ model for SmoothQuant candidates (module doc). ``model``: the FP32
    ``ModelProto`` (weights loaded); ``groups``: :class:`trtcal.onnx.smooth.SmoothGroup` s whose
    activations the placement quantizes; ``ranges``: ``{tensor: Range}`` as for ``write_qdq``."""

    def __init__(self, model, groups, ranges: dict, *, target: str = "tensorrt", attention: str = "int8"):
        from onnx import helper, numpy_helper

        from trtcal.onnx.qdq import write_qdq
        from trtcal.onnx.smooth import apply_smoothing

        self.groups = {g.tensor: g for g in groups}
        ones = {g.tensor: np.ones(g.channels) for g in groups}
        smoothed = apply_smoothing(model, ones, groups, fold=False)
        self.tensors = dict(smoothed.tensors)  # activation -> the Mul's output its readers read
        placed_ranges = dict(ranges)
        for x, t in self.tensors.items():
            if x not in ranges:
                raise TrtcalError(f"smoothquant: activation {x!r} has no range")
            placed_ranges[t] = ranges[x]
        placed = write_qdq(smoothed.model, placed_ranges, target=target, attention=attention, check_onnxruntime=False)
        m = placed.model
        graph = m.graph
        inits = {t.name: t for t in graph.initializer}
        produced_by = {o: n for n in graph.node for o in n.output}
        readers_of: dict[str, list] = {}
        for n in graph.node:
            for name in n.input:
                readers_of.setdefault(name, []).append(n)
        src_inits = {t.name: t for t in model.graph.initializer}
        self._inverse: dict[str, str] = {}  # activation -> input name of 1/s
        self._scale: dict[str, str] = {}  # activation -> input name of the smoothed tensor's Q/DQ scale
        self._range_scale: dict[str, np.ndarray] = {}  # activation -> that scale as written from ``ranges``
        self._weights: dict[str, list] = {}  # activation -> [(input name, reader, W, quantized?, per-channel axis)]
        new_inputs, drop = [], set()
        for x, t in self.tensors.items():
            mul = produced_by[t]
            inv = mul.input[1]
            self._inverse[x] = inv
            drop.add(inv)
            new_inputs.append(helper.make_tensor_value_info(inv, 1, [self.groups[x].channels]))
            quant = [n for n in readers_of.get(t, []) if n.op_type == "QuantizeLinear"]
            if len(quant) != 1:
                raise TrtcalError(f"smoothquant: the Q/DQ placement does not quantize {x!r} once")
            s_name = quant[0].input[1]
            self._scale[x] = s_name
            self._range_scale[x] = np.asarray(numpy_helper.to_array(inits[s_name]), np.float32)
            drop.add(s_name)
            new_inputs.append(helper.make_tensor_value_info(s_name, 1, []))
            self._weights[x] = []
        # The readers: the Q/DQ writer and apply_smoothing add nodes but keep every MatMul/Gemm in its order.
        position = {i: k for k, i in enumerate(i for i, n in enumerate(model.graph.node)
                                               if n.op_type in ("MatMul", "Gemm"))}
        written = _matmuls(m)
        for x in self.tensors:
            g = self.groups[x]
            for i, w in zip(g.readers, g.weights):
                node = written[position[i]]
                dq = produced_by.get(node.input[1])
                quantized = dq is not None and dq.op_type == "DequantizeLinear"
                axis = next((a.i for a in dq.attribute if a.name == "axis"), None) if quantized else None
                feed = f"{w}_smoothquant_weight"
                node.input[1] = feed
                arr = numpy_helper.to_array(src_inits[w])
                new_inputs.append(helper.make_tensor_value_info(feed, 1, list(arr.shape)))
                self._weights[x].append((feed, node, arr, quantized, axis))
        del graph.initializer[:]
        graph.initializer.extend(t for name, t in inits.items() if name not in drop)
        graph.input.extend(new_inputs)
        _drop_dead(m)
        self.model = m
        self.base = {}
        for x in self.tensors:
            self.base.update(self.group_feeds(x, np.ones(self.groups[x].channels), None))

    def group_feeds(self, x: str, s: np.ndarray, amax: float | None) -> dict[str, np.ndarray]:
        """The inputs that give activation ``x`` the factor ``s`` and the range ``amax`` of ``x / s``
        (None: its given range)."""
        from trtcal.core.ranges import Range
        from trtcal.core.weight_scales import per_channel_int8
        from trtcal.onnx.smooth import scaled_weight

        s = np.asarray(s, dtype=np.float64).reshape(-1)
        scale = self._range_scale[x] if amax is None else float(Range.symmetric(amax).scale())
        feeds = {self._inverse[x]: (1.0 / s).astype(np.float32), self._scale[x]: np.asarray(scale, np.float32)}
        for feed, node, arr, quantized, axis in self._weights[x]:
            w = scaled_weight(node, arr, s)
            if quantized:  # what the writer's DequantizeLinear gives: codes times the per-channel scale
                q, sc, _ = per_channel_int8(w, axis)
                shape = [1] * w.ndim
                if axis is not None:
                    shape[axis] = -1
                w = q.astype(np.float32) * sc.astype(np.float32).reshape(shape)
            feeds[feed] = np.ascontiguousarray(w, dtype=np.float32)
        return feeds


def _matmuls(model) -> list:
    return [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]


def _drop_dead(model) -> None:
    """Remove nodes and initializers nothing reads (the weights' DequantizeLinear left behind)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for n in graph.node for name in n.input} | outputs
        keep = [n for n in graph.node if any(o in read for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    read = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)


#: Operators whose subgraphs may read outer tensors implicitly: models with them are not cut.
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


class Suffix:
    """The part of a :class:`SmoothVariants` model that one activation's candidates change: every
    node downstream of its ``Mul`` (the factor's), as a model of its own. Its inputs are the
    tensors those nodes read from upstream (:attr:`crossing`, fed from one run of the whole model
    with the current feeds: upstream nothing changes between the activation's candidates) and the
    parametric and graph inputs they read (:attr:`inputs`); scored outputs it does not compute
    (:attr:`outside`) are the whole model's, the same for every candidate."""

    def __init__(self, variants: SmoothVariants, x: str, outputs: list[str]):
        graph = variants.model.graph
        start = variants.tensors[x]
        first = next(i for i, n in enumerate(graph.node) if start in n.output)
        consumers: dict[str, list[int]] = {}
        for i, n in enumerate(graph.node):
            for name in n.input:
                consumers.setdefault(name, []).append(i)
        keep, todo = {first}, [first]
        while todo:
            for out in graph.node[todo.pop()].output:
                for j in consumers.get(out, []):
                    if j not in keep:
                        keep.add(j)
                        todo.append(j)
        self._variants = variants
        self._keep = keep
        made = {o for i in keep for o in graph.node[i].output}
        inits = {t.name for t in graph.initializer}
        graph_inputs = {vi.name for vi in graph.input}
        read: list[str] = []
        for i in sorted(keep):
            for name in graph.node[i].input:
                if name and name not in made and name not in inits and name not in read:
                    read.append(name)
        self.made = made
        self.crossing = [r for r in read if r not in graph_inputs]
        self.inputs = [r for r in read if r in graph_inputs]
        self.produced = [o for o in outputs if o in made]
        self.outside = [o for o in outputs if o not in made]
        self.fraction = len(keep) / max(1, len(graph.node))

    def model(self, dtypes: dict[str, int], extra: list[str] = ()):
        """The suffix as an ONNX model; ``dtypes``: the ONNX element type of each crossing tensor;
        ``extra``: tensors it makes to return after the scored outputs."""
        import onnx
        from onnx import helper

        source = self._variants.model
        graph = source.graph
        nodes = [n for i, n in enumerate(graph.node) if i in self._keep]
        used = {name for n in nodes for name in n.input}
        sub = helper.make_graph(
            nodes, f"{graph.name}_suffix",
            [vi for vi in graph.input if vi.name in self.inputs]
            + [helper.make_tensor_value_info(c, dtypes[c], None) for c in self.crossing],
            [onnx.ValueInfoProto(name=o) for o in list(self.produced) + [e for e in extra if e not in self.produced]],
            [t for t in graph.initializer if t.name in used])
        out = helper.make_model(sub, opset_imports=source.opset_import)
        out.ir_version = source.ir_version
        return out


class SuffixRuns:
    """Scores SmoothQuant's candidates activation by activation, in ``order``, on suffix models.

    The tensors every suffix reads from upstream are known at the current feeds: once from one run
    of the whole model with them exposed, then, each time an activation's factor is accepted
    (:meth:`accept`), from the winning candidate's run of its suffix, which returns the ones it
    makes (upstream of it nothing changed). So the whole model runs once, and each activation costs its suffix's
    work per candidate, plus one run of it for the current state's score."""

    def __init__(self, variants: SmoothVariants, order: list[str], batches: list[dict], feeds: dict,
                 names: list[str]):
        import copy

        from trtcal.ort.runner import add_outputs, cpu_session

        self.batches, self.names = batches, names
        self.plans = {x: Suffix(variants, x, names) for x in order}
        self.order = list(order)
        wanted = list(dict.fromkeys(t for p in self.plans.values() for t in p.crossing + p.outside))
        whole = cpu_session(add_outputs(copy.deepcopy(variants.model), wanted),
                            "the SmoothQuant candidates' Q/DQ model", int8_kernels=False)
        self.known = [dict(zip(wanted, whole.run(wanted, {**b, **feeds}))) for b in batches]
        self._session = None

    def start(self, x: str) -> float:
        """Make activation ``x``'s suffix session; returns the share of the model's nodes it holds."""
        from onnx import helper

        from trtcal.ort.runner import cpu_session

        plan = self.plans[x]
        later = self.order[self.order.index(x) + 1:]
        self._extra = [t for t in dict.fromkeys(t for y in later for t in self.plans[y].crossing + self.plans[y].outside)
                       if t in plan.made and t not in plan.produced]
        dtypes = {c: helper.np_dtype_to_tensor_dtype(self.known[0][c].dtype) for c in plan.crossing}
        self._plan = plan
        self._session = None  # the last suffix's session goes first
        self._session = cpu_session(plan.model(dtypes, self._extra), "a SmoothQuant suffix model", int8_kernels=False,
                                    arena=False)
        return plan.fraction

    def run(self, trial: dict) -> list[list]:
        """The scored outputs (``names``) per batch with feeds ``trial``. The tensors of this run
        that later suffixes read are kept in :attr:`last` (for :meth:`accept`)."""
        plan = self._plan
        wanted = plan.produced + self._extra
        out, self.last = [], []
        for b, known in zip(self.batches, self.known):
            feed = {n: b[n] if n in b else trial[n] for n in plan.inputs}
            feed.update((c, known[c]) for c in plan.crossing)
            got = dict(zip(wanted, self._session.run(wanted, feed)))
            self.last.append({t: got[t] for t in wanted if t in known})
            out.append([got[n] if n in got else known[n] for n in self.names])
        return out

    def accept(self, kept: list[dict]) -> None:
        """A candidate won: ``kept`` is :attr:`last` of its run, the tensors later suffixes read."""
        for known, values in zip(self.known, kept):
            known.update(values)


def can_cut(model) -> bool:
    """Whether :class:`Suffix` models may be cut from ``model`` (no control flow: a subgraph may
    read outer tensors that no node input names)."""
    return not any(n.op_type in _CONTROL_FLOW for n in model.graph.node)
