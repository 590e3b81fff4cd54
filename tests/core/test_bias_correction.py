"""Bias deltas from per-sample output errors (trtcal.core.bias_correction) against a literal
per-channel test written with the statistics module."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from trtcal.core.bias_correction import bias_deltas
from trtcal.core.errors import TrtcalError


def literal(errors, z):
    out = []
    for column in np.asarray(errors, np.float64).T.tolist():
        mean = statistics.fmean(column)
        se = statistics.stdev(column) / math.sqrt(len(column))
        out.append(-mean if abs(mean) > z * se else 0.0)
    return out


@pytest.mark.parametrize("z", [0.0, 2.0, 3.0])
def test_deltas_are_the_significant_means_negated(z):
    rng = np.random.default_rng(1)
    # channels with a clear offset, a weak one and none, over 12 samples
    errors = rng.normal(size=(12, 9)) * 0.1 + np.array([0.5, -0.4, 0.06, 0.03, 0, 0, -0.02, 0.2, 0])
    got = bias_deltas(errors, z)
    assert got == pytest.approx(literal(errors, z), abs=1e-12)
    assert got[0] < 0 < got[1]  # the offsets are subtracted
    if z == 3.0:
        assert (got == 0).sum() >= 3


def test_too_few_samples_or_non_finite_errors_correct_nothing():
    assert not bias_deltas(np.ones((1, 4))).any()
    e = np.ones((5, 3))
    e[2, 1] = np.nan
    assert not bias_deltas(e).any()


def test_a_constant_error_is_always_significant():
    got = bias_deltas(np.full((4, 2), 0.25))
    assert got.tolist() == [-0.25, -0.25]


@pytest.mark.parametrize("bad", [np.ones(3), np.ones((2, 2, 2))])
def test_errors_must_be_samples_by_channels(bad):
    with pytest.raises(TrtcalError, match="expected \\[samples, channels\\]"):
        bias_deltas(bad)


@pytest.mark.parametrize("z", [-1.0, float("nan"), float("inf")])
def test_significance_must_be_a_number_at_least_zero(z):
    with pytest.raises(TrtcalError, match="significance"):
        bias_deltas(np.ones((3, 2)), z)
