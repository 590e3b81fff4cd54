"""Sanity checks on calibration batches, run while they stream past (memory: one hash per batch).

They catch the mistakes that silently ruin a calibration: a constant batch, the same batch fed
twice (a list-aliasing bug), raw 0..255 pixels fed to a model that expects normalised input
(whole numbers in any input; fractional ones, as a float resize leaves them, in image-shaped
inputs), NaN/Inf in the data (when let through: ``--allow-nonfinite``), and too few samples.
Warnings are summarised: one line per input and kind of problem, naming the batches (the first
few) where it occurred. They also count the shapes fed per input, so dynamic dimensions can be
reported with the values used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import numpy as np

#: Fewer samples than this gets a warning (TensorRT's guidance is about 500 images for ImageNet).
MIN_SAMPLES = 100
#: Batches a summary line names before "...".
SHOWN_BATCHES = 5


def _batches_text(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:SHOWN_BATCHES]))
    return ("batch " if len(indices) == 1 else "batches ") + shown + (", ..." if len(indices) > SHOWN_BATCHES else "")


def _image_shaped(a: np.ndarray) -> bool:
    return a.ndim == 4 and (a.shape[1] in (1, 3) or a.shape[3] in (1, 3))


class BatchChecks:
    """``inputs``: the model's input specs (for the batch axis of each; without them, axis 0 of
    the first array counts the samples). ``scaled``: inputs the model scales itself (a constant
    Mul/Div/Sub/Add first: see :func:`trtcal.ort.runner.scaled_inputs`), which may well be raw pixels."""

    def __init__(self, inputs: Sequence | None = None, scaled: Collection[str] = ()) -> None:
        self.samples = 0
        self.batches = 0
        self.shapes: dict[str, dict[tuple, int]] = {}  # input -> shape -> number of batches
        self._inputs = list(inputs) if inputs is not None else None
        self._axes = {s.name: s.batch_axis for s in inputs or ()}
        self._scaled = set(scaled)
        self._seen: dict[bytes, int] = {}
        self._repeats: list[tuple[int, int]] = []
        self._constant: dict[str, list[tuple[int, float]]] = {}
        self._empty: dict[str, list[int]] = {}
        self._nonfinite: dict[str, list[tuple[int, int]]] = {}
        self._raw: dict[str, str] = {}  # input -> its warning (once)

    def observe(self, index: int, batch: dict[str, np.ndarray]) -> None:
        from trtcal.data.sources import samples_in

        self.batches += 1
        if self._inputs is not None:
            self.samples += samples_in(batch, self._inputs)
        else:
            first = next(iter(batch.values()))
            self.samples += first.shape[0] if first.ndim else 1
        digest = hashlib.blake2b(digest_size=16)
        for name in sorted(batch):
            a = batch[name]
            used = self.shapes.setdefault(name, {})
            used[a.shape] = used.get(a.shape, 0) + 1
            digest.update(name.encode())
            digest.update(str(a.shape).encode())
            digest.update(a.tobytes())
            self._check_values(index, name, a)
        key = digest.digest()
        if key in self._seen:
            self._repeats.append((index, self._seen[key]))
        else:
            self._seen[key] = index

    def _check_values(self, index: int, name: str, a: np.ndarray) -> None:
        if a.size == 0:
            self._empty.setdefault(name, []).append(index)
            return
        if a.dtype.kind != "f":
            return
        image = _image_shaped(a)
        finite = np.isfinite(a)
        if not finite.all():
            self._nonfinite.setdefault(name, []).append((index, int((~finite).sum())))
            a = a[finite]
            if a.size == 0:
                return
        lo, hi = float(a.min()), float(a.max())
        if lo == hi:
            if self._axes.get(name, 0) is not None:  # an input without a batch axis (a scalar) may well be
                self._constant.setdefault(name, []).append((index, lo))
        elif name not in self._raw and name not in self._scaled and lo >= 0 and 2 < hi <= 255 and a.size >= 64:
            whole = np.array_equal(a.flat[:4096], np.round(a.flat[:4096]))
            if whole:
                self._raw[name] = (f"holds whole numbers in 0..{hi:g} (batch {index}): raw pixels? "
                                   "most models expect normalised input (see --preprocess)")
            elif image:
                self._raw[name] = (f"holds values in {lo:g}..{hi:g} (batch {index}), image-shaped, "
                                   "and the model does not scale it itself: raw (resized) pixels? most models "
                                   "expect normalised input (see --preprocess scale=, mean=, std=)")

    def shape_report(self, inputs) -> dict[str, dict]:
        """Per input: the model's shape (dynamic dimensions by name) and the shapes fed, with batch counts.

        ``inputs``: specs with ``name`` and ``shape`` (ints for fixed dimensions, a name or None
        for dynamic ones; ``model_shape``, when set, is the model's own). A TensorRT build needs
        an optimisation profile that covers these shapes.
        """
        report = {}
        for spec in inputs:
            shape = getattr(spec, "model_shape", None) or spec.shape
            used = self.shapes.get(spec.name, {})
            dynamic = [axis for axis, d in enumerate(shape) if not (isinstance(d, int) and d > 0)]
            report[spec.name] = {
                "model": [d if isinstance(d, int) and d > 0 else (d or "?") for d in shape],
                "dynamic_axes": dynamic,
                "used": [{"shape": list(s), "batches": n} for s, n in used.items()],
            }
            if getattr(spec, "batch_axis", 0) != 0:
                report[spec.name]["batch_axis"] = spec.batch_axis
        return report

    def general(self) -> list[str]:
        """Warnings about the batches as a whole (repeated batches; with ``finish``, too few samples)."""
        out = []
        if self._repeats:
            pairs = ", ".join(f"batch {i} = batch {j}" for i, j in self._repeats[:SHOWN_BATCHES])
            more = ", ..." if len(self._repeats) > SHOWN_BATCHES else ""
            n = len(self._repeats)
            out.append(f"{n} batch{'es repeat' if n > 1 else ' repeats'} an earlier one ({pairs}{more}): "
                       "the same data fed twice (a list-aliasing bug in the loader?)")
        return out

    def by_input(self) -> dict[str, list[str]]:
        """Per input, what was found (constant, empty, NaN/Inf, raw pixels), each a phrase that
        follows the input's name; summarised over all batches."""
        out: dict[str, list[str]] = {}
        for name, hits in self._constant.items():
            values = sorted({v for _, v in hits})
            shown = ", ".join(f"{v:g}" for v in values[:3]) + (", ..." if len(values) > 3 else "")
            out.setdefault(name, []).append(
                f"is constant in {len(hits)} of {self.batches} batches ({_batches_text([i for i, _ in hits])}; "
                f"value {shown}); is the loader feeding real data?")
        for name, hits in self._empty.items():
            out.setdefault(name, []).append(f"is empty in {len(hits)} of {self.batches} batches ({_batches_text(hits)})")
        for name, hits in self._nonfinite.items():
            out.setdefault(name, []).append(
                f"holds {sum(n for _, n in hits)} NaN/Inf values in {len(hits)} of {self.batches} batches "
                f"({_batches_text([i for i, _ in hits])}); left out of its range")
        for name, text in self._raw.items():
            out.setdefault(name, []).append(text)
        return out

    def summary(self) -> list[str]:
        """The warnings so far: :meth:`general`, then one line per input with a finding."""
        return self.general() + [f"input {name!r}: " + "; ".join(parts) for name, parts in self.by_input().items()]

    def too_few(self) -> list[str]:
        """A warning when there are too few samples (none otherwise)."""
        if self.samples < MIN_SAMPLES:
            return [f"only {self.samples} calibration samples; ranges from so few are unreliable "
                    f"(use at least {MIN_SAMPLES}, ideally about 500)"]
        return []

    def finish(self) -> list[str]:
        """:meth:`summary` and :meth:`too_few`."""
        return self.summary() + self.too_few()
