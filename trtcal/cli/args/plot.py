"""The plot group: pictures, which need matplotlib (the ``plot`` extra).

:class:`PlotArgs` adds ``--plot PNG`` (a picture the command writes besides its result) or
``--no-plots`` (a command whose output has pictures unless told not to).
:meth:`PlotArgs.parse` checks, before the work, that the picture can be written and that
matplotlib imports, and returns a :class:`Plots`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from trtcal.cli.args.base import ArgGroup

NO_PLOTS_HELP = "tables only (no matplotlib needed)"


@dataclass(frozen=True)
class Plots:
    """What :meth:`PlotArgs.parse` returns: whether to draw, and where (``--plot``)."""

    enabled: bool
    path: str | None = None


class PlotArgs(ArgGroup):
    """``plot_help``: what ``--plot PNG`` draws in this command; None: ``--no-plots`` instead."""

    title = "plots"

    def __init__(self, plot_help: str | None = None):
        self.plot_help = plot_help

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        if self.plot_help is not None:
            group.add_argument("--plot", help=self.plot_help)
        else:
            group.add_argument("--no-plots", action="store_true", help=NO_PLOTS_HELP)

    def parse(self, args: argparse.Namespace, *, inputs: Sequence[str] = ()) -> Plots:
        """Fail now, never after the work: ``--plot`` must be writable (``--force`` to replace
        it; never one of ``inputs``) and matplotlib must import."""
        if self.plot_help is not None:
            plots = Plots(bool(args.plot), args.plot)
            if plots.path:
                from trtcal.core import fileio

                fileio.check_output(plots.path, force=args.force, inputs=list(inputs))
        else:
            plots = Plots(not args.no_plots)
        if plots.enabled:
            from trtcal.report.plots import _pyplot

            _pyplot()
        return plots
