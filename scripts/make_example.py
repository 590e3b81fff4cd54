"""Make the bundled example for `trtcal demo`: a tiny ONNX CNN and a calibration cache for it.

The cache is hand-made (stamped for TensorRT 8.6.1) and carries the problems real caches have:
a stale header, a range for a tensor the model no longer has, a model tensor without a range,
a zero scale and a TensorRT-internal name. Run from the repository root:

    python scripts/make_example.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtcal.cache.format import CalibrationCache

OUT = Path(__file__).resolve().parent.parent / "trtcal" / "examples"


def make_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["images", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"],
                         name="/conv1/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/relu1/Relu_output_0"], name="/relu1/Relu"),
        helper.make_node("Conv", ["/relu1/Relu_output_0", "conv2.weight", "conv2.bias"], ["/conv2/Conv_output_0"],
                         name="/conv2/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["/conv2/Conv_output_0"], ["/relu2/Relu_output_0"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["/relu2/Relu_output_0"], ["/pool/GlobalAveragePool_output_0"],
                         name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["/pool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten"),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm",
                         transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [init("conv1.weight", (8, 1, 3, 3)), init("conv1.bias", (8,), 0.05),
         init("conv2.weight", (16, 8, 3, 3)), init("conv2.bias", (16,), 0.05),
         init("fc.weight", (10, 16)), init("fc.bias", (10,), 0.05)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="trtcal-example")
    onnx.checker.check_model(model)
    return model


def make_cache() -> CalibrationCache:
    amaxes = {
        "images": 2.7559056,
        "/conv1/Conv_output_0": 3.1862912,
        "/relu1/Relu_output_0": 3.1862912,
        "/conv2/Conv_output_0": 4.4102306,
        "/relu2/Relu_output_0": 4.4102306,
        # "/pool/GlobalAveragePool_output_0" left out: a model tensor without a range
        "/Flatten_output_0": 1.0431297,
        "logits": 0.0,  # a zero scale: every logit would quantize to 0
        "ONNXTRT_Broadcast_12_output": 0.4921875,  # TensorRT-internal, expected
        "/conv3/Conv_output_0": 6.25,  # the model no longer has a conv3: stale range
    }
    return CalibrationCache.from_amaxes(amaxes, version=(8, 6, 1), algorithm="EntropyCalibration2")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save(make_model(), str(OUT / "tiny_cnn.onnx"))
    make_cache().write(OUT / "tiny_cnn.cache", force=True)
    print(f"wrote {OUT / 'tiny_cnn.onnx'} and {OUT / 'tiny_cnn.cache'}")
