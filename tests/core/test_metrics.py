"""The comparison counters: what ``sqnr_only`` keeps and skips (the rest is tested in tests/ort/test_evaluate.py)."""

from __future__ import annotations

import numpy as np

from trtcal.core.metrics import Comparison


def test_sqnr_only_counts_the_same_sqnr_and_nothing_else():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 5, 30)).astype(np.float32)
    ref[:, :, 0] *= 1e4  # mixed scales along the last axis
    test = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.01
    full, lean = Comparison("y", classes="logits"), Comparison("y", classes="logits", sqnr_only=True)
    for c in (full, lean):
        c.update(ref, test)
        c.update(ref[:2], test[:2])
    assert lean.signal == full.signal and lean.noise == full.noise and lean.count == full.count
    assert lean.mixed_axis == full.mixed_axis == 2
    assert lean.noise_ratio == full.noise_ratio
    assert full.samples == 6 and full.positions == 30 and full.max_abs_error > 0
    assert lean.samples == 0 and lean.positions == 0 and lean.max_abs_error == 0  # skipped
