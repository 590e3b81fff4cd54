"""The data group: the data a command runs the model on, in batches, and how it feeds the
model's inputs.

:class:`DataArgs` adds, under "data", ``--data`` (what it is for is the command's words),
``--random``, ``--labels``, ``--preprocess``, ``--batch-size`` and ``--max-batches``, as the
command takes them, and under "feeding the data to the model's inputs" ``--batch-axis``,
``--shapes`` and ``--allow-nonfinite``. :meth:`DataArgs.parse` returns the keyword arguments of
:func:`trtcal.ort.pipeline.calibrate`, :func:`trtcal.ort.evaluate.evaluate` and
:func:`trtcal.ort.runner.first_samples` for the options the command takes: ``data``,
``random``, ``labels``, ``preprocess`` (a :class:`trtcal.data.images.Preprocess` or None),
``batch_size``, ``max_batches``, ``batch_axes``, ``shapes`` and ``allow_nonfinite``.
"""

from __future__ import annotations

import argparse

from trtcal.cli.args.base import ArgGroup
from trtcal.cli.args.numbers import BATCH, COUNT

#: ``--data`` of the commands that calibrate on it (``calibrate``; others say "as for trtcal calibrate").
CALIBRATION_DATA_HELP = ("calibration data: .npy, .npz, a folder of them, a folder of images (with --preprocess), "
                         "or script.py:function")
#: ``--data`` of the commands that compare models on it.
EVALUATION_DATA_HELP = "evaluation data (as for trtcal calibrate)"
RANDOM_HELP = "use random inputs (smoke test; the result is fake)"
LABELS_HELP = ("class labels, one per sample: FILE.npy, FILE.txt or FILE.npz[:KEY] (KEY defaults to labels; a labels "
               "array in the --data .npz is ignored as input)")
PREPROCESS_HELP = ("for image folders: e.g. resize=256,crop=224,scale=1/255,mean=0.485/0.456/0.406,"
                   "std=0.229/0.224/0.225,layout=NCHW,order=RGB; resize=HxW stretches, letterbox=HxW (or S) fits "
                   "and pads with pad=114 (YOLO), crop=S or HxW")
#: ``--batch-size`` where the default is the model's fixed batch, else 32 (other commands say theirs).
BATCH_SIZE_HELP = "samples per batch (default: the model's fixed batch, else 32)"
MAX_BATCHES_HELP = "stop after this many batches"
BATCH_AXIS_HELP = ("the axis of input NAME that holds its samples (default 0), e.g. state=1 for a [2, N, 128] state; "
                   "none: the array goes whole with every batch, as 0-d inputs always do (repeatable)")
SHAPES_HELP = ("the shape of one batch of input NAME, fixing its dynamic dimensions, e.g. x=1x3x48x320: --random "
               "makes data of this shape, other data must match it (images: --preprocess must give its height and "
               "width), and its batch-axis entry is the batch size (repeatable)")
ALLOW_NONFINITE_HELP = ("feed NaN/Inf input values (counted, and left out of the ranges) instead of stopping with an "
                        "error")


class DataArgs(ArgGroup):
    """The data options.

    ``data_help``: what ``--data`` is for in this command (None: the command adds ``--data``
    itself, as ``build`` does beside ``--cache``); ``required``: ``--data`` must be given.
    ``random``, ``labels``: offer ``--random``, ``--labels``. ``batch_size_help``: the default
    batch size, which differs by command. ``max_batches``: offer ``--max-batches``. ``feed``:
    offer ``--batch-axis``, ``--shapes`` and ``--allow-nonfinite`` (every command that runs
    the model in ONNX Runtime).
    """

    title = "data"
    feed_title = "feeding the data to the model's inputs"

    def __init__(self, data_help: str | None, *, required: bool = False, random: bool = False,
                 labels: bool = False, batch_size_help: str = BATCH_SIZE_HELP, max_batches: bool = True,
                 feed: bool = True):
        self.data_help, self.required, self.random, self.labels = data_help, required, random, labels
        self.batch_size_help, self.max_batches, self.feed = batch_size_help, max_batches, feed

    def add_parser_args(self, parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
        group = super().add_parser_args(parser)
        if self.feed:
            feed = parser.add_argument_group(self.feed_title)
            feed.add_argument("--batch-axis", action="append", metavar="NAME=AXIS", help=BATCH_AXIS_HELP)
            feed.add_argument("--shapes", action="append", metavar="NAME=DxD...", help=SHAPES_HELP)
            feed.add_argument("--allow-nonfinite", action="store_true", help=ALLOW_NONFINITE_HELP)
        return group

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        if self.data_help is not None:
            group.add_argument("--data", required=self.required, help=self.data_help)
        if self.random:
            group.add_argument("--random", action="store_true", help=RANDOM_HELP)
        if self.labels:
            group.add_argument("--labels", help=LABELS_HELP)
        group.add_argument("--preprocess", help=PREPROCESS_HELP)
        group.add_argument("--batch-size", type=BATCH, help=self.batch_size_help)
        if self.max_batches:
            group.add_argument("--max-batches", type=COUNT, help=MAX_BATCHES_HELP)

    def parse(self, args: argparse.Namespace) -> dict:
        out: dict = {}
        if self.data_help is not None:
            out["data"] = args.data
        if self.random:
            out["random"] = args.random
        if self.labels:
            out["labels"] = args.labels
        if args.preprocess:
            from trtcal.data.images import Preprocess

            out["preprocess"] = Preprocess.parse(args.preprocess)
        else:
            out["preprocess"] = None
        out["batch_size"] = args.batch_size
        if self.max_batches:
            out["max_batches"] = args.max_batches
        if self.feed:
            from trtcal.data.sources import parse_batch_axes, parse_input_shapes

            out.update(batch_axes=parse_batch_axes(args.batch_axis), shapes=parse_input_shapes(args.shapes),
                       allow_nonfinite=args.allow_nonfinite)
        return out
