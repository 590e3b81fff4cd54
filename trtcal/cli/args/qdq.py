"""The Q/DQ group: how a Q/DQ model is written from its ranges (``qdq``, ``fallback``).

:class:`QdqArgs` adds ``--target``, ``--attention``, ``--weights`` and ``--weight-scales`` and, for ``qdq``,
``--exclude-nodes`` and ``--exclude-ops``. :meth:`QdqArgs.parse` returns the keyword arguments
of :func:`trtcal.onnx.qdq.write_qdq` (``target``, ``attention``, ``weight_method``, ``weight_scales`` read from
their file, ``exclude_nodes``, ``exclude_ops``); :meth:`QdqArgs.placement` the cheap part of
them (``target``, ``attention`` and the exclusions), which decide what is quantized.
"""

from __future__ import annotations

import argparse

from trtcal.cli.args.base import ArgGroup

TARGET_HELP = ("tensorrt (default): int8, zero point 0; onnxruntime: also uint8 for one-sided tensors (min >= 0 "
               "in --stats; a --cache holds no signs, so all int8)")
WEIGHTS_HELP = ("per-channel weight ranges: max|w| (default, what TensorRT does) or the clipping point with the "
                "least squared error (helps channels with an outlying weight)")
WEIGHT_SCALES_HELP = ("per-channel weight scales by weight name (e.g. <cache>.weights.npz from calibrate "
                      "--algorithm eq); they take precedence over --weights")
ATTENTION_HELP = ("attention blocks (MatMul -> Softmax -> MatMul): int8 (default) quantizes both batched MatMuls' "
                  "inputs, Softmax's output included, as TensorRT's INT8 fused attention wants; float leaves both "
                  "MatMuls in float, as ModelOpt does where it cannot fuse them")
EXCLUDE_NODES_HELP = "leave nodes whose name matches this glob in float (repeatable)"
EXCLUDE_OPS_HELP = ("leave these op types in float, comma-separated: Conv, ConvTranspose, Gemm, MatMul, Add (no "
                    "residual quantization)")


def split_list(values: list[str] | None) -> list[str]:
    """Comma-separated values of a repeatable option, as one list."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


class QdqArgs(ArgGroup):
    """``excludes``: also offer ``--exclude-nodes`` and ``--exclude-ops``."""

    title = "Q/DQ model"

    def __init__(self, *, excludes: bool = False):
        self.excludes = excludes

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        from trtcal.core.weight_scales import WEIGHT_METHODS

        group.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt", help=TARGET_HELP)
        group.add_argument("--attention", choices=("int8", "float"), default="int8", help=ATTENTION_HELP)
        group.add_argument("--weights", dest="weight_method", choices=WEIGHT_METHODS, default="max",
                           help=WEIGHTS_HELP)
        group.add_argument("--weight-scales", metavar="FILE.npz", help=WEIGHT_SCALES_HELP)
        if self.excludes:
            group.add_argument("--exclude-nodes", action="append", metavar="PATTERN", help=EXCLUDE_NODES_HELP)
            group.add_argument("--exclude-ops", action="append", metavar="TYPES", help=EXCLUDE_OPS_HELP)

    def placement(self, args: argparse.Namespace) -> dict:
        """``target``, ``exclude_nodes`` and ``exclude_ops`` (none where the command has no exclusions)."""
        if not self.excludes:
            return {"target": args.target, "attention": args.attention, "exclude_nodes": (), "exclude_ops": []}
        return {"target": args.target, "attention": args.attention, "exclude_nodes": args.exclude_nodes or (),
                "exclude_ops": split_list(args.exclude_ops)}

    def parse(self, args: argparse.Namespace) -> dict:
        """:meth:`placement` (without the exclusions where the command has none) and the weight
        options; the ``--weight-scales`` file is read here."""
        scales = None
        if args.weight_scales:
            from trtcal.core.fileio import read_npz_arrays

            scales = read_npz_arrays(args.weight_scales)
        out = self.placement(args) if self.excludes else {"target": args.target, "attention": args.attention}
        return {**out, "weight_method": args.weight_method, "weight_scales": scales}
