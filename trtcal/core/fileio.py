"""Safe file reading and atomic writing, shared by every module that touches files.

- Reads refuse directories, missing files, binary content and files far larger than the kind
  of file expected, with a one-line :class:`~trtcal.core.errors.TrtcalError` naming the file.
- Writes go to a temporary file in the destination folder and are renamed into place, so a
  failed or interrupted write never leaves a half-written output, and an existing output is
  replaced only when ``force`` is given. Writing onto an input file is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trtcal.core.errors import TrtcalError

#: Default size limit for text inputs (calibration caches, tables, overrides). The largest real
#: cache we know of is about 0.3 MB; 64 MB means "this is not the file you think it is".
MAX_TEXT_BYTES = 64 * 1024 * 1024


def read_bytes(path: str | os.PathLike, *, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> bytes:
    """Read a whole file, refusing missing paths, directories and oversized files."""
    p = Path(path)
    if not p.exists():
        raise TrtcalError(f"{p}: no such {what}")
    if p.is_dir():
        raise TrtcalError(f"{p}: is a directory, expected a {what}")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise TrtcalError(
                f"{p}: {size / 1e6:.1f} MB is far larger than any {what} "
                f"(limit {max_bytes / 1e6:.0f} MB); is it the right file?"
            )
        return p.read_bytes()
    except OSError as exc:
        raise TrtcalError(f"{p}: cannot read: {exc.strerror or exc}") from None


def decode_text(data: bytes, source: str, *, what: str = "text file") -> str:
    """Decode bytes as UTF-8 text, refusing binary content with a clear message."""
    if b"\x00" in data:
        raise TrtcalError(f"{source}: binary content (NUL bytes), expected a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TrtcalError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}), expected a {what}") from None


def read_text(path: str | os.PathLike, *, max_bytes: int = MAX_TEXT_BYTES, what: str = "text file") -> str:
    """Read a UTF-8 text file (newlines kept exactly as stored)."""
    return decode_text(read_bytes(path, max_bytes=max_bytes, what=what), str(path), what=what)


def check_output(path: str | os.PathLike, *, force: bool = False, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output path before any work: not an input, not a directory, not silently replaced."""
    out = Path(path)
    for src in inputs:
        try:
            same = out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve()
        except OSError:
            same = False
        if same:
            raise TrtcalError(f"{out}: is also an input; trtcal never modifies its inputs, choose another output")
    if out.is_dir():
        raise TrtcalError(f"{out}: is a directory, expected an output file path")
    if out.exists() and not force:
        raise TrtcalError(f"{out}: already exists; pass --force to replace it")
    if not out.parent.exists():
        raise TrtcalError(f"{out}: folder {out.parent} does not exist")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str, *, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    out = check_output(path, force=force, inputs=inputs)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise TrtcalError(f"{out}: cannot write: {exc.strerror or exc}") from None
        raise
    return out


def write_npz_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, force: bool = False,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Named numeric arrays as a compressed .npz, atomically."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, buf.getvalue(), force=force, inputs=inputs)


def open_npz(path: str | os.PathLike, *, what: str, max_bytes: int = 2 * 1024**3):
    """An opened .npz (never with pickles), or a one-line TrtcalError naming ``path`` as ``what``."""
    import io
    import zipfile

    data = read_bytes(path, max_bytes=max_bytes, what=what)
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise TrtcalError(f"{path}: not a {what} (.npz): {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise TrtcalError(f"{path}: not a {what} (a single .npy array, expected .npz)")
    return npz


def read_npz_arrays(path: str | os.PathLike, *, what: str = "weight scales file") -> dict[str, np.ndarray]:
    """Named float arrays from a .npz (no pickles); anything else is a one-line TrtcalError."""
    import zipfile

    npz = open_npz(path, what=what)
    out: dict[str, np.ndarray] = {}
    with npz:
        for key in npz.files:
            try:
                arr = npz[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise TrtcalError(f"{path}: array {key!r}: {' '.join(str(exc).split())[:200]}") from None
            if arr.dtype.kind != "f":
                raise TrtcalError(f"{path}: array {key!r} is {arr.dtype}, expected floats")
            out[key] = arr
    return out
