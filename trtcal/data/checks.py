"""Sanity checks on calibration batches, run while they stream past (memory: one hash per batch).

They catch the mistakes that silently ruin a calibration: a constant batch, the same batch fed
twice (a list-aliasing bug), raw 0..255 pixels fed to a model that expects normalised input,
NaN/Inf in the data, and too few samples. Each warning names the batch and the input. They also
count the shapes fed per input, so dynamic dimensions can be reported with the values used.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Fewer samples than this gets a warning (TensorRT's guidance is about 500 images for ImageNet).
MIN_SAMPLES = 100


class BatchChecks:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._seen: dict[bytes, int] = {}
        self.samples = 0
        self.batches = 0
        self._raw_pixels_warned: set[str] = set()
        self.shapes: dict[str, dict[tuple, int]] = {}  # input -> shape -> number of batches


    def observe(self, index: int, batch: dict[str, np.ndarray]) -> None:
        self.batches += 1
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
            self.warnings.append(f"batch {index} is identical to batch {self._seen[key]} "
                                 "(the same data fed twice: a list-aliasing bug in the loader?)")
        else:
            self._seen[key] = index

    def _check_values(self, index: int, name: str, a: np.ndarray) -> None:
        if a.size == 0:
            self.warnings.append(f"batch {index}: input {name!r} is empty")
            return
        if a.dtype.kind != "f":
            return
        finite = np.isfinite(a)
        if not finite.all():
            self.warnings.append(f"batch {index}: input {name!r} holds {int((~finite).sum())} NaN/Inf values")
            a = a[finite]
            if a.size == 0:
                return
        lo, hi = float(a.min()), float(a.max())
        if lo == hi:
            self.warnings.append(f"batch {index}: input {name!r} is constant ({lo:g}); is the loader feeding real data?")
        elif (name not in self._raw_pixels_warned and lo >= 0 and hi > 2 and hi <= 255
              and a.size >= 64 and np.array_equal(a[:4096], np.round(a[:4096]))):
            self._raw_pixels_warned.add(name)
            self.warnings.append(f"batch {index}: input {name!r} holds whole numbers in 0..{hi:g}: raw pixels? "
                                 "most models expect normalised input (see --preprocess)")

    def shape_report(self, inputs) -> dict[str, dict]:
        """Per input: the model's shape (dynamic dimensions by name) and the shapes fed, with batch counts.

        ``inputs``: specs with ``name`` and ``shape`` (ints for fixed dimensions, a name or None
        for dynamic ones). A TensorRT build needs an optimisation profile that covers these shapes.
        """
        report = {}
        for spec in inputs:
            used = self.shapes.get(spec.name, {})
            dynamic = [axis for axis, d in enumerate(spec.shape) if not (isinstance(d, int) and d > 0)]
            report[spec.name] = {
                "model": [d if isinstance(d, int) and d > 0 else (d or "?") for d in spec.shape],
                "dynamic_axes": dynamic,
                "used": [{"shape": list(shape), "batches": n} for shape, n in used.items()],
            }
        return report

    def finish(self) -> list[str]:
        if self.samples < MIN_SAMPLES:
            self.warnings.append(f"only {self.samples} calibration samples; ranges from so few are unreliable "
                                 f"(use at least {MIN_SAMPLES}, ideally about 500)")
        return self.warnings
