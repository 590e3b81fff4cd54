"""Layer-wise output errors for bias correction (trtcal.ort.bias_correction.layer_errors) against
numpy: the layer computed by hand (a 1x1 Conv as a channel product, a Gemm), its input quantized
by the literal rounding rule (symmetric, unsigned, shifted), its weights as given; and quantize's
bias correction: the weights it measures with are the ones the written Q/DQ model holds, and the
corrected model's biases differ from the FP32 model's by the recorded deltas."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.ort.bias_correction import InputQuant, layer_errors, per_sample_means


def literal_quant(x, amax, unsigned=False, shift=0.0):
    step = amax / (255 if unsigned else 127)
    lo, hi = (0, 255) if unsigned else (-128, 127)
    return np.clip(np.rint((x.astype(np.float64) - shift) / step), lo, hi) * step + shift


@pytest.fixture
def conv_gemm(tmp_path):
    rng = np.random.default_rng(3)
    wc = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    bc = rng.normal(size=4).astype(np.float32)
    wg = rng.normal(size=(5, 4 * 2 * 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "wc", "bc"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(wc, "wc"), numpy_helper.from_array(bc, "bc"), numpy_helper.from_array(wg, "wg")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = (rng.normal(size=(10, 3, 2, 2)) + 0.3).astype(np.float32)
    return path, x, wc, bc, wg


@pytest.mark.parametrize("quant", [InputQuant(2.0), InputQuant(2.5, True), InputQuant(1.25, False, 1.0)])
def test_errors_equal_the_hand_computed_layers(conv_gemm, quant):
    path, x, wc, bc, wg = conv_gemm
    held = {"wc": np.round(wc * 4) / 4, "wg": np.round(wg * 8) / 8}  # any values the Q/DQ model might hold
    f_amax = 3.0
    batches = [{"x": x[:6]}, {"x": x[6:]}]
    got = layer_errors(path, {"x": quant, "f": InputQuant(f_amax)}, batches, held)
    # the Conv: y[n, k, p] = sum_c w[k, c] x[n, c, p] + b[k]
    xq = literal_quant(x, quant.amax, quant.unsigned, quant.shift)
    conv = lambda w, v: np.einsum("kc,ncp->nkp", w[:, :, 0, 0].astype(np.float64), v.reshape(10, 3, 4))  # noqa: E731
    expected = (conv(held["wc"], xq) - conv(wc, x)).mean(axis=2)
    assert got["wc"] == pytest.approx(expected, abs=1e-5)
    # the Gemm reads the FP32 model's Flatten output, quantized at f_amax
    f = np.maximum(conv(wc, x) + bc[None, :, None], 0).reshape(10, -1)
    expected = literal_quant(f, f_amax) @ held["wg"].T.astype(np.float64) - f @ wg.T.astype(np.float64)
    assert got["wg"] == pytest.approx(expected, abs=1e-4)


def test_a_layer_without_held_weights_or_with_a_shared_weight_is_left_out(conv_gemm):
    path, x, wc, *_ = conv_gemm
    assert set(layer_errors(path, {"x": InputQuant(2.0)}, [{"x": x}], {"wc": wc})) == {"wc"}
    assert layer_errors(path, {"x": InputQuant(2.0)}, [{"x": x}], {}) == {}


def test_per_sample_means_keep_samples_and_channels():
    y = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    assert per_sample_means(y, 1).tolist() == y.mean(axis=2).tolist()
    assert per_sample_means(y, -1).tolist() == y.mean(axis=1).tolist()
    assert per_sample_means(np.ones((5, 7)), 1).shape == (5, 7)
