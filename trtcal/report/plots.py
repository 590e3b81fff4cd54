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
               dpi: int = 80, small: bool = False) -> bytes:
    """:func:`plot_tensor` as PNG bytes; ``chosen`` marks a range that is not one of ``results``
    (e.g. a cache's). ``small``: the report's size, the same picture in about a fifth of the
    bytes and half the time (fixed margins instead of ``tight_layout``, 64 dpi, 64 colours)."""
    plt = _pyplot()
    import numpy as np

    kl = results.get("entropy2")
    has_kl = kl is not None and "kl" in kl.diagnostics
    if small:
        fig, axes = plt.subplots(2 if has_kl else 1, 1, figsize=(8, 5.6 if has_kl else 3.2), squeeze=False)
        fig.subplots_adjust(**(_SMALL_MARGINS if has_kl else _SMALL_MARGINS_ONE))
    else:
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
    if small:
        return _palette(_png(fig, plt, SMALL_DPI))
    fig.tight_layout()
    return _png(fig, plt, dpi)


#: The report's plots (``tensor_png(small=True)``): resolution and fixed margins (``tight_layout``
#: measures every label's extent, about 40% of a plot's time).
SMALL_DPI = 64
_SMALL_MARGINS = {"left": 0.09, "right": 0.98, "top": 0.95, "bottom": 0.08, "hspace": 0.32}
_SMALL_MARGINS_ONE = {"left": 0.09, "right": 0.98, "top": 0.91, "bottom": 0.15}


def _palette(png: bytes, colours: int = 64) -> bytes:
    """``png`` with at most ``colours`` colours (an 8-bit palette): a plot's flat colours and
    anti-aliased lines lose nothing visible, the file shrinks about 3x. Deterministic."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


#: Threshold colours of :func:`tensor_svg`, matplotlib's default cycle in ``results`` order (as
#: :func:`tensor_png` draws them); the chosen range is black.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def tensor_svg(hist, amaxes: dict[str, float], *, chosen: float | None = None, width: int = 420,
               height: int = 80, columns: int = 140) -> str:
    """A small inline SVG of one tensor (no matplotlib, well under a millisecond): its |x|
    histogram on log counts in ``columns`` columns, each method's threshold (``amaxes``, in
    :data:`COLOURS` order, dashed) and ``chosen`` (black); hovering a line names it. No external
    reference (no xmlns needed inline in HTML)."""
    import numpy as np

    counts = np.asarray(hist.counts, dtype=np.float64)
    occupied = np.nonzero(counts)[0]
    lines = {k: float(v) for k, v in amaxes.items() if v is not None and math.isfinite(v) and v > 0}
    if chosen is not None and math.isfinite(chosen) and chosen > 0:
        lines["chosen"] = float(chosen)
    top = (occupied[-1] + 1) * hist.width if occupied.size else 0.0
    xmax = 1.03 * max([top, *lines.values()]) if (top > 0 or lines) else 1.0
    parts = [f'<svg class="thumb" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>']
    if occupied.size:
        centres = (occupied + 0.5) * hist.width
        col = np.minimum((centres / xmax * columns).astype(np.int64), columns - 1)
        per = np.bincount(col, weights=counts[occupied], minlength=columns)
        logs = np.log10(np.maximum(per, 1.0))
        peak = max(float(logs.max()), 1.0)
        ys = np.where(per > 0, height - 2 - (height - 6) * (0.08 + 0.92 * logs / peak), height)
        step = width / columns
        d = [f"M0,{height}"]
        for i, y in enumerate(ys):
            d.append(f"V{y:.0f}H{(i + 1) * step:.0f}")
        d.append(f"V{height}Z")
        parts.append(f'<path d="{"".join(d)}" fill="#aaa"/>')
    for i, (name, amax) in enumerate(lines.items()):
        x = amax / xmax * width
        colour, dash = ("#000", "") if name == "chosen" else (COLOURS[i % len(COLOURS)], ' stroke-dasharray="4,3"')
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="{colour}" stroke-width="1.5"'
                     f'{dash}><title>{name}: {amax:.4g}</title></line>')
    parts.append(f'<text x="3" y="{height - 3}" font-size="10" fill="#333">0</text>'
                 f'<text x="{width - 3}" y="{height - 3}" font-size="10" fill="#333" text-anchor="end">'
                 f'|x| {xmax:.4g}</text></svg>')
    return "".join(parts)


def draw_tensors(items: list, *, jobs: int = 1, small: bool = True, progress=None) -> list[bytes]:
    """:func:`tensor_png` of every ``(hist, results, chosen)`` in ``items``, in order, drawn by
    ``jobs`` processes (the same bytes as drawn one by one: the tests hold it to that)."""
    from trtcal.report.parallel import pool_map

    return pool_map(_draw_one, [(h, r, c, small) for h, r, c in items], jobs=jobs, progress=progress)


def _draw_one(item) -> bytes:
    hist, results, chosen, small = item
    return tensor_png(hist, results, chosen=chosen, small=small)
