"""Train the zoo's residual CNN: a small ResNet (plain ReLU, residual Adds) on Fashion-MNIST, exported to ONNX.

The accuracy study's fifth model (bench/zoo.py, docs/accuracy.md). No pretrained ResNet with
plain ReLU, a permissive licence and its weights inside a PyPI package was found (the registries
are the only network here), so the project trains its own, reproducibly, as it does the demo
model (scripts/train_fashion_cnn.py, whose data reading, training loop and export this reuses).
Needs the CPU torch venv of the demo's script:

    apt-get install -y dataset-fashion-mnist
    .venv-train/bin/pip install torch==2.13.0 numpy onnx onnxruntime
    .venv-train/bin/python scripts/train_fashion_resnet.py      # about 1 minute on 2 idle cores

It writes, under .cache/ (git ignores it; --models and --data-out move it):

- .cache/models/fashion_resnet.onnx     opset 17, input `images` [batch,1,28,28] (dynamic batch),
  output `logits` [batch,10]; BatchNorm folded into the Convs by the exporter
- .cache/data/fashion_resnet_calib.npz  `images`: 512 train images (stratified) for calibration
- .cache/data/fashion_resnet_eval.npz   `images`: 1000 test images (100 per class), `labels`: int64
  (the layout of trtcal/examples/fashion_eval.npz)

The model, ResNet-8 for 28x28 inputs: a Conv-BN-ReLU stem (3x3, stride 2, 16 channels: 14x14),
three basic blocks (Conv-BN-ReLU-Conv-BN, plus the shortcut, Add, ReLU) of 16, 32 and 64
channels, the second and third with stride 2 and a 1x1 Conv-BN projection shortcut (7x7, 4x4),
global average pooling, Linear(64, 10): 9 Conv, 7 Relu (after the stem, after each block's first
Conv and after each Add), 3 Add, 1 Gemm. (A stride-1 stem made each training step about 8x slower.)

Preprocessing as the demo model's: x = pixel / 255, then (x - 0.2860) / 0.3530; NCHW float32.
Reproducible: fixed seeds, deterministic algorithms, fixed thread count (the same --threads gives
the same weights), npz files with fixed zip timestamps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fashion_cnn import (  # noqa: E402  (the demo's script, beside this one)
    DEFAULT_DATA,
    N_CALIB,
    N_EVAL,
    export,
    predict,
    preprocess,
    read_idx_images,
    read_idx_labels,
    save_npz,
    stratified_indices,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ROOT / ".cache" / "models"
DEFAULT_DATA_OUT = ROOT / ".cache" / "data"


class BasicBlock(nn.Module):
    """ResNet's basic block: Conv-BN-ReLU-Conv-BN, plus the input (identity, or a 1x1 Conv-BN
    projection where the stride or width changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class FashionResNet(nn.Module):
    """ResNet-8 for 28x28 grey images (module names become the ONNX node names)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.block1 = BasicBlock(widths[0], widths[0])
        self.block2 = BasicBlock(widths[0], widths[1], stride=2)
        self.block3 = BasicBlock(widths[1], widths[2], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="folder for the .onnx (default .cache/models)")
    p.add_argument("--data-out", type=Path, default=DEFAULT_DATA_OUT,
                   help="folder for the calibration and evaluation .npz (default .cache/data)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the Fashion-MNIST .gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; the same number gives the same weights (default: 2)")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.models.mkdir(parents=True, exist_ok=True)
    args.data_out.mkdir(parents=True, exist_ok=True)

    d = args.data
    if not (d / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"no Fashion-MNIST under {d}: apt-get install -y dataset-fashion-mnist")
    train_x = preprocess(read_idx_images(d / "train-images-idx3-ubyte.gz"))
    train_y = read_idx_labels(d / "train-labels-idx1-ubyte.gz")
    test_x = preprocess(read_idx_images(d / "t10k-images-idx3-ubyte.gz"))
    test_y = read_idx_labels(d / "t10k-labels-idx1-ubyte.gz")
    print(f"Fashion-MNIST: {len(train_x)} train, {len(test_x)} test; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, seed {args.seed}")

    model = FashionResNet()
    print(f"training: {args.epochs} epochs, batch {args.batch}, Adam one-cycle lr {args.lr}, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    t0 = time.perf_counter()
    train(model, train_x, train_y, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)
    print(f"training time: {time.perf_counter() - t0:.1f} s")

    # Calibration and evaluation sets: stratified draws with their own fixed seeds, as the demo's.
    calib_idx = stratified_indices(train_y, N_CALIB, np.random.default_rng(args.seed + 1))
    eval_idx = stratified_indices(test_y, N_EVAL, np.random.default_rng(args.seed + 2))
    onnx_path = args.models / "fashion_resnet.onnx"
    calib_path = args.data_out / "fashion_resnet_calib.npz"
    eval_path = args.data_out / "fashion_resnet_eval.npz"
    export(model, onnx_path)
    save_npz(calib_path, images=train_x[calib_idx])
    save_npz(eval_path, images=test_x[eval_idx], labels=test_y[eval_idx])

    # Check: ONNX Runtime agrees with torch (BatchNorm folded), and the accuracy of what was written.
    torch_logits = predict(model, test_x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate([sess.run(["logits"], {"images": test_x[i:i + 1000]})[0]
                                 for i in range(0, len(test_x), 1000)])
    max_diff = float(np.max(np.abs(ort_logits - torch_logits)))
    if max_diff > 1e-3:
        raise SystemExit(f"ONNX Runtime differs from torch by {max_diff:.3g} (> 1e-3)")
    ops: dict[str, int] = {}
    for node in onnx.load(str(onnx_path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(f"ONNX Runtime vs torch: max |diff| {max_diff:.2e} over the 10k test logits; ops {ops}")
    print(f"FP32 top-1, full test set (10000): torch {np.mean(torch_logits.argmax(1) == test_y):.4f}, "
          f"ONNX Runtime {np.mean(ort_logits.argmax(1) == test_y):.4f}")
    print(f"FP32 top-1, evaluation subset ({len(eval_idx)}): {np.mean(ort_logits[eval_idx].argmax(1) == test_y[eval_idx]):.4f}")
    for path in (onnx_path, calib_path, eval_path):
        print(f"  wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
