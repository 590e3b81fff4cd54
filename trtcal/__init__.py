"""trtcal: INT8 calibration for TensorRT.

The core (cache format, histograms, thresholds, ranges) is pure numpy; ONNX Runtime, ONNX and
TensorRT adapters import their heavy dependencies only when used.
"""

from __future__ import annotations

from trtcal.errors import TrtcalError

__version__ = "0.1.0"

__all__ = ["TrtcalError", "__version__"]
