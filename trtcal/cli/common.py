"""Shared CLI plumbing: the argument parser that fails in one line, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from trtcal.errors import TrtcalError


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of text")


def add_output(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("-o", "--output", required=required, metavar="OUT", help="output file (written atomically)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


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
