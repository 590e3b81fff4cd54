"""Shared CLI plumbing: the argument parser that fails in one line, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from trtcal.core.errors import TrtcalError


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


#: Help texts of options that several commands share: one meaning, one text (tests/cli/test_cli_options.py).
FORCE_HELP = "replace existing outputs"
PREPROCESS_HELP = ("for image folders: e.g. resize=256,crop=224,scale=1/255,mean=0.485/0.456/0.406,"
                   "std=0.229/0.224/0.225,layout=NCHW,order=RGB; resize=HxW stretches, letterbox=HxW (or S) fits "
                   "and pads with pad=114 (YOLO), crop=S or HxW")
MAX_BATCHES_HELP = "stop after this many batches"
LABELS_HELP = ("class labels, one per sample: FILE.npy, FILE.txt or FILE.npz[:KEY] (KEY defaults to labels; a labels "
               "array in the --data .npz is ignored as input)")
PERCENTILE_HELP = "for --algorithm percentile: the percentage of |x| kept (default 99.99)"
DISTRIBUTION_HELP = "for --algorithm aciq: the assumed distribution (default gaussian)"


def add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)


def add_preprocess(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preprocess", help=PREPROCESS_HELP)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of text")


def add_output(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("-o", "--output", required=required, metavar="OUT", help="output file (written atomically)")
    add_force(parser)


def add_ignore_provenance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ignore-provenance", action="store_true",
                        help="use a cache (or statistics) even if its provenance record names another model or data, "
                             "says it was calibrated on random data, or it has ranges for under half of the tensors "
                             "to quantize (each is then a warning)")


def add_output_choice(parser: argparse.ArgumentParser) -> None:
    """``--score`` and ``--classifier``: which model outputs ``eval`` and ``fallback`` score
    (:func:`trtcal.ort.evaluate.choose_outputs`)."""
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
