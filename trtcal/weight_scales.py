"""Per-channel ranges of constant weights for symmetric int8 (pure numpy).

``max`` (what TensorRT and most tools use): each output channel's max|w|. ``mse``: each channel's
clipping point, searched over ``steps`` values from ``lo`` to 1 times its max|w|, that minimises
the squared error of the quantize-dequantized weights, ``sum((w - s * clip(rint(w / s), -127,
127))**2)`` with ``s = amax / 127`` (the writer's own rounding); ties keep the larger range.
Clipping a few outlying weights buys resolution for all the others, which matters most where a
channel has few weights and one large one (depthwise convolutions).
"""

from __future__ import annotations

import numpy as np

from trtcal.errors import TrtcalError

WEIGHT_METHODS = ("max", "mse")


def channel_amax(w: np.ndarray, axis: int | None, method: str = "max", *, steps: int = 100,
                 lo: float = 0.5) -> np.ndarray:
    """Per-channel amax (float64, one per slice along ``axis``; one value for ``axis=None``)."""
    if method not in WEIGHT_METHODS:
        raise TrtcalError(f"weight method {method!r}: choose from {', '.join(WEIGHT_METHODS)}")
    w = np.asarray(w, dtype=np.float32)
    rows = (w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1))
    rows = rows.astype(np.float64)
    peak = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    if method == "max" or rows.shape[1] == 0:
        return peak
    if steps < 2 or not 0 < lo < 1:
        raise TrtcalError(f"weight mse search: need steps >= 2 and 0 < lo < 1, not steps={steps}, lo={lo}")
    best = peak.copy()
    best_err = np.full(rows.shape[0], np.inf)
    for f in np.linspace(1.0, lo, steps):  # from the max down: a tie keeps the larger range
        amax = peak * f
        s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64)[:, None]
        err = ((rows - np.clip(np.rint(rows / s), -127, 127) * s) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = amax[better], err[better]
    return best
