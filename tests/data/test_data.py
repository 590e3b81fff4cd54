"""Data sources and sanity checks."""

from __future__ import annotations

import numpy as np
import pytest

from trtcal.core.errors import TrtcalError
from trtcal.data import open_data, random_data
from trtcal.data.checks import BatchChecks
from trtcal.data.images import Preprocess
from trtcal.ort.runner import InputSpec

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
    # the Python API takes the CLI's text too (a str used to fail with an AttributeError)
    as_text = collect(open_data(folder, spec, batch_size=2, preprocess="crop=20,scale=1/255,mean=0.5/0.5/0.5,"
                                "std=0.25/0.25/0.25,layout=NCHW,order=BGR"))
    np.testing.assert_array_equal(as_text[0]["x"], batches[0]["x"])
    with pytest.raises(TrtcalError, match="preprocess 3: give a Preprocess or its text"):
        open_data(folder, spec, preprocess=3)


@pytest.mark.parametrize("text", ["resize=0", "crop=x", "scale=1/0", "std=0", "layout=NCWH", "foo=1", "resize",
                                  "resize=0x5", "resize=2x3x4", "letterbox=-1", "pad=300", "pad=114",
                                  "letterbox=64,resize=64", "letterbox=64,crop=32"])
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
    lines = c.finish()
    assert len(lines) == 3, lines  # the repeats, one line for input x, too few samples
    assert lines[0] == ("1 batch repeats an earlier one (batch 1 = batch 0): the same data fed twice "
                        "(a list-aliasing bug in the loader?)")
    assert lines[1].startswith("input 'x': is constant in 1 of 5 batches (batch 2; value 0)")
    assert "; holds 1 NaN/Inf values in 1 of 5 batches (batch 4)" in lines[1]
    assert "; holds whole numbers in 0..255 (batch 3): raw pixels?" in lines[1]
    assert lines[2].startswith("only 33 calibration samples")


def test_warnings_are_one_line_per_input_and_kind():
    """700 bad batches give one line per input and kind, with the count, not 700 lines."""
    c = BatchChecks()
    rng = np.random.default_rng(0)
    for i in range(700):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        if i % 2:
            x[0, 0] = np.inf
        c.observe(i, {"x": x, "mask": np.ones((4, 3), np.float32), "e": np.zeros((4, 0), np.float32)})
    lines = c.finish()
    assert len(lines) == 3, lines  # 2800 samples: no too-few warning
    by_input = {line.split("'")[1]: line for line in lines}
    assert "holds 350 NaN/Inf values in 350 of 700 batches (batches 1, 3, 5, 7, 9, ...)" in by_input["x"]
    assert "is constant in 700 of 700 batches (batches 0, 1, 2, 3, 4, ...; value 1)" in by_input["mask"]
    assert "is empty in 700 of 700 batches" in by_input["e"]


def test_raw_pixel_warning_for_fractional_pixels():
    rng = np.random.default_rng(0)
    resized = rng.uniform(0, 250, (2, 3, 16, 16)).astype(np.float32)  # a float resize leaves fractions
    assert not np.array_equal(resized, np.round(resized))
    c = BatchChecks()
    c.observe(0, {"images": resized})
    (line,) = c.summary()
    assert line.startswith(f"input 'images': holds values in {resized.min():g}..{resized.max():g} (batch 0), "
                           "image-shaped, and the model does not scale it itself: raw (resized) pixels?"), line
    c = BatchChecks(scaled={"images"})  # the model normalises it itself: raw pixels are right
    c.observe(0, {"images": resized})
    assert c.summary() == []
    c = BatchChecks()  # fractional values in a feature vector are no evidence of pixels
    c.observe(0, {"feats": rng.uniform(0, 250, (8, 64)).astype(np.float32)})
    assert c.summary() == []
    c = BatchChecks()
    c.observe(0, {"images": resized / 255})
    assert c.summary() == []


def test_nonfinite_inputs_are_refused_unless_allowed():
    from trtcal.data.sources import check_batch

    x = np.ones((2, 3), np.float32)
    x[1, 2] = np.nan
    spec = [InputSpec("a", np.float32, (None, 3))]
    with pytest.raises(TrtcalError, match=r"batch 7: input 'a' holds 1 NaN/Inf values \(the first at index \(1, 2\)"
                                          r".*--allow-nonfinite"):
        check_batch({"a": x}, spec, "batch 7", finite=True)
    assert np.isnan(check_batch({"a": x}, spec, "batch 7")["a"][1, 2])


SR = [InputSpec("x", np.float32, ("N", 4)), InputSpec("state", np.float32, (2, "N", 128)),
      InputSpec("sr", np.int64, ())]


def test_scalar_inputs_go_whole_with_every_batch(tmp_path):
    from trtcal.data.sources import configure_inputs

    assert SR[2].batch_axis is None  # a 0-d input has no batch axis
    folder = tmp_path / "npz"
    folder.mkdir()
    xs = [np.arange(i * 40, i * 40 + 40 * 4, dtype=np.float32).reshape(40, 4) for i in range(2)]
    for i, x in enumerate(xs):
        np.savez(folder / f"{i}.npz", x=x, sr=np.array(16000, np.int64))
    specs, _ = configure_inputs([SR[0], SR[2]])
    batches = collect(open_data(folder, specs, batch_size=16))
    assert [b["x"].shape[0] for b in batches] == [16, 16, 8, 16, 16, 8]  # each file split along axis 0
    assert all(b["sr"].shape == () and int(b["sr"]) == 16000 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), np.concatenate(xs))


def test_batch_axis_per_input_in_one_npz(tmp_path):
    from trtcal.data.sources import check_batch, configure_inputs, samples_in

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    state = rng.normal(size=(2, 10, 128)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, state=state, sr=np.array(8000, np.int64))
    with pytest.raises(TrtcalError, match=r"different numbers of samples.*x 10 on axis 0, state 2 on axis 0"
                                          r".*--batch-axis NAME=AXIS"):
        open_data(tmp_path / "d.npz", SR, batch_size=4)
    specs, bs = configure_inputs(SR, batch_axes={"state": 1})
    assert bs is None and [s.batch_axis for s in specs] == [0, 1, None]
    batches = [check_batch(b, specs, "b") for b in open_data(tmp_path / "d.npz", specs, batch_size=4)]
    assert [b["state"].shape for b in batches] == [(2, 4, 128), (2, 4, 128), (2, 2, 128)]
    assert [samples_in(b, specs) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["state"] for b in batches], axis=1), state)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    # none: the array goes whole with every batch
    specs, _ = configure_inputs(SR, batch_axes={"state": None})
    np.savez(tmp_path / "e.npz", x=x, state=state[:, :1], sr=np.array(8000, np.int64))
    assert all(b["state"].shape == (2, 1, 128) for b in open_data(tmp_path / "e.npz", specs, batch_size=4))


@pytest.mark.parametrize(("kwargs", "what"), [
    ({"batch_axes": {"nope": 1}}, "--batch-axis nope: the model has no input 'nope' \\(its inputs: x, state, sr\\)"),
    ({"batch_axes": {"state": 3}}, "--batch-axis state=3: input 'state' has rank 3"),
    ({"batch_axes": {"sr": 0}}, "'sr' is a scalar"),
    ({"shapes": {"x": (1, 4, 1)}}, "--shapes x=1x4x1: input 'x' has rank 2"),
    ({"shapes": {"x": (1, 5)}}, "the model fixes axis 1 of 'x' to 4"),
    ({"shapes": {"x": (2, 4), "state": (2, 3, 128)}, "batch_axes": {"state": 1}}, "disagree on the batch size"),
    ({"shapes": {"x": (2, 4)}, "batch_size": 8}, "--batch-size 8: --shapes x=... says batches of 2"),
])
def test_configure_inputs_refuses_what_does_not_fit(kwargs, what):
    from trtcal.data.sources import configure_inputs

    with pytest.raises(TrtcalError, match=what):
        configure_inputs(SR, **kwargs)


@pytest.mark.parametrize("text", ["x=0x3", "x=1x-3", "x=1xa", "x=1x", "x=", "x", "=1x3", "x=1.5x3",
                                  "x=100000x100000x100000"])
def test_bad_shapes_option(text):
    from trtcal.data.sources import parse_input_shapes

    with pytest.raises(TrtcalError, match="--shapes"):
        parse_input_shapes([text])


def test_shapes_and_batch_axis_options_parse():
    from trtcal.data.sources import parse_batch_axes, parse_input_shapes

    assert parse_input_shapes(["x=1x3x48x320", "in:0:2x3"]) == {"x": (1, 3, 48, 320), "in:0": (2, 3)}
    assert parse_batch_axes(["state=1", "h=none"]) == {"state": 1, "h": None}
    for bad in ("state=-1", "state=one", "state", "state=1.5"):
        with pytest.raises(TrtcalError, match="--batch-axis"):
            parse_batch_axes([bad])
    with pytest.raises(TrtcalError, match="given twice"):
        parse_batch_axes(["a=1", "a=2"])


def test_random_data_takes_shapes_and_scalars():
    from trtcal.data.sources import configure_inputs

    rec = [InputSpec("x", np.float32, ("N", 3, "?", "W")), InputSpec("sr", np.int64, ())]
    ds = random_data(rec, batch_size=2, num_batches=1)
    assert "x axis 2, x axis 3 set to 1 (--shapes sets them)" in ds.description
    specs, bs = configure_inputs(rec, shapes={"x": (1, 3, 48, 320)})
    assert bs == 1 and specs[0].shape == ("N", 3, 48, 320) and specs[0].model_shape == rec[0].shape
    batch = next(iter(random_data(specs, batch_size=bs, num_batches=1)))
    assert batch["x"].shape == (1, 3, 48, 320) and batch["sr"].shape == () and batch["sr"].dtype == np.int64
    specs, bs = configure_inputs(SR, batch_axes={"state": 1}, shapes={"state": (2, 5, 128)})
    batch = next(iter(random_data(specs, batch_size=bs, num_batches=1)))
    assert (batch["x"].shape, batch["state"].shape, batch["sr"].shape) == ((5, 4), (2, 5, 128), ())


def _pictures(folder, sizes, value=None):
    Image = pytest.importorskip("PIL.Image")
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        pixels = np.full((h, w, 3), value, np.uint8) if value is not None else rng.integers(0, 256, (h, w, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_mixed_aspect_images_into_dynamic_hw(tmp_path):
    folder = _pictures(tmp_path / "imgs", [(40, 30), (30, 40), (50, 25)])
    spec = [InputSpec("x", np.float32, ("N", 3, "H", "W"))]
    with pytest.raises(TrtcalError, match=r"1.png: 20x15 \(HxW\) after --preprocess, but 0.png in the same batch is "
                                          r"15x20; a batch needs one size: add resize=HxW \(stretch\), letterbox=HxW "
                                          r".*--batch-size 1"):
        collect(open_data(folder, spec, batch_size=2, preprocess=Preprocess.parse("resize=15")))
    one = collect(open_data(folder, spec, batch_size=1, preprocess=Preprocess.parse("resize=15")))
    assert [b["x"].shape for b in one] == [(1, 3, 15, 20), (1, 3, 20, 15), (1, 3, 15, 30)]
    same = collect(open_data(folder, spec, batch_size=3, preprocess=Preprocess.parse("resize=12x36")))
    assert [b["x"].shape for b in same] == [(3, 3, 12, 36)]  # H x W, not W x H
    fixed = [InputSpec("x", np.float32, ("N", 3, 16, 16))]
    with pytest.raises(TrtcalError, match=r"0.png: 16x21 \(HxW\) after --preprocess, but input 'x' is \[N, 3, 16, 16\]; "
                                          r"add resize=16x16 \(stretch\), letterbox=16x16"):
        collect(open_data(folder, fixed, batch_size=3, preprocess=Preprocess.parse("resize=16")))


def test_resize_hxw_keeps_orientation(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "imgs"
    folder.mkdir()
    half = np.zeros((30, 60, 3), np.uint8)
    half[:, 30:] = 200  # left half black, right half grey
    Image.fromarray(half).save(folder / "a.png")
    spec = [InputSpec("x", np.float32, ("N", 3, "H", "W"))]
    (x,) = [b["x"][0] for b in open_data(folder, spec, batch_size=1, preprocess=Preprocess.parse("resize=10x40"))]
    assert x.shape == (3, 10, 40)
    assert np.all(x[:, :, :18] == 0) and np.all(x[:, :, 22:] == 200)


@pytest.mark.parametrize(("w", "h", "box"), [(100, 45, (64, 64)), (30, 80, (64, 64)), (50, 50, (48, 80)),
                                              (64, 64, (64, 64))])
def test_letterbox_geometry(tmp_path, w, h, box):
    folder = _pictures(tmp_path / "imgs", [(w, h)], value=200)
    H, W = box
    # the reference, written out: scale to fit, round, pad split with YOLO's -0.1/+0.1 rule
    r = min(H / h, W / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (W - nw) / 2, (H - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    assert top + nh + bottom == H and left + nw + right == W
    want = np.full((H, W), 114.0)
    want[top:top + nh, left:left + nw] = 200.0
    spec = [InputSpec("images", np.float32, ("N", 3, H, W))]
    (x,) = [b["images"][0] for b in open_data(folder, spec, batch_size=1,
                                              preprocess=Preprocess.parse(f"letterbox={H}x{W}"))]
    for channel in x:
        np.testing.assert_array_equal(channel, want)
    (x,) = [b["images"][0] for b in open_data(folder, spec, batch_size=1,
                                              preprocess=Preprocess.parse(f"letterbox={H}x{W},pad=0,scale=1/255"))]
    np.testing.assert_allclose(x[0], np.where(want == 114, 0, 200) / 255, rtol=1e-6)


def test_channels_last_input_gets_the_layout_hint(tmp_path):
    folder = _pictures(tmp_path / "imgs", [(24, 24), (24, 24)])
    pnet = [InputSpec("input_1", np.float32, ("N", "M1", "M2", 3))]
    with pytest.raises(TrtcalError, match=r"input 'input_1' is \[N, M1, M2, 3\]: the channels \(3\) look like axis 3, "
                                          r"not axis 1 as layout=NCHW puts them; add layout=NHWC"):
        open_data(folder, pnet, batch_size=2, preprocess=Preprocess.parse("scale=1/255"))
    (b,) = collect(open_data(folder, pnet, batch_size=2, preprocess=Preprocess.parse("scale=1/255,layout=NHWC")))
    assert b["input_1"].shape == (2, 24, 24, 3)
    with pytest.raises(TrtcalError, match="12 channels on axis 1"):
        open_data(folder, [InputSpec("x", np.float32, ("N", 12, 24, 24))], preprocess=Preprocess.parse("scale=1"))


def test_random_data_is_marked_fake():
    ds = random_data(IMG, batch_size=4, num_batches=2)
    assert ds.fake and [b["images"].shape for b in ds] == [(4, 1, 28, 28)] * 2
    batch = next(iter(random_data(TWO + [InputSpec("m", np.bool_, (None, 2))], batch_size=64)))
    assert batch["a"].dtype == np.float32 and -1 <= batch["a"].min() < 0 < batch["a"].max() <= 1
    for name, dtype in (("b", np.int64), ("m", np.bool_)):  # not the all-zero cast of [-1, 1]
        assert batch[name].dtype == dtype and set(np.unique(batch[name]).astype(int)) == {0, 1}
