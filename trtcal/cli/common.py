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


def add_output_choice(parser: argparse.ArgumentParser) -> None:
    """``--score`` and ``--classifier``: which model outputs ``eval`` and ``fallback`` score
    (:func:`trtcal.evaluate.choose_outputs`)."""
    parser.add_argument("--score", action="append", metavar="OUTPUT",
                        help="score this model output (repeatable; default: every float output; integer and "
                             "boolean outputs are never scored)")
    parser.add_argument("--classifier", action="append", metavar="OUTPUT",
                        help="score this output as class scores over its last axis: top-1 agreement (per position "
                             "for [N, T, C]) and KL divergence (repeatable; then no other output is; 'none': no "
                             "output is). Default: the outputs made by Softmax/LogSoftmax over the last axis, else "
                             "the model's only float output when it is [N, C] from a linear layer")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--batch-axis``, ``--shapes`` and ``--allow-nonfinite``: how ``--data`` (and ``--random``)
    feed the model's inputs, in every command that takes data (see :func:`data_options`)."""
    group = parser.add_argument_group("feeding the data to the model's inputs")
    group.add_argument("--batch-axis", action="append", metavar="NAME=AXIS",
                       help="the axis of input NAME that holds its samples (default 0), e.g. state=1 for a [2, N, 128] "
                            "state; none: the array goes whole with every batch, as 0-d inputs always do "
                            "(repeatable)")
    group.add_argument("--shapes", action="append", metavar="NAME=DxD...",
                       help="the shape of one batch of input NAME, fixing its dynamic dimensions, e.g. x=1x3x48x320: "
                            "--random makes data of this shape, other data must match it (images: --preprocess must "
                            "give its height and width), and its batch-axis entry is the batch size (repeatable)")
    group.add_argument("--allow-nonfinite", action="store_true",
                       help="feed NaN/Inf input values (counted, and left out of the ranges) instead of stopping "
                            "with an error")


def data_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`add_data_options`' options for ``calibrate``, ``evaluate``
    and ``first_samples``: ``batch_axes``, ``shapes`` and ``allow_nonfinite``."""
    from trtcal.data.sources import parse_batch_axes, parse_input_shapes

    return {"batch_axes": parse_batch_axes(getattr(args, "batch_axis", None)),
            "shapes": parse_input_shapes(getattr(args, "shapes", None)),
            "allow_nonfinite": bool(getattr(args, "allow_nonfinite", False))}


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
