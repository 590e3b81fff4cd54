"""Per-channel ranges of constant weights for symmetric int8 (pure numpy), and the quantization
of weights with them (:func:`per_channel_int8`, what the Q/DQ writer stores).

``max`` (what TensorRT and most tools use): each output channel's max|w|. ``mse``: each channel's
clipping point, searched over ``steps`` values from ``lo`` to 1 times its max|w|, that minimises
the squared error of the quantize-dequantized weights, ``sum((w - s * clip(rint(w / s), -127,
127))**2)`` with ``s = amax / 127`` (the writer's own rounding); ties keep the larger range.
Clipping a few outlying weights buys resolution for all the others, which matters most where a
channel has few weights and one large one (depthwise convolutions).
"""

from __future__ import annotations

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.ranges import FLOAT32_TINY

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


def per_channel_int8(w: np.ndarray, axis: int | None, amax: np.ndarray | None = None, bits: int = 8
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric int8 weights: ``(q, scale, zero_channels)``, ``scale = max|w| / 127`` per slice
    along ``axis`` (float32, computed in double and rounded once), or per tensor for ``axis=None``;
    ``amax`` (one per slice) replaces max|w| (e.g. from :func:`channel_amax`).
    An all-zero (or denormal) slice gets scale 1 and codes 0. ``q = clip(rint(w / scale), -127, 127)``
    in float32, rounding half to even as QuantizeLinear does. ``bits=4``: the same with 7 for 127
    (codes -7..7, returned in an int8 array)."""
    w = np.asarray(w, dtype=np.float32)
    if amax is not None:
        m = np.asarray(amax, dtype=np.float64).reshape(-1)
    elif axis is None:
        m = np.max(np.abs(w), keepdims=False).reshape(1) if w.size else np.zeros(1, np.float32)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        m = np.max(np.abs(w), axis=reduce) if w.size else np.zeros(w.shape[axis], np.float32)
    qmax = 2 ** (bits - 1) - 1
    scale = (m.astype(np.float64) / qmax).astype(np.float32)
    zero = ~(scale >= FLOAT32_TINY)
    scale[zero] = np.float32(1.0)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
        s = scale.reshape(shape)
    else:
        s = scale[0]
    q = np.clip(np.rint(w / s), -qmax, qmax).astype(np.int8)
    return q, (scale if axis is not None else scale.reshape(())), int(zero.sum())
