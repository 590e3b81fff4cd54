"""``trtcal build``: an ONNX model to a TensorRT engine, with a provenance record beside it.

Paths, chosen from the model and the installed TensorRT (:mod:`trtcal.trt.version`):

- **implicit INT8** (TensorRT <= 10, a model without Q/DQ, ``int8=True``): a calibrator over the
  data (:mod:`trtcal.trt.calibrator`) or an existing cache, hand-set ranges applied with
  ``ITensor.set_dynamic_range``, tensors in the fallback list kept in float (their producing
  layers' precision and output types, with ``OBEY_PRECISION_CONSTRAINTS``).
- **explicit Q/DQ** (a model with QuantizeLinear/DequantizeLinear): a strongly typed network on
  TensorRT 10 and 11 and on TensorRT-RTX; the scales are the model's. On TensorRT <= 10,
  ``fp16=True`` builds it weakly typed with the INT8 and FP16 flags instead.
- **FP16** (TensorRT <= 10) and **FP32** builds.

On TensorRT 11 and TensorRT-RTX implicit INT8 does not exist: asking for it raises one message
pointing to ``trtcal qdq``.

Dynamic shapes get one optimization profile, from ``shapes`` (``--shapes``) or the model (a
dynamic batch axis: min 1, opt = max = the batch size); calibration runs at the OPT shape
(``set_calibration_profile``). Axes sharing a symbolic name are one dimension to TensorRT: a
profile that sizes them differently is refused with a message saying so.

Beside the engine, ``<engine>.trtcal.json`` records the TensorRT version, the GPU (name and
compute capability), the sha256 of the model, the cache and the calibration data, the profile,
and the trtcal version. A cache is reused only if its own record (written by the calibrator or by
``trtcal calibrate``) matches the model (and data), unless ``ignore_provenance``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trtcal.cache.format import format_version
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError
from trtcal.trt.calibrator import (
    ALGORITHM_OF_HEADER,
    ALGORITHMS,
    Calibrator,
    default_batch_size,
    onnx_inputs,
)

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class Profile:
    """One input's optimization-profile shapes."""

    min: tuple
    opt: tuple
    max: tuple

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass
class BuildResult:
    engine: Path
    record_path: Path
    record: dict
    mode: str
    backend: str
    profiles: dict[str, Profile] = field(default_factory=dict)
    calibration_shapes: dict[str, tuple] = field(default_factory=dict)
    cache_read: Path | None = None
    cache_written: Path | None = None
    timing_cache: Path | None = None
    warnings: list[str] = field(default_factory=list)
    trt_warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- pure helpers


def _dims(text: str, where: str) -> tuple:
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError:
        raise TrtcalError(f"{where}: {text!r} is not a shape such as 8x3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise TrtcalError(f"{where}: {text!r}: every dimension must be a positive integer")
    return dims


def parse_shapes(texts: Sequence[str] | None) -> dict[str, tuple[tuple, tuple, tuple]]:
    """``NAME:MIN,OPT,MAX`` or ``NAME:SHAPE`` (min = opt = max), shapes as ``8x3x224x224``; the
    name is everything before the last ``:``."""
    out: dict[str, tuple[tuple, tuple, tuple]] = {}
    for text in texts or ():
        name, sep, rest = str(text).rpartition(":")
        where = f"--shapes {text!r}"
        if not sep or not name:
            raise TrtcalError(f"{where}: expected NAME:MIN,OPT,MAX or NAME:SHAPE (e.g. images:1x3x224x224,8x3x224x224,"
                              "32x3x224x224)")
        parts = [_dims(p, where) for p in rest.split(",")]
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise TrtcalError(f"{where}: give one shape or three (MIN,OPT,MAX), not {len(parts)}")
        if len({len(p) for p in parts}) != 1:
            raise TrtcalError(f"{where}: MIN, OPT and MAX must have the same rank")
        lo, opt, hi = parts
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise TrtcalError(f"{where}: need MIN <= OPT <= MAX in every dimension")
        if name in out:
            raise TrtcalError(f"{where}: input {name!r} is given twice")
        out[name] = (lo, opt, hi)
    return out


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def plan_profiles(inputs: Sequence, shapes: dict | None = None, batch_size: int | None = None) -> dict[str, Profile]:
    """The optimization profile of every input (static inputs too: min = opt = max = its shape).

    Given ``shapes`` must fit the model's rank and fixed dimensions. Otherwise a dynamic batch
    axis (axis 0) becomes min 1, opt = max = ``batch_size`` (default 1); other dynamic axes
    need ``shapes``.
    """
    shapes = dict(shapes or {})
    names = [spec.name for spec in inputs]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise TrtcalError(f"--shapes names {', '.join(map(repr, unknown))}, which the model has no input for "
                          f"(inputs: {', '.join(names)})")
    out = {}
    for spec in inputs:
        dims = spec.shape
        if spec.name in shapes:
            lo, opt, hi = shapes[spec.name]
            if len(opt) != len(dims):
                raise TrtcalError(f"--shapes for {spec.name!r}: rank {len(opt)}, but the model's input is "
                                  f"{_shape_text(dims)} (rank {len(dims)})")
            for axis, d in enumerate(dims):
                if isinstance(d, int) and not (lo[axis] == opt[axis] == hi[axis] == d):
                    raise TrtcalError(f"--shapes for {spec.name!r}: axis {axis} is fixed to {d} in the model "
                                      f"{_shape_text(dims)}")
            out[spec.name] = Profile(tuple(lo), tuple(opt), tuple(hi))
            continue
        dynamic = [axis for axis, d in enumerate(dims) if not isinstance(d, int)]
        if [a for a in dynamic if a != 0]:
            example = "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
            raise TrtcalError(f"input {spec.name!r} {_shape_text(dims)} has dynamic axes {dynamic}: give its profile "
                              f"with --shapes {spec.name}:MIN,OPT,MAX (e.g. {example} with numbers for N)")
        if dynamic:
            bs = batch_size or 1
            rest = tuple(dims[1:])
            out[spec.name] = Profile((1, *rest), (bs, *rest), (bs, *rest))
        else:
            out[spec.name] = Profile(tuple(dims), tuple(dims), tuple(dims))
    return out


def check_shared_dims(inputs: Sequence, profiles: dict[str, Profile], where: str = "the model") -> None:
    """Refuse a profile that gives axes with the same symbolic name different sizes.

    TensorRT takes dynamic axes that share a ``dim_param`` (within one input or across inputs) to
    be one dimension; paddle2onnx writes ``[-1, 3, ?, ?]``, so such a model cannot have H != W.
    TensorRT's own message for it is cut short; this one says what to do.
    """
    groups: dict[str, list[tuple[object, int]]] = {}
    for spec in inputs:
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str) and d and spec.name in profiles:
                groups.setdefault(d, []).append((spec, axis))
    for name, axes in groups.items():
        sizes = {(spec.name, axis): tuple(getattr(profiles[spec.name], k)[axis] for k in ("min", "opt", "max"))
                 for spec, axis in axes}
        if len(set(sizes.values())) < 2:
            continue
        one_input = len({spec.name for spec, _ in axes}) == 1
        label = {(spec.name, axis): f"axis {axis}" if one_input else f"input {spec.name!r} axis {axis}"
                 for spec, axis in axes}
        listed = [str(axis) for _, axis in axes] if one_input else list(label.values())
        which = ", ".join(listed[:-1]) + " and " + listed[-1]
        if one_input:
            which = f"input {axes[0][0].name!r} {_shape_text(axes[0][0].shape)}: axes {which}"
        given = ", ".join(f"{label[key]} {'/'.join(map(str, size))}" for key, size in sizes.items())
        raise TrtcalError(f"{where}: {which} share the dimension name {name!r}, which TensorRT takes for one "
                          f"dimension, but the profile gives them different sizes ({given}, as min/opt/max); give "
                          "them the same sizes in --shapes, or distinct names in the model (trtcal qdq writes its "
                          "Q/DQ models so; for another model use onnx.tools.update_model_dims)")


def read_tensor_list(path: str | os.PathLike) -> list[str]:
    """Tensor names from a text file (one per line, ``#`` starts a comment line) or a JSON list."""
    text = fileio.read_text(path, max_bytes=16 * 2**20, what="tensor list")
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrtcalError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise TrtcalError(f"{path}: expected a JSON list of tensor names (strings)")
    else:
        names = [line.strip() for line in text.splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise TrtcalError(f"{path}: names no tensors")
    return list(dict.fromkeys(names))


def model_has_qdq(model) -> bool:
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def default_engine_path(model: str | os.PathLike) -> Path:
    return Path("engines") / f"{Path(model).stem}.engine"


# ---------------------------------------------------------------------- TensorRT helpers


class _Logger:
    """A TensorRT logger that keeps errors and warnings (errors end up in trtcal's one-line
    message, warnings in the engine's record) and prints them, and info, only when verbose."""

    def __new__(cls, trt, verbose: bool = False):
        base = trt.ILogger

        class Logger(base):
            def __init__(self):
                base.__init__(self)
                self.errors: list[str] = []
                self.warnings: list[str] = []

            def log(self, severity, msg):
                level = str(getattr(severity, "name", severity)).rsplit(".", 1)[-1]
                if "ERROR" in level:
                    self.errors.append(str(msg))
                elif level == "WARNING":
                    self.warnings.append(str(msg))
                elif not (verbose and level in ("INFO", "VERBOSE")):
                    return
                if verbose:
                    import sys

                    sys.stderr.write(f"[TensorRT] {level}: {msg}\n")

        return Logger()


def _network_tensors(network) -> dict[str, object]:
    """Every tensor of the network by name: inputs, then layer outputs in layer order."""
    tensors = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        tensors[t.name] = t
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t is not None:
                tensors.setdefault(t.name, t)
    return tensors


def _producers(network) -> dict[str, tuple[object, int]]:
    out = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t is not None:
                out[t.name] = (layer, j)
    return out


def _parser_error(error) -> str:
    """One line from a parser error: the node, its operator, and what is wrong (without the
    source locations and the CUDA-driver noise of a machine without a GPU)."""
    try:
        desc, node, op = str(error.desc()), str(error.node_name()), str(error.node_operator())
    except Exception:  # an older parser without these accessors
        return _first_line(str(error), 400)
    lines = [line for line in desc.splitlines()
             if line.strip() and not line.startswith("Invalid Node") and "catchCudaError" not in line]
    text = re.sub(r" In \w+ at /\S+", "", "; ".join(lines) or desc)
    return _first_line((f"node {node!r} ({op}): " if node else "") + text, 400)


def _first_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


# ---------------------------------------------------------------------- the build


def build(model: str | os.PathLike, output: str | os.PathLike | None = None, *, int8: bool = False,
          fp16: bool = False, cache: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
          preprocess=None, batch_size: int | None = None, max_batches: int | None = None,
          algorithm: str | None = None, quantile: float = 0.9999, regression_cutoff: float = 1.0,
          save_cache: str | os.PathLike | None = None, overrides: str | os.PathLike | None = None,
          fallback: str | os.PathLike | None = None, timing_cache: str | os.PathLike | None = None,
          workspace_mb: int | None = None, shapes: dict | None = None, backend: str = "auto",
          ignore_provenance: bool = False, allow_nonfinite: bool = False, force: bool = False, verbose: bool = False,
          trt=None, device=None, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build ``model`` into an engine (default ``engines/<model stem>.engine``); see the module
    docstring. ``trt`` (a TensorRT module) and ``device`` (a
    :class:`~trtcal.trt.device.DeviceMemory`) replace the real ones in tests. ``log`` receives
    progress lines (the shapes used, what is calibrated) before the long build starts.
    ``allow_nonfinite``: feed NaN/Inf calibration inputs to TensorRT (refused otherwise)."""
    from trtcal.cache.provenance import sidecar_path, write_sidecar
    from trtcal.onnx.model import load_model
    from trtcal.trt.provenance import data_sha256, file_sha256
    from trtcal.trt.version import backend_from_module, load_backend

    say = log or (lambda message: None)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        say(f"warning: {message}")

    # ---- options that need no TensorRT
    if cache is not None and data is not None:
        raise TrtcalError("--cache and --data exclude each other: reuse a cache, or calibrate on data")
    if (cache is not None or data is not None) and not int8:
        raise TrtcalError("--cache and --data go with --int8")
    if workspace_mb is not None and workspace_mb < 1:
        raise TrtcalError(f"--workspace {workspace_mb}: must be at least 1 MB")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise TrtcalError(f"--algorithm {algorithm!r}: choose from {', '.join(ALGORITHMS)}")
    model = Path(model)
    onnx_model = load_model(model)
    qdq = model_has_qdq(onnx_model)
    out = Path(output) if output is not None else default_engine_path(model)
    inputs_to_check = [model] + [p for p in (cache, data, overrides, fallback) if p is not None]
    folders: list[Path] = []  # default output folders, made just before the build

    def check_output(path: Path, default: bool) -> None:
        if default and not path.parent.exists():
            folders.append(path.parent)
            return
        fileio.check_output(path, force=force, inputs=inputs_to_check)
        fileio.check_output(sidecar_path(path), force=force, inputs=inputs_to_check)

    check_output(out, output is None)
    if qdq and (cache is not None or data is not None):
        raise TrtcalError(f"{model}: has Q/DQ nodes, so its INT8 scales are in the model; leave out --cache/--data "
                          "(or build the FP32 model it came from with them)")
    if qdq and (overrides is not None or fallback is not None):
        raise TrtcalError(f"{model}: has Q/DQ nodes; --overrides and --fallback-list apply to implicit INT8 only: "
                          "set the ranges, or leave tensors unquantized, when making the Q/DQ model")
    if not qdq and not int8 and (overrides is not None or fallback is not None):
        raise TrtcalError("--overrides and --fallback-list go with --int8")
    if int8 and not qdq and cache is None and data is None:
        raise TrtcalError("--int8 needs calibration: --data PATH (calibrate with TensorRT) or --cache CACHE "
                          "(reuse a calibration cache)")
    if data is not None:
        default_cache = save_cache is None
        if default_cache:
            save_cache = Path("calib_caches") / f"{out.stem}.trt.cache"
        check_output(Path(save_cache), default_cache)
    fallback_names = read_tensor_list(fallback) if fallback is not None else []
    override_list = None
    if overrides is not None:
        try:
            from trtcal.cache import overrides as overrides_mod
        except ImportError:
            raise TrtcalError("--overrides: this trtcal has no overrides support yet (trtcal.cache.overrides)") from None
        override_list = overrides_mod.read(overrides)

    # ---- TensorRT
    be = backend_from_module(trt) if trt is not None else load_backend(backend)
    trt = be.module
    if qdq:
        mode = "explicit-qdq"
        if fp16 and be.strongly_typed_only:
            raise TrtcalError(f"--fp16: {be.label} has no FP16 flag (networks are strongly typed): the model's types "
                              "decide; convert it to mixed FP16 before making the Q/DQ model (e.g. ModelOpt AutoCast)")
    elif int8:
        be.require_implicit_int8()
        mode = "implicit-int8"
    elif fp16:
        if not be.has_fp16_flag:
            raise TrtcalError(f"--fp16: {be.label} has no FP16 flag (networks are strongly typed): convert the model "
                              "to FP16 first (e.g. ModelOpt AutoCast) and build that")
        mode = "fp16"
    else:
        mode = "fp32"
    strongly_typed = be.strongly_typed_only or (qdq and not fp16)
    gpu = None
    if not be.is_rtx:
        from trtcal.trt.device import gpu_info

        gpu = gpu_info()
    say(f"{be.label}: {mode} build of {model}" + (" (strongly typed)" if strongly_typed else ""))

    inputs = onnx_inputs(model)
    calibrating = mode == "implicit-int8"
    bs = batch_size
    if calibrating and bs is None:
        bs = default_batch_size(inputs, {n: s[1] for n, s in (shapes or {}).items()})
    profiles = plan_profiles(inputs, shapes, bs)
    check_shared_dims(inputs, profiles, str(model))
    if calibrating:
        opt_batches = {p.opt[0] for p in profiles.values() if p.opt}
        if batch_size is not None and opt_batches - {batch_size}:
            raise TrtcalError(f"--batch-size {batch_size} differs from the OPT shapes' batch axis "
                              f"({', '.join(map(str, sorted(opt_batches)))}): TensorRT calibrates at the OPT shape")
        if len(opt_batches) > 1:
            raise TrtcalError(f"the OPT shapes' batch axes differ ({', '.join(map(str, sorted(opt_batches)))}); "
                              "calibration needs one batch size")
        bs = opt_batches.pop() if opt_batches else bs
    dynamic = {spec.name for spec in inputs if any(not isinstance(d, int) for d in spec.shape)}
    for spec in inputs:
        p = profiles[spec.name]
        if spec.name in dynamic:
            say(f"input {spec.name!r} {_shape_text(spec.shape)}: profile min {list(p.min)} opt {list(p.opt)} "
                f"max {list(p.max)}")
    calibration_shapes = {name: p.opt for name, p in profiles.items()} if calibrating else {}
    if calibrating:
        say("calibrating at the OPT shape: " + ", ".join(f"{n} {list(s)}" for n, s in calibration_shapes.items()))

    logger = _Logger(trt, verbose)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        errors = errors or [_first_line(e) for e in logger.errors] or ["no details"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = ""
        if "DequantizeLinear" in errors[0] and "Int32" in errors[0]:
            hint = " (TensorRT takes no quantized bias: leave biases in float when making the Q/DQ model)"
        raise TrtcalError(f"{model}: {be.label}'s ONNX parser rejects it: {errors[0]}{more}{hint}")

    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if mode == "implicit-int8" or (qdq and not strongly_typed):
        config.set_flag(trt.BuilderFlag.INT8)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)

    profile = None
    network_inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in tuple(t.shape) for t in network_inputs):
        profile = builder.create_optimization_profile()
        for t in network_inputs:
            if -1 not in tuple(t.shape):
                continue
            if t.name not in profiles:
                raise TrtcalError(f"{model}: TensorRT sees a dynamic input {t.name!r} the ONNX graph does not list")
            p = profiles[t.name]
            profile.set_shape(t.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)

    timing = None
    if timing_cache is not None and be.is_rtx:
        warn(f"--timing-cache {timing_cache}: ignored, {be.label} has no timing cache (its timing-cache calls are no-ops)")
        timing_cache = None
    if timing_cache is not None:
        timing_path = Path(timing_cache)
        blob = fileio.read_bytes(timing_path, max_bytes=2**31, what="timing cache") if timing_path.exists() else b""
        timing = config.create_timing_cache(blob)
        if not config.set_timing_cache(timing, False):
            warn(f"{timing_path}: TensorRT did not accept this timing cache (another TensorRT or GPU?); starting a new one")

    core: Calibrator | None = None
    trt_calibrator = None
    model_sha = file_sha256(model)
    data_sha = data_sha256(data) if data is not None else None
    applied_overrides = {}
    try:
        if calibrating:
            core = _make_calibrator(be, model, inputs, bs, calibration_shapes, data=data, cache=cache,
                                    save_cache=save_cache, preprocess=preprocess, max_batches=max_batches,
                                    algorithm=algorithm, quantile=quantile, regression_cutoff=regression_cutoff,
                                    model_sha=model_sha, data_sha=data_sha, gpu=gpu, device=device,
                                    ignore_provenance=ignore_provenance, allow_nonfinite=allow_nonfinite,
                                    override_list=override_list, warn=warn)
            if cache is not None:
                core.check_cache()  # a cache that cannot be used fails here, before the build
                coverage = _cache_coverage(model, onnx_model, cache)
                if coverage and ignore_provenance:
                    warn(f"{cache}: used although {coverage} (--ignore-provenance)")
                elif coverage:
                    raise TrtcalError(f"{cache}: not reused: {coverage} (pass --ignore-provenance to use it anyway)")
            from trtcal.trt.calibrator import tensorrt_calibrator

            trt_calibrator = tensorrt_calibrator(core, trt)  # held here until the build returns
            config.int8_calibrator = trt_calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
            tensors = _network_tensors(network)
            if override_list is not None:
                from trtcal.cache import overrides as overrides_mod

                applied, notes = overrides_mod.resolve(override_list, list(tensors), symmetric=True,
                                                       target="the TensorRT network")
                for note in notes:
                    warn(note)
                for name, a in applied.items():
                    if not tensors[name].set_dynamic_range(-float(a.amax), float(a.amax)):
                        raise TrtcalError(f"tensor {name!r}: TensorRT refused the dynamic range [-{a.amax:g}, {a.amax:g}]")
                    applied_overrides[name] = float(a.amax)
                say(f"set {len(applied)} hand-set range(s) from {overrides} with set_dynamic_range")
            if fallback_names:
                _fall_back(trt, be, network, config, tensors, fallback_names, fallback)
                say(f"kept {len(fallback_names)} tensor(s) from {fallback} in float (layer precision, "
                    "OBEY_PRECISION_CONSTRAINTS)")
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        serialized = builder.build_serialized_network(network, config)
        del trt_calibrator
        if core is not None:
            core.raise_failure()
            warnings.extend(w for w in core.warnings if w not in warnings)
        if serialized is None:
            detail = f": {_first_line(logger.errors[-1])}" if logger.errors else "; see its messages above"
            raise TrtcalError(f"{model}: {be.label} failed to build the engine{detail}")
        engine_bytes = bytes(serialized)
    finally:
        if core is not None:
            core.close()

    fileio.atomic_write(out, engine_bytes, force=force, inputs=inputs_to_check)
    timing_path = None
    if timing is not None:
        timing_path = Path(timing_cache)
        fileio.atomic_write(timing_path, bytes(config.get_timing_cache().serialize()), force=True)

    cache_used = None
    if core is not None:
        cache_used = core.cache_written or core.cache_read or (Path(cache) if cache is not None else None)
    record = {
        "kind": "TensorRT engine",
        "engine": str(out),
        "engine_sha256": file_sha256(out),
        "engine_bytes": len(engine_bytes),
        "backend": be.name,
        "trt_version": format_version(be.version),
        "gpu": gpu,
        "built_ahead_of_time": be.is_rtx,
        "mode": mode,
        "strongly_typed": strongly_typed,
        "flags": {"int8": mode == "implicit-int8" or (qdq and not strongly_typed), "fp16": bool(fp16 and not strongly_typed)},
        "model": str(model),
        "model_sha256": model_sha,
        "cache": str(cache_used) if cache_used else None,
        "cache_sha256": file_sha256(cache_used) if cache_used and Path(cache_used).exists() else None,
        "cache_reused": bool(core is not None and core.cache_read is not None),
        "data": getattr(core.source, "description", None) if core is not None and core.source is not None else None,
        "data_sha256": data_sha,
        "calibration": None if core is None else {
            "algorithm": core.algorithm, "trt_algorithm": core.header_algorithm, "batch_size": core.batch_size,
            "batches": core.batches, "samples": core.samples, "dropped_samples": core.dropped_samples,
            "shapes": {n: list(s) for n, s in calibration_shapes.items()},
        },
        "profiles": {n: p.to_dict() for n, p in profiles.items() if n in dynamic},
        "overrides": None if overrides is None else {"file": str(overrides), "sha256": file_sha256(overrides),
                                                      "ranges": applied_overrides},
        "fallback": fallback_names or None,
        "timing_cache": str(timing_path) if timing_path else None,
        "workspace_mb": workspace_mb,
        "warnings": warnings,
        "trt_warnings": logger.warnings[:50],
    }
    record_path = write_sidecar(out, record, force=force)
    return BuildResult(out, record_path, record, mode, be.label, {n: profiles[n] for n in dynamic},
                       calibration_shapes, core.cache_read if core else None, core.cache_written if core else None,
                       timing_path, warnings, list(logger.warnings))


def _cache_coverage(model: Path, onnx_model, cache) -> str | None:
    """Why ``cache`` cannot be this model's (it has ranges for under half of the Conv, Gemm and
    MatMul inputs the Q/DQ placement rules would quantize), or None."""
    from trtcal.cache.format import read
    from trtcal.onnx.qdq import range_coverage

    parsed = read(cache)
    if not parsed.names():
        return None  # an empty cache: the header checks say what is wrong with it
    covered, missing = range_coverage(onnx_model, parsed)
    wanted = len(covered) + len(missing)
    if wanted and 2 * len(covered) < wanted:
        return (f"it has ranges for {len(covered)} of the {wanted} Conv/Gemm/MatMul inputs of {model.name} "
                f"(none for {missing[0]!r}, ...): a cache of another model, or a partial one?")
    return None


def _make_calibrator(be, model, inputs, bs, calibration_shapes, *, data, cache, save_cache, preprocess, max_batches,
                     algorithm, quantile, regression_cutoff, model_sha, data_sha, gpu, device, ignore_provenance,
                     allow_nonfinite, override_list, warn) -> Calibrator:
    expected = {"model_sha256": model_sha, "data_sha256": data_sha, "gpu": gpu}
    metadata = {"model": str(model), "model_sha256": model_sha, "data_sha256": data_sha, "gpu": gpu}
    if data is not None:
        from trtcal.data import open_data

        source = open_data(data, inputs, batch_size=bs, preprocess=preprocess)
        return Calibrator(source, inputs, batch_size=bs, algorithm=algorithm or "entropy2", device=device,
                          cache=save_cache, reuse_cache=False, trt_version=be.cache_version,
                          shapes=calibration_shapes, max_batches=max_batches, quantile=quantile,
                          regression_cutoff=regression_cutoff, metadata=metadata, expected=expected,
                          ignore_provenance=ignore_provenance, allow_nonfinite=allow_nonfinite, warn=warn)
    # Reusing a cache: the calibrator must be the kind the header names, or TensorRT ignores it.
    from trtcal.cache.format import read

    header_algorithm = read(cache).algorithm
    implied = ALGORITHM_OF_HEADER.get(header_algorithm or "")
    if implied is None:
        raise TrtcalError(f"{cache}: its header names algorithm {header_algorithm!r}, which no TensorRT calibrator "
                          f"reads ({', '.join(ALGORITHM_OF_HEADER)}); fix it with `trtcal cache restamp`")
    if algorithm is not None and algorithm != implied:
        raise TrtcalError(f"{cache}: is a {header_algorithm} cache; a {ALGORITHMS[algorithm][0]} would ignore it "
                          f"(leave out --algorithm, or use --algorithm {implied})")
    transform = None
    if override_list is not None:
        from trtcal.cache import overrides as overrides_mod

        def transform(parsed):
            new, _, _ = overrides_mod.apply_to_cache(parsed, override_list, allow_new=True)
            return new

    return Calibrator(None, inputs, batch_size=bs, algorithm=implied, device=device, cache=cache,
                      reuse_cache=True, trt_version=be.cache_version, shapes=calibration_shapes,
                      quantile=quantile, regression_cutoff=regression_cutoff, metadata=metadata, expected=expected,
                      ignore_provenance=ignore_provenance, cache_transform=transform, warn=warn)


def _fall_back(trt, be, network, config, tensors: dict, names: list[str], source) -> None:
    """Keep ``names`` in float: the producing layers compute and output float32."""
    producers = _producers(network)
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name in names:
        if name in inputs:
            raise TrtcalError(f"{source}: {name!r} is a network input; only tensors that layers produce can be kept "
                              "in float")
        if name not in producers:
            raise TrtcalError(f"{source}: {name!r} is not a tensor of the TensorRT network ({len(tensors)} tensors; "
                              "names are the ONNX model's)")
        layer, index = producers[name]
        layer.precision = trt.float32
        layer.set_output_type(index, trt.float32)
    flag = "OBEY_PRECISION_CONSTRAINTS" if be.has_precision_constraints else None
    if flag is not None:
        config.set_flag(getattr(trt.BuilderFlag, flag))
