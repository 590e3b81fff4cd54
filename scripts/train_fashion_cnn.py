"""Train the bundled demo model: a small ReLU CNN on Fashion-MNIST, exported to ONNX.

A development tool, not part of trtcal's runtime: it needs CPU torch, which trtcal does not
depend on. Install it in a separate virtual environment so the project's own stays as CI has it:

    apt-get install -y dataset-fashion-mnist
    python3 -m venv .venv-train
    .venv-train/bin/pip install torch==2.13.0 numpy onnx onnxruntime
    .venv-train/bin/python scripts/train_fashion_cnn.py

It writes, into trtcal/examples/ (or --out DIR):

- fashion_cnn.onnx     the trained model (opset 17, input `images` [N,1,28,28], output `logits` [N,10])
- fashion_calib.npz    `images`: 512 preprocessed train images (10 classes, stratified) for calibration
- fashion_eval.npz     `images`: 1000 preprocessed test images (100 per class), `labels`: int64

Preprocessing: x = pixel / 255, then (x - 0.2860) / 0.3530; NCHW float32.

The run is reproducible: fixed seeds, deterministic algorithms, a fixed number of threads (the
same --threads gives the same weights), and npz files written with fixed zip timestamps.
"""

from __future__ import annotations

import argparse
import gzip
import io
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "trtcal" / "examples"
DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")

MEAN = 0.2860
STD = 0.3530
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
N_CALIB = 512
N_EVAL = 1000


# ---------------------------------------------------------------------------- data

def read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[4:8], "big")
    rows = int.from_bytes(data[8:12], "big")
    cols = int.from_bytes(data[12:16], "big")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28], normalised with the Fashion-MNIST mean/std."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices, as evenly spread over the classes as n allows (the first classes get the
    remainder), each class's share drawn at random; returned sorted."""
    classes = np.unique(labels)
    base, extra = divmod(n, len(classes))
    picked = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        k = base + (1 if i < extra else 0)
        picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, then the zip rewritten with fixed timestamps so that the same
    arrays always give the same bytes (numpy stamps each member with the current time)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    buf.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    path.write_bytes(out.getvalue())


# ---------------------------------------------------------------------------- model

class FashionCNN(nn.Module):
    """Conv-ReLU-MaxPool x2, then Gemm-ReLU-Gemm. The attribute names become the ONNX node
    names (/conv1/Conv, /relu1/Relu, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(x)
        x = self.relu3(self.fc1(x))
        return self.fc2(x)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, lr: float,
          seed: int) -> None:
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total, t0 = 0.0, time.perf_counter()
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated but gives the plain, readable
        # graph the demo wants; silence its notice.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), opset_version=17, dynamo=False,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    # Drop the torch version from the file so that the bytes depend on the weights only.
    m = onnx.load(str(path))
    m.producer_version = ""
    m.doc_string = ""
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: trtcal/examples)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the Fashion-MNIST .gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; the same number gives the same weights (default: 2)")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)

    d = args.data
    train_px = read_idx_images(d / "train-images-idx3-ubyte.gz")
    train_y = read_idx_labels(d / "train-labels-idx1-ubyte.gz")
    test_px = read_idx_images(d / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx_labels(d / "t10k-labels-idx1-ubyte.gz")
    train_x, test_x = preprocess(train_px), preprocess(test_px)
    print(f"Fashion-MNIST: {len(train_x)} train, {len(test_x)} test; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, seed {args.seed}")

    model = FashionCNN()
    print(f"training: {args.epochs} epochs, batch {args.batch}, Adam one-cycle lr {args.lr}, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    t0 = time.perf_counter()
    train(model, train_x, train_y, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)
    train_s = time.perf_counter() - t0
    print(f"training time: {train_s:.1f} s")

    # Bundled data: stratified draws with their own fixed seeds (independent of training).
    calib_idx = stratified_indices(train_y, N_CALIB, np.random.default_rng(args.seed + 1))
    eval_idx = stratified_indices(test_y, N_EVAL, np.random.default_rng(args.seed + 2))
    calib_x = train_x[calib_idx]
    eval_x, eval_y = test_x[eval_idx], test_y[eval_idx]

    onnx_path = args.out / "fashion_cnn.onnx"
    export(model, onnx_path)
    save_npz(args.out / "fashion_calib.npz", images=calib_x)
    save_npz(args.out / "fashion_eval.npz", images=eval_x, labels=eval_y)

    # Check: ONNX Runtime agrees with torch, and the accuracy of what was shipped.
    torch_logits = predict(model, test_x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(["logits"], {"images": test_x[i:i + 1000]})[0]
                                 for i in range(0, len(test_x), 1000)])
    max_diff = float(np.max(np.abs(ort_logits - torch_logits)))
    if max_diff > 1e-4:
        raise SystemExit(f"ONNX Runtime differs from torch by {max_diff:.3g} (> 1e-4)")
    with np.load(args.out / "fashion_eval.npz") as z:
        eval_logits = sess.run(["logits"], {"images": z["images"]})[0]
        eval_acc = float(np.mean(eval_logits.argmax(1) == z["labels"]))
    test_acc_torch = float(np.mean(torch_logits.argmax(1) == test_y))
    test_acc_ort = float(np.mean(ort_logits.argmax(1) == test_y))

    print(f"ONNX Runtime vs torch: max |diff| {max_diff:.2e} over the 10k test logits")
    print(f"FP32 top-1, full test set (10000): torch {test_acc_torch:.4f}, ONNX Runtime {test_acc_ort:.4f}")
    print(f"FP32 top-1, bundled eval subset ({len(eval_y)}): {eval_acc:.4f}")
    for name in ("fashion_cnn.onnx", "fashion_calib.npz", "fashion_eval.npz"):
        print(f"  wrote {args.out / name} ({(args.out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
