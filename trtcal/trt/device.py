"""A tiny device-memory interface: allocate, upload, free.

The calibrator needs only this from CUDA, so its logic runs (and is tested) without a GPU:

- :class:`PycudaMemory` allocates with pycuda in the device's **primary context**
  (``pycuda.autoprimaryctx``, not ``autoinit``, which makes its own context and clashes with
  other CUDA libraries in the process).
- :class:`HostMemory` is the stand-in for tests: "device" buffers are host buffers, and a
  pointer is the buffer's real address, so a test can read the bytes at a pointer the way
  TensorRT would (``ctypes.string_at``).

A pointer is a plain ``int``, which is what TensorRT's ``get_batch`` returns.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np

from trtcal.errors import TrtcalError


class DeviceMemory:
    """Allocate ``nbytes`` (returns a pointer), upload/download contiguous host arrays, free, close."""

    def alloc(self, nbytes: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def upload(self, pointer: int, host: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def download(self, pointer: int, host: np.ndarray) -> None:  # pragma: no cover - interface
        """Copy ``host.nbytes`` bytes from the device buffer into the contiguous ``host`` array."""
        raise NotImplementedError

    def free(self, pointer: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the implementation holds (buffers are freed by their owner)."""


class HostMemory(DeviceMemory):
    """Host buffers standing in for device memory, with counters for tests."""

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

    def __init__(self):
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (retains and activates the primary context)
            import pycuda.driver as cuda
        except ImportError as exc:
            raise TrtcalError(f"calibrating with TensorRT needs pycuda (`pip install 'trtcal[gpu]'`): {exc}") from None
        except Exception as exc:  # pycuda raises its own errors when there is no driver or GPU
            raise TrtcalError(f"CUDA is not usable here ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                              "calibrating with TensorRT needs an NVIDIA GPU and driver") from None
        self._cuda = cuda
        self._allocations: dict[int, object] = {}

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


def gpu_info() -> dict | None:
    """Name and compute capability of GPU 0 (pycuda, else ``nvidia-smi``), or None without one."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return {"name": device.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:  # no pycuda, no driver, no GPU: try nvidia-smi
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
