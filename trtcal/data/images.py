"""A folder of images as calibration data, with explicit preprocessing.

Decoding uses Pillow (the ``images`` extra: ``pip install trtcal[images]``), imported only here.
Preprocessing is spelled out, never guessed: ``resize`` (``S``: the shorter side to S, keeping
the aspect ratio; ``HxW``: exactly H by W), ``crop`` (centre, ``S`` square or ``HxW``),
``letterbox`` (``S`` or ``HxW``: scale to fit, keeping the aspect ratio, and pad the rest evenly
with ``pad``, default 114: YOLO's letterbox), ``scale`` (multiply, e.g. ``1/255``), ``mean`` and
``std`` (per channel, after scaling), ``layout`` (``NCHW``/``NHWC``) and ``order``
(``RGB``/``BGR``), as a comma list, e.g.
``resize=256,crop=224,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225``.
Resizing is bilinear. Every image of a batch must come out the same size, and the model's size
where it fixes one (or ``--shapes`` does): otherwise the error names the image and the options
that would make it fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from trtcal.core.errors import TrtcalError

_CHOICES = {"layout": ("NCHW", "NHWC"), "order": ("RGB", "BGR")}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
#: The grey YOLO pads its letterbox with (0..255 pixel value).
LETTERBOX_PAD = 114
_ITEMS = "resize, crop, letterbox, pad, scale, mean, std, layout=NCHW|NHWC, order=RGB|BGR"


def _size(value: str) -> int | tuple[int, int]:
    """``S`` -> S; ``HxW`` -> (H, W); every number >= 1."""
    parts = [int(v) for v in value.lower().split("x")]
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


@dataclass(frozen=True)
class Preprocess:
    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    letterbox: int | tuple[int, int] | None = None
    pad: int = LETTERBOX_PAD
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
                if key in ("resize", "crop", "letterbox"):
                    fields[key] = _size(value)
                elif key == "pad":
                    fields[key] = int(value)
                    if not 0 <= fields[key] <= 255:
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
                raise TrtcalError(f"--preprocess: unknown item {item!r}; use {_ITEMS}") from None
            except (ValueError, ZeroDivisionError):
                raise TrtcalError(f"--preprocess: bad value in {item!r}") from None
        if "letterbox" in fields and ("resize" in fields or "crop" in fields):
            raise TrtcalError("--preprocess: letterbox resizes and pads by itself; drop resize= and crop=")
        if "pad" in fields and "letterbox" not in fields:
            raise TrtcalError("--preprocess: pad= is the letterbox's fill value; add letterbox=")
        return cls(**fields)

    def apply(self, image, channels: int) -> np.ndarray:
        """A PIL image -> float32 array in the model's layout (without the batch axis)."""
        from PIL import Image

        image = image.convert("L" if channels == 1 else "RGB")
        if self.resize:
            w, h = image.size
            if isinstance(self.resize, int):
                k = self.resize / min(w, h)
                size = (max(1, round(w * k)), max(1, round(h * k)))
            else:
                size = (self.resize[1], self.resize[0])
            image = image.resize(size, Image.BILINEAR)
        if self.crop:
            w, h = image.size
            ch, cw = _hw(self.crop)
            if ch > h or cw > w:
                raise TrtcalError(f"--preprocess crop={ch}x{cw} is larger than the image ({h}x{w}); "
                                  "add or raise resize=")
            left, top = (w - cw) // 2, (h - ch) // 2
            image = image.crop((left, top, left + cw, top + ch))
        if self.letterbox:
            image = letterbox(image, *_hw(self.letterbox), self.pad)
        a = np.asarray(image, dtype=np.float32)
        if a.ndim == 2:
            a = a[:, :, None]
        if self.order == "BGR":
            a = a[:, :, ::-1]
        a = (a * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(a.transpose(2, 0, 1) if self.layout == "NCHW" else a)


def letterbox(image, height: int, width: int, pad: int = LETTERBOX_PAD):
    """``image`` scaled to fit ``height`` x ``width`` keeping its aspect ratio (bilinear), centred
    on a canvas of ``pad``: Ultralytics' LetterBox (the same scale, rounding and split of the
    padding: top ``round(dh - 0.1)``, left ``round(dw - 0.1)``)."""
    from PIL import Image

    w, h = image.size
    r = min(height / h, width / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((height - nh) / 2 - 0.1)), int(round((width - nw) / 2 - 0.1))
    canvas = Image.new(image.mode, (width, height), pad if image.mode == "L" else (pad,) * 3)
    canvas.paste(image, (left, top))
    return canvas


def _size_options(height: int | str, width: int | str) -> str:
    """The items that make every image ``height`` x ``width`` (for error messages)."""
    return f"resize={height}x{width} (stretch), letterbox={height}x{width} (pad) or resize=S,crop={height}x{width}"


def _channels(folder: Path, spec, layout: str) -> int:
    """The channel count images must give ``spec`` in ``layout``; a one-line error (with a hint at
    the other layout when it fits) when the input does not look like images in that layout."""
    axis, other, other_axis = (1, "NHWC", 3) if layout == "NCHW" else (3, "NCHW", 1)
    dim, alt = spec.shape[axis], spec.shape[other_axis]
    if isinstance(dim, int) and dim in (1, 3):
        return dim
    looks_other = isinstance(alt, int) and alt in (1, 3)
    if looks_other:
        raise TrtcalError(f"{folder}: input {spec.name!r} is {_shape(spec.shape)}: the channels ({alt}) look like "
                          f"axis {other_axis}, not axis {axis} as layout={layout} puts them; add layout={other} "
                          "to --preprocess")
    if isinstance(dim, int) and dim > 0:
        raise TrtcalError(f"{folder}: input {spec.name!r} is {_shape(spec.shape)}: {dim} channels on axis {axis}, "
                          "but images give 1 (grey) or 3 (colour)")
    return 3


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def image_source(folder: Path, files: Sequence[Path], inputs: Sequence, batch_size: int, preprocess):
    from trtcal.data.sources import DataSource

    if len(inputs) != 1:
        raise TrtcalError(f"{folder}: an image folder feeds one input, but the model has {len(inputs)}")
    if preprocess is None:
        raise TrtcalError(f"{folder}: a folder of images needs --preprocess (e.g. resize=256,crop=224,scale=1/255,"
                          "mean=0.485/0.456/0.406,std=0.229/0.224/0.225)")
    if isinstance(preprocess, str):  # the Python API takes the CLI's text too
        preprocess = Preprocess.parse(preprocess)
    elif not isinstance(preprocess, Preprocess):
        raise TrtcalError(f"preprocess {preprocess!r}: give a Preprocess or its text, e.g. 'letterbox=320,scale=1/255'")
    try:
        from PIL import Image
    except ImportError:
        raise TrtcalError("reading images needs Pillow: pip install 'trtcal[images]'") from None
    spec = inputs[0]
    if len(spec.shape) != 4:
        raise TrtcalError(f"{folder}: images need a rank-4 input, {spec.name!r} has rank {len(spec.shape)}")
    if spec.batch_axis != 0:
        raise TrtcalError(f"{folder}: images are stacked on axis 0; --batch-axis {spec.name} must be 0")
    channels = _channels(folder, spec, preprocess.layout)
    h_axis = 2 if preprocess.layout == "NCHW" else 1
    want = tuple(d if isinstance(d, int) and d > 0 else None for d in spec.shape[h_axis:h_axis + 2])

    def gen() -> Iterator[dict]:
        for start in range(0, len(files), batch_size):
            arrays, first = [], None
            for p in files[start:start + batch_size]:
                try:
                    with Image.open(p) as im:
                        a = preprocess.apply(im, channels)
                except TrtcalError as exc:
                    raise TrtcalError(f"{p}: {exc}") from None
                except OSError as exc:
                    raise TrtcalError(f"{p}: cannot decode the image ({exc})") from None
                hw = a.shape[h_axis - 1:h_axis + 1]
                if any(w is not None and w != g for w, g in zip(want, hw)):
                    h, w = (str(d) if d is not None else x for d, x in zip(want, "HW"))
                    raise TrtcalError(f"{p}: {hw[0]}x{hw[1]} (HxW) after --preprocess, but input {spec.name!r} is "
                                      f"{_shape(spec.shape)}; add {_size_options(h, w)} to --preprocess")
                if first is None:
                    first = (p, hw)
                elif hw != first[1]:
                    raise TrtcalError(f"{p}: {hw[0]}x{hw[1]} (HxW) after --preprocess, but {first[0].name} in the "
                                      f"same batch is {first[1][0]}x{first[1][1]}; a batch needs one size: add "
                                      f"{_size_options('H', 'W')} to --preprocess, or --batch-size 1 "
                                      "to feed each image at its own size")
                arrays.append(a)
            yield {spec.name: np.stack(arrays)}

    count = -(-len(files) // batch_size)
    return DataSource(f"{folder}/ ({len(files)} images, {count} batches of {batch_size})", gen, count)
