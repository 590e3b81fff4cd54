"""``trtcal build``: the builder's logic against a small TensorRT stand-in, and for real with TensorRT-RTX.

The stand-in (:func:`fake_tensorrt`) has only what the builder touches, and records it. Its
``build_serialized_network`` drives an INT8 calibrator as TensorRT does (read the cache; else
``get_batch(names)`` until None, then write a cache) and computes each input's max |x| from the
bytes behind the pointers it was given, so a cache it writes is only right if the calibrator
fed the right data. Tests marked ``rtx`` build real engines with TensorRT-RTX (skipped when
``tensorrt_rtx`` is not installed).
"""

from __future__ import annotations

import ctypes
import enum
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli

from trtcal.cache.format import CalibrationCache, read
from trtcal.core.errors import TrtcalError
from trtcal.ort.runner import InputSpec
from trtcal.trt.builder import (
    build,
    check_shared_dims,
    parse_shapes,
    plan_profiles,
    read_tensor_list,
)
from trtcal.trt.device import HostMemory

EXAMPLES = Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MODEL = EXAMPLES / "fashion_cnn.onnx"
DATA = EXAMPLES / "fashion_calib.npz"
IMAGES = np.load(DATA)["images"]


# ---------------------------------------------------------------------- the TensorRT stand-in


def fake_tensorrt(version: str = "10.9.0.34") -> types.ModuleType:
    """A minimal ``tensorrt`` module: TensorRT 10 (calibrators, INT8/FP16 flags) or 11 (neither)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    v11 = int(version.split(".")[0]) >= 11
    trt.calls = []  # what the builder did, in order
    trt.float32 = "float32"
    trt.BuilderFlag = enum.Enum("BuilderFlag", ["TF32"] if v11 else ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"])
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])

    class ILogger:
        def __init__(self):
            self.base_called = True

    trt.ILogger = ILogger
    if not v11:
        for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8EntropyCalibrator", "IInt8LegacyCalibrator"):
            setattr(trt, name, type(name, (), {"__init__": lambda self: None}))

    class Tensor:
        def __init__(self, name, shape=()):
            self.name, self.shape, self.dynamic_range = name, tuple(shape), None

        def set_dynamic_range(self, lo, hi):
            self.dynamic_range = (lo, hi)
            trt.calls.append(("set_dynamic_range", self.name, lo, hi))
            return True

    class Layer:
        def __init__(self, name, outputs):
            self.name, self.outputs, self.precision, self.output_types = name, outputs, None, {}
            self.num_outputs = len(outputs)

        def get_output(self, j):
            return self.outputs[j]

        def set_output_type(self, j, dtype):
            self.output_types[j] = dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.layers = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            model = onnx.load(path)
            inits = {t.name for t in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name not in inits:
                    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
                    self.network.inputs.append(Tensor(vi.name, dims))
            for node in model.graph.node:
                self.network.layers.append(Layer(node.name, [Tensor(o) for o in node.output]))
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob + b"+"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.calibration_profile, self.pools = set(), [], None, {}
            self.timing = None
            if not v11:
                self.int8_calibrator = None

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool.name] = size

        def create_timing_cache(self, blob):
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    class Builder:
        def __init__(self, logger):
            assert logger.base_called  # a Python logger must call ILogger's constructor
            trt.builder = self

        def create_network(self, flags):
            self.network = Network(flags)
            return self.network

        def create_builder_config(self):
            self.config = Config()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append(("build",))
            calibration = None
            cal = getattr(config, "int8_calibrator", None)
            if "INT8" in config.flags and cal is not None:
                calibration = self._calibrate(network, config, cal)
            return json.dumps({"flags": sorted(config.flags), "strongly_typed": bool(network.flags),
                               "calibration": calibration}).encode()

        def _calibrate(self, network, config, cal):
            bs = cal.get_batch_size()
            cached = cal.read_calibration_cache()
            if cached:
                trt.calls.append(("cache read", bytes(cached).decode()))
                return "cache"
            names = [t.name for t in network.inputs]
            shapes = {t.name: (config.calibration_profile.shapes[t.name][1] if -1 in t.shape else t.shape)
                      for t in network.inputs}
            amax = dict.fromkeys(names, 0.0)
            batches = 0
            while True:
                pointers = cal.get_batch(names)
                if pointers is None:
                    break
                batches += 1
                for name, ptr in zip(names, pointers):
                    assert shapes[name][0] == bs
                    count = int(np.prod(shapes[name]))
                    values = np.frombuffer(ctypes.string_at(ptr, count * 4), dtype=np.float32)
                    amax[name] = max(amax[name], float(np.abs(values).max()))
            trt.calls.append(("calibrated", batches))
            for layer in network.layers:  # TensorRT writes every tensor's range; these are stand-ins
                for t in layer.outputs:
                    amax.setdefault(t.name, 1.0)
            cache = CalibrationCache.from_amaxes(amax, version=tuple(int(x) for x in version.split(".")[:3]),
                                                 algorithm="MinMaxCalibration")
            cal.write_calibration_cache(cache.to_text().encode())
            return batches

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def engine_info(path) -> dict:
    return json.loads(Path(path).read_bytes())


def record_of(path) -> dict:
    return json.loads(Path(str(path) + ".trtcal.json").read_text())


def qdq_model(tmp_path: Path, *, bias: bool = False) -> Path:
    """The demo CNN quantized by ONNX Runtime (QDQ, symmetric int8, per-channel weights);
    the bias stays float unless ``bias`` (TensorRT rejects int32 bias DequantizeLinear)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": IMAGES[i:i + 32]} for i in range(0, 128, 32)])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / ("fashion_bias.qdq.onnx" if bias else "fashion.qdq.onnx")
    quantize_static(str(MODEL), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": bias})
    return out


# ---------------------------------------------------------------------- shapes and lists


def test_parse_shapes():
    assert parse_shapes(["images:1x1x28x28,8x1x28x28,32x1x28x28"]) == {
        "images": ((1, 1, 28, 28), (8, 1, 28, 28), (32, 1, 28, 28))}
    assert parse_shapes(["a:b:4x3"]) == {"a:b": ((4, 3), (4, 3), (4, 3))}  # names may hold ':'
    for bad, msg in [("images", "NAME:MIN,OPT,MAX"), ("x:1x2,3x4", "one shape or three"), ("x:8x0", "positive"),
                     ("x:4x4,2x4,8x4", "MIN <= OPT <= MAX"), ("x:1x2,1x2x3,1x2", "same rank"), ("x:axb", "not a shape")]:
        with pytest.raises(TrtcalError, match=msg):
            parse_shapes([bad])
    with pytest.raises(TrtcalError, match="given twice"):
        parse_shapes(["x:1", "x:2"])


def test_plan_profiles():
    specs = [InputSpec("images", np.float32, ("batch", 1, 28, 28)), InputSpec("k", np.int64, (4,))]
    p = plan_profiles(specs, None, 16)
    assert p["images"].min == (1, 1, 28, 28) and p["images"].opt == p["images"].max == (16, 1, 28, 28)
    assert p["k"].min == p["k"].opt == p["k"].max == (4,)
    assert plan_profiles(specs)["images"].opt == (1, 1, 28, 28)
    given = parse_shapes(["images:2x1x28x28,4x1x28x28,8x1x28x28"])
    assert plan_profiles(specs, given, 16)["images"].opt == (4, 1, 28, 28)
    with pytest.raises(TrtcalError, match="axis 1 is fixed to 1"):
        plan_profiles(specs, parse_shapes(["images:4x3x28x28"]))
    with pytest.raises(TrtcalError, match="rank 3"):
        plan_profiles(specs, parse_shapes(["images:4x28x28"]))
    with pytest.raises(TrtcalError, match="no input for"):
        plan_profiles(specs, parse_shapes(["pixels:4x1x28x28"]))
    dyn = [InputSpec("x", np.float32, ("N", 3, "H", "W"))]
    with pytest.raises(TrtcalError, match=r"dynamic axes \[0, 2, 3\].*--shapes x:MIN,OPT,MAX"):
        plan_profiles(dyn)


def test_axes_sharing_a_name_must_get_one_size():
    """TensorRT takes axes with one dim_param for one dimension (paddle2onnx's [-1, 3, ?, ?])."""
    x = InputSpec("x", np.float32, (None, 3, "?", "?"))
    square = plan_profiles([x], parse_shapes(["x:1x3x64x64,4x3x96x96,8x3x128x128"]))
    check_shared_dims([x], square)  # equal sizes: fine
    wide = plan_profiles([x], parse_shapes(["x:1x3x48x96,4x3x48x192,8x3x48x320"]))
    with pytest.raises(TrtcalError, match=r"m.onnx: input 'x' \[\?, 3, \?, \?\]: axes 2 and 3 share the dimension name "
                                          r"'\?'.*\(axis 2 48/48/48, axis 3 96/192/320, as min/opt/max\).*trtcal qdq"):
        check_shared_dims([x], wide, "m.onnx")
    # across inputs: a shared batch name needs one batch size
    a, b = InputSpec("a", np.float32, ("N", 3)), InputSpec("b", np.float32, ("N", 4))
    check_shared_dims([a, b], plan_profiles([a, b], parse_shapes(["a:1x3,2x3,4x3", "b:1x4,2x4,4x4"])))
    with pytest.raises(TrtcalError, match=r"input 'a' axis 0 and input 'b' axis 0 share the dimension name 'N'.*"
                                          r"input 'a' axis 0 1/2/4, input 'b' axis 0 1/3/4"):
        check_shared_dims([a, b], plan_profiles([a, b], parse_shapes(["a:1x3,2x3,4x3", "b:1x4,3x4,4x4"])))
    # distinct names (what trtcal qdq writes) may differ
    y = InputSpec("y", np.float32, (None, 3, "y_dim2", "y_dim3"))
    check_shared_dims([y], plan_profiles([y], parse_shapes(["y:1x3x48x96,4x3x48x192,8x3x48x320"])))


def test_build_refuses_the_profile_before_tensorrt_parses(tmp_path):
    model = onnx.load(str(MODEL))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "?", "?"
    path = tmp_path / "square.onnx"
    onnx.save(model, str(path))
    trt = fake_tensorrt("11.0.0.1")
    with pytest.raises(TrtcalError, match="axes 2 and 3 share the dimension name"):
        build(path, tmp_path / "e.engine", shapes=parse_shapes(["images:1x1x28x32"]), trt=trt)
    assert ("build",) not in trt.calls and not (tmp_path / "e.engine").exists()
    build(path, tmp_path / "f.engine", shapes=parse_shapes(["images:1x1x28x28"]), trt=fake_tensorrt("11.0.0.1"))
    assert (tmp_path / "f.engine").exists()


def test_read_tensor_list(tmp_path):
    text = tmp_path / "fallback.txt"
    text.write_text("# keep the head in float\n/fc1/Gemm_output_0\n\n  logits  \n/fc1/Gemm_output_0\n")
    assert read_tensor_list(text) == ["/fc1/Gemm_output_0", "logits"]
    js = tmp_path / "fallback.json"
    js.write_text('["a", "b"]')
    assert read_tensor_list(js) == ["a", "b"]
    js.write_text('["a", 3]')
    with pytest.raises(TrtcalError, match="JSON list of tensor names"):
        read_tensor_list(js)
    text.write_text("# nothing\n")
    with pytest.raises(TrtcalError, match="names no tensors"):
        read_tensor_list(text)


# ---------------------------------------------------------------------- implicit INT8 (TensorRT <= 10)


def test_int8_calibrates_on_the_data_at_the_opt_shape_and_records_provenance(tmp_path):
    trt = fake_tensorrt()
    lines = []
    out, saved = tmp_path / "fashion.engine", tmp_path / "fashion.trt.cache"
    result = build(MODEL, out, int8=True, data=DATA, batch_size=64, save_cache=saved, workspace_mb=512,
                   trt=trt, device=HostMemory(), log=lines.append)
    engine = engine_info(out)
    assert engine["flags"] == ["INT8"] and engine["calibration"] == 8 and not engine["strongly_typed"]
    config = trt.builder.config
    assert config.pools == {"WORKSPACE": 512 << 20}
    (profile,) = config.profiles
    assert profile.shapes["images"] == ((1, 1, 28, 28), (64, 1, 28, 28), (64, 1, 28, 28))
    assert config.calibration_profile is profile
    assert any("calibrating at the OPT shape: images [64, 1, 28, 28]" in line for line in lines)
    # The stand-in took max |x| from the bytes behind the pointers: the right data arrived.
    cache = read(saved)
    assert cache.algorithm == "MinMaxCalibration" and cache.version == (10, 9, 0)
    assert np.float32(cache.amax("images")) == pytest.approx(np.abs(IMAGES).max(), rel=1e-6)
    rec = record_of(out)
    assert rec["trt_version"] == "10.9.0" and rec["backend"] == "tensorrt" and rec["mode"] == "implicit-int8"
    assert rec["model_sha256"] and rec["data_sha256"] and rec["cache_sha256"] and rec["cache"] == str(saved)
    assert rec["calibration"]["batches"] == 8 and rec["calibration"]["samples"] == 512
    assert rec["profiles"]["images"]["opt"] == [64, 1, 28, 28] and rec["trtcal_version"]
    assert "gpu" in rec and rec["cache_reused"] is False
    cache_rec = record_of(saved)
    assert cache_rec["batches"] == 8 and cache_rec["data_sha256"] == rec["data_sha256"]
    assert result.cache_written == saved and result.mode == "implicit-int8"

    # The next build reuses the cache: TensorRT gets it and asks for no batch.
    trt2 = fake_tensorrt()
    out2 = tmp_path / "again.engine"
    result2 = build(MODEL, out2, int8=True, cache=saved, batch_size=64, trt=trt2, device=HostMemory())
    assert engine_info(out2)["calibration"] == "cache"
    assert ("cache read", saved.read_text()) in trt2.calls
    assert result2.cache_read == saved and record_of(out2)["cache_reused"] is True
    assert not result2.warnings


def test_a_short_last_batch_is_dropped_and_said(tmp_path):
    trt = fake_tensorrt()
    result = build(MODEL, tmp_path / "e.engine", int8=True, data=DATA, batch_size=100,
                   save_cache=tmp_path / "c.cache", trt=trt, device=HostMemory())
    assert ("calibrated", 5) in trt.calls
    assert any("last batch has 12 samples" in w for w in result.warnings)
    assert record_of(tmp_path / "e.engine")["calibration"]["dropped_samples"] == 12


def test_bad_data_surfaces_after_the_build_as_one_error(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((64, 1, 28, 27), np.float32))
    with pytest.raises(TrtcalError, match="axis 3 must be 28"):
        build(MODEL, tmp_path / "e.engine", int8=True, data=bad, batch_size=32, save_cache=tmp_path / "c.cache",
              trt=fake_tensorrt(), device=HostMemory())
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "c.cache").exists()


def test_a_cache_for_another_tensorrt_is_refused_before_building(tmp_path):
    stale = tmp_path / "stale.cache"
    shutil.copy(EXAMPLES / "tiny_cnn.cache", stale)  # stamped for TensorRT 8.6.1
    trt = fake_tensorrt()
    with pytest.raises(TrtcalError, match=r"stale.cache: its header 'TRT-8601-EntropyCalibration2'.*8\.6\.1.*restamp"):
        build(MODEL, tmp_path / "e.engine", int8=True, cache=stale, trt=trt, device=HostMemory())
    assert ("build",) not in trt.calls


def test_a_cache_of_another_model_is_refused_unless_told(tmp_path):
    saved = tmp_path / "c.cache"
    build(MODEL, tmp_path / "a.engine", int8=True, data=DATA, batch_size=64, save_cache=saved,
          trt=fake_tensorrt(), device=HostMemory())
    other = tmp_path / "other.onnx"
    model = onnx.load(str(MODEL))
    model.doc_string = "retrained"
    onnx.save(model, str(other))
    with pytest.raises(TrtcalError, match="calibrated for .*fashion_cnn.onnx.*--ignore-provenance"):
        build(other, tmp_path / "b.engine", int8=True, cache=saved, batch_size=64, trt=fake_tensorrt())
    result = build(other, tmp_path / "b.engine", int8=True, cache=saved, batch_size=64, trt=fake_tensorrt(),
                   ignore_provenance=True)
    assert any("--ignore-provenance" in w for w in result.warnings)


def test_a_cache_picks_its_calibrator_class(tmp_path):
    cache = tmp_path / "mm.cache"
    cache.write_text("TRT-100900-MinMaxCalibration\nimages: 3c010a14\n/pool1/MaxPool_output_0: 3c010a14\n")
    trt = fake_tensorrt()
    build(MODEL, tmp_path / "e.engine", int8=True, cache=cache, trt=trt)
    assert type(trt.builder.config.int8_calibrator).__name__ == "MinMaxCalibrator"
    with pytest.raises(TrtcalError, match="MinMaxCalibration cache; a IInt8EntropyCalibrator2 would ignore it"):
        build(MODEL, tmp_path / "f.engine", int8=True, cache=cache, algorithm="entropy2", trt=fake_tensorrt())


def test_a_cache_covering_under_half_of_the_model_is_not_reused(tmp_path):
    """No sidecar to tell (a hand-made or foreign cache): names for 1 of the 4 Conv/Gemm inputs."""
    cache = tmp_path / "partial.cache"
    cache.write_text("TRT-100900-MinMaxCalibration\nimages: 3c010a14\nunrelated: 3c010a14\n")
    with pytest.raises(TrtcalError, match=r"partial.cache: not reused: it has ranges for 1 of the 4 Conv/Gemm/MatMul "
                                          r"inputs of fashion_cnn.onnx \(none for '/pool1/MaxPool_output_0'.*"
                                          r"--ignore-provenance"):
        build(MODEL, tmp_path / "e.engine", int8=True, cache=cache, trt=fake_tensorrt())
    assert not (tmp_path / "e.engine").exists()
    result = build(MODEL, tmp_path / "e.engine", int8=True, cache=cache, trt=fake_tensorrt(), ignore_provenance=True)
    assert any("used although it has ranges for 1 of the 4" in w for w in result.warnings)
    rc, _, err = run_cli("build", MODEL, "--int8", "--cache", EXAMPLES / "tiny_cnn.cache", "-o", tmp_path / "t.engine")
    assert rc == 2 and err.count("\n") == 1  # (no TensorRT here: whichever refusal comes first, one line)


def test_fallback_tensors_are_kept_in_float(tmp_path):
    fb = tmp_path / "fallback.txt"
    fb.write_text("# the classifier head\n/fc1/Gemm_output_0\nlogits\n")
    trt = fake_tensorrt()
    build(MODEL, tmp_path / "e.engine", int8=True, data=DATA, batch_size=64, save_cache=tmp_path / "c.cache",
          fallback=fb, trt=trt, device=HostMemory())
    layers = {layer.outputs[0].name: layer for layer in trt.builder.network.layers}
    for name in ("/fc1/Gemm_output_0", "logits"):
        assert layers[name].precision == "float32" and layers[name].output_types == {0: "float32"}
    assert layers["/conv1/Conv_output_0"].precision is None
    assert "OBEY_PRECISION_CONSTRAINTS" in trt.builder.config.flags
    assert record_of(tmp_path / "e.engine")["fallback"] == ["/fc1/Gemm_output_0", "logits"]
    fb.write_text("images\n")
    with pytest.raises(TrtcalError, match="'images' is a network input"):
        build(MODEL, tmp_path / "f.engine", int8=True, data=DATA, batch_size=64, save_cache=tmp_path / "d.cache",
              fallback=fb, trt=fake_tensorrt(), device=HostMemory())
    fb.write_text("/nope\n")
    with pytest.raises(TrtcalError, match="'/nope' is not a tensor of the TensorRT network"):
        build(MODEL, tmp_path / "f.engine", int8=True, data=DATA, batch_size=64, save_cache=tmp_path / "d.cache",
              fallback=fb, trt=fake_tensorrt(), device=HostMemory())


def test_overrides_set_dynamic_ranges_and_reach_a_reused_cache(tmp_path):
    pytest.importorskip("trtcal.cache.overrides")
    ov = tmp_path / "ranges.json"
    ov.write_text(json.dumps([{"tensor": "/relu1/Relu_output_0", "amax": 4.0, "reason": "ReLU6 upstream"}]))
    trt = fake_tensorrt()
    build(MODEL, tmp_path / "e.engine", int8=True, data=DATA, batch_size=64, save_cache=tmp_path / "c.cache",
          overrides=ov, trt=trt, device=HostMemory())
    assert ("set_dynamic_range", "/relu1/Relu_output_0", -4.0, 4.0) in trt.calls
    assert record_of(tmp_path / "e.engine")["overrides"]["ranges"] == {"/relu1/Relu_output_0": 4.0}
    trt2 = fake_tensorrt()
    build(MODEL, tmp_path / "f.engine", int8=True, cache=tmp_path / "c.cache", batch_size=64, overrides=ov, trt=trt2)
    (text,) = [c[1] for c in trt2.calls if c[0] == "cache read"]
    fed = read(text)
    assert fed.amax("/relu1/Relu_output_0") == pytest.approx(4.0, rel=1e-6)
    assert fed.amax("images") == pytest.approx(read(tmp_path / "c.cache").amax("images"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"tensor": "/nope", "amax": 1.0, "reason": "x"}]))
    with pytest.raises(TrtcalError, match="names no tensor of the TensorRT network"):
        build(MODEL, tmp_path / "g.engine", int8=True, data=DATA, batch_size=64, save_cache=tmp_path / "d.cache",
              overrides=bad, trt=fake_tensorrt(), device=HostMemory())


def test_timing_cache_is_read_and_updated(tmp_path):
    tc = tmp_path / "timing.cache"
    build(MODEL, tmp_path / "a.engine", trt=fake_tensorrt(), timing_cache=tc)
    assert tc.read_bytes() == b"+"
    trt = fake_tensorrt()
    build(MODEL, tmp_path / "b.engine", trt=trt, timing_cache=tc)
    assert trt.builder.config.timing.blob == b"+" and tc.read_bytes() == b"++"


def test_fp16_and_fp32_builds_on_tensorrt_10(tmp_path):
    trt = fake_tensorrt()
    build(MODEL, tmp_path / "h.engine", fp16=True, trt=trt)
    assert engine_info(tmp_path / "h.engine")["flags"] == ["FP16"]
    build(MODEL, tmp_path / "f.engine", trt=fake_tensorrt())
    info = engine_info(tmp_path / "f.engine")
    assert info["flags"] == [] and not info["strongly_typed"]
    assert record_of(tmp_path / "f.engine")["mode"] == "fp32"


def test_option_mistakes_fail_before_any_work(tmp_path):
    for kwargs, msg in [
        ({"int8": True}, "--int8 needs calibration"),
        ({"cache": "x.cache"}, "go with --int8"),
        ({"int8": True, "cache": "a", "data": "b"}, "exclude each other"),
        ({"fallback": "f.txt"}, "go with --int8"),
        ({"workspace_mb": 0}, "at least 1 MB"),
        ({"int8": True, "data": DATA, "batch_size": 16, "shapes": parse_shapes(["images:1x1x28x28,8x1x28x28,8x1x28x28"])},
         "--batch-size 16 differs from the OPT shapes' batch axis"),
    ]:
        trt = fake_tensorrt()
        with pytest.raises(TrtcalError, match=msg):
            build(MODEL, tmp_path / "e.engine", trt=trt, device=HostMemory(), save_cache=tmp_path / "c.cache", **kwargs)
        assert ("build",) not in trt.calls
    (tmp_path / "e.engine").write_bytes(b"old")
    with pytest.raises(TrtcalError, match="already exists; pass --force"):
        build(MODEL, tmp_path / "e.engine", trt=fake_tensorrt())
    build(MODEL, tmp_path / "e.engine", trt=fake_tensorrt(), force=True)
    assert (tmp_path / "e.engine").read_bytes() != b"old"


# ---------------------------------------------------------------------- TensorRT 11 and Q/DQ


def test_tensorrt_11_points_implicit_int8_to_trtcal_qdq(tmp_path):
    for kwargs in ({"int8": True, "data": DATA}, {"int8": True, "cache": EXAMPLES / "tiny_cnn.cache"}):
        with pytest.raises(TrtcalError, match=r"TensorRT 11\.0\.0 has no implicit INT8.*trtcal qdq"):
            build(MODEL, tmp_path / "e.engine", trt=fake_tensorrt("11.0.0.1"), save_cache=tmp_path / "c.cache",
                  **kwargs)
    with pytest.raises(TrtcalError, match="has no FP16 flag"):
        build(MODEL, tmp_path / "e.engine", fp16=True, trt=fake_tensorrt("11.0.0.1"))
    build(MODEL, tmp_path / "e.engine", trt=fake_tensorrt("11.0.0.1"))
    assert engine_info(tmp_path / "e.engine")["strongly_typed"]


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    return qdq_model(tmp_path_factory.mktemp("qdq"))


def test_qdq_models_build_strongly_typed(tmp_path, qdq):
    for version in ("10.9.0.34", "11.0.0.1"):
        build(qdq, tmp_path / f"{version}.engine", trt=fake_tensorrt(version))
        info = engine_info(tmp_path / f"{version}.engine")
        assert info["strongly_typed"] and info["flags"] == []
        assert record_of(tmp_path / f"{version}.engine")["mode"] == "explicit-qdq"
    # TensorRT 10 with --fp16: weakly typed, INT8 and FP16 flags
    build(qdq, tmp_path / "h.engine", fp16=True, trt=fake_tensorrt())
    info = engine_info(tmp_path / "h.engine")
    assert not info["strongly_typed"] and info["flags"] == ["FP16", "INT8"]
    with pytest.raises(TrtcalError, match="has Q/DQ nodes, so its INT8 scales are in the model"):
        build(qdq, tmp_path / "x.engine", int8=True, cache=EXAMPLES / "tiny_cnn.cache", trt=fake_tensorrt())
    with pytest.raises(TrtcalError, match="has no FP16 flag"):
        build(qdq, tmp_path / "x.engine", fp16=True, trt=fake_tensorrt("11.0.0.1"))


# ---------------------------------------------------------------------- the command


def test_cli_build_with_the_stand_in(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr("trtcal.trt.device.PycudaMemory", HostMemory)
    out = tmp_path / "m.engine"
    rc, stdout, err = run_cli("build", MODEL, "--int8", "--data", DATA, "--batch-size", "128", "-o", out,
                              "--save-cache", tmp_path / "m.cache")
    assert rc == 0, err
    assert "input 'images' [batch, 1, 28, 28]: profile min [1, 1, 28, 28] opt [128, 1, 28, 28]" in stdout
    assert "calibrated 4 batches of 128 (512 samples) with EntropyCalibration2" in stdout
    assert f"wrote {out}" in stdout and "TensorRT 10.9.0" in stdout
    rc, stdout, err = run_cli("build", MODEL, "--int8", "--cache", tmp_path / "m.cache", "--batch-size", "128",
                              "-o", tmp_path / "n.engine", "--json")
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["cache_reused"] and doc["engine"] == str(tmp_path / "n.engine")
    rc, stdout, err = run_cli("build", MODEL, "--int8", "--cache", EXAMPLES / "tiny_cnn.cache", "-o", tmp_path / "o.engine")
    assert rc == 2 and err.count("\n") == 1 and "restamp" in err


def test_cli_without_any_tensorrt_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    rc, out, err = run_cli("build", MODEL, "-o", tmp_path / "e.engine")
    assert rc == 2 and err.count("\n") == 1
    assert "no TensorRT to build with" in err and "trtcal[rtx]" in err


# ---------------------------------------------------------------------- TensorRT-RTX, for real


@pytest.mark.rtx
def test_rtx_builds_a_qdq_model_into_an_engine(tmp_path, qdq):
    pytest.importorskip("tensorrt_rtx")
    out = tmp_path / "fashion.qdq.engine"
    rc, stdout, err = run_cli("build", qdq, "--backend", "rtx", "--shapes", "images:1x1x28x28,8x1x28x28,32x1x28x28",
                              "-o", out, "--timing-cache", tmp_path / "timing.cache")
    assert rc == 0, err
    assert out.stat().st_size > 100_000
    assert "has no timing cache" in stdout and not (tmp_path / "timing.cache").exists()
    rec = record_of(out)
    assert rec["backend"] == "tensorrt_rtx" and rec["mode"] == "explicit-qdq" and rec["strongly_typed"]
    assert rec["built_ahead_of_time"] and rec["gpu"] is None
    assert rec["profiles"]["images"] == {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [32, 1, 28, 28]}
    assert "ahead of time (no GPU)" in stdout


@pytest.mark.rtx
def test_rtx_builds_trtcal_qdq_output(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    cache = tmp_path / "fashion.cache"
    rc, _, err = run_cli("calibrate", MODEL, "--data", DATA, "-o", cache, "-q")
    assert rc == 0, err
    qdq_path = tmp_path / "fashion.qdq.onnx"
    rc, _, err = run_cli("qdq", MODEL, "--cache", cache, "-o", qdq_path)
    assert rc == 0, err
    rc, _, err = run_cli("build", qdq_path, "--backend", "rtx", "-o", tmp_path / "e.engine")
    assert rc == 0, err
    assert record_of(tmp_path / "e.engine")["mode"] == "explicit-qdq"


@pytest.mark.rtx
def test_rtx_reports_its_limits_and_parser_errors_in_one_line(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    rc, _, err = run_cli("build", MODEL, "--backend", "rtx", "--int8", "--cache", EXAMPLES / "tiny_cnn.cache",
                         "-o", tmp_path / "e.engine")
    assert rc == 2 and "TensorRT-RTX 1.7.1 has no implicit INT8" in err and "trtcal qdq" in err
    bad = qdq_model(tmp_path, bias=True)
    rc, _, err = run_cli("build", bad, "--backend", "rtx", "-o", tmp_path / "b.engine")
    assert rc == 2 and err.count("\n") == 1
    assert "ONNX parser rejects it" in err and "bias_DequantizeLinear" in err and "Int32" in err
    rc, _, err = run_cli("build", MODEL, "--backend", "rtx", "--batch-size", "4", "-o", tmp_path / "f.engine")
    assert rc == 0, err
    assert record_of(tmp_path / "f.engine")["mode"] == "fp32"


def test_default_outputs_go_to_engines_and_calib_caches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrtcalError, match="no implicit INT8"):
        build(MODEL, int8=True, data=DATA, trt=fake_tensorrt("11.0.0.1"))
    assert not (tmp_path / "engines").exists() and not (tmp_path / "calib_caches").exists()  # nothing on failure
    result = build(MODEL, int8=True, data=DATA, batch_size=64, trt=fake_tensorrt(), device=HostMemory())
    assert result.engine == Path("engines/fashion_cnn.engine") and result.engine.exists()
    assert result.cache_written == Path("calib_caches/fashion_cnn.trt.cache") and result.cache_written.exists()
    with pytest.raises(TrtcalError, match="already exists; pass --force"):
        build(MODEL, int8=True, data=DATA, batch_size=64, trt=fake_tensorrt(), device=HostMemory())
