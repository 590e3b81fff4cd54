"""ONNX graph work: reading models, tensors whose ranges follow from others, the Q/DQ writer.

- :mod:`~trtcal.onnx.model`: loading a model, which tensors to calibrate, refusals.
- :mod:`~trtcal.onnx.derived`: aliases (Reshape, Transpose, ...) and zero pads, whose histograms
  follow from their inputs'.
- :mod:`~trtcal.onnx.qdq`: Q/DQ models by TensorRT's placement rules (TensorRT 11, TensorRT-RTX,
  ONNX Runtime), and reading the ranges back.

Imports ``onnx`` inside functions (and ``onnxruntime`` only to check a written model runs);
builds on :mod:`trtcal.core` and :mod:`trtcal.cache`, never on ONNX Runtime runs or TensorRT.
"""
