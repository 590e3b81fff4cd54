"""Editing caches and selecting tensors by name or glob."""

from __future__ import annotations

import pytest

from trtcal.cache.edit import EditOp, edit, parse_op
from trtcal.cache.format import parse
from trtcal.core.errors import TrtcalError
from trtcal.core.patterns import matches, select

SRC = ("TRT-100900-EntropyCalibration2\nimages: 3f800000\n/backbone/conv1/Conv_output_0: 40000000\n"
       "/backbone/conv2/Conv_output_0: 40400000\n(Unnamed Layer* 3) [Constant]_output: 3f800000\n")


def test_exact_names_with_glob_characters_match_themselves():
    name = "(Unnamed Layer* 3) [Constant]_output"
    from fnmatch import fnmatchcase

    assert not fnmatchcase(name, name)  # as a glob, "[Constant]" is one character of a set
    assert matches(name, name)
    assert matches(name, "(Unnamed Layer* 3) C_output")  # ... and it still works as a glob
    assert select("/backbone/*", ["a", "/backbone/x", "/backbone/x", "/backbone/y/z"]) == ["/backbone/x", "/backbone/y/z"]
    assert select("?mages", ["images", "imagess"]) == ["images"]


def test_ops_apply_in_order():
    cache = parse(SRC)
    ops = [parse_op("scale", "/backbone/*=2"), parse_op("set", "/backbone/conv1/Conv_output_0=127"),
           parse_op("drop", "(Unnamed Layer* 3) [Constant]_output")]
    out, changes = edit(cache, ops)
    # scale 2.0 -> amax 254*2; conv1 then set to 127 (scale 1.0 = 3f800000); the unnamed layer dropped
    assert out.to_text() == ("TRT-100900-EntropyCalibration2\nimages: 3f800000\n"
                             "/backbone/conv1/Conv_output_0: 3f800000\n/backbone/conv2/Conv_output_0: 40c00000\n")
    assert [(c.tensor, c.op) for c in changes] == [
        ("/backbone/conv1/Conv_output_0", "scale"), ("/backbone/conv2/Conv_output_0", "scale"),
        ("/backbone/conv1/Conv_output_0", "set"), ("(Unnamed Layer* 3) [Constant]_output", "drop")]
    assert changes[0].old_amax == 254.0 and changes[0].new_amax == 508.0
    assert cache.to_text() == SRC  # the input cache object is untouched


def test_pattern_matching_nothing_is_an_error():
    for op in (EditOp("scale", "/head/*", 2.0), EditOp("drop", "nothing")):
        with pytest.raises(TrtcalError, match="matches no tensor"):
            edit(parse(SRC), [op])
    with pytest.raises(TrtcalError, match="--allow-new"):
        edit(parse(SRC), [EditOp("set", "new_tensor", 1.0)])
    out, changes = edit(parse(SRC), [EditOp("set", "new_tensor", 127.0)], allow_new=True)
    assert out.to_text().endswith("new_tensor: 3f800000\n") and changes[0].op == "add"


@pytest.mark.parametrize(("kind", "text", "what"), [
    ("set", "images", "expected NAME=AMAX"), ("set", "=1", "expected NAME=AMAX"),
    ("set", "images=abc", "not a number"), ("set", "images=-1", ">= 0"), ("set", "images=nan", "finite"),
    ("scale", "x=0", "> 0"), ("scale", "x=inf", "finite"), ("drop", "", "empty pattern"),
])
def test_bad_ops(kind, text, what):
    with pytest.raises(TrtcalError, match=what):
        parse_op(kind, text)


def test_name_with_equals_sign_splits_on_last():
    op = parse_op("set", "a=b=2.5")
    assert (op.pattern, op.value) == ("a=b", 2.5)
