"""trtcal: INT8 calibration for TensorRT.

The core (cache format, histograms, thresholds, ranges) is pure numpy; ONNX Runtime, ONNX and
TensorRT adapters import their heavy dependencies only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from trtcal.errors import TrtcalError  # noqa: E402
from trtcal.pipeline import CalibrationResult, calibrate  # noqa: E402

__all__ = ["CalibrationResult", "TrtcalError", "__version__", "calibrate"]
