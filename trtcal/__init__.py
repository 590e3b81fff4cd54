"""trtcal: INT8 calibration for TensorRT.

The layers, innermost first (docs/architecture.md; tests/test_layers.py enforces the direction):
:mod:`trtcal.core` (histograms, thresholds, ranges, statistics: numpy only), :mod:`trtcal.cache`
(cache formats, lint, edits, provenance: pure), :mod:`trtcal.onnx` (graph work, the Q/DQ writer)
and :mod:`trtcal.data` (data sources), :mod:`trtcal.ort` (ONNX Runtime runs: calibration,
evaluation, fallback, EQ), :mod:`trtcal.trt` and :mod:`trtcal.report` (TensorRT and matplotlib,
imported lazily), and :mod:`trtcal.cli` on top.

The short API: ``trtcal.quantize``, ``trtcal.calibrate``, ``trtcal.cache.read``, ``trtcal.Histogram``,
``trtcal.thresholds.entropy2``, ``trtcal.write_qdq``.
"""

from __future__ import annotations

from trtcal import cache
from trtcal._version import __version__
from trtcal.core import thresholds
from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram
from trtcal.onnx.qdq import write_qdq
from trtcal.ort.pipeline import CalibrationResult, calibrate
from trtcal.ort.quantize import QuantizeResult, quantize

__all__ = ["CalibrationResult", "Histogram", "QuantizeResult", "TrtcalError", "__version__", "cache", "calibrate",
           "quantize", "thresholds", "write_qdq"]
