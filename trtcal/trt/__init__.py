"""The TensorRT path: calibrators (TensorRT 8.6 - 10.x), the engine builder, version detection.

Nothing here imports ``tensorrt``, ``tensorrt_rtx`` or ``pycuda`` at module level: they are
imported inside the functions that need them, so ``import trtcal`` (and these modules) work on a
machine without them, and the logic is tested there through the calibrator protocol on host
memory (:class:`trtcal.trt.device.HostMemory`).

- :mod:`trtcal.trt.version`: which TensorRT is installed and what it can do.
- :mod:`trtcal.trt.device`: a small device-memory interface (pycuda, and a host-memory fake).
- :mod:`trtcal.trt.calibrator`: the calibrators, fed from any trtcal data source.
- :mod:`trtcal.trt.builder`: ``trtcal build`` (implicit INT8, FP16, explicit Q/DQ).
- :mod:`trtcal.trt.provenance`: data fingerprints and the cache/engine provenance checks.
"""
