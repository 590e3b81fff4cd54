"""``trtcal demo``: the bundled example, end to end, with the commands it stands for."""

from __future__ import annotations

import argparse
import shlex
from importlib import resources
from pathlib import Path

EXAMPLE_MODEL = "tiny_cnn.onnx"
EXAMPLE_CACHE = "tiny_cnn.cache"


def example_path(name: str) -> Path:
    return Path(str(resources.files("trtcal") / "examples" / name))


def _run(argv: list[str]) -> int:
    from trtcal.cli.main import main

    print(f"\n$ trtcal {shlex.join(argv)}", flush=True)
    return main(argv)


def cmd_demo(args: argparse.Namespace) -> int:
    from trtcal.cache import DEFAULT_TRT_VERSION, format_version

    model, cache = example_path(EXAMPLE_MODEL), example_path(EXAMPLE_CACHE)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = out_dir / "tiny_cnn.cache"
    trt = format_version(DEFAULT_TRT_VERSION)
    print("trtcal demo: a calibration cache for a small CNN, stamped for TensorRT 8.6.1, checked and "
          f"fixed for TensorRT {trt}.")
    _run(["cache", "inspect", str(cache)])
    status = _run(["cache", "lint", str(cache), "--model", str(model), "--trt-version", trt])
    print(f"(lint exit status {status}: findings)")
    _run(["cache", "edit", str(cache), "--drop", "/conv3/*", "--set",
          "/pool/GlobalAveragePool_output_0=1.0431297", "--allow-new", "--set", "logits=12.5",
          "-o", str(fixed) + ".tmp.cache", "--force"])
    _run(["cache", "restamp", str(fixed) + ".tmp.cache", "--trt-version", trt, "-o", str(fixed), "--force"])
    Path(str(fixed) + ".tmp.cache").unlink()
    status = _run(["cache", "lint", str(fixed), "--model", str(model), "--trt-version", trt])
    print(f"\nwrote {fixed} (lint exit status {status}: {'clean' if status == 0 else 'findings'})")
    return status


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the bundled example (no arguments needed)",
                       description="Inspect, lint and fix the bundled example cache, writing "
                                   "calib_caches/tiny_cnn.cache.")
    p.add_argument("--output-dir", default="calib_caches", help="where to write the fixed cache (default %(default)s)")
    p.set_defaults(func=cmd_demo)
