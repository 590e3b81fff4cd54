"""Text tables keep their columns in line whatever the cell lengths: long tensor names (first
column or last), long numbers, long headers. Checked on ``table`` itself against the column
positions read off its header, and on the commands' real output for a model whose tensor names
are 70 characters long."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from trtcal.cli.table import table

LONG = "backbone.stage4.block3.attention.output_projection.activation_after_relu"  # 73 characters


def right_edges(header: str, names: list[str]) -> dict[str, int]:
    return {n: header.index(n) + len(n) for n in names}


def assert_right_aligned(lines: list[str], names: list[str]) -> None:
    """Every right-aligned column's cells end where its header label ends."""
    edges = right_edges(lines[0], names)
    for line in lines[1:]:
        for name, edge in edges.items():
            assert line[edge - 1] != " ", (name, line)
            assert edge == len(line) or line[edge] == " ", (name, line)


def test_table_widths_follow_the_longest_cell():
    rows = [("-3.40282e+38", LONG, "1.5"), ("0.1", "x", "123456789.25")]
    lines = table(("amax", "tensor", "ratio"), rows, "><>")
    assert len({len(line) for line in lines}) == 1  # the last column is right-aligned: all lines equally long
    assert_right_aligned(lines, ["amax", "ratio"])
    start = lines[0].index("tensor")
    assert [line[start:start + len(LONG)].rstrip() for line in lines[1:]] == [LONG, "x"]
    assert all(not line.endswith(" ") for line in table(("a", "name"), [("1", "b")], "><"))


def test_table_refuses_ragged_rows():
    with pytest.raises(ValueError):
        table(("a", "b"), [("1",)], "><")
    with pytest.raises(ValueError):
        table(("a", "b"), [("1", "2")], ">")


def long_named_model() -> onnx.ModelProto:
    """x [N, 8] -> MatMul -> Relu (named LONG) -> MatMul -> output named LONG + '.logits'."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(size=(16, 5)).astype(np.float32), "W2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Relu", ["h0"], [LONG]),
             helper.make_node("MatMul", [LONG, "W2"], [LONG + ".logits"])]
    graph = helper.make_graph(nodes, "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info(LONG + ".logits", TensorProto.FLOAT, ["n", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    onnx.save(long_named_model(), d / "m.onnx")
    np.savez(d / "data.npz", x=np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    return d


def lines_after(out: str, first_word: str) -> list[str]:
    """The table whose header starts with ``first_word`` (leading spaces ignored), up to a blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == first_word)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_commands_keep_columns_aligned_with_long_names(work):
    cache, qdq = work / "m.cache", work / "m.int8.onnx"
    rc, out, err = run_cli("calibrate", work / "m.onnx", "--data", work / "data.npz", "-o", cache, "-q")
    assert rc == 0, err
    table_lines = [line for line in lines_after(out, "amax") if "." in line or "amax" in line][:4]
    assert any(LONG in line for line in table_lines)
    assert_right_aligned(table_lines, ["amax", "min", "max", "max/amax"])

    rc, out, err = run_cli("qdq", work / "m.onnx", "--cache", cache, "-o", qdq)
    assert rc == 0, err
    assert_right_aligned([line for line in lines_after(out, "amax") if "->" in line and "weights" not in line or "amax" in line],
                         ["amax", "scale", "type"])

    rc, out, err = run_cli("eval", work / "m.onnx", qdq, "--data", work / "data.npz", "-q")
    assert rc == 0, err
    outputs = [line for line in out.splitlines() if line.startswith("output") or line.startswith(LONG + ".logits ")]
    assert len(outputs) == 2, out
    assert_right_aligned(outputs, ["SQNR dB", "cosine", "min cos", "top-1 agree", "KL nats"])

    rc, out, err = run_cli("cache", "inspect", cache)
    assert rc == 0, err
    inspect = [line for line in lines_after(out, "amax") if not line.startswith("suspicious")]
    assert any(LONG in line for line in inspect)
    assert_right_aligned(inspect, ["amax", "scale", "hex"])
