"""The statistics file: histograms of many tensors in one versioned ``.npz``.

Thresholds can be recomputed from it later without running the model again. Layout (format
version 1), all plain numeric arrays, read without pickle:

- ``format``: the string ``trtcal-stats``; ``version``: int64 format version;
- ``header``: UTF-8 JSON as uint8 ``{"names": [...], "metadata": {...}}`` (tensor names are
  arbitrary strings, so they are never used as npz keys);
- per tensor ``i`` (in ``names`` order): ``h{i}.counts``, ``h{i}.ints``, ``h{i}.floats`` as
  produced by :meth:`trtcal.core.histogram.Histogram.to_arrays`.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from trtcal.core.errors import TrtcalError
from trtcal.core.fileio import open_npz, write_npz_arrays
from trtcal.core.histogram import Histogram

FORMAT = "trtcal-stats"
VERSION = 1
#: Refuse stats files above this size (a stats file of 10,000 tensors x 2048 bins is ~170 MB).
MAX_STATS_BYTES = 8 * 1024**3


def save_stats(path: str | os.PathLike, histograms: dict[str, Histogram], metadata: dict | None = None,
               *, force: bool = False):
    """Write ``histograms`` (name -> Histogram) and JSON-able ``metadata`` atomically to ``path``."""
    names = list(histograms)
    for name in names:
        if not isinstance(name, str):
            raise TrtcalError(f"{path}: tensor names must be strings, not {name!r}")
    try:
        header = json.dumps({"names": names, "metadata": metadata or {}}, allow_nan=True,
                            ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TrtcalError(f"{path}: metadata is not JSON-serialisable: {exc}") from None
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
              "header": np.frombuffer(header, dtype=np.uint8)}
    for i, name in enumerate(names):
        for key, arr in histograms[name].to_arrays().items():
            arrays[f"h{i}.{key}"] = arr
    return write_npz_arrays(path, arrays, force=force)


def load_stats(path: str | os.PathLike) -> tuple[dict[str, Histogram], dict]:
    """Read a stats file: ``(histograms, metadata)``. Anything wrong is a TrtcalError naming it."""
    npz = open_npz(path, what="trtcal stats file", max_bytes=MAX_STATS_BYTES)
    with npz:
        try:
            keys = set(npz.files)
            if "format" not in keys or str(npz["format"]) != FORMAT:
                raise TrtcalError(f"{path}: not a trtcal stats file (no '{FORMAT}' format marker)")
            version = npz["version"] if "version" in keys else None
            if version is None or version.shape != () or version.dtype.kind not in "iu":
                raise TrtcalError(f"{path}: stats file has no valid format version")
            if int(version) != VERSION:
                raise TrtcalError(f"{path}: stats format version {int(version)} is not supported "
                                  f"(this trtcal reads version {VERSION}); recollect or upgrade trtcal")
            raw = npz["header"] if "header" in keys else None
            if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
                raise TrtcalError(f"{path}: stats file has no valid header")
            try:
                header = json.loads(raw.tobytes().decode("utf-8"))
                names, metadata = header["names"], header["metadata"]
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
                raise TrtcalError(f"{path}: corrupt stats header: {exc}") from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                    or len(set(names)) != len(names) or not isinstance(metadata, dict):
                raise TrtcalError(f"{path}: corrupt stats header: bad tensor names or metadata")
            hists = {}
            for i, name in enumerate(names):
                parts = {}
                for key in ("counts", "ints", "floats"):
                    k = f"h{i}.{key}"
                    if k not in keys:
                        raise TrtcalError(f"{path}: tensor {name!r}: missing {k}")
                    parts[key] = npz[k]
                try:
                    hists[name] = Histogram.from_arrays(parts, name=name)
                except TrtcalError as exc:
                    raise TrtcalError(f"{path}: {exc}") from None
        except TrtcalError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise TrtcalError(f"{path}: corrupt stats file: {exc}") from None
    return hists, metadata
