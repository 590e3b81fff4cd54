"""The TensorRT path: calibrators (TensorRT 8.6 - 10.x), the engine builder, version detection.

Nothing here imports ``tensorrt``, ``tensorrt_rtx``, ``pycuda`` or ``cuda-python`` at module
level: they are imported inside the functions that need them, so ``import trtcal`` (and these
modules) work on a machine without them, and the logic is tested there through the calibrator
protocol on host memory (:class:`trtcal.trt.device.HostMemory`, and fake pycuda / cuda-python
modules).

- :mod:`trtcal.trt.version`: which TensorRT is installed and what it can do.
- :mod:`trtcal.trt.device`: a small device-memory interface (pycuda, cuda-python, and a
  host-memory fake); ``--cuda`` picks the backend.
- :mod:`trtcal.trt.runtime`: running an engine on batches (to compare its outputs).
- :mod:`trtcal.trt.calibrator`: the calibrators, fed from any trtcal data source.
- :mod:`trtcal.trt.builder`: ``trtcal build`` (implicit INT8, FP16, explicit Q/DQ).
- :mod:`trtcal.trt.provenance`: data fingerprints and the cache/engine provenance checks.
"""
