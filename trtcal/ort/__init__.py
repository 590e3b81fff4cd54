"""ONNX Runtime runs: the FP32 model with its tensors exposed, and everything built on running it.

- :mod:`~trtcal.ort.runner`: sessions that expose every float tensor, batch streaming.
- :mod:`~trtcal.ort.pipeline`: ``calibrate``: data -> runner -> histograms -> thresholds -> cache.
- :mod:`~trtcal.ort.evaluate`: FP32 vs INT8 per output and per tensor.
- :mod:`~trtcal.ort.sensitivity`: which tensors to leave in float (``trtcal fallback``).
- :mod:`~trtcal.ort.eq`: EQ, the ranges and weight scales that minimise each layer's output error.

Builds on :mod:`trtcal.core`, :mod:`trtcal.cache`, :mod:`trtcal.onnx` and :mod:`trtcal.data`.
"""
