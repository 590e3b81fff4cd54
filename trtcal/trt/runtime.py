"""Running a serialized engine on batches, to compare its outputs.

Used by the GPU tests (INT8, FP16, Q/DQ engines against ONNX Runtime's FP32 outputs) and
available to users: ``for outputs in run_engine("m.engine", batches): ...``. Needs TensorRT and
a CUDA backend (``cuda``: ``pycuda``, ``cuda-python``, or ``auto``, pycuda if installed else
cuda-python; see :mod:`trtcal.trt.device`) on a machine with an NVIDIA GPU, all in the device's
primary context; they are imported here, inside the function. ``device`` (a
:class:`~trtcal.trt.device.DeviceMemory`) replaces the backend in tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np

from trtcal.core import fileio
from trtcal.core.errors import TrtcalError


def run_engine(engine: str | os.PathLike, batches: Iterable[dict[str, np.ndarray]], *,
               backend: str = "tensorrt", cuda: str = "auto", device=None,
               trt=None) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{output name: array}`` for each ``{input name: array}`` batch (shapes within the
    engine's profile)."""
    from trtcal.trt.device import open_device
    from trtcal.trt.version import load_backend

    if device is None:
        device = open_device(cuda)  # the primary context, with a clear error where there is no GPU
    if trt is None:
        trt = load_backend(backend).module
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    blob = fileio.read_bytes(engine, max_bytes=2**34, what="TensorRT engine")
    plan = runtime.deserialize_cuda_engine(blob)
    if plan is None:
        raise TrtcalError(f"{engine}: TensorRT cannot load this engine (built by another TensorRT version or for "
                          "another GPU?)")
    context = plan.create_execution_context()
    names = [plan.get_tensor_name(i) for i in range(plan.num_io_tensors)]
    inputs = [n for n in names if plan.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    stream = device.create_stream()
    try:
        for index, batch in enumerate(batches):
            pointers = []
            try:
                for name in inputs:
                    if name not in batch:
                        raise TrtcalError(f"batch {index}: no array for engine input {name!r}")
                    host = np.ascontiguousarray(batch[name], dtype=trt.nptype(plan.get_tensor_dtype(name)))
                    if not context.set_input_shape(name, host.shape):
                        raise TrtcalError(f"batch {index}: input {name!r} shape {list(host.shape)} is outside the "
                                          "engine's optimization profile")
                    pointer = device.alloc(host.nbytes)
                    pointers.append(pointer)
                    device.upload(pointer, host)
                    context.set_tensor_address(name, pointer)
                results = {}
                for name in outputs:
                    shape = tuple(context.get_tensor_shape(name))
                    results[name] = np.empty(shape, dtype=trt.nptype(plan.get_tensor_dtype(name)))
                    pointer = device.alloc(results[name].nbytes)
                    pointers.append(pointer)
                    context.set_tensor_address(name, pointer)
                if not context.execute_async_v3(stream):
                    raise TrtcalError(f"{engine}: TensorRT failed to run batch {index}")
                device.synchronize(stream)
                for name, pointer in zip(outputs, pointers[len(inputs):]):
                    device.download(pointer, results[name])
                yield results
            finally:
                for pointer in pointers:
                    device.free(pointer)
    finally:
        device.destroy_stream(stream)
