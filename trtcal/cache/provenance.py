"""Provenance sidecars: ``<output>.trtcal.json`` beside a cache trtcal wrote.

A TensorRT cache has no room for metadata, so what made it (model hash, data, algorithm, batch
count, whether the data was random) lives beside it. ``cache inspect`` and ``cache lint`` read the
sidecar when present: a cache calibrated on random data is flagged wherever it travels with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtcal._version import __version__
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

SUFFIX = ".trtcal.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + SUFFIX)


def write_sidecar(path: str | os.PathLike, metadata: dict, *, force: bool = False) -> Path:
    doc = {"trtcal_version": __version__, **metadata}
    return fileio.atomic_write(sidecar_path(path), json.dumps(doc, indent=1, default=str) + "\n", force=force)


def read_sidecar(path: str | os.PathLike) -> dict | None:
    side = sidecar_path(path)
    if not side.exists():
        return None
    text = fileio.read_text(side, max_bytes=16 * 2**20, what="provenance file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrtcalError(f"{side}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise TrtcalError(f"{side}: expected a JSON object")
    return doc
