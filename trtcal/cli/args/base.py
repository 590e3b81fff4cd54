"""The contract of an argument group (see :mod:`trtcal.cli.args`).

A subclass sets ``title``, adds its options in :meth:`ArgGroup.add_options` and turns them
into what the library needs in :meth:`ArgGroup.parse`.
"""

from __future__ import annotations

import argparse
from typing import Any


class ArgGroup:
    """Options that several commands share, under one heading of ``--help``."""

    #: The heading of the group's options in ``--help``.
    title: str = ""

    def add_parser_args(self, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        """Add the group's options to ``parser`` under :attr:`title`; return that argument group."""
        group = parser.add_argument_group(self.title)
        self.add_options(group)
        return group

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        """Add the options to ``group`` (an argument group of the command's parser)."""
        raise NotImplementedError

    def parse(self, args: argparse.Namespace) -> Any:
        """What the library call needs from these options of the parsed ``args``."""
        raise NotImplementedError
