"""The output group: what a command writes and how it prints.

:class:`OutputArgs` adds ``-o/--output`` (what it writes is the command's words),
``--force``, ``-q/--quiet`` and ``--json``, as the command takes them;
:meth:`OutputArgs.parse` returns an :class:`Output`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from trtcal.cli.args.base import ArgGroup

#: ``-o`` of the commands that write one file (``qdq``, ``cache edit``, ``restamp``, ``convert``).
OUTPUT_FILE_HELP = "output file (written atomically)"
FORCE_HELP = "replace existing outputs"
QUIET_HELP = "no progress bar"
JSON_HELP = "print a JSON document instead of text"


@dataclass(frozen=True)
class Output:
    """What :meth:`OutputArgs.parse` returns (False or None for an option the command lacks)."""

    #: ``-o``: where the result goes (None: not given, or the command has no ``-o``).
    path: str | None
    #: ``--force``: replace existing outputs.
    force: bool
    #: ``--json``: print a JSON document instead of text.
    json: bool
    #: ``--quiet``: no progress bar.
    quiet: bool

    @property
    def progress(self) -> bool | None:
        """The ``progress`` argument of the library calls: False when quiet, else None (a bar
        when stderr is a terminal)."""
        return False if self.quiet else None


class OutputArgs(ArgGroup):
    """The output options.

    ``output_help``: what ``-o`` writes in this command (None: no ``-o``); ``required``,
    ``metavar``, ``default``: of ``-o``. ``force``, ``quiet``, ``json``: offer ``--force``,
    ``-q/--quiet``, ``--json``.
    """

    title = "output"

    def __init__(self, output_help: str | None = None, *, required: bool = False, metavar: str | None = None,
                 default: str | None = None, force: bool = True, quiet: bool = False, json: bool = True):
        self.output_help, self.required, self.metavar, self.default = output_help, required, metavar, default
        self.force, self.quiet, self.json = force, quiet, json

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        if self.output_help is not None:
            group.add_argument("-o", "--output", required=self.required, metavar=self.metavar, default=self.default,
                               help=self.output_help)
        if self.force:
            group.add_argument("--force", action="store_true", help=FORCE_HELP)
        if self.quiet:
            group.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
        if self.json:
            group.add_argument("--json", action="store_true", help=JSON_HELP)

    def parse(self, args: argparse.Namespace) -> Output:
        return Output(args.output if self.output_help is not None else None, self.force and args.force,
                      self.json and args.json, self.quiet and args.quiet)
