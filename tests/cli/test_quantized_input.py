"""An already quantized model where a command needs the FP32 one: the same one-line refusal from
every command, exit 2, nothing written (issue 14). Two kinds of quantized model: trtcal's own Q/DQ
output, and an ONNX Runtime QOperator-style model (MatMulInteger) that has no QuantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtcal.onnx.qdq import write_qdq

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "trtcal" / "examples"
MESSAGE = "the model is already quantized ({}); give the FP32 model it was made from"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantized")
    model = EXAMPLES / "fashion_cnn.onnx"
    rc, _, err = run_cli("calibrate", model, "--data", EXAMPLES / "fashion_calib.npz", "--max-batches", "1",
                         "-o", d / "f.cache", "--stats", d / "f.npz", "-q")
    assert rc == 0, err
    from trtcal.cache.format import read

    write_qdq(model, read(d / "f.cache")).save(d / "qdq.onnx")
    # QOperator style: uint8 x, int8 w -> MatMulInteger -> Cast -> output (no QuantizeLinear)
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w = numpy_helper.from_array(np.ones((4, 2), np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w"], ["acc"]),
                               helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)],
                              "qop", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), d / "qop.onnx")
    return d


COMMANDS = [  # {m}: the quantized model, {d}: the folder, {x}: the output that must not appear
    "calibrate {m} --data {e}/fashion_calib.npz -o {x}",
    "qdq {m} --cache {d}/f.cache -o {x}",
    "qdq {m} --stats {d}/f.npz -o {x}",
    "fallback {m} --cache {d}/f.cache --data {e}/fashion_eval.npz -o {x}",
    "onesided {m} --stats {d}/f.npz",
    "bits {m} --stats {d}/f.npz --target-sqnr 30 --qdq {x}",
    "eval {m} {m} --data {e}/fashion_eval.npz --plot {x}",
    "report {m} --stats {d}/f.npz -o {x}",
    "crosscheck {m} --cache {d}/f.cache --data {e}/fashion_calib.npz",
]


@pytest.mark.parametrize("kind,ops", [("qdq", "DequantizeLinear, QuantizeLinear present"),
                                      ("qop", "MatMulInteger present")])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c.split()[:2]).replace(" {m}", ""))
def test_every_command_refuses_a_quantized_model_alike(files, kind, ops, command, tmp_path):
    m, x = files / f"{kind}.onnx", tmp_path / "out"
    argv = command.format(m=m, d=files, e=EXAMPLES, x=x).split()
    rc, out, err = run_cli(*argv)
    assert rc == 2, (rc, out, err)
    assert err.strip() == f"trtcal: error: {m}: " + MESSAGE.format(ops), err
    assert "Traceback" not in err and not x.exists()
