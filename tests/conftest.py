"""Shared test helpers: the real-cache fixtures folder and an in-process CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from trtcal.cli.main import main

#: Real calibration caches from public projects (see its SOURCES.md); tests that need them skip
#: when the folder is absent.
FIXTURES = Path(os.environ.get("TRTCAL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "caches")


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"real cache fixtures not available ({path})")
    return path


def trt_fixtures() -> list[str]:
    """Names of the TensorRT-format fixtures (everything but the ORT tables and SOURCES.md)."""
    if not FIXTURES.exists():
        return []
    return sorted(p.name for p in FIXTURES.iterdir()
                  if p.name != "SOURCES.md" and "CREStereo" not in p.name)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``trtcal ARGV`` in-process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse exits for usage errors and --help
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()
