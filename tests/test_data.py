"""Data sources and sanity checks."""

from __future__ import annotations

import numpy as np
import pytest

from trtcal.data import open_data, random_data
from trtcal.data.checks import BatchChecks
from trtcal.data.images import Preprocess
from trtcal.errors import TrtcalError
from trtcal.runner import InputSpec

IMG = [InputSpec("images", np.float32, ("N", 1, 28, 28))]
TWO = [InputSpec("a", np.float32, (None, 3)), InputSpec("b", np.int64, (None, 2))]


def collect(ds):
    return [dict(b) for b in ds]


def test_npy_split_into_batches(tmp_path):
    x = np.arange(70 * 784, dtype=np.float32).reshape(70, 1, 28, 28)
    np.save(tmp_path / "x.npy", x)
    ds = open_data(tmp_path / "x.npy", IMG, batch_size=32)
    batches = collect(ds)
    assert ds.num_batches == 3 and [b["images"].shape[0] for b in batches] == [32, 32, 6]
    assert np.array_equal(np.concatenate([b["images"] for b in batches]), x)


def test_default_batch_is_the_fixed_batch_dimension(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 1, 28, 28), np.float32))
    ds = open_data(tmp_path / "x.npy", [InputSpec("images", np.float32, (5, 1, 28, 28))])
    assert ds.num_batches == 2


def test_npz_by_name_and_folder_of_files(tmp_path):
    np.savez(tmp_path / "d.npz", a=np.ones((4, 3), np.float32), b=np.ones((4, 2), np.int64))
    assert [b["a"].shape for b in open_data(tmp_path / "d.npz", TWO, batch_size=3)] == [(3, 3), (1, 3)]
    folder = tmp_path / "batches"
    folder.mkdir()
    for i in (2, 0, 1):
        np.save(folder / f"b{i}.npy", np.full((2, 1, 28, 28), i, np.float32))
    got = [float(b["images"][0, 0, 0, 0]) for b in open_data(folder, IMG)]
    assert got == [0.0, 1.0, 2.0]  # sorted by file name, one batch per file


@pytest.mark.parametrize(("arrays", "what"), [
    ({"a": np.ones((4, 3), np.float32)}, "no array for model input\\(s\\) b"),
    ({"a": np.ones((4, 3), np.float32), "b": np.ones((4, 2), np.int64), "c": np.ones(4)}, "match no model input"),
    ({"a": np.ones((4, 3), np.float32), "b": np.ones((5, 2), np.int64)}, "different numbers of samples"),
    ({"a": np.ones((4, 4), np.float32), "b": np.ones((4, 2), np.int64)}, "axis 1 must be 3"),
    ({"a": np.ones((4, 3, 1), np.float32), "b": np.ones((4, 2), np.int64)}, "rank 2"),
    ({"a": np.ones((4, 3), np.float32), "b": np.ones((4, 2), np.float32)}, "is float32, the model wants int64"),
])
def test_mismatched_data_is_named(tmp_path, arrays, what):
    from trtcal.data.sources import check_batch

    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(TrtcalError, match=what):
        for i, b in enumerate(open_data(tmp_path / "d.npz", TWO, batch_size=8)):
            check_batch(b, TWO, f"batch {i}")


def test_bad_sources(tmp_path):
    with pytest.raises(TrtcalError, match="no such data"):
        open_data(tmp_path / "missing.npy", IMG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrtcalError, match="empty data folder"):
        open_data(tmp_path / "empty", IMG)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TrtcalError, match="unknown data file type"):
        open_data(tmp_path / "x.txt", IMG)
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(TrtcalError, match="bad.npy: not a valid .npy"):
        open_data(tmp_path / "bad.npy", IMG)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TrtcalError, match="without pickles"):
        open_data(tmp_path / "obj.npy", IMG)
    np.save(tmp_path / "one.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(TrtcalError, match="model has 2 inputs"):
        open_data(tmp_path / "one.npy", TWO)
    with pytest.raises(TrtcalError, match="--batch-size 0"):
        open_data(tmp_path / "one.npy", TWO, batch_size=0)


def test_data_loader_script(tmp_path):
    script = tmp_path / "loader.py"
    script.write_text("import numpy as np\n"
                      "def load_data():\n"
                      "    for i in range(3):\n"
                      "        yield {'images': np.full((2, 1, 28, 28), i, np.float32)}\n"
                      "def broken():\n"
                      "    yield {'images': np.zeros(1)}\n"
                      "    raise RuntimeError('disk on fire')\n")
    ds = open_data(f"{script}:load_data", IMG)
    assert [float(b["images"].max()) for b in ds] == [0.0, 1.0, 2.0]
    with pytest.raises(TrtcalError, match="disk on fire"):
        collect(open_data(f"{script}:broken", IMG))
    with pytest.raises(TrtcalError, match="has no function 'nope'"):
        open_data(f"{script}:nope", IMG)


def test_image_folder_with_preprocess(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i}.png")
    spec = [InputSpec("x", np.float32, ("N", 3, 20, 20))]
    pre = Preprocess.parse("crop=20,scale=1/255,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,layout=NCHW,order=BGR")
    batches = collect(open_data(folder, spec, batch_size=2, preprocess=pre))
    assert [b["x"].shape for b in batches] == [(2, 3, 20, 20), (1, 3, 20, 20)]
    # independent reference: centre crop of the raw pixels, BGR, normalised, CHW
    ref = (pixels[0, 10:30, 5:25, ::-1].astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(batches[0]["x"][0], ref.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    with pytest.raises(TrtcalError, match="needs --preprocess"):
        open_data(folder, spec)


@pytest.mark.parametrize("text", ["resize=0", "crop=x", "scale=1/0", "std=0", "layout=NCWH", "foo=1", "resize"])
def test_bad_preprocess(text):
    with pytest.raises(TrtcalError, match="--preprocess"):
        Preprocess.parse(text)


def test_checks_catch_the_classic_mistakes():
    c = BatchChecks()
    a = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    c.observe(0, {"x": a})
    c.observe(1, {"x": a.copy()})  # identical data again
    c.observe(2, {"x": np.zeros((8, 3), np.float32)})
    c.observe(3, {"x": np.floor(np.random.default_rng(1).uniform(0, 256, (8, 64))).astype(np.float32)})
    c.observe(4, {"x": np.array([[np.nan, 1.0, 2.0]], np.float32)})
    text = "\n".join(c.finish())
    assert "batch 1 is identical to batch 0" in text
    assert "batch 2: input 'x' is constant" in text
    assert "batch 3: input 'x' holds whole numbers" in text
    assert "batch 4: input 'x' holds 1 NaN/Inf" in text
    assert "only 33 calibration samples" in text


def test_random_data_is_marked_fake():
    ds = random_data(IMG, batch_size=4, num_batches=2)
    assert ds.fake and [b["images"].shape for b in ds] == [(4, 1, 28, 28)] * 2
    batch = next(iter(random_data(TWO + [InputSpec("m", np.bool_, (None, 2))], batch_size=64)))
    assert batch["a"].dtype == np.float32 and -1 <= batch["a"].min() < 0 < batch["a"].max() <= 1
    for name, dtype in (("b", np.int64), ("m", np.bool_)):  # not the all-zero cast of [-1, 1]
        assert batch[name].dtype == dtype and set(np.unique(batch[name]).astype(int)) == {0, 1}
