"""The statistics group: the histograms a command reads (``--stats``, written by
``trtcal calibrate --stats``), so that it needs no inference.

:class:`StatsArgs` adds ``--stats`` (required); :meth:`StatsArgs.parse` returns its path.
:data:`STATS_HELP` is also the help of ``--stats`` where :mod:`.ranges` offers it beside
``--cache``.
"""

from __future__ import annotations

import argparse

from trtcal.cli.args.base import ArgGroup

STATS_HELP = "statistics (.npz) from trtcal calibrate --stats"


class StatsArgs(ArgGroup):
    """``--stats FILE``, required."""

    title = "statistics"

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--stats", required=True, help=STATS_HELP)

    def parse(self, args: argparse.Namespace) -> str:
        return args.stats
