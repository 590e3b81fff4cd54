"""A folder of images as calibration data, with explicit preprocessing.

Decoding uses Pillow (the ``images`` extra: ``pip install trtcal[images]``), imported only here.
Preprocessing is spelled out, never guessed: ``resize`` (shorter side, bilinear), ``crop``
(centre square), ``scale`` (multiply, e.g. ``1/255``), ``mean`` and ``std`` (per channel, after
scaling), ``layout`` (``NCHW``/``NHWC``) and ``order`` (``RGB``/``BGR``), as a comma list, e.g.
``resize=256,crop=224,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from trtcal.errors import TrtcalError

_CHOICES = {"layout": ("NCHW", "NHWC"), "order": ("RGB", "BGR")}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Preprocess:
    resize: int | None = None
    crop: int | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    order: str = "RGB"

    @classmethod
    def parse(cls, text: str) -> Preprocess:
        """Parse ``key=value,...`` (see the module docstring)."""
        fields: dict = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, sep, value = item.partition("=")
            try:
                if not sep:
                    raise ValueError
                if key in ("resize", "crop"):
                    fields[key] = int(value)
                    if fields[key] < 1:
                        raise ValueError
                elif key == "scale":
                    fields[key] = float(Fraction(value))
                elif key in ("mean", "std"):
                    fields[key] = tuple(float(v) for v in value.split("/"))
                    if key == "std" and any(v <= 0 for v in fields[key]):
                        raise ValueError
                elif value.upper() in _CHOICES.get(key, ()):
                    fields[key] = value.upper()
                else:
                    raise KeyError
            except KeyError:
                raise TrtcalError(f"--preprocess: unknown item {item!r}; use resize, crop, scale, mean, std, "
                                  "layout=NCHW|NHWC, order=RGB|BGR") from None
            except (ValueError, ZeroDivisionError):
                raise TrtcalError(f"--preprocess: bad value in {item!r}") from None
        return cls(**fields)

    def apply(self, image, channels: int) -> np.ndarray:
        """A PIL image -> float32 array in the model's layout (without the batch axis)."""
        from PIL import Image

        image = image.convert("L" if channels == 1 else "RGB")
        if self.resize:
            w, h = image.size
            k = self.resize / min(w, h)
            image = image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
        if self.crop:
            w, h = image.size
            if self.crop > min(w, h):
                raise TrtcalError(f"--preprocess crop={self.crop} is larger than the image ({w}x{h}); add resize=")
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        a = np.asarray(image, dtype=np.float32)
        if a.ndim == 2:
            a = a[:, :, None]
        if self.order == "BGR":
            a = a[:, :, ::-1]
        a = (a * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(a.transpose(2, 0, 1) if self.layout == "NCHW" else a)


def image_source(folder: Path, files: Sequence[Path], inputs: Sequence, batch_size: int, preprocess):
    from trtcal.data.sources import DataSource

    if len(inputs) != 1:
        raise TrtcalError(f"{folder}: an image folder feeds one input, but the model has {len(inputs)}")
    if preprocess is None:
        raise TrtcalError(f"{folder}: a folder of images needs --preprocess (e.g. resize=256,crop=224,scale=1/255,"
                          "mean=0.485/0.456/0.406,std=0.229/0.224/0.225)")
    try:
        from PIL import Image
    except ImportError:
        raise TrtcalError("reading images needs Pillow: pip install 'trtcal[images]'") from None
    spec = inputs[0]
    if len(spec.shape) != 4:
        raise TrtcalError(f"{folder}: images need a rank-4 input, {spec.name!r} has rank {len(spec.shape)}")
    channels = spec.shape[1] if preprocess.layout == "NCHW" else spec.shape[3]
    channels = channels if isinstance(channels, int) else 3

    def gen() -> Iterator[dict]:
        for start in range(0, len(files), batch_size):
            arrays = []
            for p in files[start:start + batch_size]:
                try:
                    with Image.open(p) as im:
                        arrays.append(preprocess.apply(im, channels))
                except TrtcalError as exc:
                    raise TrtcalError(f"{p}: {exc}") from None
                except OSError as exc:
                    raise TrtcalError(f"{p}: cannot decode the image ({exc})") from None
            yield {spec.name: np.stack(arrays)}

    count = -(-len(files) // batch_size)
    return DataSource(f"{folder}/ ({len(files)} images, {count} batches of {batch_size})", gen, count)
