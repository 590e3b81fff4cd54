"""``trtcal``: the command line entry point."""

from __future__ import annotations

import sys

from trtcal import __version__
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
    report_cmds,
)
from trtcal.cli.common import Parser
from trtcal.errors import TrtcalError


def build_parser() -> Parser:
    parser = Parser(
        prog="trtcal",
        description="INT8 calibration for TensorRT: calibrate, inspect, fix and convert calibration caches.",
    )
    parser.add_argument("--version", action="version", version=f"trtcal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    demo.register(sub)
    calibrate_cmds.register(sub)
    cache_cmds.register(sub)
    eval_cmds.register(sub)
    onesided_cmds.register(sub)
    crosscheck_cmds.register(sub)
    plot_cmds.register(sub)
    bits_cmds.register(sub)
    report_cmds.register(sub)
    fallback_cmds.register(sub)
    build_cmds.register(sub)
    qdq_cmds.register(sub)
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
