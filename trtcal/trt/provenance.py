"""Fingerprints of calibration data and the provenance checks of caches and engines.

Pure (hashlib, stdlib). A cache written by the TensorRT calibrator, or by ``trtcal calibrate``,
has a ``.trtcal.json`` sidecar saying which model (sha256) and which data it came from; before
``trtcal build`` reuses a cache it compares that record with the model and data at hand, and
refuses a mismatch unless told to.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from trtcal.core.errors import TrtcalError


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise TrtcalError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def data_sha256(spec: str | os.PathLike) -> str | None:
    """A fingerprint of a data source as ``open_data`` takes it: a file's sha256; for a folder,
    the sha256 over its files' names and hashes (sorted, hidden files left out, as the loaders
    do); for ``script.py:function``, the script's hash and the function name. None where the
    source is not a path (nothing to hash)."""
    from trtcal.data.sources import is_loader_script

    text = str(spec)
    if is_loader_script(text):
        file, _, func = text.rpartition(":")
        if not Path(file).is_file():
            return None
        return hashlib.sha256(f"{file_sha256(file)}:{func}".encode()).hexdigest()
    path = Path(text)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.iterdir() if q.is_file() and not q.name.startswith(".")):
            h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
        return h.hexdigest()
    return None


def cache_mismatches(record: dict | None, *, model_sha256: str | None = None, data_sha256: str | None = None,
                     gpu: dict | None = None) -> list[str]:
    """Why a cache's provenance ``record`` (its sidecar) does not fit this build; [] when it fits
    or when there is no record to compare (the caller says that separately)."""
    if not record:
        return []
    out = []
    have = record.get("model_sha256")
    if model_sha256 and have and have != model_sha256:
        model = record.get("model") or "another model"
        out.append(f"it was calibrated for {model} (sha256 {have[:12]}...), not this model (sha256 {model_sha256[:12]}...)")
    have = record.get("data_sha256")
    if data_sha256 and have and have != data_sha256:
        out.append(f"it was calibrated on other data ({record.get('data') or 'unknown'}, sha256 {have[:12]}...)")
    if record.get("fake_data"):
        out.append("it was calibrated on random data (trtcal calibrate --random)")
    made_on = record.get("gpu") or {}
    if (record.get("trt_algorithm") == "EntropyCalibration" and gpu and made_on
            and made_on.get("name") != gpu.get("name")):
        out.append(f"EntropyCalibration calibrates after layer fusion, so its cache belongs to the GPU it was made on "
                   f"({made_on.get('name')}), not {gpu.get('name')}")
    return out
