"""The pure core: numpy and the standard library only, no files formats of other tools, no runtimes.

- :mod:`~trtcal.core.histogram`: streaming |x| histograms with TensorRT's power-of-two range
  growth (``_histogram_kernels``: the optional numba kernels, identical counts).
- :mod:`~trtcal.core.thresholds`: entropy2 (TensorRT's EntropyCalibration2), minmax, percentile,
  mse, aciq; the registry by name.
- :mod:`~trtcal.core.ranges`: per-tensor ranges, symmetric or not, at any bit width.
- :mod:`~trtcal.core.stats`: the statistics file (versioned ``.npz`` of histograms).
- :mod:`~trtcal.core.findings`: what a calibration found per tensor (one-sided, clipped, ...).
- :mod:`~trtcal.core.metrics`: SQNR, cosine, top-1 agreement, KL divergence.
- :mod:`~trtcal.core.weight_scales`, :mod:`~trtcal.core.bitwidth`, :mod:`~trtcal.core.onesided`:
  weight scales, bit widths for a target SQNR, the one-sided loss.
- :mod:`~trtcal.core.errors`, :mod:`~trtcal.core.fileio`, :mod:`~trtcal.core.patterns`,
  :mod:`~trtcal.core.progress`: the user-error type, safe reads and atomic writes, tensor-name
  patterns, the progress bar.

Nothing here imports onnx, onnxruntime, tensorrt or matplotlib (tests/test_layers.py).
"""
