"""PNG plots where a picture beats a table. matplotlib is imported lazily (``pip install trtcal[plot]``)."""

from __future__ import annotations

import io
import math

from trtcal import fileio
from trtcal.errors import TrtcalError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TrtcalError("plots need matplotlib: pip install 'trtcal[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, force: bool) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    fileio.atomic_write(path, buf.getvalue(), force=force)


def plot_sqnr(evaluation, path, *, force: bool = False, top: int = 60) -> None:
    """Per-tensor SQNR as horizontal bars, worst at the top; the dequantized view beside it."""
    fileio.check_output(path, force=force)
    plt = _pyplot()
    rows = evaluation.tensors[:top]
    if not rows:
        raise TrtcalError("no per-tensor SQNR to plot (the models share no tensors, or --no-per-tensor)")
    names = [c.name for c in rows][::-1]
    own = [_finite(c.sqnr_db) for c in rows][::-1]
    quant = [_finite(evaluation.quantized[c.name].sqnr_db) if c.name in evaluation.quantized else math.nan
             for c in rows][::-1]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.22 * len(rows)))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], own, height=0.4, label="tensor (error inherited)")
    ax.barh([i - 0.2 for i in y], quant, height=0.4, label="as quantized (Q/DQ output)")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.set_xlabel("SQNR vs FP32 (dB), higher is better")
    ax.set_title(f"per-tensor SQNR, worst {len(rows)} of {len(evaluation.tensors)}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    _save(fig, path, force)
    plt.close(fig)


def _finite(x: float, cap: float = 100.0) -> float:
    """Bars need finite lengths: an exact match (inf dB) is drawn at ``cap``."""
    if math.isnan(x):
        return math.nan
    return max(min(x, cap), -cap)
