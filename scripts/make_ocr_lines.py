"""Text-line images for PP-OCRv4 rec (rapidocr-onnxruntime's recognizer), rendered on this machine.

The model: ``pip download --no-deps rapidocr-onnxruntime==1.4.4`` and unzip the wheel under
``.cache/zoo/ocr/`` (``rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx``: paddle2onnx, an
LCNet backbone then SVTR attention blocks, weights in Constant nodes). Its input is ``x``
[N, 3, 48, W]; rapidocr scales a line to height 48 and normalises ``(x / 255 - 0.5) / 0.5``.

Writes ``.cache/data/ocr_rec_calib.npz`` and ``ocr_rec_eval.npz`` (``x``: [N, 3, 48, 320]
float32; 256 and 128 lines): runs of 2 to 6 words from the standard library's docstrings, each in
a font of the machine's ``/usr/share/fonts/truetype`` (DejaVu, Liberation on Debian) at 24-36 px,
dark grey on light grey, left-aligned, padded with the background to 320 wide (a longer line
squeezed to 320). Seeded: the same
fonts give the same data. Used for the SmoothQuant checks of 2026-12-06 (docs/benchmarks.md).

Usage: ``.venv/bin/python scripts/make_ocr_lines.py`` (needs Pillow; a few seconds).
"""

from __future__ import annotations

import glob
import importlib
import random
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".cache" / "data"
MODULES = ("json", "os", "pathlib", "argparse", "logging")
HEIGHT, WIDTH = 48, 320


def main() -> int:
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(0)
    fonts = sorted(glob.glob("/usr/share/fonts/truetype/*/*.ttf"))
    if not fonts:
        raise SystemExit("no TrueType fonts under /usr/share/fonts/truetype (apt-get install fonts-dejavu-core)")
    words = [w for m in MODULES for w in (importlib.import_module(m).__doc__ or "").split() if w.isascii()]

    def line() -> np.ndarray:
        n = rng.randint(2, 6)
        k = rng.randint(0, len(words) - n)
        text = " ".join(words[k:k + n])[:40]
        font = ImageFont.truetype(rng.choice(fonts), rng.randint(24, 36))
        bg, fg = rng.randint(180, 255), rng.randint(0, 80)
        width = int(font.getlength(text)) + 20
        image = Image.new("RGB", (width, HEIGHT), (bg, bg, bg))
        ImageDraw.Draw(image).text((10, 4), text, fill=(fg, fg, fg), font=font)
        if width > WIDTH:  # a long line is squeezed to the width
            image = image.resize((WIDTH, HEIGHT))
        canvas = np.full((HEIGHT, WIDTH, 3), bg, np.uint8)
        pixels = np.asarray(image)
        canvas[:, :pixels.shape[1]] = pixels
        return ((canvas.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)

    OUT.mkdir(parents=True, exist_ok=True)
    for name, count in (("calib", 256), ("eval", 128)):
        path = OUT / f"ocr_rec_{name}.npz"
        np.savez(path, x=np.stack([line() for _ in range(count)]).astype(np.float32))
        print(f"wrote {path} ({count} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
