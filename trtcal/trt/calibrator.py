"""TensorRT calibrators (TensorRT 8.6 - 10.x) fed from any trtcal data source.

:class:`Calibrator` holds the logic and speaks TensorRT's calibrator protocol itself:
``get_batch_size()``, ``get_batch(names)`` (device pointers in the order of ``names``, None at
the end), ``read_calibration_cache()`` and ``write_calibration_cache(cache)``. It needs nothing
of TensorRT, and of CUDA only a :class:`~trtcal.trt.device.DeviceMemory`, so tests drive it
exactly as TensorRT does with host memory. :func:`tensorrt_calibrator` wraps it in a subclass of
TensorRT's own class (``IInt8EntropyCalibrator2`` by default, ``IInt8MinMaxCalibrator``,
``IInt8EntropyCalibrator``, ``IInt8LegacyCalibrator``) for ``config.int8_calibrator``.

What it guarantees:

- Batches come from the same loaders as ``trtcal calibrate`` and are checked against the model's
  inputs; each is converted to a contiguous host array of the input's dtype and copied into one
  device buffer per input, allocated once (at the first batch) and reused. CPU torch tensors are
  host arrays too. A CUDA tensor (an object with ``is_cuda`` true and ``data_ptr()``, e.g. a torch
  tensor from a data-loader script, as Polygraphy accepts) is handed to TensorRT as its device
  pointer without a copy: it must already have the input's dtype, rank and fixed dimensions and
  be contiguous (an error naming the batch and input otherwise); it is kept alive until TensorRT
  asks for the next batch, and torch's queued work on its device is waited for before TensorRT
  reads it. Every batch holds
  exactly the batch size: a short last batch is dropped with a warning, any other wrong size is
  an error naming the batch. All batches must have one shape (TensorRT calibrates at the
  calibration profile's OPT shape).
- An error inside a callback (TensorRT calls them from C++) ends calibration (``get_batch``
  returns None) and is kept in :attr:`Calibrator.failure`; :func:`trtcal.trt.builder.build`
  raises it after the build returns.
- A cache is read only after its header is checked against the running TensorRT version and
  this calibrator's algorithm (TensorRT would silently ignore a mismatch) and its provenance
  record against the model and data; the cache TensorRT writes is written as is, with a
  ``.trtcal.json`` record beside it (data, its sha256, batches, samples, shapes, TensorRT
  version, GPU).
- Device buffers are freed by :meth:`Calibrator.close` (it is a context manager). The device
  backend (``device``: a :class:`~trtcal.trt.device.DeviceMemory`, or ``--cuda``'s ``auto``,
  ``pycuda``, ``cuda-python``) is opened only when a host array has to be copied, so a reused
  cache or all-CUDA-tensor batches never need pycuda or cuda-python.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from trtcal.cache.format import CalibrationCache, Version, format_version, parse
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError
from trtcal.trt.device import DeviceMemory, LazyDevice

#: trtcal's name -> (TensorRT base class, the algorithm name its cache header carries).
ALGORITHMS = {
    "entropy2": ("IInt8EntropyCalibrator2", "EntropyCalibration2"),
    "minmax": ("IInt8MinMaxCalibrator", "MinMaxCalibration"),
    "entropy": ("IInt8EntropyCalibrator", "EntropyCalibration"),
    "legacy": ("IInt8LegacyCalibrator", "LegacyCalibration"),
}
#: A cache header's algorithm -> the trtcal name of the calibrator that reads it.
ALGORITHM_OF_HEADER = {header: name for name, (_, header) in ALGORITHMS.items()}


def onnx_inputs(model_path: str | os.PathLike) -> list:
    """The model's inputs as :class:`~trtcal.ort.runner.InputSpec` (graph inputs that are not
    initializers), with ints for fixed dimensions and the ``dim_param`` (or None) for dynamic ones."""
    from onnx import helper

    from trtcal.onnx.model import load_model
    from trtcal.ort.runner import InputSpec

    model = load_model(model_path)
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).type
        except (KeyError, ValueError, TypeError):
            raise TrtcalError(f"{model_path}: input {vi.name!r} has an element type trtcal cannot feed ({tt.elem_type})") from None
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                     for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


class Calibrator:
    """TensorRT's calibrator protocol over a trtcal data source (see the module docstring).

    ``source``: an iterable of ``{input name: array}`` batches (e.g. a
    :class:`~trtcal.data.DataSource`), or None to only read an existing cache. ``inputs``: the
    model's :class:`~trtcal.ort.runner.InputSpec` list. ``shapes``: the shape each input is
    calibrated at (the profile's OPT shape, batch axis first); missing ones are taken from the
    first batch. ``cache``: where to read a cache from (when ``reuse_cache``) and write the new
    one to. ``device``: a :class:`~trtcal.trt.device.DeviceMemory` or a ``--cuda`` name (``auto``,
    the default, ``pycuda``, ``cuda-python``), opened on first use. ``expected``: what the cache's provenance record must match (``model_sha256``,
    ``data_sha256``, ``gpu``). ``cache_transform``: applied to a cache read from disk before
    TensorRT sees it (hand-set ranges). NaN/Inf in a float input is an error naming the batch and
    input unless ``allow_nonfinite`` (TensorRT would fold them into its histograms unseen).
    """

    def __init__(self, source: Iterable[dict] | None, inputs: Sequence, *, batch_size: int,
                 algorithm: str = "entropy2", device: DeviceMemory | str | None = None,
                 cache: str | os.PathLike | None = None, reuse_cache: bool = True,
                 trt_version: Version | None = None, shapes: dict[str, tuple] | None = None,
                 max_batches: int | None = None, quantile: float = 0.9999, regression_cutoff: float = 1.0,
                 description: str | None = None, metadata: dict | None = None, expected: dict | None = None,
                 ignore_provenance: bool = False, allow_nonfinite: bool = False,
                 cache_transform: Callable[[CalibrationCache], CalibrationCache] | None = None,
                 warn: Callable[[str], None] | None = None):
        if algorithm not in ALGORITHMS:
            raise TrtcalError(f"calibrator algorithm {algorithm!r}: choose from {', '.join(ALGORITHMS)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise TrtcalError(f"batch size {batch_size!r}: must be a positive integer")
        if max_batches is not None and max_batches < 1:
            raise TrtcalError(f"--max-batches {max_batches}: must be at least 1")
        if algorithm == "legacy" and not (0 < quantile <= 1 and 0 < regression_cutoff <= 1):
            raise TrtcalError(f"legacy calibrator: quantile {quantile:g} and regression cutoff {regression_cutoff:g} "
                              "must be in (0, 1]")
        self.source = source
        self.inputs = list(inputs)
        self._specs = {spec.name: spec for spec in self.inputs}
        self.batch_size = batch_size
        self.algorithm = algorithm
        self.cache_path = Path(cache) if cache is not None else None
        self.reuse_cache = reuse_cache
        self.trt_version = trt_version
        self.max_batches = max_batches
        self.quantile = float(quantile)
        self.regression_cutoff = float(regression_cutoff)
        self.description = description or getattr(source, "description", None) or "calibration data"
        self.metadata = dict(metadata or {})
        self.expected = dict(expected or {})
        self.ignore_provenance = ignore_provenance
        self.allow_nonfinite = allow_nonfinite
        self.cache_transform = cache_transform
        self._warn = warn
        self._device = LazyDevice(device) if isinstance(device, str) else device
        self._shapes = {name: tuple(int(d) for d in shape) for name, shape in (shapes or {}).items()}
        for name, shape in self._shapes.items():
            if name not in self._specs:
                raise TrtcalError(f"calibration shape for {name!r}: the model has no such input "
                                  f"({', '.join(self._specs)})")
            if not shape or shape[0] != batch_size:
                raise TrtcalError(f"calibration shape {list(shape)} for input {name!r}: its batch axis must be "
                                  f"the batch size {batch_size}")
        self._buffers: dict[str, int] = {}
        self._pointers: dict[str, int] = {}  # this batch's pointer per input
        self._held: list = []  # this batch's CUDA tensors, alive until TensorRT asks for the next
        self._copied = False  # whether any input went through the device backend
        self.device_inputs: set[str] = set()  # inputs fed as CUDA tensors (no copy)
        self._iter: Iterator | None = None
        self._lookahead: list = []
        self._pulled = 0
        self._done = False
        self._vetted: tuple | None = None  # check_cache()'s answer, once asked
        self.closed = False
        # What happened (read by the builder and the tests).
        self.failure: BaseException | None = None
        self.warnings: list[str] = []
        self.batches = 0
        self.samples = 0
        self.dropped_samples = 0
        self.cache_read: Path | None = None  # the cache TensorRT was given, if any
        self.cache_written: Path | None = None
        self.written: bytes | None = None  # the bytes TensorRT wrote
        self.cache: CalibrationCache | None = None  # the cache read or written, parsed

    # ------------------------------------------------------------------ helpers

    @property
    def header_algorithm(self) -> str:
        return ALGORITHMS[self.algorithm][1]

    @property
    def shapes(self) -> dict[str, tuple]:
        """The shape each input is calibrated at (known once given or after the first batch)."""
        return dict(self._shapes)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self._warn is not None:
            self._warn(message)

    @property
    def device(self) -> DeviceMemory:
        """The device-memory backend, opened now if it was not (``auto`` unless one was given)."""
        if self._device is None:
            from trtcal.trt.device import open_device

            self._device = open_device("auto")
        return self._device

    def raise_failure(self) -> None:
        """Raise the error a callback kept, if any."""
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> Calibrator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the device buffers (idempotent)."""
        if self.closed:
            return
        self.closed = True
        buffers, self._buffers = self._buffers, {}
        self._held, self._pointers = [], {}
        if self._device is not None:
            for pointer in buffers.values():
                self._device.free(pointer)
            self._device.close()

    # ------------------------------------------------------------------ TensorRT's protocol

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: Sequence[str], *unused) -> list[int] | None:
        """Device pointers of the next batch, in the order of ``names``; None when done."""
        if self._done or self.failure is not None:
            return None
        if self.closed:
            self.failure = TrtcalError("the calibrator was closed before TensorRT finished calibrating")
            return None
        try:
            unknown = [n for n in names if n not in self._specs]
            if unknown:
                raise TrtcalError(f"TensorRT asked for input(s) {', '.join(map(repr, unknown))}, which the model "
                                  f"has no input for ({', '.join(self._specs)})")
            self._held = []  # TensorRT is done with the previous batch
            batch = self._next_batch()
            if batch is None:
                self._done = True
                if self.batches == 0:
                    raise TrtcalError(f"{self.description}: gave no full batch of {self.batch_size} to calibrate on")
                return None
            self._upload(batch)
            self.batches += 1
            self.samples += self.batch_size
            return [self._pointers[n] for n in names]
        except Exception as exc:  # TensorRT calls this from C++: keep the error, end calibration
            self.failure = exc
            self._done = True
            return None

    def read_calibration_cache(self, *unused) -> bytes | None:
        """The cache's bytes when it exists and fits this TensorRT, calibrator, model and data."""
        try:
            return self._read_cache()
        except Exception as exc:
            self.failure = exc
            return None

    def write_calibration_cache(self, cache) -> None:
        """Keep what TensorRT wrote: the bytes as they are, and a provenance record beside them."""
        if self.failure is not None:
            return  # a failed calibration leaves no cache behind
        try:
            self._write_cache(bytes(cache))
        except Exception as exc:
            self.failure = exc

    # The legacy calibrator's extra methods (quantile and regression cutoff; no histogram cache).
    def get_quantile(self) -> float:
        return self.quantile

    def get_regression_cutoff(self) -> float:
        return self.regression_cutoff

    def read_histogram_cache(self, *unused) -> None:
        return None

    def write_histogram_cache(self, *unused) -> None:
        return None

    # ------------------------------------------------------------------ batches

    def _pull(self):
        if self._lookahead:
            return self._lookahead.pop(0)
        if self.source is None:
            return None
        if self.max_batches is not None and self._pulled >= self.max_batches:
            return None
        if self._iter is None:
            self._iter = iter(self.source)
        batch = next(self._iter, None)
        if batch is not None:
            self._pulled += 1
        return batch

    def _next_batch(self) -> dict | None:
        from trtcal.data.sources import check_batch

        raw = self._pull()
        if raw is None:
            return None
        index = self.batches
        where = f"{self.description}: batch {index}"
        finite = not self.allow_nonfinite  # TensorRT would bin NaN/Inf into its histograms unseen
        if isinstance(raw, dict):
            host, on_device = self._split(raw, where)
            batch = check_batch(host, [s for s in self.inputs if s.name not in on_device], where, finite=finite)
            batch.update(on_device)
        else:
            batch = check_batch(raw, self.inputs, where, finite=finite)
        sizes = {}
        for name, array in batch.items():
            if array.ndim == 0:
                raise TrtcalError(f"{where}: input {name!r} is a scalar (0-d): TensorRT's calibrators take every "
                                  "input batched on axis 0; calibrate on the CPU with `trtcal calibrate` (it feeds "
                                  "scalars whole) and build with --cache")
            sizes[name] = array.shape[0]
        if len(set(sizes.values())) != 1:
            raise TrtcalError(f"{where}: inputs hold different numbers of samples: {sizes}")
        n = next(iter(sizes.values()))
        bs = self.batch_size
        if n > bs:
            raise TrtcalError(f"{where}: {n} samples, but TensorRT takes exactly {bs} per batch (the batch size); "
                              f"make the batches {bs} long or calibrate with batch size {n}")
        if n < bs:
            following = self._pull()
            if following is None:
                self.dropped_samples += n
                self.warn(f"{where}: the last batch has {n} samples, fewer than the batch size {bs}: dropped "
                          f"(TensorRT takes exactly {bs} per batch)")
                return None
            self._lookahead.append(following)
            raise TrtcalError(f"{where}: {n} samples, fewer than the batch size {bs}; only the last batch may be "
                              "short (it is dropped)")
        for name, array in batch.items():
            want = self._shapes.get(name)
            if want is None:
                self._shapes[name] = tuple(array.shape)
            elif tuple(array.shape) != want:
                raise TrtcalError(f"{where}: input {name!r} has shape {list(array.shape)}, but calibration runs at "
                                  f"{list(want)} (the calibration profile's OPT shape): TensorRT calibrates at one shape")
        return batch

    def _split(self, raw: dict, where: str) -> tuple[dict, dict]:
        """``raw`` as (host arrays, :class:`_DeviceTensor` per CUDA tensor), each checked."""
        host, on_device = {}, {}
        for name, value in raw.items():
            if _is_cuda_tensor(value):
                on_device[name] = self._device_tensor(name, value, where)
            else:
                host[name] = _host_array(name, value, where)
        return host, on_device

    def _device_tensor(self, name: str, tensor, where: str) -> _DeviceTensor:
        spec = self._specs.get(name)
        if spec is None:
            raise TrtcalError(f"{where}: data for {name!r}, which the model has no input for")
        what = f"{where}: input {name!r} is a CUDA tensor"
        want = np.dtype(spec.dtype)
        got = _numpy_dtype(tensor.dtype)
        if got != want:
            raise TrtcalError(f"{what} of {tensor.dtype}, the model wants {want}; a CUDA tensor goes to TensorRT "
                              "as it is (no copy, no conversion): convert it in the data loader")
        try:
            shape = tuple(int(d) for d in tensor.shape)
        except (TypeError, ValueError):
            raise TrtcalError(f"{what} without a readable shape ({tensor.shape!r})") from None
        from trtcal.data.sources import _shape_text

        if len(shape) != len(spec.shape):
            raise TrtcalError(f"{what} of shape {list(shape)}, the model wants rank {len(spec.shape)} "
                              f"{_shape_text(spec.shape)}")
        for axis, (n, dim) in enumerate(zip(shape, spec.shape)):
            if isinstance(dim, int) and dim > 0 and n != dim:
                raise TrtcalError(f"{what} of shape {list(shape)}, the model wants {_shape_text(spec.shape)} "
                                  f"(axis {axis} must be {dim})")
        contiguous = getattr(tensor, "is_contiguous", None)
        if not callable(contiguous) or not contiguous():
            raise TrtcalError(f"{what} that is not contiguous: TensorRT reads it as a dense array; call "
                              ".contiguous() in the data loader")
        pointer = int(tensor.data_ptr())
        if pointer == 0:
            raise TrtcalError(f"{what} with no device memory (data_ptr() is 0)")
        return _DeviceTensor(tensor, pointer, shape)

    def _upload(self, batch: dict) -> None:
        pointers, held = {}, []
        for spec in self.inputs:
            value = batch[spec.name]
            if isinstance(value, _DeviceTensor):
                pointers[spec.name] = value.pointer
                held.append(value.tensor)
                self.device_inputs.add(spec.name)
                continue
            device = self.device
            if spec.name not in self._buffers:  # allocated once, at the calibration shape
                shape = self._shapes[spec.name]
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
                self._buffers[spec.name] = device.alloc(nbytes)
            host = np.ascontiguousarray(value, dtype=spec.dtype)
            device.upload(self._buffers[spec.name], host)
            pointers[spec.name] = self._buffers[spec.name]
            self._copied = True
        _synchronize(held)
        self._pointers, self._held = pointers, held

    # ------------------------------------------------------------------ the cache

    def _reject(self, problem: str) -> None:
        """A cache that must not be used: recalibrate where there is data, else stop."""
        if self.source is not None:
            self.warn(f"{self.cache_path}: not reused: {problem}; calibrating again on {self.description}")
            return
        raise TrtcalError(f"{self.cache_path}: {problem}")

    def check_cache(self) -> bytes | None:
        """Read and vet the cache file: its bytes if TensorRT should get it, None if it should
        calibrate instead; raises :class:`TrtcalError` where there is no data to fall back on."""
        from trtcal.cache.checks import ERROR, check_header_for
        from trtcal.cache.provenance import read_sidecar
        from trtcal.trt.provenance import cache_mismatches

        path = self.cache_path
        if path is None or not self.reuse_cache:
            return None
        if not path.exists():
            if self.source is None:
                raise TrtcalError(f"{path}: no such calibration cache (and no data to calibrate on)")
            return None
        data = fileio.read_bytes(path, what="calibration cache")
        cache = parse(fileio.decode_text(data, str(path), what="calibration cache"), str(path))
        if self.trt_version is not None:
            problems = [f.message for f in check_header_for(cache, self.trt_version, self.header_algorithm)
                        if f.severity == ERROR]
            if problems:
                header = cache.header_text or "no header"
                self._reject(f"its header {header!r} does not fit: {'; '.join(problems)}")
                return None
        record = read_sidecar(path)
        mismatches = cache_mismatches(record, **self.expected)
        if mismatches:
            if self.ignore_provenance:
                self.warn(f"{path}: reused although {'; '.join(mismatches)} (--ignore-provenance)")
            else:
                self._reject("; ".join(mismatches) + " (pass --ignore-provenance to use it anyway)")
                return None
        elif record is None:
            self.warn(f"{path}: no provenance record beside it ({path.name}.trtcal.json): cannot check which "
                      "model and data it was made from")
        if self.cache_transform is not None:
            cache = self.cache_transform(cache)
            data = cache.to_text().encode("utf-8")
        self.cache = cache
        self._vetted = (data,)
        return data

    def _read_cache(self) -> bytes | None:
        if self._vetted is None:
            self._vetted = (self.check_cache(),)
        data = self._vetted[0]
        if data is not None:
            self.cache_read = self.cache_path
        return data

    def record(self) -> dict:
        """The provenance record written beside the cache."""
        return {
            "made_by": "TensorRT calibrator (trtcal.trt.calibrator)",
            "trt_version": format_version(self.trt_version) if self.trt_version else None,
            "trt_algorithm": self.header_algorithm,
            "algorithm": self.algorithm,
            **({"quantile": self.quantile, "regression_cutoff": self.regression_cutoff}
               if self.algorithm == "legacy" else {}),
            "data": self.description,
            "fake_data": bool(getattr(self.source, "fake", False)),
            "batches": self.batches,
            "samples": self.samples,
            "batch_size": self.batch_size,
            "dropped_samples": self.dropped_samples,
            "inputs": {name: list(shape) for name, shape in self._shapes.items()},
            "cuda": self._device.name if self._copied and self._device is not None else None,
            **({"cuda_tensor_inputs": sorted(self.device_inputs)} if self.device_inputs else {}),
            **self.metadata,
        }

    def _write_cache(self, data: bytes) -> None:
        self.written = data
        try:
            self.cache = parse(fileio.decode_text(data, "<TensorRT's cache>", what="calibration cache"),
                               "<TensorRT's cache>")
        except TrtcalError as exc:
            self.warn(f"TensorRT wrote a cache trtcal cannot read ({exc}); it is kept as written")
        path = self.cache_path
        if path is None:
            return
        if self.cache_read is not None and path.exists() and path.read_bytes() == data:
            return  # TensorRT handed back the cache it was given
        from trtcal.cache.provenance import write_sidecar

        fileio.atomic_write(path, data, force=True)
        write_sidecar(path, self.record(), force=True)
        self.cache_written = path


class _DeviceTensor:
    """A CUDA tensor of a batch, checked: its device pointer, its shape, and the tensor itself
    (kept so that its memory stays allocated while TensorRT reads it)."""

    __slots__ = ("tensor", "pointer", "shape")

    def __init__(self, tensor, pointer: int, shape: tuple):
        self.tensor, self.pointer, self.shape = tensor, pointer, shape

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _is_cuda_tensor(value) -> bool:
    """A tensor in CUDA memory (torch's ``is_cuda``, with a ``data_ptr()``)."""
    return getattr(value, "is_cuda", False) is True and callable(getattr(value, "data_ptr", None))


def _numpy_dtype(dtype) -> np.dtype | None:
    """numpy's dtype for a torch dtype (``torch.float32`` -> float32), None where numpy has none
    (bfloat16)."""
    try:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])
    except TypeError:
        return None


def _host_array(name: str, value, where: str):
    """A CPU torch tensor as numpy (detached; it is copied to the device as any array); anything
    else as it is, for :func:`~trtcal.data.sources.check_batch`."""
    if callable(getattr(value, "detach", None)) and callable(getattr(value, "numpy", None)):
        try:
            return value.detach().numpy()
        except Exception as exc:  # e.g. bfloat16, which numpy has no type for
            detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise TrtcalError(f"{where}: input {name!r}: cannot read the tensor as a numpy array "
                              f"({type(exc).__name__}: {detail})") from None
    return value


def _synchronize(tensors: list) -> None:
    """Wait for torch's queued work on the devices of these torch tensors (the data loader's
    kernels and copies run asynchronously; TensorRT reads the memory on its own stream)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    devices = []
    for tensor in tensors:
        if type(tensor).__module__.split(".")[0] == "torch" and tensor.device not in devices:
            devices.append(tensor.device)
    for device in devices:
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- TensorRT's classes

#: (id(trt module), algorithm) -> (the module, its class). The module is kept so that its id
#: cannot be reused by another object while the entry exists (a stale class for a new module).
_CLASSES: dict[tuple[int, str], tuple[object, type]] = {}


def calibrator_class(trt, algorithm: str = "entropy2") -> type:
    """The subclass of TensorRT's calibrator class for ``algorithm`` that delegates every
    callback to a :class:`Calibrator` (made once per TensorRT module and algorithm)."""
    if algorithm not in ALGORITHMS:
        raise TrtcalError(f"calibrator algorithm {algorithm!r}: choose from {', '.join(ALGORITHMS)}")
    key = (id(trt), algorithm)
    if key in _CLASSES:
        return _CLASSES[key][1]
    base_name = ALGORITHMS[algorithm][0]
    base = getattr(trt, base_name, None)
    if base is None:
        from trtcal.trt.version import QDQ_HINT

        raise TrtcalError(f"TensorRT {getattr(trt, '__version__', '?')} has no {base_name} (calibrators were "
                          f"removed in TensorRT 11); {QDQ_HINT}")

    def __init__(self, core: Calibrator):
        base.__init__(self)  # TensorRT's Python classes need their base constructor called
        self.core = core

    methods = {
        "__init__": __init__,
        "get_batch_size": lambda self: self.core.get_batch_size(),
        "get_batch": lambda self, names, *rest: self.core.get_batch(names),
        "read_calibration_cache": lambda self, *rest: self.core.read_calibration_cache(),
        "write_calibration_cache": lambda self, cache: self.core.write_calibration_cache(cache),
        "__doc__": f"TensorRT's {base_name}, fed by a trtcal Calibrator.",
    }
    if algorithm == "legacy":
        methods.update({
            "get_quantile": lambda self: self.core.get_quantile(),
            "get_regression_cutoff": lambda self: self.core.get_regression_cutoff(),
            "read_histogram_cache": lambda self, *rest: self.core.read_histogram_cache(),
            "write_histogram_cache": lambda self, *rest: self.core.write_histogram_cache(),
        })
    cls = types.new_class(base_name[len("IInt8"):], (base,), exec_body=lambda ns: ns.update(methods))
    cls.__module__ = __name__
    _CLASSES[key] = (trt, cls)
    return cls


def tensorrt_calibrator(core: Calibrator, trt=None):
    """``core`` as an object TensorRT accepts for ``config.int8_calibrator``."""
    if trt is None:
        from trtcal.trt.version import load_backend

        backend = load_backend("tensorrt")
        backend.require_implicit_int8()
        trt = backend.module
    return calibrator_class(trt, core.algorithm)(core)


def default_batch_size(inputs: Sequence, shapes: dict[str, tuple] | None = None) -> int:
    """The batch axis of the calibration shapes, else the model's fixed batch, else 32 (as
    ``trtcal calibrate``)."""
    from trtcal.data.sources import DEFAULT_BATCH_SIZE

    if shapes:
        return int(next(iter(shapes.values()))[0])
    fixed = {spec.fixed_batch for spec in inputs} - {None}
    return fixed.pop() if len(fixed) == 1 else DEFAULT_BATCH_SIZE


def open_calibrator(model: str | os.PathLike, data: str | os.PathLike, *, batch_size: int | None = None,
                    algorithm: str = "entropy2", cache: str | os.PathLike | None = None, preprocess=None,
                    shapes: dict[str, tuple] | None = None, device: DeviceMemory | str | None = None,
                    trt_version: Version | None = None, **options) -> Calibrator:
    """A :class:`Calibrator` for ``model`` over a trtcal data source (``.npy``, ``.npz``, a folder,
    images with ``preprocess``, ``script.py:function``), as ``trtcal calibrate`` reads it.

    ``batch_size`` defaults to the batch axis of ``shapes``, else the model's fixed batch, else 32.
    """
    from trtcal.data import open_data
    from trtcal.trt.provenance import data_sha256, file_sha256

    inputs = onnx_inputs(model)
    if batch_size is None:
        batch_size = default_batch_size(inputs, shapes)
    source = open_data(data, inputs, batch_size=batch_size, preprocess=preprocess)
    model_sha, data_sha = file_sha256(model), data_sha256(data)
    metadata = {"model": str(model), "model_sha256": model_sha, "data_sha256": data_sha, **options.pop("metadata", {})}
    expected = {"model_sha256": model_sha, "data_sha256": data_sha}
    return Calibrator(source, inputs, batch_size=batch_size, algorithm=algorithm, cache=cache, shapes=shapes,
                      device=device, trt_version=trt_version, metadata=metadata, expected=expected, **options)
