"""The TensorRT calibrator's logic, driven exactly as TensorRT drives it, on host memory.

TensorRT calls ``get_batch_size()``, then ``read_calibration_cache()``; if that gives nothing it
calls ``get_batch(names)`` until it returns None, then ``write_calibration_cache(cache)``; the
next build reads the cache. :func:`drive` does the same, and reads the bytes behind every
pointer through the raw address (as TensorRT would on the device), so the tests check that each
pointer points at the right bytes of the right batch.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from trtcal.cache import CalibrationCache
from trtcal.errors import TrtcalError
from trtcal.runner import InputSpec
from trtcal.trt.calibrator import (
    ALGORITHMS,
    Calibrator,
    calibrator_class,
    onnx_inputs,
    open_calibrator,
)
from trtcal.trt.device import HostMemory

EXAMPLES = Path(__file__).resolve().parents[1] / "trtcal" / "examples"

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


# ---------------------------------------------------------------------- batches and pointers


def test_every_pointer_points_at_the_right_bytes_of_the_right_batch():
    data = make_data(70)
    device = HostMemory()
    names = ["ids", "x"]  # TensorRT's order, not the model's
    with Calibrator(batches_of(data, 16), INPUTS, batch_size=16, device=device) as cal:
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
        assert device.allocations == 2 and device.uploads == 8
        assert cal.batches == 4 and cal.samples == 64 and cal.dropped_samples == 6
        assert any("last batch has 6 samples" in w and "dropped" in w for w in cal.warnings)
        assert cal.failure is None
        assert cal.get_batch(names) is None  # stays finished
    assert device.frees == 2 and device.live == 0  # freed on close
    cal.close()  # idempotent
    assert device.frees == 2


def test_host_copies_are_contiguous_and_of_the_input_dtype():
    base = np.random.default_rng(1).normal(size=(8, 4, 3)).astype(np.float64)
    x = base.transpose(0, 2, 1)  # float64 and not contiguous
    ids = np.arange(16, dtype=np.int32).reshape(8, 2)  # int32 where the model wants int64
    device = HostMemory()
    with Calibrator([{"x": x, "ids": ids}], INPUTS, batch_size=8, device=device) as cal:
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


def test_open_calibrator_feeds_the_bundled_calibration_data_exactly():
    images = np.load(EXAMPLES / "fashion_calib.npz")["images"]
    device = HostMemory()
    with open_calibrator(EXAMPLES / "fashion_cnn.onnx", EXAMPLES / "fashion_calib.npz", batch_size=100,
                         device=device) as cal:
        seen = drive(cal, ["images"])
    assert len(seen["batches"]) == 5 and cal.dropped_samples == 12  # 512 = 5 x 100 + 12
    for i, batch in enumerate(seen["batches"]):
        assert batch["images"][1] == images[100 * i:100 * (i + 1)].tobytes()
    assert device.allocations == 1 and device.live == 0
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


def test_without_pycuda_the_device_path_fails_in_one_clear_line(monkeypatch):
    import sys

    from trtcal.trt.runtime import run_engine

    monkeypatch.setitem(sys.modules, "pycuda", None)
    cal = Calibrator(batches_of(make_data(16), 16), INPUTS, batch_size=16)  # the default device: pycuda
    assert cal.get_batch(["x", "ids"]) is None
    assert isinstance(cal.failure, TrtcalError) and "needs pycuda" in str(cal.failure)
    with pytest.raises(TrtcalError, match="needs pycuda"):
        next(run_engine("any.engine", []))


def test_a_new_tensorrt_module_never_gets_a_stale_class():
    # classes are cached per module; a freed module's id may be reused by the next object
    for _ in range(50):
        trt = fake_trt(*(base for base, _ in ALGORITHMS.values()))
        calibrator_class(trt, "entropy2")
        del trt
        with pytest.raises(TrtcalError, match="no IInt8EntropyCalibrator2"):
            calibrator_class(fake_trt(version="11.0.0.1"), "entropy2")
