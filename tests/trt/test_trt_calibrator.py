"""The TensorRT calibrator's logic, driven exactly as TensorRT drives it, on host memory.

TensorRT calls ``get_batch_size()``, then ``read_calibration_cache()``; if that gives nothing it
calls ``get_batch(names)`` until it returns None, then ``write_calibration_cache(cache)``; the
next build reads the cache. :func:`drive` does the same, and reads the bytes behind every
pointer through the raw address (as TensorRT would on the device), so the tests check that each
pointer points at the right bytes of the right batch.

The protocol tests run on every device backend: :class:`HostMemory`, and pycuda and cuda-python
(both import paths) through fake modules in ``sys.modules`` whose "device" memory is host memory
and which record every call (allocations, host-to-device copies, frees) and refuse wrong ones
(a copy into memory they did not allocate, a wrong copy direction, a double free). CUDA tensors
from a data loader are stood in for by :class:`FakeCudaTensor` (no torch needed).
"""

from __future__ import annotations

import ctypes
import enum
import gc
import json
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

from trtcal.cache.format import CalibrationCache
from trtcal.core.errors import TrtcalError
from trtcal.ort.runner import InputSpec
from trtcal.trt.calibrator import (
    ALGORITHMS,
    Calibrator,
    calibrator_class,
    onnx_inputs,
    open_calibrator,
)
from trtcal.trt.device import (
    CudaMissing,
    CudaPythonMemory,
    HostMemory,
    LazyDevice,
    PycudaMemory,
    gpu_info,
    open_device,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"

INPUTS = [InputSpec("x", np.float32, ("N", 3, 4)), InputSpec("ids", np.int64, ("N", 2))]


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 3, 4)).astype(np.float32), "ids": rng.integers(0, 1000, (n, 2))}


def batches_of(data: dict, size: int) -> list[dict]:
    n = len(next(iter(data.values())))
    return [{k: v[i:i + size] for k, v in data.items()} for i in range(0, n, size)]


def cache_text(amaxes: dict, header: str = "TRT-100900-EntropyCalibration2") -> bytes:
    cache = CalibrationCache.from_amaxes(amaxes)
    return (header + "\n" + "".join(e.text() + "\n" for e in cache.entries)).encode()


def drive(cal: Calibrator, names: list[str], *, written: bytes | None = None) -> dict:
    """Do what TensorRT does with a calibrator; return what it saw."""
    seen = {"batch_size": cal.get_batch_size(), "cache": cal.read_calibration_cache(), "batches": []}
    if seen["cache"] is not None:
        return seen
    while True:
        pointers = cal.get_batch(names)
        if pointers is None:
            break
        assert isinstance(pointers, list) and len(pointers) == len(names)
        batch = {}
        for name, ptr in zip(names, pointers):
            assert isinstance(ptr, int) and ptr != 0
            spec = next(s for s in cal.inputs if s.name == name)
            shape = cal.shapes[name]
            nbytes = int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
            batch[name] = (ptr, HostMemory.read(ptr, nbytes), shape, np.dtype(spec.dtype))
        seen["batches"].append(batch)
    if written is not None and cal.failure is None:
        cal.write_calibration_cache(memoryview(written))  # TensorRT hands over a buffer
    return seen


def expected_bytes(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()



# ---------------------------------------------------------------------- fake CUDA backends


class FakeDeviceHeap:
    """"Device" memory for the fake backends: host buffers, found by any address inside them."""

    def __init__(self):
        self.buffers: dict[int, np.ndarray] = {}
        self.calls: list[tuple] = []

    def alloc(self, nbytes: int) -> int:
        buf = np.zeros(nbytes, np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return buf.ctypes.data

    def owns(self, address: int, count: int) -> bool:
        return any(base <= address and address + count <= base + buf.size for base, buf in self.buffers.items())

    def stats(self) -> dict:
        names = [c[0] for c in self.calls if c[:2] != ("cudaFree", 0)]  # cudaFree(0) initialises CUDA
        return {"allocations": sum(n in ("cudaMalloc", "mem_alloc") for n in names),
                "uploads": sum(n in ("htod", "memcpy_htod") for n in names),
                "frees": sum(n in ("cudaFree", "free") for n in names),
                "live": len(self.buffers)}


def fake_cudart(heap: FakeDeviceHeap, *, name: str = "cuda.bindings.runtime", devices: int = 1,
                driver: bool = True, memory: int = 2**20, dlopen_fails: bool = False) -> types.ModuleType:
    """cuda-python's runtime module as far as trtcal uses it: every call returns ``(error, value...)``;
    ``dlopen_fails``: as cuda-python 12.x without a driver, the first call raises instead."""
    rt = types.ModuleType(name)
    err = rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorInvalidValue": 1,
                                                        "cudaErrorMemoryAllocation": 2,
                                                        "cudaErrorInsufficientDriver": 35})
    kind = rt.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToHost": 0, "cudaMemcpyHostToDevice": 1,
                                                               "cudaMemcpyDeviceToHost": 2})
    ok = err.cudaSuccess
    no_driver = (err.cudaErrorInsufficientDriver,)

    class cudaStream_t:  # noqa: N801 - cuda-python's name
        def __init__(self, handle):
            self.handle = handle

        def __int__(self):
            return self.handle

    def cudaGetDeviceCount():
        heap.calls.append(("cudaGetDeviceCount",))
        if dlopen_fails:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return (err.cudaErrorInsufficientDriver, None) if not driver else (ok, devices)

    def cudaMalloc(nbytes):
        heap.calls.append(("cudaMalloc", nbytes))
        if not driver:
            return (err.cudaErrorInsufficientDriver, None)
        if nbytes > memory:
            return (err.cudaErrorMemoryAllocation, None)
        return (ok, heap.alloc(nbytes))

    def cudaMemcpy(dst, src, count, direction):
        if direction == kind.cudaMemcpyHostToDevice and heap.owns(dst, count):
            heap.calls.append(("htod", dst, count))
        elif direction == kind.cudaMemcpyDeviceToHost and heap.owns(src, count):
            heap.calls.append(("dtoh", src, count))
        else:
            return (err.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, count)
        return (ok,)

    def cudaFree(pointer):
        heap.calls.append(("cudaFree", pointer))
        if not driver:
            return no_driver
        if pointer == 0:
            return (ok,)
        return (ok,) if heap.buffers.pop(pointer, None) is not None else (err.cudaErrorInvalidValue,)

    def cudaStreamCreate():
        heap.calls.append(("cudaStreamCreate",))
        return (ok, cudaStream_t(0x5EED))

    def cudaStreamSynchronize(stream):
        heap.calls.append(("cudaStreamSynchronize", int(stream)))
        return (ok,)

    def cudaStreamDestroy(stream):
        heap.calls.append(("cudaStreamDestroy", int(stream)))
        return (ok,)

    def cudaGetErrorName(e):
        return (ok, err(e).name.encode())

    def cudaGetErrorString(e):
        return (ok, {35: b"CUDA driver version is insufficient for CUDA runtime version",
                     2: b"out of memory"}.get(int(e), b"invalid argument"))

    def cudaGetDeviceProperties(index):
        if not driver:
            return (err.cudaErrorInsufficientDriver, None)
        return (ok, types.SimpleNamespace(name=b"Fake H100\x00\x00\x00", major=9, minor=0))

    for f in (cudaGetDeviceCount, cudaMalloc, cudaMemcpy, cudaFree, cudaStreamCreate, cudaStreamSynchronize,
              cudaStreamDestroy, cudaGetErrorName, cudaGetErrorString, cudaGetDeviceProperties):
        setattr(rt, f.__name__, f)
    rt.cudaStream_t = cudaStream_t
    return rt


def install_cuda_python(monkeypatch, heap: FakeDeviceHeap, *, old_path: bool = False, **options):
    """The fake runtime under ``cuda.bindings.runtime`` (cuda-python >= 12.8), or only under
    ``cuda.cudart`` (before)."""
    rt = fake_cudart(heap, name="cuda.cudart" if old_path else "cuda.bindings.runtime", **options)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None if old_path else rt)
    monkeypatch.setitem(sys.modules, "cuda.cudart", rt if old_path else None)
    return rt


def no_cuda_python(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)


def install_pycuda(monkeypatch, heap: FakeDeviceHeap, *, context_error: Exception | None = None):
    """pycuda as far as trtcal uses it (``autoprimaryctx``, ``driver.mem_alloc``/``memcpy_*``/``Stream``)."""
    driver = types.ModuleType("pycuda.driver")

    class DeviceAllocation:
        def __init__(self, pointer):
            self.pointer = pointer

        def __int__(self):
            return self.pointer

        def free(self):
            heap.calls.append(("free", self.pointer))
            if heap.buffers.pop(self.pointer, None) is None:
                raise RuntimeError("double free")

    def mem_alloc(nbytes):
        heap.calls.append(("mem_alloc", nbytes))
        return DeviceAllocation(heap.alloc(nbytes))

    def memcpy_htod(dest, src):
        assert isinstance(dest, DeviceAllocation) and heap.owns(int(dest), src.nbytes)
        heap.calls.append(("memcpy_htod", int(dest), src.nbytes))
        ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)

    def memcpy_dtoh(dest, src):
        assert isinstance(src, DeviceAllocation) and heap.owns(int(src), dest.nbytes)
        ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)

    class Stream:
        handle = 0xCAFE

        def synchronize(self):
            heap.calls.append(("synchronize",))

    class Device:
        def __init__(self, index):
            pass

        def name(self):
            return "Fake A100"

        def compute_capability(self):
            return (8, 0)

    driver.mem_alloc, driver.memcpy_htod, driver.memcpy_dtoh = mem_alloc, memcpy_htod, memcpy_dtoh
    driver.Stream, driver.Device, driver.init = Stream, Device, lambda: None
    package = types.ModuleType("pycuda")
    package.driver, package.__path__ = driver, []
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    if context_error is None:
        monkeypatch.setitem(sys.modules, "pycuda.autoprimaryctx", types.ModuleType("pycuda.autoprimaryctx"))
    else:
        monkeypatch.delitem(sys.modules, "pycuda.autoprimaryctx", raising=False)

        class RaisingFinder:  # the import of autoprimaryctx fails as pycuda's does without a GPU
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name == "pycuda.autoprimaryctx":
                    raise context_error
                return None

        monkeypatch.setattr(sys, "meta_path", [RaisingFinder, *sys.meta_path])
    return driver


def no_pycuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


class Backend:
    """What a protocol test passes as ``device`` and how it counts what the device did."""

    def __init__(self, name: str, device, stats):
        self.name, self.device, self._stats = name, device, stats

    def stats(self) -> dict:
        return self._stats()


@pytest.fixture(params=["host", "pycuda", "cuda-python", "cuda.cudart"])
def backend(request, monkeypatch) -> Backend:
    if request.param == "host":
        device = HostMemory()
        return Backend("host", device, lambda: {"allocations": device.allocations, "uploads": device.uploads,
                                                "frees": device.frees, "live": device.live})
    heap = FakeDeviceHeap()
    if request.param == "pycuda":
        install_pycuda(monkeypatch, heap)
        no_cuda_python(monkeypatch)
        return Backend("pycuda", "pycuda", heap.stats)
    no_pycuda(monkeypatch)  # auto must find cuda-python on its own
    install_cuda_python(monkeypatch, heap, old_path=request.param == "cuda.cudart")
    return Backend("cuda-python", "auto", heap.stats)


class TorchDtype:
    def __init__(self, name: str):
        self.name = name

    def __str__(self):
        return f"torch.{self.name}"


class FakeCudaTensor:
    """A torch CUDA tensor as the calibrator sees one; its "device" memory is the numpy array's."""

    is_cuda = True

    def __init__(self, array: np.ndarray, *, dtype: str | None = None, contiguous: bool | None = None):
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = TorchDtype(dtype or array.dtype.name)
        self.device = "cuda:0"
        self._contiguous = array.flags.c_contiguous if contiguous is None else contiguous

    def is_contiguous(self):
        return self._contiguous

    def data_ptr(self):
        return self.array.ctypes.data


class FakeCpuTensor:
    """A torch CPU tensor: ``detach().numpy()`` gives the data (``__array__`` is not relied on)."""

    is_cuda = False

    def __init__(self, array: np.ndarray, error: Exception | None = None):
        self.array, self.error = array, error

    def detach(self):
        return self

    def numpy(self):
        if self.error is not None:
            raise self.error
        return self.array


# ---------------------------------------------------------------------- batches and pointers


def test_every_pointer_points_at_the_right_bytes_of_the_right_batch(backend):
    data = make_data(70)
    names = ["ids", "x"]  # TensorRT's order, not the model's
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=backend.device) as cal:
        seen = drive(cal, names)
        assert seen["batch_size"] == 16 and seen["cache"] is None
        assert len(seen["batches"]) == 4  # 70 = 4 x 16 + 6: the short last batch is dropped
        for i, batch in enumerate(seen["batches"]):
            for name in names:
                _, raw, shape, dtype = batch[name]
                assert shape[0] == 16
                assert raw == expected_bytes(data[name][16 * i:16 * (i + 1)], dtype), (i, name)
        # one buffer per input, allocated once and reused for every batch
        pointers = {name: {b[name][0] for b in seen["batches"]} for name in names}
        assert all(len(p) == 1 for p in pointers.values())
        assert backend.stats() == {"allocations": 2, "uploads": 8, "frees": 0, "live": 2}
        assert cal.batches == 4 and cal.samples == 64 and cal.dropped_samples == 6
        assert any("last batch has 6 samples" in w and "dropped" in w for w in cal.warnings)
        assert cal.failure is None
        assert cal.get_batch(names) is None  # stays finished
        assert cal.record()["cuda"] == backend.name
    assert backend.stats() == {"allocations": 2, "uploads": 8, "frees": 2, "live": 0}  # freed on close
    cal.close()  # idempotent
    assert backend.stats()["frees"] == 2


def test_host_copies_are_contiguous_and_of_the_input_dtype(backend):
    base = np.random.default_rng(1).normal(size=(8, 4, 3)).astype(np.float64)
    x = base.transpose(0, 2, 1)  # float64 and not contiguous
    ids = np.arange(16, dtype=np.int32).reshape(8, 2)  # int32 where the model wants int64
    with Calibrator([{"x": x, "ids": ids}], INPUTS, batch_size=8, device=backend.device) as cal:
        seen = drive(cal, ["x", "ids"])
    (batch,) = seen["batches"]
    assert batch["x"][1] == expected_bytes(x, np.float32)
    assert batch["ids"][1] == expected_bytes(ids, np.int64)


def test_a_batch_of_exactly_the_batch_size_at_the_end_is_kept():
    data = make_data(48)
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=HostMemory()) as cal:
        seen = drive(cal, ["x", "ids"])
    assert len(seen["batches"]) == 3 and not cal.warnings and cal.dropped_samples == 0


def test_max_batches_stops_early():
    with Calibrator(batches_of(make_data(80), 16), INPUTS, batch_size=16, device=HostMemory(), max_batches=2) as cal:
        seen = drive(cal, ["x", "ids"])
    assert len(seen["batches"]) == 2 and cal.batches == 2


@pytest.mark.parametrize("sizes, message", [
    ([16, 8, 16], "batch 1: 8 samples, fewer than the batch size 16; only the last batch may be short"),
    ([16, 32], "batch 1: 32 samples, but TensorRT takes exactly 16 per batch"),
])
def test_wrong_batch_sizes_end_calibration_with_an_error_naming_the_batch(sizes, message):
    data = make_data(sum(sizes))
    starts = np.cumsum([0] + sizes)
    source = [{k: v[a:b] for k, v in data.items()} for a, b in zip(starts[:-1], starts[1:])]
    with Calibrator(source, INPUTS, batch_size=16, device=HostMemory(), description="d.npz") as cal:
        seen = drive(cal, ["x", "ids"], written=b"never")
    assert len(seen["batches"]) == 1
    assert isinstance(cal.failure, TrtcalError) and message in str(cal.failure) and "d.npz" in str(cal.failure)
    assert cal.written is None  # a failed calibration writes no cache
    with pytest.raises(TrtcalError, match="batch 1"):
        cal.raise_failure()


def test_batches_must_have_the_calibration_shape():
    specs = [InputSpec("x", np.float32, ("N", 3, "H", "W"))]
    rng = np.random.default_rng(2)
    source = [{"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)},
              {"x": rng.normal(size=(4, 3, 8, 9)).astype(np.float32)}]
    with Calibrator(source, specs, batch_size=4, device=HostMemory(), shapes={"x": (4, 3, 8, 8)}) as cal:
        seen = drive(cal, ["x"])
    assert len(seen["batches"]) == 1
    assert "has shape [4, 3, 8, 9], but calibration runs at [4, 3, 8, 8]" in str(cal.failure)
    with pytest.raises(TrtcalError, match="batch axis must be the batch size 4"):
        Calibrator(source, specs, batch_size=4, shapes={"x": (8, 3, 8, 8)})
    with pytest.raises(TrtcalError, match="no such input"):
        Calibrator(source, specs, batch_size=4, shapes={"y": (4, 3, 8, 8)})


def test_bad_data_and_unknown_names_are_reported_not_raised_into_tensorrt():
    with Calibrator([{"x": np.zeros((16, 3, 4), np.float32)}], INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "ids"]) is None
    assert "no data for model input 'ids'" in str(cal.failure)
    with Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "mask"]) is None
    assert "'mask'" in str(cal.failure)


def test_nan_or_inf_in_a_batch_ends_calibration_unless_allowed():
    data = make_data(32)
    data["x"][20, 1, 2] = np.nan
    data["x"][21, 0, 0] = np.inf
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=HostMemory()) as cal:
        seen = drive(cal, ["x", "ids"])
    assert len(seen["batches"]) == 1  # the first batch is clean, the second is refused
    assert "batch 1: input 'x' holds 2 NaN/Inf values (the first at index (4, 1, 2)" in str(cal.failure)
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=HostMemory(), allow_nonfinite=True) as cal:
        seen = drive(cal, ["x", "ids"])
    assert cal.failure is None and len(seen["batches"]) == 2
    x = np.frombuffer(seen["batches"][1]["x"][1], np.float32).reshape(16, 3, 4)
    assert np.isnan(x[4, 1, 2]) and np.isinf(x[5, 0, 0])


def test_a_scalar_input_names_the_cpu_route():
    specs = [InputSpec("x", np.float32, ("N", 3)), InputSpec("rate", np.float32, ())]
    batches = [{"x": np.zeros((4, 3), np.float32), "rate": np.float32(16000)}]
    with Calibrator(batches, specs, batch_size=4, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "rate"]) is None
    assert "input 'rate' is a scalar (0-d)" in str(cal.failure) and "trtcal calibrate" in str(cal.failure)


def test_get_batch_after_close_is_an_error_not_a_dangling_pointer():
    cal = Calibrator(batches_of(make_data(32), 16), INPUTS, batch_size=16, device=HostMemory())
    assert cal.get_batch(["x"]) is not None
    cal.close()
    assert cal.get_batch(["x"]) is None and "closed" in str(cal.failure)


def test_options_are_checked():
    with pytest.raises(TrtcalError, match="choose from"):
        Calibrator([], INPUTS, batch_size=4, algorithm="kl")
    with pytest.raises(TrtcalError, match="batch size"):
        Calibrator([], INPUTS, batch_size=0)
    with pytest.raises(TrtcalError, match="quantile"):
        Calibrator([], INPUTS, batch_size=4, algorithm="legacy", quantile=1.5)


def test_legacy_calibrator_answers_quantile_and_cutoff():
    cal = Calibrator([], INPUTS, batch_size=4, algorithm="legacy", quantile=0.999, regression_cutoff=0.5)
    assert cal.get_quantile() == 0.999 and cal.get_regression_cutoff() == 0.5
    assert cal.read_histogram_cache(0) is None and cal.write_histogram_cache(b"x", 1) is None
    assert cal.header_algorithm == "LegacyCalibration" and cal.record()["quantile"] == 0.999


# ---------------------------------------------------------------------- the cache, across builds


def test_written_cache_is_kept_byte_for_byte_with_its_record_and_read_on_the_next_build(tmp_path):
    path = tmp_path / "model.cache"
    data = make_data(40)
    written = cache_text({"x": 2.5, "ids": 900.0})
    meta = {"model_sha256": "m" * 64, "data_sha256": "d" * 64}
    expected = {"model_sha256": "m" * 64, "data_sha256": "d" * 64}
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=HostMemory(), cache=path,
                    trt_version=(10, 9, 0), metadata=meta, expected=expected, description="calib.npz") as first:
        seen = drive(first, ["x", "ids"], written=written)
    assert len(seen["batches"]) == 2 and first.failure is None
    assert path.read_bytes() == written and first.cache_written == path
    assert first.cache.amax("x") == pytest.approx(2.5)
    record = json.loads((tmp_path / "model.cache.trtcal.json").read_text())
    assert record["data"] == "calib.npz" and record["batches"] == 2 and record["samples"] == 32
    assert record["dropped_samples"] == 8 and record["batch_size"] == 16
    assert record["trt_algorithm"] == "EntropyCalibration2" and record["trt_version"] == "10.9.0"
    assert record["model_sha256"] == "m" * 64 and record["inputs"] == {"x": [16, 3, 4], "ids": [16, 2]}

    # The next build: TensorRT reads the cache and asks for no batch.
    device = HostMemory()
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=device, cache=path,
                    trt_version=(10, 9, 0), expected=expected) as second:
        seen = drive(second, ["x", "ids"])
        assert seen["cache"] == written and seen["batches"] == []
        second.write_calibration_cache(written)  # TensorRT may hand it back: nothing is rewritten
    assert second.cache_read == path and second.cache_written is None
    assert device.allocations == 0 and second.failure is None and not second.warnings


@pytest.mark.parametrize("header, said", [
    ("TRT-8601-EntropyCalibration2", "8.6.1"),
    ("TRT-100900-MinMaxCalibration", "MinMaxCalibration"),
])
def test_a_cache_for_another_version_or_algorithm_is_named_before_tensorrt_ignores_it(tmp_path, header, said):
    path = tmp_path / "old.cache"
    path.write_bytes(cache_text({"x": 1.0}, header))
    # With data: reported by name, and calibrated again instead.
    with Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device=HostMemory(), cache=path,
                    trt_version=(10, 9, 0)) as cal:
        seen = drive(cal, ["x", "ids"], written=cache_text({"x": 3.0}))
    assert seen["cache"] is None and len(seen["batches"]) == 1
    assert any(header in w and said in w and "calibrating again" in w for w in cal.warnings)
    assert cal.cache_written == path and b"TRT-100900-EntropyCalibration2" in path.read_bytes()
    # Without data: an error naming the file and the header.
    path.write_bytes(cache_text({"x": 1.0}, header))
    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, trt_version=(10, 9, 0))
    with pytest.raises(TrtcalError, match=rf"old.cache: its header '{header}' does not fit.*{said}"):
        cal.check_cache()
    assert cal.read_calibration_cache() is None and isinstance(cal.failure, TrtcalError)


def test_a_cache_whose_provenance_does_not_match_is_refused_unless_told(tmp_path):
    path = tmp_path / "m.cache"
    path.write_bytes(cache_text({"x": 1.0}))
    (tmp_path / "m.cache.trtcal.json").write_text(json.dumps({"model": "other.onnx", "model_sha256": "a" * 64}))
    expected = {"model_sha256": "b" * 64}
    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, trt_version=(10, 9, 0), expected=expected)
    with pytest.raises(TrtcalError, match="calibrated for other.onnx.*--ignore-provenance"):
        cal.check_cache()
    with Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device=HostMemory(), cache=path,
                    trt_version=(10, 9, 0), expected=expected) as cal:
        assert cal.read_calibration_cache() is None
    assert any("not reused" in w and "other.onnx" in w for w in cal.warnings)
    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, trt_version=(10, 9, 0), expected=expected,
                     ignore_provenance=True)
    assert cal.read_calibration_cache() == path.read_bytes()
    assert any("--ignore-provenance" in w for w in cal.warnings)


def test_random_data_caches_and_missing_records_are_called_out(tmp_path):
    path = tmp_path / "r.cache"
    path.write_bytes(cache_text({"x": 1.0}))
    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, trt_version=(10, 9, 0))
    assert cal.read_calibration_cache() is not None
    assert any("no provenance record" in w for w in cal.warnings)
    (tmp_path / "r.cache.trtcal.json").write_text(json.dumps({"fake_data": True}))
    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, trt_version=(10, 9, 0))
    with pytest.raises(TrtcalError, match="random data"):
        cal.check_cache()


def test_cache_only_without_a_file_or_with_a_broken_one(tmp_path):
    cal = Calibrator(None, INPUTS, batch_size=16, cache=tmp_path / "none.cache")
    with pytest.raises(TrtcalError, match="no such calibration cache"):
        cal.check_cache()
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-100900-EntropyCalibration2\nx 3c00\n")
    cal = Calibrator(None, INPUTS, batch_size=16, cache=bad)
    with pytest.raises(TrtcalError, match="bad.cache:2"):
        cal.check_cache()


def test_a_cache_transform_changes_what_tensorrt_reads(tmp_path):
    path = tmp_path / "t.cache"
    path.write_bytes(cache_text({"x": 1.0}))

    def double(cache):
        cache.set_amax("x", cache.amax("x") * 2)
        return cache

    cal = Calibrator(None, INPUTS, batch_size=16, cache=path, cache_transform=double)
    text = cal.read_calibration_cache().decode()
    assert CalibrationCache.from_amaxes({"x": 2.0}).entries[0].text() in text
    assert path.read_bytes() == cache_text({"x": 1.0})  # the file itself is never modified


# ---------------------------------------------------------------------- a real data source


def test_open_calibrator_feeds_the_bundled_calibration_data_exactly(backend):
    images = np.load(EXAMPLES / "fashion_calib.npz")["images"]
    with open_calibrator(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", batch_size=100,
                         device=backend.device) as cal:
        seen = drive(cal, ["images"])
    assert len(seen["batches"]) == 5 and cal.dropped_samples == 12  # 512 = 5 x 100 + 12
    for i, batch in enumerate(seen["batches"]):
        assert batch["images"][1] == images[100 * i:100 * (i + 1)].tobytes()
    assert backend.stats() == {"allocations": 1, "uploads": 5, "frees": 1, "live": 0}
    assert cal.metadata["model_sha256"] and cal.metadata["data_sha256"]
    assert "fashion_calib.npz" in cal.description


def test_onnx_inputs_reads_names_dtypes_and_dynamic_axes():
    (spec,) = onnx_inputs(EXAMPLES / "fashion_cnn.onnx")
    assert spec.name == "images" and spec.dtype is np.float32 and spec.shape[1:] == (1, 28, 28)
    assert not isinstance(spec.shape[0], int)


# ---------------------------------------------------------------------- TensorRT's base classes


class _Base:
    """Stands in for a TensorRT pybind class: remembers that its constructor ran."""

    def __init__(self):
        self.base_initialised = True


def fake_trt(*classes: str, version: str = "10.9.0.34"):
    return types.SimpleNamespace(__version__=version, **{c: type(c, (_Base,), {}) for c in classes})


def test_tensorrt_classes_subclass_the_right_base_and_delegate():
    trt = fake_trt(*(base for base, _ in ALGORITHMS.values()))
    for algorithm, (base_name, _) in ALGORITHMS.items():
        cls = calibrator_class(trt, algorithm)
        assert issubclass(cls, getattr(trt, base_name)) and cls.__name__ == base_name[len("IInt8"):]
        assert calibrator_class(trt, algorithm) is cls  # made once
    data = make_data(32)
    core = Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=HostMemory(), algorithm="legacy",
                      quantile=0.99)
    wrapped = calibrator_class(trt, "legacy")(core)
    assert wrapped.base_initialised and wrapped.get_batch_size() == 16
    assert wrapped.get_quantile() == 0.99 and wrapped.get_regression_cutoff() == 1.0
    assert wrapped.read_calibration_cache() is None
    pointers = wrapped.get_batch(["x"])
    assert HostMemory.read(pointers[0], 16 * 12 * 4) == data["x"][:16].tobytes()
    assert wrapped.read_histogram_cache(0) is None
    wrapped.write_calibration_cache(cache_text({"x": 1.0}))
    assert core.written == cache_text({"x": 1.0})
    core.close()


def test_tensorrt_11_has_no_calibrator_classes():
    trt = fake_trt(version="11.0.0.1")
    with pytest.raises(TrtcalError, match="no IInt8EntropyCalibrator2.*trtcal qdq"):
        calibrator_class(trt, "entropy2")


def test_host_memory_behaves_like_device_memory():
    device = HostMemory()
    ptr = device.alloc(24)
    data = np.arange(6, dtype=np.float32)
    device.upload(ptr, data)
    back = np.empty(6, np.float32)
    device.download(ptr, back)
    assert np.array_equal(back, data) and HostMemory.read(ptr, 24) == data.tobytes()
    with pytest.raises(RuntimeError, match="into a 24-byte buffer"):
        device.upload(ptr, np.zeros(7, np.float32))
    device.free(ptr)
    with pytest.raises(RuntimeError, match="double free"):
        device.free(ptr)
    with pytest.raises(RuntimeError, match="not an allocated buffer"):
        device.upload(ptr, data)


def test_without_pycuda_or_cuda_python_the_device_path_fails_in_one_clear_line(monkeypatch):
    from trtcal.trt.runtime import run_engine

    no_pycuda(monkeypatch)
    no_cuda_python(monkeypatch)
    cal = Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16)  # the default device: auto
    assert cal.get_batch(["x", "ids"]) is None
    message = str(cal.failure)
    assert isinstance(cal.failure, CudaMissing) and "\n" not in message
    assert "needs pycuda or cuda-python" in message and "pip install cuda-python" in message
    assert "trtcal[gpu]" in message
    with pytest.raises(TrtcalError, match="needs pycuda or cuda-python"):
        next(run_engine("any.engine", []))
    with pytest.raises(CudaMissing, match=r"--cuda pycuda: pycuda is not installed \(pip install 'trtcal\[gpu\]'"):
        open_device("pycuda")
    with pytest.raises(CudaMissing, match=r"--cuda cuda-python: cuda-python is not installed \(pip install cuda-python"):
        open_device("cuda-python")
    cal = Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device="cuda-python")
    assert cal.get_batch(["x"]) is None and "cuda-python is not installed" in str(cal.failure)


def test_a_new_tensorrt_module_never_gets_a_stale_class():
    # classes are cached per module; a freed module's id may be reused by the next object
    for _ in range(50):
        trt = fake_trt(*(base for base, _ in ALGORITHMS.values()))
        calibrator_class(trt, "entropy2")
        del trt
        with pytest.raises(TrtcalError, match="no IInt8EntropyCalibrator2"):
            calibrator_class(fake_trt(version="11.0.0.1"), "entropy2")


# ---------------------------------------------------------------------- cuda-python and the choice of backend


@pytest.mark.parametrize("old_path", [False, True], ids=["cuda.bindings.runtime", "cuda.cudart"])
def test_cuda_python_memory_round_trip_and_streams(monkeypatch, old_path):
    heap = FakeDeviceHeap()
    install_cuda_python(monkeypatch, heap, old_path=old_path)
    device = CudaPythonMemory()
    assert heap.calls[:2] == [("cudaGetDeviceCount",), ("cudaFree", 0)]  # the runtime is initialised first
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    pointer = device.alloc(data.nbytes)
    assert isinstance(pointer, int) and heap.calls[-1] == ("cudaMalloc", 48)
    device.upload(pointer, data)
    assert heap.calls[-1] == ("htod", pointer, 48) and HostMemory.read(pointer, 48) == data.tobytes()
    back = np.zeros_like(data)
    device.download(pointer, back)
    assert heap.calls[-1] == ("dtoh", pointer, 48) and np.array_equal(back, data)
    stream = device.create_stream()
    assert stream == 0x5EED
    device.synchronize(stream)
    device.destroy_stream(stream)
    assert heap.calls[-2:] == [("cudaStreamSynchronize", 0x5EED), ("cudaStreamDestroy", 0x5EED)]
    device.free(pointer)
    assert heap.calls[-1] == ("cudaFree", pointer) and not heap.buffers
    device.free(pointer)  # a second free of the same pointer does not reach CUDA
    assert heap.calls[-1] == ("cudaFree", pointer) and sum(c == ("cudaFree", pointer) for c in heap.calls) == 1


def test_cuda_python_refuses_bad_copies_before_calling_cuda(monkeypatch):
    heap = FakeDeviceHeap()
    install_cuda_python(monkeypatch, heap)
    device = CudaPythonMemory()
    pointer = device.alloc(16)
    calls = len(heap.calls)
    with pytest.raises(TrtcalError, match="upload of 20 bytes with a 16-byte device buffer"):
        device.upload(pointer, np.zeros(5, np.float32))
    with pytest.raises(TrtcalError, match="not contiguous"):
        device.upload(pointer, np.zeros((2, 4), np.float16)[:, ::2])
    device.free(pointer)
    with pytest.raises(TrtcalError, match="not an allocated buffer"):
        device.upload(pointer, np.zeros(4, np.float32))
    assert not [c for c in heap.calls[calls:] if c[0] == "htod"]


def test_cuda_python_errors_are_one_line_naming_the_call_and_cuda_s_error(monkeypatch):
    heap = FakeDeviceHeap()
    install_cuda_python(monkeypatch, heap, driver=False)
    with pytest.raises(TrtcalError) as info:
        open_device("cuda-python")
    assert str(info.value) == ("CUDA is not usable here through cuda-python (cudaGetDeviceCount: "
                               "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime "
                               "version); calibrating or running engines with TensorRT needs an NVIDIA GPU and driver")
    install_cuda_python(monkeypatch, FakeDeviceHeap(), devices=0)
    with pytest.raises(TrtcalError, match=r"no NVIDIA GPU: cudaGetDeviceCount\(\) is 0"):
        open_device("cuda-python")
    install_cuda_python(monkeypatch, FakeDeviceHeap(), old_path=True, dlopen_fails=True)
    with pytest.raises(TrtcalError, match=r"through cuda-python \(cudaGetDeviceCount: RuntimeError: Failed to "
                                          r"dlopen libcuda.so.1\); calibrating"):
        open_device("cuda-python")
    # out of device memory, inside TensorRT's callback: kept, calibration ends, one line
    heap = FakeDeviceHeap()
    install_cuda_python(monkeypatch, heap, memory=512)
    cal = Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device="cuda-python")
    assert cal.get_batch(["x", "ids"]) is None
    assert str(cal.failure) == ("CUDA error in cudaMalloc (cuda-python): cudaErrorMemoryAllocation: out of memory")
    assert ("cudaMalloc", 16 * 3 * 4 * 4) in heap.calls
    cal.close()


def test_auto_takes_pycuda_if_installed_else_cuda_python(monkeypatch):
    pycuda_heap, cudart_heap = FakeDeviceHeap(), FakeDeviceHeap()
    install_pycuda(monkeypatch, pycuda_heap)
    install_cuda_python(monkeypatch, cudart_heap)
    assert type(open_device("auto")) is PycudaMemory and not cudart_heap.calls
    assert type(open_device("cuda-python")) is CudaPythonMemory  # asked for by name
    no_pycuda(monkeypatch)
    assert type(open_device("auto")) is CudaPythonMemory
    with pytest.raises(TrtcalError, match=r"--cuda 'cupy': choose auto, pycuda, cuda-python"):
        open_device("cupy")
    with pytest.raises(TrtcalError, match=r"--cuda 'cupy'"):
        Calibrator([], INPUTS, batch_size=4, device="cupy")  # checked at once, not at the first batch


def test_an_installed_pycuda_that_cannot_start_is_reported_not_skipped(monkeypatch):
    # pycuda is there but CUDA is not: that is the answer, not a reason to try cuda-python
    heap = FakeDeviceHeap()
    install_pycuda(monkeypatch, heap, context_error=RuntimeError("cuInit failed: no CUDA-capable device is detected"))
    install_cuda_python(monkeypatch, FakeDeviceHeap())
    with pytest.raises(TrtcalError) as info:
        open_device("auto")
    assert not isinstance(info.value, CudaMissing)
    assert "through pycuda (RuntimeError: cuInit failed: no CUDA-capable device is detected)" in str(info.value)


def test_lazy_device_initialises_cuda_only_when_memory_is_needed(monkeypatch, tmp_path):
    heap = FakeDeviceHeap()
    no_pycuda(monkeypatch)
    install_cuda_python(monkeypatch, heap)
    lazy = LazyDevice("auto")
    assert lazy.name == "auto" and not heap.calls
    # a reused cache: TensorRT asks for no batch, so CUDA is never touched
    path = tmp_path / "c.cache"
    path.write_bytes(cache_text({"x": 1.0}))
    with Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16, device=lazy, cache=path) as cal:
        assert drive(cal, ["x", "ids"])["cache"] is not None
    assert not heap.calls and cal.record()["cuda"] is None
    pointer = lazy.alloc(8)
    assert lazy.name == "cuda-python" and ("cudaMalloc", 8) in heap.calls
    lazy.free(pointer)


def test_gpu_info_reads_cuda_python_when_pycuda_is_missing(monkeypatch):
    no_pycuda(monkeypatch)
    install_cuda_python(monkeypatch, FakeDeviceHeap())
    assert gpu_info() == {"name": "Fake H100", "compute_capability": "9.0"}
    install_pycuda(monkeypatch, FakeDeviceHeap())
    assert gpu_info() == {"name": "Fake A100", "compute_capability": "8.0"}


def fake_engine_trt(heap_log: list) -> types.SimpleNamespace:
    """TensorRT's runtime for an engine with input "x" [N, 4] float32 and output "y" = 2 x, which
    reads and writes through the raw device addresses it is given."""

    class Context:
        def __init__(self):
            self.addresses, self.shape = {}, None

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return len(shape) == 2 and shape[1] == 4

        def get_tensor_shape(self, name):
            return self.shape

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def execute_async_v3(self, stream):
            heap_log.append(("execute_async_v3", stream))
            n = int(np.prod(self.shape)) * 4
            x = np.frombuffer(ctypes.string_at(self.addresses["x"], n), np.float32)
            ctypes.memmove(self.addresses["y"], (2 * x).tobytes(), n)
            return True

    plan = types.SimpleNamespace(
        num_io_tensors=2, get_tensor_name=["x", "y"].__getitem__,
        get_tensor_mode=lambda name: "in" if name == "x" else "out",
        get_tensor_dtype=lambda name: "f32", create_execution_context=Context)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return plan if blob == b"plan" else None

    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    return types.SimpleNamespace(Logger=logger, Runtime=Runtime, TensorIOMode=types.SimpleNamespace(INPUT="in"),
                                 nptype=lambda dtype: np.float32)


def test_run_engine_on_cuda_python(monkeypatch, tmp_path):
    from trtcal.trt.runtime import run_engine

    heap = FakeDeviceHeap()
    no_pycuda(monkeypatch)
    install_cuda_python(monkeypatch, heap)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    batches = [{"x": np.arange(8, dtype=np.float32).reshape(2, 4)}, {"x": np.ones((3, 4), np.float64)}]
    outputs = list(run_engine(engine, batches, trt=fake_engine_trt(heap.calls)))
    assert [sorted(o) for o in outputs] == [["y"], ["y"]]
    assert np.array_equal(outputs[0]["y"], 2 * batches[0]["x"]) and np.array_equal(outputs[1]["y"], np.full((3, 4), 2.0))
    names = [c[0] for c in heap.calls]
    assert ("execute_async_v3", 0x5EED) in heap.calls  # TensorRT runs on the stream cuda-python made
    first = names.index("execute_async_v3")
    assert names[first + 1] == "cudaStreamSynchronize" and names[first + 2] == "dtoh"  # outputs read after the sync
    assert names[-1] == "cudaStreamDestroy" and not heap.buffers  # every buffer freed, the stream destroyed
    assert names.count("cudaMalloc") == 4 and names.count("htod") == 2


# ---------------------------------------------------------------------- CUDA tensors from a data loader


def cuda_batches(data: dict, size: int, on_device=("x",)) -> list[dict]:
    return [{k: FakeCudaTensor(np.ascontiguousarray(v)) if k in on_device else v for k, v in b.items()}
            for b in batches_of(data, size)]


def test_cuda_tensors_go_to_tensorrt_as_their_own_pointers_without_a_copy(backend):
    data = make_data(48)
    source = cuda_batches(data, 16)
    with Calibrator(source, INPUTS, batch_size=16, device=backend.device) as cal:
        seen = drive(cal, ["x", "ids"])
        assert len(seen["batches"]) == 3
        for i, batch in enumerate(seen["batches"]):
            assert batch["x"][0] == source[i]["x"].data_ptr()  # the tensor's own memory: no copy
            assert batch["x"][1] == data["x"][16 * i:16 * (i + 1)].tobytes()
            assert batch["ids"][1] == expected_bytes(data["ids"][16 * i:16 * (i + 1)], np.int64)
        # only "ids" went through the device backend: one buffer, three copies
        assert backend.stats() == {"allocations": 1, "uploads": 3, "frees": 0, "live": 1}
        record = cal.record()
        assert record["cuda_tensor_inputs"] == ["x"] and record["cuda"] == backend.name
        assert record["inputs"] == {"x": [16, 3, 4], "ids": [16, 2]} and record["samples"] == 48


def test_all_cuda_tensor_batches_need_no_cuda_backend(monkeypatch):
    no_pycuda(monkeypatch)
    no_cuda_python(monkeypatch)
    data = make_data(32)
    with Calibrator(cuda_batches(data, 16, on_device=("x", "ids")), INPUTS, batch_size=16) as cal:
        seen = drive(cal, ["ids", "x"])
    assert cal.failure is None and len(seen["batches"]) == 2
    assert seen["batches"][1]["ids"][1] == data["ids"][16:32].tobytes()
    assert cal.record()["cuda"] is None and cal.record()["cuda_tensor_inputs"] == ["ids", "x"]


def test_a_cuda_tensor_stays_alive_until_tensorrt_asks_for_the_next_batch():
    rng = np.random.default_rng(5)
    made = []

    def make() -> FakeCudaTensor:
        tensor = FakeCudaTensor(rng.normal(size=(16, 3, 4)).astype(np.float32))
        made.append(weakref.ref(tensor))
        return tensor

    def loader():  # keeps no reference to what it yields
        for _ in range(3):
            yield {"x": make(), "ids": np.zeros((16, 2), np.int64)}

    def alive() -> list[bool]:
        gc.collect()
        return [ref() is not None for ref in made]

    cal = Calibrator(loader(), INPUTS, batch_size=16, device=HostMemory())
    cal.get_batch(["x", "ids"])
    assert alive() == [True]  # TensorRT may still be reading it
    cal.get_batch(["x", "ids"])
    assert alive() == [False, True]
    cal.close()
    assert alive() == [False, False]


def test_torch_s_queued_work_is_waited_for_before_tensorrt_reads(monkeypatch):
    synchronized = []
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(synchronize=lambda device=None: synchronized.append(device))
    monkeypatch.setitem(sys.modules, "torch", torch)
    TorchTensor = type("Tensor", (FakeCudaTensor,), {"__module__": "torch"})  # noqa: N806
    source = [{"x": TorchTensor(np.zeros((16, 3, 4), np.float32)), "ids": TorchTensor(np.zeros((16, 2), np.int64))}
              for _ in range(2)]
    with Calibrator(source, INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "ids"]) is not None
        assert synchronized == ["cuda:0"]  # once per device, before the pointers go back
        assert cal.get_batch(["x", "ids"]) is not None
        assert synchronized == ["cuda:0", "cuda:0"]


@pytest.mark.parametrize("tensor, message", [
    (FakeCudaTensor(np.zeros((16, 3, 4), np.float64)),
     "input 'x' is a CUDA tensor of torch.float64, the model wants float32; a CUDA tensor goes to TensorRT as it is"),
    (FakeCudaTensor(np.zeros((16, 3, 4), np.float16), dtype="bfloat16"), "CUDA tensor of torch.bfloat16"),
    (FakeCudaTensor(np.zeros((16, 12), np.float32)), "CUDA tensor of shape [16, 12], the model wants rank 3 [N, 3, 4]"),
    (FakeCudaTensor(np.zeros((16, 4, 4), np.float32)), "the model wants [N, 3, 4] (axis 1 must be 3)"),
    (FakeCudaTensor(np.zeros((16, 3, 4), np.float32), contiguous=False), "not contiguous"),
    (FakeCudaTensor(np.zeros((32, 3, 4), np.float32)), "inputs hold different numbers of samples: {'ids': 16, 'x': 32}"),
])
def test_a_cuda_tensor_that_does_not_fit_the_input_is_an_error_naming_batch_and_input(tensor, message):
    with Calibrator([{"x": tensor, "ids": np.zeros((16, 2), np.int64)}], INPUTS, batch_size=16,
                    device=HostMemory(), description="load.py:batches") as cal:
        assert cal.get_batch(["x", "ids"]) is None
    assert isinstance(cal.failure, TrtcalError) and message in str(cal.failure)
    assert "load.py:batches: batch 0" in str(cal.failure)


def test_a_cuda_tensor_for_no_input_and_a_changing_shape_are_errors():
    extra = {"x": np.zeros((16, 3, 4), np.float32), "ids": np.zeros((16, 2), np.int64),
             "mask": FakeCudaTensor(np.zeros((16, 2), np.float32))}
    with Calibrator([extra], INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "ids"]) is None
    assert "data for 'mask', which the model has no input for" in str(cal.failure)
    specs = [InputSpec("x", np.float32, ("N", 3, "H", "W"))]
    source = [{"x": FakeCudaTensor(np.zeros((4, 3, 8, 8), np.float32))},
              {"x": FakeCudaTensor(np.zeros((4, 3, 8, 9), np.float32))}]
    with Calibrator(source, specs, batch_size=4, device=HostMemory()) as cal:
        assert cal.get_batch(["x"]) is not None and cal.get_batch(["x"]) is None
    assert "has shape [4, 3, 8, 9], but calibration runs at [4, 3, 8, 8]" in str(cal.failure)
    both = {"x": FakeCudaTensor(np.zeros((32, 3, 4), np.float32)), "ids": FakeCudaTensor(np.zeros((32, 2), np.int64))}
    with Calibrator([both], INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "ids"]) is None
    assert "batch 0: 32 samples, but TensorRT takes exactly 16 per batch" in str(cal.failure)


def test_cpu_torch_tensors_are_copied_like_arrays():
    data = make_data(16)
    x64 = data["x"].astype(np.float64)
    source = [{"x": FakeCpuTensor(x64), "ids": FakeCpuTensor(data["ids"].astype(np.int32))}]
    device = HostMemory()
    with Calibrator(source, INPUTS, batch_size=16, device=device) as cal:
        (batch,) = drive(cal, ["x", "ids"])["batches"]
        assert batch["x"][1] == expected_bytes(x64, np.float32) and batch["ids"][1] == expected_bytes(data["ids"], np.int64)
        assert device.uploads == 2 and "cuda_tensor_inputs" not in cal.record()
    bad = [{"x": FakeCpuTensor(None, TypeError("Got unsupported ScalarType BFloat16")), "ids": data["ids"]}]
    with Calibrator(bad, INPUTS, batch_size=16, device=HostMemory()) as cal:
        assert cal.get_batch(["x", "ids"]) is None
    assert str(cal.failure).endswith("input 'x': cannot read the tensor as a numpy array "
                                     "(TypeError: Got unsupported ScalarType BFloat16)")


# ---------------------------------------------------------------------- trtcal build --cuda


def test_cli_build_with_cuda_python(tmp_path, monkeypatch):
    from conftest import run_cli
    from test_trt_builder import DATA, MODEL, fake_tensorrt

    heap = FakeDeviceHeap()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    install_pycuda(monkeypatch, FakeDeviceHeap())  # installed, but --cuda asks for cuda-python
    install_cuda_python(monkeypatch, heap)
    out = tmp_path / "m.engine"
    rc, stdout, err = run_cli("build", MODEL, "--int8", "--data", DATA, "--batch-size", "128", "-o", out,
                              "--save-cache", tmp_path / "m.cache", "--cuda", "cuda-python")
    assert rc == 0, err
    assert "calibrated 4 batches of 128 (512 samples)" in stdout
    assert json.loads((tmp_path / "m.engine.trtcal.json").read_text())["gpu"]["name"] == "Fake A100"
    assert json.loads((tmp_path / "m.cache.trtcal.json").read_text())["cuda"] == "cuda-python"
    assert [c[0] for c in heap.calls].count("htod") == 4 and not heap.buffers
    rc, _, err = run_cli("build", MODEL, "--int8", "--data", DATA, "-o", tmp_path / "n.engine", "--cuda", "cupy")
    assert rc == 2 and err.count("\n") == 1 and "--cuda" in err and "invalid choice" in err


def test_cli_build_from_a_loader_script_of_cuda_tensors_needs_no_cuda_backend(tmp_path, monkeypatch):
    from conftest import run_cli
    from test_trt_builder import DATA, MODEL, fake_tensorrt

    from trtcal.cache.format import read

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    no_pycuda(monkeypatch)
    no_cuda_python(monkeypatch)
    script = tmp_path / "loader.py"
    script.write_text(f"""import numpy as np


class Tensor:  # what a torch CUDA tensor shows the calibrator
    is_cuda = True

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.device = array, array.shape, "torch.float32", "cuda:0"

    def is_contiguous(self):
        return True

    def data_ptr(self):
        return self.array.ctypes.data


def batches():
    images = np.load({str(DATA)!r})["images"]
    for i in range(0, 512, 128):
        yield {{"images": Tensor(np.ascontiguousarray(images[i:i + 128]))}}
""")
    rc, stdout, err = run_cli("build", MODEL, "--int8", "--data", f"{script}:batches", "--batch-size", "128",
                              "-o", tmp_path / "m.engine", "--save-cache", tmp_path / "m.cache")
    assert rc == 0, err
    assert "calibrated 4 batches of 128 (512 samples)" in stdout
    # the stand-in read max |x| through the tensors' own pointers
    images = np.load(DATA)["images"]
    assert read(tmp_path / "m.cache").amax("images") == pytest.approx(float(np.abs(images).max()), rel=1e-6)
    record = json.loads((tmp_path / "m.cache.trtcal.json").read_text())
    assert record["cuda_tensor_inputs"] == ["images"] and record["cuda"] is None
