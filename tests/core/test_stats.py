"""The statistics file: round trip, odd tensor names, and refusal of foreign or broken files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from trtcal.core import thresholds as T
from trtcal.core.errors import TrtcalError
from trtcal.core.histogram import Histogram, histogram_of
from trtcal.core.stats import load_stats, save_stats

NAMES = ["images", "/model/conv 1/Conv_output_0", "a:b::c", "h{0}.counts", "名前", "x" * 300]


def some_histograms():
    rng = np.random.default_rng(0)
    hists = {}
    for i, name in enumerate(NAMES):
        h = Histogram(2048 if i % 2 else 64, "power2" if i % 2 else "append", name=name)
        h.update(rng.standard_normal(1000).astype(np.float32) * (i + 1))
        h.update(np.array([np.nan, np.inf, 0.0], np.float32))
        hists[name] = h
    hists["empty"] = Histogram()
    return hists


def test_round_trip(tmp_path):
    hists = some_histograms()
    meta = {"model": "m.onnx", "batches": 3, "nested": {"x": [1, 2.5, None]}}
    path = tmp_path / "stats.npz"
    save_stats(path, hists, meta)
    loaded, meta2 = load_stats(path)
    assert meta2 == meta and list(loaded) == list(hists)
    for name, h in hists.items():
        assert loaded[name] == h and loaded[name].name == name
        assert T.entropy2(loaded[name]).amax == T.entropy2(h).amax


def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "s.npz"
    save_stats(path, {"t": histogram_of(np.ones(3, np.float32))}, {})
    with pytest.raises(TrtcalError, match="already exists"):
        save_stats(path, {}, {})
    save_stats(path, {}, {"again": True}, force=True)
    assert load_stats(path) == ({}, {"again": True})


def write_npz(path, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def good_arrays(tmp_path):
    path = save_stats(tmp_path / "good.npz", {"t": histogram_of(np.arange(10, dtype=np.float32))}, {})
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", ["garbage", "empty", "npy", "foreign", "version", "header", "pickled",
                                  "counts", "missing", "truncated"])
def test_broken_or_foreign_files_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.npz"
    arrays = good_arrays(tmp_path)
    if case == "garbage":
        path.write_bytes(b"\x00\x01 not a zip at all")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "npy":
        np.save(path.open("wb"), np.arange(3))
    elif case == "foreign":
        write_npz(path, weights=np.ones(3))
    elif case == "version":
        arrays["version"] = np.array(2, np.int64)
        write_npz(path, **arrays)
    elif case == "header":
        arrays["header"] = np.frombuffer(b"{not json", np.uint8)
        write_npz(path, **arrays)
    elif case == "pickled":
        arrays["header"] = np.array([{"names": []}], dtype=object)
        write_npz(path, **arrays)
    elif case == "counts":
        arrays["h0.counts"] = arrays["h0.counts"] * 2
        write_npz(path, **arrays)
    elif case == "missing":
        del arrays["h0.floats"]
        write_npz(path, **arrays)
    else:
        data = (tmp_path / "good.npz").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrtcalError, match=f"{case}.npz"):
        load_stats(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TrtcalError, match="nope.npz"):
        load_stats(tmp_path / "nope.npz")
    with pytest.raises(TrtcalError, match="directory"):
        load_stats(tmp_path)


def test_bad_metadata_is_refused(tmp_path):
    with pytest.raises(TrtcalError, match="JSON"):
        save_stats(tmp_path / "s.npz", {}, {"x": object()})
    assert not (tmp_path / "s.npz").exists()
    assert zipfile.is_zipfile(save_stats(tmp_path / "t.npz", {}, None))
