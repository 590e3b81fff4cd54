"""A tiny device-memory interface: allocate, upload, download, free, and a stream.

The calibrator and the engine runner need only this from CUDA, so their logic runs (and is
tested) without a GPU. Two real backends, same interface, both in the device's **primary
context** (the one the CUDA runtime, TensorRT and PyTorch use, so they coexist in one process):

- :class:`PycudaMemory`: pycuda (``pycuda.autoprimaryctx``, not ``autoinit``, which makes its
  own context and clashes with other CUDA libraries in the process).
- :class:`CudaPythonMemory`: NVIDIA's cuda-python, the CUDA runtime API, as TensorRT's own samples
  use it since TensorRT 10.14 (``cuda.bindings.runtime`` in cuda-python >= 12.8, ``cuda.cudart``
  before). Its calls return ``(error, value...)`` tuples; a failed call is a
  :class:`~trtcal.core.errors.TrtcalError` naming the call and CUDA's error.
- :class:`HostMemory` is the stand-in for tests: "device" buffers are host buffers, and a
  pointer is the buffer's real address, so a test can read the bytes at a pointer the way
  TensorRT would (``ctypes.string_at``).

:func:`open_device` picks one by name (``--cuda``): ``pycuda``, ``cuda-python``, or ``auto``
(pycuda if it is installed, else cuda-python). :class:`LazyDevice` defers that until memory is
first needed, so a build that needs none (a reused cache, FP16) never initialises CUDA. Nothing
here imports pycuda or cuda-python at module level; a backend that is not installed is one line
saying what to install, a CUDA that cannot start (no driver, no GPU) one line saying so.

A pointer is a plain ``int``, which is what TensorRT's ``get_batch`` returns; so is a stream.
"""

from __future__ import annotations

import ctypes
import importlib
import shutil
import subprocess

import numpy as np

from trtcal.core.errors import TrtcalError

#: The real backends ``--cuda`` names, in the order ``auto`` tries them.
CUDA_BACKENDS = ("pycuda", "cuda-python")
#: What ``--cuda`` accepts.
CUDA_CHOICES = ("auto", *CUDA_BACKENDS)
INSTALL = {"pycuda": "pip install 'trtcal[gpu]' (pycuda)", "cuda-python": "pip install cuda-python"}
#: cuda-python's runtime module: the current name first, then the one before cuda-python 12.8.
CUDART_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


class CudaMissing(TrtcalError):
    """The backend's Python package is not installed (``auto`` then tries the next one)."""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def _unusable(backend: str, problem: str) -> TrtcalError:
    return TrtcalError(f"CUDA is not usable here through {backend} ({problem}); calibrating or running engines "
                       "with TensorRT needs an NVIDIA GPU and driver")


class DeviceMemory:
    """Allocate ``nbytes`` (returns a pointer), upload/download contiguous host arrays, free,
    streams, close."""

    #: The backend's name (``--cuda``), recorded in the calibration record.
    name = "device"

    def alloc(self, nbytes: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def upload(self, pointer: int, host: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def download(self, pointer: int, host: np.ndarray) -> None:  # pragma: no cover - interface
        """Copy ``host.nbytes`` bytes from the device buffer into the contiguous ``host`` array."""
        raise NotImplementedError

    def free(self, pointer: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def create_stream(self) -> int:
        """A CUDA stream's handle, for ``execute_async_v3`` (0, the default stream, here)."""
        return 0

    def synchronize(self, stream: int) -> None:
        """Wait until the work queued on ``stream`` has finished."""

    def destroy_stream(self, stream: int) -> None:
        """Release a stream from :meth:`create_stream`."""

    def close(self) -> None:
        """Release whatever the implementation holds (buffers are freed by their owner)."""


class HostMemory(DeviceMemory):
    """Host buffers standing in for device memory, with counters for tests."""

    name = "host"

    def __init__(self):
        self._buffers: dict[int, np.ndarray] = {}
        self.allocations = 0
        self.frees = 0
        self.uploads = 0

    def alloc(self, nbytes: int) -> int:
        buf = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        pointer = buf.ctypes.data
        self._buffers[pointer] = buf
        self.allocations += 1
        return pointer

    def upload(self, pointer: int, host: np.ndarray) -> None:
        buf = self._buffers.get(pointer)
        if buf is None:
            raise RuntimeError(f"upload to {pointer:#x}: not an allocated buffer (freed or never allocated)")
        if not host.flags.c_contiguous:
            raise RuntimeError("upload of a non-contiguous host array")
        raw = host.reshape(-1).view(np.uint8)
        if raw.size > buf.size:
            raise RuntimeError(f"upload of {raw.size} bytes into a {buf.size}-byte buffer")
        buf[: raw.size] = raw
        self.uploads += 1

    def download(self, pointer: int, host: np.ndarray) -> None:
        buf = self._buffers[pointer]
        raw = host.reshape(-1).view(np.uint8)
        raw[:] = buf[: raw.size]

    def free(self, pointer: int) -> None:
        if self._buffers.pop(pointer, None) is None:
            raise RuntimeError(f"free of {pointer:#x}: not an allocated buffer (double free?)")
        self.frees += 1

    @property
    def live(self) -> int:
        return len(self._buffers)

    @staticmethod
    def read(pointer: int, nbytes: int) -> bytes:
        """The bytes at ``pointer``, read through the raw address as TensorRT would."""
        return ctypes.string_at(pointer, nbytes)


class PycudaMemory(DeviceMemory):
    """Device buffers from pycuda, in the primary context of the current device."""

    name = "pycuda"

    def __init__(self):
        try:
            import pycuda.driver as cuda
        except ModuleNotFoundError as exc:
            if (exc.name or "pycuda").split(".")[0] == "pycuda":
                raise CudaMissing(f"--cuda pycuda: pycuda is not installed ({INSTALL['pycuda']})") from None
            raise _unusable("pycuda", f"it needs {exc.name}") from None
        except ImportError as exc:  # e.g. libcuda.so not found
            raise _unusable("pycuda", _first_line(exc)) from None
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (retains and activates the primary context)
        except Exception as exc:  # pycuda raises its own errors when there is no driver or GPU
            raise _unusable("pycuda", f"{type(exc).__name__}: {_first_line(exc)}") from None
        self._cuda = cuda
        self._allocations: dict[int, object] = {}
        self._streams: dict[int, object] = {}

    def alloc(self, nbytes: int) -> int:
        allocation = self._cuda.mem_alloc(max(int(nbytes), 1))
        pointer = int(allocation)
        self._allocations[pointer] = allocation
        return pointer

    def upload(self, pointer: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod(self._allocations[pointer], host)

    def download(self, pointer: int, host: np.ndarray) -> None:
        self._cuda.memcpy_dtoh(host, self._allocations[pointer])

    def free(self, pointer: int) -> None:
        allocation = self._allocations.pop(pointer, None)
        if allocation is not None:
            allocation.free()

    def create_stream(self) -> int:
        stream = self._cuda.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)  # pycuda destroys a Stream when it is collected


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``, else ``cuda.cudart``)."""
    for module_name in CUDART_MODULES:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name):
                raise _unusable("cuda-python", f"{module_name} needs {exc.name}") from None
            continue  # this name does not exist in the installed cuda-python (or none is installed)
        except ImportError as exc:  # e.g. the CUDA runtime library not found
            raise _unusable("cuda-python", f"{module_name}: {_first_line(exc)}") from None
    raise CudaMissing(f"--cuda cuda-python: cuda-python is not installed ({INSTALL['cuda-python']}; "
                      f"no module {' or '.join(CUDART_MODULES)})")


def _code(value) -> int:
    return int(getattr(value, "value", value))


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _CudaError(TrtcalError):
    """A cuda-python call that returned an error."""

    def __init__(self, function: str, err, description: str):
        self.function, self.err, self.short = function, err, f"{function}: {description}"
        super().__init__(f"CUDA error in {function} (cuda-python): {description}")


class CudaPythonMemory(DeviceMemory):
    """Device buffers from cuda-python's runtime API (``cudaMalloc``/``cudaMemcpy``/``cudaFree``),
    in the primary context of the current device."""

    name = "cuda-python"

    def __init__(self):
        self._rt = rt = import_cudart()
        try:
            self._htod = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._dtoh = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        except AttributeError as exc:
            raise _unusable("cuda-python", f"{rt.__name__} has no {exc.name or 'cudaMemcpyKind'}") from None
        try:
            count = self._call("cudaGetDeviceCount")
            if not count:
                raise _unusable("cuda-python", "no NVIDIA GPU: cudaGetDeviceCount() is 0")
            self._call("cudaFree", 0)  # initialises the runtime: retains the primary context
        except _CudaError as exc:
            raise _unusable("cuda-python", exc.short) from None
        self._sizes: dict[int, int] = {}
        self._streams: dict[int, object] = {}

    def _call(self, function: str, *args):
        """``rt.function(*args)``: cuda-python returns ``(error, value...)``; the value(s), or
        :class:`TrtcalError` naming the call and CUDA's error. (cuda-python 12.x raises
        ``RuntimeError: Failed to dlopen libcuda.so.1`` instead where there is no driver.)"""
        try:
            result = getattr(self._rt, function)(*args)
        except RuntimeError as exc:
            raise _CudaError(function, None, f"{type(exc).__name__}: {_first_line(exc)}") from None
        err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if _code(err) != 0:
            raise _CudaError(function, err, self._describe(err))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def _describe(self, err) -> str:
        parts = []
        for getter in ("cudaGetErrorName", "cudaGetErrorString"):
            try:
                answer = getattr(self._rt, getter)(err)
                parts.append(_text(answer[1] if isinstance(answer, tuple) else answer))
            except Exception:  # an odd error value: keep what we know
                pass
        if not parts:
            parts.append(f"error {_code(err)}")
        return ": ".join(parts)

    def _check(self, pointer: int, host: np.ndarray, what: str) -> None:
        size = self._sizes.get(pointer)
        if size is None:
            raise TrtcalError(f"cuda-python {what} at {pointer:#x}: not an allocated buffer (freed or never allocated)")
        if not host.flags.c_contiguous:
            raise TrtcalError(f"cuda-python {what}: the host array is not contiguous")
        if host.nbytes > size:
            raise TrtcalError(f"cuda-python {what} of {host.nbytes} bytes with a {size}-byte device buffer")

    def alloc(self, nbytes: int) -> int:
        nbytes = max(int(nbytes), 1)
        pointer = int(self._call("cudaMalloc", nbytes))
        self._sizes[pointer] = nbytes
        return pointer

    def upload(self, pointer: int, host: np.ndarray) -> None:
        self._check(pointer, host, "upload")
        self._call("cudaMemcpy", pointer, host.ctypes.data, host.nbytes, self._htod)

    def download(self, pointer: int, host: np.ndarray) -> None:
        self._check(pointer, host, "download")
        self._call("cudaMemcpy", host.ctypes.data, pointer, host.nbytes, self._dtoh)

    def free(self, pointer: int) -> None:
        if self._sizes.pop(pointer, None) is not None:
            self._call("cudaFree", pointer)

    def create_stream(self) -> int:
        stream = self._call("cudaStreamCreate")
        self._streams[int(stream)] = stream
        return int(stream)

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", self._streams.get(stream, stream))

    def destroy_stream(self, stream: int) -> None:
        handle = self._streams.pop(stream, None)
        if handle is not None:
            self._call("cudaStreamDestroy", handle)


def open_device(cuda: str = "auto") -> DeviceMemory:
    """The device-memory backend ``cuda`` names: ``pycuda``, ``cuda-python``, or ``auto`` (pycuda
    if it is installed, else cuda-python). Initialises CUDA (the primary context)."""
    if cuda not in CUDA_CHOICES:
        raise TrtcalError(f"--cuda {cuda!r}: choose {', '.join(CUDA_CHOICES)}")
    classes = {"pycuda": PycudaMemory, "cuda-python": CudaPythonMemory}  # looked up now: tests replace them
    if cuda != "auto":
        return classes[cuda]()
    for name in CUDA_BACKENDS:
        try:
            return classes[name]()
        except CudaMissing:
            continue
    raise CudaMissing("calibrating or running engines with TensorRT needs pycuda or cuda-python, and neither is "
                      f"installed: {INSTALL['cuda-python']}, or {INSTALL['pycuda']} (--cuda picks one)")


class LazyDevice(DeviceMemory):
    """:func:`open_device` (``cuda``) on first use: CUDA is initialised only when device memory
    or a stream is needed. The name is checked at once."""

    def __init__(self, cuda: str = "auto"):
        if cuda not in CUDA_CHOICES:
            raise TrtcalError(f"--cuda {cuda!r}: choose {', '.join(CUDA_CHOICES)}")
        self.requested = cuda
        self.opened: DeviceMemory | None = None

    @property
    def name(self) -> str:  # the backend actually opened (for the record), else what was asked
        return self.opened.name if self.opened is not None else self.requested

    @property
    def device(self) -> DeviceMemory:
        if self.opened is None:
            self.opened = open_device(self.requested)
        return self.opened

    def alloc(self, nbytes: int) -> int:
        return self.device.alloc(nbytes)

    def upload(self, pointer: int, host: np.ndarray) -> None:
        self.device.upload(pointer, host)

    def download(self, pointer: int, host: np.ndarray) -> None:
        self.device.download(pointer, host)

    def free(self, pointer: int) -> None:
        self.device.free(pointer)

    def create_stream(self) -> int:
        return self.device.create_stream()

    def synchronize(self, stream: int) -> None:
        self.device.synchronize(stream)

    def destroy_stream(self, stream: int) -> None:
        self.device.destroy_stream(stream)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


def _gpu_pycuda() -> dict:
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return {"name": device.name(), "compute_capability": f"{major}.{minor}"}


def _gpu_cuda_python() -> dict:
    rt = import_cudart()
    err, props = rt.cudaGetDeviceProperties(0)
    if _code(err) != 0:
        raise RuntimeError(f"cudaGetDeviceProperties: error {_code(err)}")
    name = _text(props.name).split("\x00", 1)[0].strip()
    if not name:
        raise RuntimeError("cudaGetDeviceProperties: no device name")
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}"}


def gpu_info() -> dict | None:
    """Name and compute capability of GPU 0 (pycuda, else cuda-python, else ``nvidia-smi``), or
    None without one."""
    for probe in (_gpu_pycuda, _gpu_cuda_python):
        try:
            return probe()
        except Exception:  # not installed, no driver, no GPU: try the next way
            pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in first:
        return None
    name, cc = (part.strip() for part in first.rsplit(",", 1))
    return {"name": name, "compute_capability": cc}
