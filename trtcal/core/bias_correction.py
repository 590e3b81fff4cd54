"""Empirical bias correction from per-sample output errors (pure numpy).

A quantized layer's output error has a systematic part: per output channel, a mean that does not
average out over positions or samples (the input's and the weights' rounding are correlated with
the input's own statistics; Nagel et al. 2019, "Data-Free Quantization", section 4.2, correct the
expected part analytically; here it is measured). Subtracting it from the layer's bias removes it.

:func:`bias_deltas` contract: ``errors`` ``[N, C]`` holds, per sample and output channel, the mean
over that sample's output positions of (quantized layer's output - float layer's output). A
channel's delta is minus the mean over the samples where that mean is significant: its magnitude
exceeds ``z`` standard errors (the samples' standard deviation, ``ddof=1``, over ``sqrt(N)``);
else 0. Fewer than two samples give no standard error and no correction (all zeros). Measured
on YOLOv8n (15 photos, layer-wise errors, every Conv corrected): held-out class-score SQNR rose
by 1.8 dB with every mean subtracted and by 2.1 to 3.3 dB with ``z = 2`` or ``3`` (noisy channels
left alone), against 0.3 to 1 dB for the boxes.
"""

from __future__ import annotations

import numpy as np

from trtcal.core.errors import TrtcalError

#: Standard errors a channel's mean error must exceed to be corrected.
SIGNIFICANCE = 3.0


def bias_deltas(errors: np.ndarray, z: float = SIGNIFICANCE) -> np.ndarray:
    """What to add to each channel's bias (module doc); float64 ``[C]``."""
    e = np.asarray(errors, np.float64)
    if e.ndim != 2:
        raise TrtcalError(f"bias correction: errors of shape {e.shape}; expected [samples, channels]")
    if not np.isfinite(z) or z < 0:
        raise TrtcalError(f"bias correction: significance {z!r} must be a number >= 0")
    n = e.shape[0]
    if n < 2 or not np.all(np.isfinite(e)):
        return np.zeros(e.shape[1])
    mean = e.mean(axis=0)
    se = e.std(axis=0, ddof=1) / np.sqrt(n)
    return np.where(np.abs(mean) > z * se, -mean, 0.0)
