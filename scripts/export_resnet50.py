"""Export a ResNet-50-class model (ResNet-50's architecture, seeded random weights) for benchmarks of time.

Issue 17 sizes EQ's target on a "ResNet-50-class" model, and no PyPI package ships ResNet-50
weights loadable with plain torch (docs/benchmarks.md). EQ's cost (and a calibration pass's)
depends on the layer shapes, the sample count and the search's number of scores, not on what the
weights learned, so this script builds ResNet-50's exact architecture (torchvision's layout:
bottleneck blocks 3-4-6-3, 7x7 stem, stride on the 3x3 Conv, 1x1 projection shortcuts; 53 Conv,
49 Relu, 16 Add, 1 Gemm, 25.6 M parameters) in plain torch (PyPI's torchvision does not import
beside the local torch) with He-initialised weights from a fixed seed, and sets every BatchNorm's
statistics from real photos (a train-mode pass over calibration crops, cumulative averages), so
that each Conv's output is normalised as in a trained net and the activations have realistic
scales. Then BatchNorm is folded by the exporter.

**Use it for time and memory only.** Its accuracy figures mean nothing about a trained ResNet-50
(its logits are those of random features); quality claims use the trained models of the zoo.

Needs the CPU torch venv (``.venv-train``, ASSETS.md) and EfficientNet-Lite0's photo batches
(``scripts/export_efficientnet_lite0.py --data-only``: same input layout, 3x224x224 float32).
Writes ``.cache/models/resnet50_random.onnx`` (opset 17, input ``images`` [batch,3,224,224],
dynamic batch; output ``logits`` [batch,1000]; about 100 MB). Calibrate it on
``.cache/data/effnet_calib``.

Usage: ``.venv-train/bin/python scripts/export_resnet50.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_MODEL = ROOT / ".cache" / "models" / "resnet50_random.onnx"
PHOTOS = ROOT / ".cache" / "data" / "effnet_calib"


def build(torch):
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width, momentum=None)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width, momentum=None)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=None)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout, momentum=None))
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64, momentum=None),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(count):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = width * 4
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    model = ResNet50()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_MODEL)
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="folder of .npy batches [N,3,224,224]")
    ap.add_argument("--bn-batches", type=int, default=2, help="photo batches for the BatchNorm statistics")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    model = build(torch)
    files = sorted(args.photos.glob("*.npy"))[: args.bn_batches]
    if not files:
        raise SystemExit(f"{args.photos}: no .npy batches (run scripts/export_efficientnet_lite0.py --data-only)")
    model.train()
    with torch.no_grad():
        for f in files:  # momentum=None: cumulative averages over every batch
            model(torch.from_numpy(np.load(f)))
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.onnx")
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(tmp), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
