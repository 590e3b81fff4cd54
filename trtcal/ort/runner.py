"""Running an FP32 ONNX model in ONNX Runtime with every tensor to calibrate exposed.

The adapter between ONNX Runtime and the pure core: it decides which tensors can be calibrated
(float graph inputs and node outputs, by their ONNX names, which TensorRT uses too), refuses
models it cannot calibrate, adds the tensors as graph outputs and runs batches. Exposed tensors
are graph outputs, so ONNX Runtime's optimisations can neither rename nor fuse them away.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.onnx.model import load_model, model_tensors, refuse_quantized

CONTROL_FLOW_OPS = {"If", "Loop", "Scan"}

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_, "tensor(int16)": np.int16,
}


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and shape (ints for fixed dimensions, str/None for dynamic).

    ``batch_axis``: the axis samples are stacked on (0 unless ``--batch-axis`` says otherwise;
    None for a 0-d input or one fed whole with every batch). ``model_shape``: the model's own
    shape when ``--shapes`` fixed some of its dynamic dimensions in ``shape`` (see
    :func:`trtcal.data.sources.configure_inputs`).
    """

    name: str
    dtype: type
    shape: tuple
    batch_axis: int | None = 0
    model_shape: tuple | None = None

    def __post_init__(self) -> None:
        if not self.shape and self.batch_axis is not None:  # a scalar has no batch axis
            object.__setattr__(self, "batch_axis", None)

    @property
    def fixed_batch(self) -> int | None:
        """The batch dimension when the model fixes it, else None (dynamic, or no batch axis)."""
        if self.batch_axis is None or self.batch_axis >= len(self.shape):
            return None
        dim = self.shape[self.batch_axis]
        return dim if isinstance(dim, int) and dim > 0 else None


def cpu_session(model, source: str, *, threads: int | None = None, extended: bool = False,
                int8_kernels: bool = True, spinning: bool = True, arena: bool = True):
    """An ONNX Runtime CPU session over ``model`` (a ``ModelProto`` or a path), quiet, with a
    one-line :class:`TrtcalError` naming ``source`` when ONNX Runtime cannot load it.
    ``extended``: optimise only up to ``ORT_ENABLE_EXTENDED`` (what calibration runs).
    ``int8_kernels=False``: keep Q/DQ pairs as they are written (quantize, dequantize, float op)
    instead of fusing them into ONNX Runtime's integer kernels. That is the arithmetic TensorRT's
    int8 computes (exact int32 accumulation), to float rounding, on every CPU; ONNX Runtime's own
    u8s8 kernels saturate in 16 bits on x86 CPUs without VNNI, which on EfficientNet-Lite0 turns a
    17 dB model into a 2.4 dB one (measured on an AVX2 EPYC). ``spinning=False``: idle worker
    threads sleep instead of spinning, leaving the core to other work of this process.
    ``arena=False``: no CPU memory arena (for many short-lived sessions in one process: their
    arenas' memory was not given back, 250 MB a session on all-MiniLM-L6-v2's SmoothQuant search)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not arena:
        options.enable_cpu_mem_arena = False
    if extended:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if not int8_kernels:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # errors come back as exceptions, turned into one line below
    if threads:
        options.intra_op_num_threads = threads
    payload = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    try:
        return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for models it cannot run
        raise TrtcalError(f"{source}: ONNX Runtime cannot run the model: {str(exc).splitlines()[0][:200]}") from None


def add_outputs(model, names) -> object:
    """Make ``names`` graph outputs of ``model`` (in place; names already inputs or outputs are
    skipped), so that ONNX Runtime returns them and cannot fuse them away. Returns ``model``."""
    import onnx

    existing = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
    return model


def input_specs(session, names=None) -> list[InputSpec]:
    """The session's inputs (those in ``names``, when given) as :class:`InputSpec`."""
    return [InputSpec(i.name, _ORT_DTYPES.get(i.type, np.float32),
                      tuple(d if isinstance(d, int) else (d or None) for d in i.shape))
            for i in session.get_inputs() if names is None or i.name in names]


@dataclass
class Plan:
    """What a calibration run will and will not calibrate."""

    calibrated: list[str] = field(default_factory=list)  # float tensors, in graph order (inputs first)
    skipped: dict[str, str] = field(default_factory=dict)  # tensor -> why it is not calibrated
    notes: list[str] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # constant MatMul inputs, by name
    #: calibrated tensors not exposed: their histogram follows from another's (see trtcal.onnx.derived)
    derived: dict = field(default_factory=dict)


def check_calibratable(model, source: str) -> list[str]:
    """Refuse quantized models; return notes about what cannot be calibrated (subgraphs)."""
    refuse_quantized(model, source)
    notes = []
    for node in model.graph.node:
        if node.op_type in CONTROL_FLOW_OPS:
            notes.append(f"{node.op_type} node {node.name or node.output[0]!r}: tensors inside its subgraphs "
                         "are not calibrated (only its outputs are)")
    return notes


def matmul_constants(model) -> dict[str, np.ndarray]:
    """Float initializers and Constant-node outputs that feed a MatMul, with their values.

    TensorRT's ONNX parser turns them into Constant layers whose outputs (named like the
    initializer) want a range in implicit INT8, like any activation.
    """
    from onnx import numpy_helper

    from trtcal.onnx.model import constant_tensors

    values = constant_tensors(model)
    out: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            if name in values and name not in out:
                array = numpy_helper.to_array(values[name])
                if array.dtype.kind == "f":
                    out[name] = array
    return out


def plan_tensors(model, source: str, *, include_constants: bool = False) -> Plan:
    """Which tensors of ``model`` get a range (with ``include_constants``, also the constant
    inputs of MatMul, calibrated from their values)."""
    plan = Plan(notes=check_calibratable(model, source))
    tensors = model_tensors(model)
    plan.calibrated = list(tensors.activations) + list(tensors.untyped)  # untyped: decided at run time
    for name in tensors.non_float:
        plan.skipped[name] = "not a float tensor"
    if include_constants:
        plan.constants = matmul_constants(model)
        plan.calibrated = [n for n in plan.calibrated if n not in plan.constants] + list(plan.constants)
    return plan


#: Elementwise operators that, with a constant operand, mean a model scales its input itself.
SCALING_OPS = {"Mul", "Div", "Sub", "Add"}


def scaled_inputs(model) -> set[str]:
    """Graph inputs whose every consumer is a Mul/Div/Sub/Add with a constant other operand: the
    model normalises them itself (e.g. ``(x - 127.5) / 128``), so raw 0..255 pixels are right there."""
    from trtcal.onnx.model import constant_tensors

    constants = set(constant_tensors(model))
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = set()
    for vi in model.graph.input:
        nodes = consumers.get(vi.name, [])
        if nodes and all(n.op_type in SCALING_OPS and len(n.input) == 2
                         and any(i in constants for i in n.input if i != vi.name) for n in nodes):
            out.add(vi.name)
    return out


class Runner:
    """An ONNX Runtime CPU session over ``model`` that returns every planned tensor per batch."""

    def __init__(self, model_path: str | os.PathLike, *, threads: int | None = None,
                 include_constants: bool = False, derive: bool = True):
        from trtcal.onnx.derived import find_derived

        self.source = str(model_path)
        model = load_model(model_path, load_weights=True)
        self.plan = plan_tensors(model, self.source, include_constants=include_constants)
        if derive:
            self.plan.derived = find_derived(model, [n for n in self.plan.calibrated if n not in self.plan.constants])
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in initializers]
        #: inputs the model normalises itself (see :func:`scaled_inputs`)
        self.scaled_inputs = scaled_inputs(model)
        pads_inputs = [d.pads_input for d in self.plan.derived.values() if d.pads_input]
        add_outputs(model, [n for n in self.plan.calibrated if n not in self.plan.constants
                            and n not in self.plan.derived] + pads_inputs)
        # no spinning: idle ONNX Runtime threads leave their cores to the histogram threads
        self.session = cpu_session(model, self.source, threads=threads, extended=True, spinning=False)
        self.inputs = input_specs(self.session, self.input_names)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._wanted = set(self.plan.calibrated) - set(self.plan.derived)
        #: zeros each derived pad added in the last batch :meth:`run` produced (tensor -> count)
        self.last_padding: dict[str, int] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
        """Run one batch; yield ``(tensor name, array)`` for every float tensor to calibrate
        (derived tensors excepted: see :attr:`last_padding` and :mod:`trtcal.onnx.derived`)."""
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            shapes = ", ".join(f"{n} {list(np.shape(a))}" for n, a in feeds.items())
            raise TrtcalError(f"{self.source}: ONNX Runtime failed on a batch ({shapes}): "
                              f"{str(exc).splitlines()[0][:200]}") from None
        values = dict(zip(self.output_names, outputs))
        self.last_padding = {}
        for d in self.plan.derived.values():
            if d.kind == "pad":
                source = feeds[d.source] if d.source in feeds else values[d.source]
                self.last_padding[d.tensor] = d.padded_zeros(np.shape(source), values.get(d.pads_input))
        for name in self.input_names:
            if name in self._wanted:
                yield name, feeds[name]
        del values
        for name, value in zip(self.output_names, outputs):
            if name not in self._wanted:
                continue
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                self._wanted.discard(name)
                self.plan.calibrated.remove(name)
                self.plan.skipped[name] = "not a float tensor"
                continue
            yield name, value


def first_samples(model_path, data, *, samples: int = 64, batch_size: int | None = None,
                  preprocess=None, batch_axes: dict | None = None, shapes: dict | None = None,
                  allow_nonfinite: bool = False) -> list[dict]:
    """The first ``samples`` calibration samples of ``data`` as checked input batches.
    ``batch_axes``, ``shapes``: as for :func:`trtcal.data.sources.configure_inputs`;
    ``allow_nonfinite``: let NaN/Inf inputs through (refused otherwise)."""
    return first_batches(model_path, data, samples=samples, batch_size=batch_size, preprocess=preprocess,
                         batch_axes=batch_axes, shapes=shapes, allow_nonfinite=allow_nonfinite)[0]


def first_batches(model_path, data, *, samples: int = 64, batch_size: int | None = None,
                  preprocess=None, batch_axes: dict | None = None, shapes: dict | None = None,
                  allow_nonfinite: bool = False, keep_batch=None) -> tuple[list[dict], list[InputSpec]]:
    """:func:`first_samples`, and the model's inputs (:class:`InputSpec`, batch axes applied) that
    say how to count and slice those batches (:func:`trtcal.data.sources.samples_in`).
    ``keep_batch``: a function of the batch index; batches it rejects are skipped."""
    from trtcal.data import open_data
    from trtcal.data.sources import check_batch, configure_inputs, samples_in, take

    specs = input_specs(cpu_session(model_path, str(model_path)))
    specs, batch_size = configure_inputs(specs, batch_axes=batch_axes, shapes=shapes, batch_size=batch_size)
    # an array named "labels" beside the inputs (an evaluation set) is not an input
    source = open_data(data, specs, batch_size=batch_size, preprocess=preprocess, ignore={"labels"})
    out, seen = [], 0
    for index, batch in enumerate(source):
        if keep_batch is not None and not keep_batch(index):
            continue
        batch = check_batch(batch, specs, f"{source.description}: batch {index}", finite=not allow_nonfinite)
        n = samples_in(batch, specs)
        take_n = min(n, samples - seen)
        out.append(take(batch, specs, 0, take_n))
        seen += take_n
        if seen >= samples:
            break
    return out, specs
