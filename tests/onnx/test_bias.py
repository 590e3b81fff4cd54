"""Adding per-channel constants to a layer's bias (trtcal.onnx.bias): run in ONNX Runtime, the
edited model's output is the original's plus the constants on the output-channel axis, for Conv
and Gemm with and without a bias, a Gemm's beta, a MatMul with its bias Add and one without."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcal.onnx.bias import add_to_biases
from trtcal.ort.runner import cpu_session


def model_of(nodes, inits, x_shape, y_rank, outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def w(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# (model, input shape, the layer's node index, output-channel axis of y, channels)
CASES = {
    "conv with bias": (model_of([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                                {"w": w(3, 2, 3, 3), "b": w(3, seed=1)}, (2, 2, 5, 5), 4), (2, 2, 5, 5), 0, 1, 3),
    "conv without bias": (model_of([helper.make_node("Conv", ["x", "w"], ["y"])], {"w": w(4, 2, 1, 1)},
                                   (2, 2, 3, 3), 4), (2, 2, 3, 3), 0, 1, 4),
    "gemm beta": (model_of([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, beta=0.5)],
                           {"w": w(5, 8), "b": w(5, seed=2)}, (6, 8), 2), (6, 8), 0, 1, 5),
    "gemm no bias": (model_of([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": w(8, 3)}, (4, 8), 2),
                     (4, 8), 0, 1, 3),
    "gemm row-wise C": (model_of([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transA=1)],
                                 {"w": w(8, 3), "b": w(6, 3, seed=6)}, (8, 6), 2), (8, 6), 0, 1, 3),
    "gemm scalar C": (model_of([helper.make_node("Gemm", ["x", "w", "b"], ["y"], beta=2.0)],
                               {"w": w(8, 3), "b": np.float32(0.5)}, (4, 8), 2), (4, 8), 0, 1, 3),
    "gemm computed C": (model_of([helper.make_node("Relu", ["cb"], ["c"]), helper.make_node("Gemm", ["x", "w", "c"], ["y"])],
                                 {"w": w(8, 3), "cb": w(3, seed=7)}, (4, 8), 2), (4, 8), 1, 1, 3),
    "conv computed bias": (model_of([helper.make_node("Relu", ["cb"], ["c"]),
                                     helper.make_node("Conv", ["x", "w", "c"], ["y"])],
                                    {"w": w(3, 2, 3, 3), "cb": w(3, seed=8)}, (2, 2, 5, 5), 4), (2, 2, 5, 5), 1, 1, 3),
    "matmul with bias add": (model_of([helper.make_node("MatMul", ["x", "w"], ["m"]),
                                       helper.make_node("Add", ["m", "b"], ["y"])],
                                      {"w": w(8, 4), "b": w(4, seed=3)}, (2, 3, 8), 3), (2, 3, 8), 0, -1, 4),
    "matmul alone": (model_of([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              {"w": w(8, 4)}, (2, 3, 8), 3), (2, 3, 8), 0, -1, 4),
}


def run(model, x):
    return cpu_session(model, "test", int8_kernels=False).run(None, {"x": x})[0].astype(np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_the_output_moves_by_the_constants(case):
    model, shape, index, axis, channels = CASES[case]
    x = np.random.default_rng(9).normal(size=shape).astype(np.float32)
    if case == "matmul alone":  # before the Relu: make every pre-activation positive so it passes through
        x = np.abs(x)
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.abs(w(8, 4)), "w"))
    delta = np.linspace(-0.5, 0.7, channels)
    edited = add_to_biases(model, {index: delta})
    before, after = run(model, x), run(edited, x)
    view = [1] * before.ndim
    view[axis] = -1
    assert after - before == pytest.approx(np.broadcast_to(delta.reshape(view), before.shape), abs=1e-5)
    names = [t.name for t in model.graph.initializer]
    assert [t.name for t in edited.graph.initializer][:len(names)] == names  # the old constants stay as they were
    for old, new in zip(model.graph.initializer, edited.graph.initializer):
        assert numpy_helper.to_array(old).tolist() == numpy_helper.to_array(new).tolist()


def test_a_matmul_bias_add_takes_the_constants_instead_of_a_new_add():
    model = CASES["matmul with bias add"][0]
    edited = add_to_biases(model, {0: np.ones(4)})
    assert [n.op_type for n in edited.graph.node] == ["MatMul", "Add"]
    alone = add_to_biases(CASES["matmul alone"][0], {0: np.ones(4)})
    assert [n.op_type for n in alone.graph.node] == ["MatMul", "Add", "Relu"]


def test_a_shared_bias_is_not_changed_for_the_other_reader():
    model = model_of([helper.make_node("Conv", ["x", "w", "b"], ["a"]), helper.make_node("Conv", ["x", "w", "b"], ["y"])],
                     {"w": w(2, 2, 1, 1), "b": w(2, seed=5)}, (1, 2, 3, 3), 4, outputs=("a", "y"))
    edited = add_to_biases(model, {1: np.array([1.0, 2.0])})
    assert edited.graph.node[0].input[2] == "b" and edited.graph.node[1].input[2] != "b"
