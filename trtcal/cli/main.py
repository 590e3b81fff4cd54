"""``trtcal``: the command line entry point."""

from __future__ import annotations

import sys

from trtcal._version import __version__
from trtcal.cli import (
    bits_cmds,
    build_cmds,
    cache_cmds,
    calibrate_cmds,
    crosscheck_cmds,
    demo,
    eval_cmds,
    fallback_cmds,
    onesided_cmds,
    plot_cmds,
    qdq_cmds,
    quantize_cmds,
    report_cmds,
    smooth_cmds,
)
from trtcal.cli.common import Parser
from trtcal.core.errors import TrtcalError


def build_parser() -> Parser:
    parser = Parser(
        prog="trtcal",
        description="INT8 calibration for TensorRT: calibrate on any machine, inspect and fix ranges and caches, "
                    "write Q/DQ models, judge them against FP32, and build engines.",
    )
    parser.add_argument("--version", action="version", version=f"trtcal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    # the one command first, then in the order of the work: calibrate, look at and fix the ranges,
    # quantize, judge, build
    for module in (demo, quantize_cmds, calibrate_cmds, cache_cmds, onesided_cmds, plot_cmds, report_cmds, bits_cmds,
                   crosscheck_cmds, smooth_cmds, qdq_cmds, fallback_cmds, eval_cmds, build_cmds):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrtcalError as exc:
        message = str(exc).replace("\r", " ").replace("\n", " ")
        sys.stderr.write(f"trtcal: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("trtcal: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
