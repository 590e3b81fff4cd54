"""Bounded number types for argparse: every number option of every command takes one of these.

A value out of bounds (0 or -1 for a count, a huge or non-finite value, not a number) fails in
one line naming the option (argparse adds ``argument --NAME:``), exit status 2, before any work.
"""

from __future__ import annotations

import argparse


class Bounded:
    """An argparse ``type``: a finite int or float in ``[low, high]`` (``low`` excluded when
    ``open_low``), so 0, negative, huge and non-number values of counts and fractions fail in
    one line naming the option (argparse adds ``argument --NAME:``), exit status 2."""

    def __init__(self, kind: type, low: float, high: float, *, open_low: bool = False):
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low
        self.__name__ = kind.__name__  # argparse names the type in its messages

    def describe(self) -> str:
        if self.kind is int:
            return f"an integer from {int(self.low)} to {int(self.high)}"
        return f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}") from None
        if not value == value or value in (float("inf"), float("-inf")) or value < self.low \
                or (self.open_low and value == self.low) or value > self.high:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {self.describe()}")
        return value


#: Counts of things (samples, batches, rows, steps): 1 to a billion.
COUNT = Bounded(int, 1, 10**9)
#: Counts where 0 means none (tensors kept in float).
COUNT0 = Bounded(int, 0, 10**9)
#: Batch sizes: 1 to 65536 samples.
BATCH = Bounded(int, 1, 65536)
#: Sizes in MB (memory budget, workspace): above 0, at most 16 TB.
MEGABYTES = Bounded(float, 0, 2.0**24, open_low=True)
#: Fractions in (0, 1] (quantiles, cut-offs).
FRACTION = Bounded(float, 0, 1, open_low=True)
#: Probabilities in [0, 1].
PROBABILITY = Bounded(float, 0, 1)
#: Relative tolerances: 0 to 1e12.
RTOL = Bounded(float, 0, 1e12)
#: Signal-to-noise ratios in dB.
DECIBELS = Bounded(float, -200, 400)
#: Percentages in (0, 100].
PERCENT = Bounded(float, 0, 100, open_low=True)
#: Bit widths 2..16.
BITS = Bounded(int, 2, 16)
#: Search steps (EQ's scale factors): 2 to 10000.
STEPS = Bounded(int, 2, 10000)
#: Whole megabytes (TensorRT's workspace pool): 1 to 16 TB.
MEGABYTES_INT = Bounded(int, 1, 2**24)
