"""PNG plots where a picture beats a table. matplotlib is imported lazily (``pip install trtcal[plot]``)."""

from __future__ import annotations

import io
import math

from trtcal.core import fileio
from trtcal.core.errors import TrtcalError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TrtcalError("plots need matplotlib: pip install 'trtcal[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, plt, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_sqnr(evaluation, path, *, force: bool = False, top: int = 60) -> None:
    """Per-tensor SQNR as horizontal bars, worst at the top; the dequantized view beside it."""
    fileio.check_output(path, force=force)
    fileio.atomic_write(path, sqnr_png(evaluation, top=top), force=force)


def sqnr_png(evaluation, *, top: int = 60) -> bytes:
    """:func:`plot_sqnr` as PNG bytes."""
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
    return _png(fig, plt)


def _finite(x: float, cap: float = 100.0) -> float:
    """Bars need finite lengths: an exact match (inf dB) is drawn at ``cap``."""
    if math.isnan(x):
        return math.nan
    return max(min(x, cap), -cap)


def plot_tensor(hist, results: dict, path, *, chosen: str | None = None, force: bool = False) -> None:
    """One tensor: its |x| histogram (log counts) with every method's threshold marked (the chosen
    method bold), and, when entropy2 is among ``results``, the KL curve over candidate thresholds."""
    fileio.check_output(path, force=force)
    fileio.atomic_write(path, tensor_png(hist, results, chosen_method=chosen), force=force)


def tensor_png(hist, results: dict, *, chosen_method: str | None = None, chosen: float | None = None,
               dpi: int = 80) -> bytes:
    """:func:`plot_tensor` as PNG bytes; ``chosen`` marks a range that is not one of ``results``
    (e.g. a cache's)."""
    plt = _pyplot()
    import numpy as np

    kl = results.get("entropy2")
    has_kl = kl is not None and "kl" in kl.diagnostics
    fig, axes = plt.subplots(2 if has_kl else 1, 1, figsize=(9, 6.5 if has_kl else 4), squeeze=False)
    ax = axes[0][0]
    centres = (np.arange(hist.bins) + 0.5) * hist.width
    counts = hist.counts.astype(float)
    ax.fill_between(centres, np.where(counts > 0, counts, np.nan), step="mid", alpha=0.5, color="tab:gray")
    ax.set_yscale("log")
    ax.set_xlabel("|x|")
    ax.set_ylabel("count (log)")
    side = ", one-sided (min >= 0)" if hist.one_sided and hist.max > 0 else ""
    ax.set_title(f"{hist.name or 'tensor'}: {hist.count} values, min {hist.min:.4g}, max {hist.max:.4g}{side}",
                 fontsize=9)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, r) in enumerate(results.items()):
        bold = name == chosen_method
        ax.axvline(r.amax, color=colours[i % len(colours)], lw=2.5 if bold else 1.0, ls="-" if bold else "--",
                   label=f"{name}: {r.amax:.4g}" + (" (chosen)" if bold else ""))
    if chosen is not None:
        ax.axvline(chosen, color="black", lw=2.0, label=f"chosen: {chosen:.4g}")
    ax.legend(fontsize=8, loc="upper right")
    if has_kl:
        ax2 = axes[1][0]
        cands = np.asarray(kl.diagnostics["candidates"])
        curve = np.asarray(kl.diagnostics["kl"], dtype=float)
        ax2.plot((cands + 0.5) * hist.width, np.where(np.isfinite(curve), curve, np.nan), lw=1)
        ax2.axvline(kl.amax, color="tab:red", lw=0.8, alpha=0.6)
        best = curve[kl.diagnostics["index"]]
        ax2.plot([kl.amax], [best], "o", color="tab:red", label=f"first minimum: KL {best:.4g} at amax {kl.amax:.4g}")
        ax2.set_xlabel("candidate threshold (i + 0.5) * width")
        ax2.set_ylabel("KL(P || Q)")
        ax2.set_title("entropy2: KL divergence over candidates", fontsize=9)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, plt, dpi)
