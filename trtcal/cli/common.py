"""Shared CLI plumbing: the argument parser that fails in one line, the subcommand maker, output helpers.

The options that several commands share are argument groups in :mod:`trtcal.cli.args`."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from trtcal.cli.args.base import ArgGroup
from trtcal.core.errors import TrtcalError


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def add_command(sub, name: str, func: Callable[[argparse.Namespace], int], *groups: ArgGroup) -> Parser:
    """Add the subcommand ``name`` to ``sub`` (an ``add_subparsers`` action) and return its parser.

    It runs ``func(args)``; ``func``'s docstring is its help: the first paragraph is the summary
    ``trtcal --help`` lists, the rest the description its own ``--help`` starts with (argparse
    joins the lines). ``groups`` (see :mod:`trtcal.cli.args`) add their options, each under its
    heading, in the order given; the caller then adds the command's own arguments.
    """
    summary, _, description = inspect.cleandoc(func.__doc__).partition("\n\n")
    p = sub.add_parser(name, help=" ".join(summary.split()), description=description)
    for group in groups:
        group.add_parser_args(p)
    p.set_defaults(func=func)
    return p


def print_json(data: Any) -> None:
    """Print ``data`` as JSON; objects with ``to_dict`` are expanded, and NaN/Inf floats anywhere
    become the strings "nan", "inf", "-inf" (JSON has no such numbers)."""
    json.dump(_jsonable(data), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return json_float(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fmt_float(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}"


def json_float(x: float | None) -> float | str | None:
    """JSON has no NaN/Inf: write them as strings."""
    if x is None:
        return None
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x


def fail(message: str) -> NoReturn:
    raise TrtcalError(message)
