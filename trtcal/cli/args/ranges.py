"""The ranges group: where the ranges of a Q/DQ model come from (``qdq``, ``fallback``).

:class:`RangesArgs` adds, under "ranges", ``--cache`` or ``--stats`` (one of them, required),
``--ignore-provenance`` and ``--overrides``, and under "thresholds" the algorithm options of
:class:`~trtcal.cli.args.algorithm.AlgorithmArgs` that apply to ``--stats``.
:meth:`RangesArgs.parse` refuses algorithm options with ``--cache`` (a cache already holds its
ranges) and returns a :class:`RangeSource`, whose :meth:`~RangeSource.load` reads the ranges.
:func:`add_ignore_provenance` gives ``build`` the same ``--ignore-provenance``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from trtcal.cli.args.algorithm import AlgorithmArgs, Thresholding
from trtcal.cli.args.base import ArgGroup
from trtcal.cli.args.stats import STATS_HELP
from trtcal.core.errors import TrtcalError

IGNORE_PROVENANCE_HELP = ("use a cache (or statistics) even if its provenance record names another model or data, "
                          "says it was calibrated on random data, or it has ranges for under half of the tensors to "
                          "quantize (each is then a warning)")


def add_ignore_provenance(group: argparse._ActionsContainer) -> None:
    """``--ignore-provenance``: one text wherever a cache's or statistics' provenance is checked."""
    group.add_argument("--ignore-provenance", action="store_true", help=IGNORE_PROVENANCE_HELP)


@dataclass(frozen=True)
class RangeSource:
    """What :meth:`RangesArgs.parse` returns."""

    #: ``--cache``: a calibration cache (any format trtcal reads), or None.
    cache: str | None
    #: ``--stats``: statistics from ``trtcal calibrate --stats``, or None.
    stats: str | None
    #: With ``--stats``: the algorithm and its options.
    thresholding: Thresholding | None
    #: ``--overrides``: hand-set ranges applied over the cache or statistics, or None.
    overrides: str | None
    #: ``--ignore-provenance``: warn instead of refusing ranges that are not the model's.
    ignore_provenance: bool

    @property
    def path(self) -> str:
        """The file the ranges come from."""
        return self.cache or self.stats

    @property
    def kind(self) -> str:
        """What that file is: "cache" or "statistics"."""
        return "cache" if self.cache else "statistics"

    def load(self):
        """``(ranges, record)``: the cache itself or Range objects computed from the statistics,
        and the file's provenance record (the cache's sidecar, the statistics' metadata)."""
        if self.cache:
            from trtcal.cache.convert import read_any
            from trtcal.cache.provenance import read_sidecar

            return read_any(self.cache), read_sidecar(self.cache)
        from trtcal.core.ranges import from_thresholds
        from trtcal.core.stats import load_stats
        from trtcal.ort.pipeline import compute_thresholds

        algorithm = self.thresholding.algorithm
        histograms, meta = load_stats(self.stats)
        results = compute_thresholds(histograms, algorithm, **self.thresholding.options)
        return from_thresholds(results, histograms, source=f"stats:{algorithm}"), meta


class RangesArgs(ArgGroup):
    """``--cache`` or ``--stats`` and the threshold algorithm for ``--stats``, ``--ignore-provenance``
    and ``--overrides``."""

    title = "ranges"

    def __init__(self):
        self.algorithm = AlgorithmArgs(("--algorithm", "--percentile", "--distribution", "--zero-bin"),
                                       with_stats=True)

    def add_parser_args(self, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        group = super().add_parser_args(parser)
        self.algorithm.add_parser_args(parser)
        return group

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        src = group.add_mutually_exclusive_group(required=True)
        src.add_argument("--cache", help="calibration cache (TensorRT, JSON or ONNX Runtime tables)")
        src.add_argument("--stats", help=STATS_HELP)
        add_ignore_provenance(group)
        group.add_argument("--overrides", metavar="FILE", help="hand-set ranges (YAML or JSON, see docs/overrides.md), "
                           "applied over the cache or statistics")

    def parse(self, args: argparse.Namespace) -> RangeSource:
        thresholding = None
        if args.cache:
            for option in self.algorithm.given(args):
                raise TrtcalError(f"{option} applies to --stats only (a cache already holds its ranges)")
        else:
            thresholding = self.algorithm.parse(args)
        return RangeSource(args.cache, args.stats, thresholding, args.overrides, args.ignore_provenance)
