"""Safe reads and atomic writes."""

from __future__ import annotations

import os

import pytest

from trtcal.core import fileio
from trtcal.core.errors import TrtcalError


def test_read_refusals(tmp_path):
    with pytest.raises(TrtcalError, match="no such"):
        fileio.read_bytes(tmp_path / "nope")
    with pytest.raises(TrtcalError, match="is a directory"):
        fileio.read_bytes(tmp_path)
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(100 * 2**20)
    with pytest.raises(TrtcalError, match=r"104.9 MB is far larger"):
        fileio.read_bytes(big)
    with pytest.raises(TrtcalError, match=r"^x:2: not UTF-8"):
        fileio.decode_text(b"ok\n\xff\xfe", "x")


def test_atomic_write_rules(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("input")
    out = tmp_path / "out.txt"
    fileio.atomic_write(out, "one")
    assert out.read_text() == "one"
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    with pytest.raises(TrtcalError, match="already exists"):
        fileio.atomic_write(out, "two")
    fileio.atomic_write(out, "two", force=True)
    assert out.read_text() == "two"
    with pytest.raises(TrtcalError, match="is also an input"):
        fileio.atomic_write(src, "x", force=True, inputs=[src])
    assert src.read_text() == "input"
    with pytest.raises(TrtcalError, match="does not exist"):
        fileio.atomic_write(tmp_path / "no" / "dir.txt", "x")
    with pytest.raises(TrtcalError, match="is a directory"):
        fileio.atomic_write(tmp_path, "x", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]
