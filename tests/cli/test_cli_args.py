"""The argument groups of trtcal.cli.args: each group's parse() against what its parser
produces, and one help text per option of a group in every command that subscribes to it."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from test_cli_options import subcommands

from trtcal.cache.format import DEFAULT_TRT_VERSION, parse_version
from trtcal.cli.args.algorithm import AlgorithmArgs, EqSearch, Thresholding
from trtcal.cli.args.base import ArgGroup
from trtcal.cli.args.data import BATCH_SIZE_HELP, DataArgs
from trtcal.cli.args.output import Output, OutputArgs
from trtcal.cli.args.plot import PlotArgs, Plots
from trtcal.cli.args.qdq import QdqArgs
from trtcal.cli.args.ranges import RangesArgs
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.args.stats import STATS_HELP, StatsArgs
from trtcal.cli.common import Parser
from trtcal.cli.main import build_parser
from trtcal.core.errors import TrtcalError
from trtcal.data.images import Preprocess


def parse(group: ArgGroup, *argv: str, **kwargs):
    """``group.parse`` of ``argv`` parsed by a parser with only ``group``'s options."""
    parser = Parser(prog="test")
    group.add_parser_args(parser)
    return group.parse(parser.parse_args(list(argv)), **kwargs)


def options_of(group: ArgGroup) -> list[str]:
    parser = Parser(prog="test")
    group.add_parser_args(parser)
    return [a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"]


# --------------------------------------------------------------------------- algorithm


def test_algorithm_defaults():
    assert parse(AlgorithmArgs()) == Thresholding("entropy2", {}, DEFAULT_TRT_VERSION, None)


def test_algorithm_options_become_keyword_arguments():
    t = parse(AlgorithmArgs(), "--algorithm", "percentile", "--percentile", "99.9", "--bits", "6",
              "--trt-version", "8.6.1")
    assert t == Thresholding("percentile", {"bits": 6, "q": pytest.approx(0.999)}, parse_version("8.6.1"))
    assert t.searched == "percentile"
    t = parse(AlgorithmArgs(), "--algorithm", "aciq", "--distribution", "laplace")
    assert t.options == {"distribution": "laplace"}
    assert parse(AlgorithmArgs(), "--zero-bin", "keep").options == {"zero_bin": "keep"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--percentile", "99"], "--percentile applies to --algorithm percentile only"),
    (["--algorithm", "mse", "--distribution", "gaussian"], "--distribution applies to --algorithm aciq only"),
    (["--algorithm", "minmax", "--zero-bin", "keep"], "--zero-bin applies to --algorithm entropy2 only"),
    (["--trt-version", "ten"], "ten"),
])
def test_algorithm_refuses_options_of_other_algorithms(argv, message):
    with pytest.raises(TrtcalError, match=message):
        parse(AlgorithmArgs(), *argv)


def test_algorithm_eq():
    t = parse(AlgorithmArgs(eq=True), "--algorithm", "eq", "--eq-init", "minmax", "--eq-samples", "8")
    assert t.eq == EqSearch("minmax", 8, 100) and t.searched == "minmax" and t.algorithm == "eq"
    assert parse(AlgorithmArgs(eq=True), "--algorithm", "eq", "--zero-bin", "keep").options == {"zero_bin": "keep"}
    with pytest.raises(TrtcalError, match="or eq started from it"):
        parse(AlgorithmArgs(eq=True), "--algorithm", "eq", "--eq-init", "mse", "--zero-bin", "keep")
    assert parse(AlgorithmArgs(eq=True), "--eq-init", "mse").eq is None  # not --algorithm eq
    assert "--eq-init" not in options_of(AlgorithmArgs())


def test_algorithm_subsets():
    assert options_of(AlgorithmArgs(("--zero-bin",))) == ["--zero-bin"]
    # without --algorithm the caller checks what --zero-bin applies to (crosscheck: the cache's algorithm)
    assert parse(AlgorithmArgs(("--zero-bin",)), "--zero-bin", "keep") == Thresholding("entropy2", {"zero_bin": "keep"})
    # a command that writes no cache takes --trt-version but does not read it
    assert parse(AlgorithmArgs(stamps_cache=False), "--trt-version", "ten").trt_version is None
    with pytest.raises(ValueError, match="--eq-init"):
        AlgorithmArgs(("--eq-init",))


# --------------------------------------------------------------------------- statistics, ranges, Q/DQ


def test_stats():
    assert parse(StatsArgs(), "--stats", "s.npz") == "s.npz"
    with pytest.raises(SystemExit):
        parse(StatsArgs())


def test_ranges_from_stats_default_to_entropy2():
    source = parse(RangesArgs(), "--stats", "s.npz", "--overrides", "o.yaml")
    assert (source.path, source.kind, source.overrides, source.ignore_provenance) == ("s.npz", "statistics",
                                                                                      "o.yaml", False)
    assert source.thresholding == Thresholding("entropy2", {})
    source = parse(RangesArgs(), "--stats", "s.npz", "--algorithm", "percentile", "--percentile", "99")
    assert source.thresholding.options == {"q": 0.99}


@pytest.mark.parametrize("argv", [["--algorithm", "entropy2"], ["--percentile", "99"],
                                  ["--distribution", "laplace"], ["--zero-bin", "keep"]])
def test_ranges_from_a_cache_refuse_algorithm_options(argv):
    with pytest.raises(TrtcalError, match=f"{argv[0]} applies to --stats only"):
        parse(RangesArgs(), "--cache", "c.cache", *argv)
    source = parse(RangesArgs(), "--cache", "c.cache", "--ignore-provenance")
    assert (source.path, source.kind, source.thresholding, source.ignore_provenance) == ("c.cache", "cache", None,
                                                                                         True)


def test_ranges_need_a_cache_or_statistics():
    for argv in ([], ["--cache", "c", "--stats", "s"]):
        with pytest.raises(SystemExit):
            parse(RangesArgs(), *argv)


def test_qdq(tmp_path):
    np.savez(tmp_path / "w.npz", conv_w=np.ones(4, np.float32))
    got = parse(QdqArgs(excludes=True), "--target", "onnxruntime", "--exclude-ops", "Conv, Add", "--exclude-ops",
                "MatMul", "--exclude-nodes", "/a/*", "--weights", "mse", "--weight-scales", str(tmp_path / "w.npz"),
                "--attention", "float")
    assert {k: v for k, v in got.items() if k != "weight_scales"} == {
        "target": "onnxruntime", "attention": "float", "exclude_nodes": ["/a/*"], "exclude_ops": ["Conv", "Add", "MatMul"],
        "weight_method": "mse"}
    assert list(got["weight_scales"]) == ["conv_w"]
    assert parse(QdqArgs()) == {"target": "tensorrt", "attention": "int8", "weight_method": "max", "weight_scales": None}
    parser = Parser(prog="test")
    group = QdqArgs()
    group.add_parser_args(parser)
    assert group.placement(parser.parse_args([])) == {"target": "tensorrt", "attention": "int8", "exclude_nodes": (),
                                                      "exclude_ops": []}


# --------------------------------------------------------------------------- data, scoring, plots, output


def test_data_keyword_arguments():
    got = parse(DataArgs("d", random=True, labels=True), "--data", "x.npz", "--labels", "y.npy", "--preprocess",
                "resize=32,crop=28", "--batch-size", "4", "--max-batches", "2", "--batch-axis", "state=1",
                "--shapes", "x=1x3x28x28", "--allow-nonfinite")
    assert got == {"data": "x.npz", "random": False, "labels": "y.npy", "preprocess": Preprocess.parse("resize=32,crop=28"),
                   "batch_size": 4, "max_batches": 2, "batch_axes": {"state": 1}, "shapes": {"x": (1, 3, 28, 28)},
                   "allow_nonfinite": True}
    assert parse(DataArgs("d", max_batches=False)) == {"data": None, "preprocess": None, "batch_size": None,
                                                       "batch_axes": {}, "shapes": {}, "allow_nonfinite": False}
    # build: --data stands beside --cache, TensorRT feeds the inputs
    assert parse(DataArgs(None, feed=False)) == {"preprocess": None, "batch_size": None, "max_batches": None}
    assert options_of(DataArgs(None, feed=False)) == ["--preprocess", "--batch-size", "--max-batches"]


def test_data_refuses_bad_values():
    with pytest.raises(TrtcalError, match="--batch-axis"):
        parse(DataArgs("d"), "--batch-axis", "x=-1")
    with pytest.raises(SystemExit):
        parse(DataArgs("d", required=True))


def test_scoring():
    assert parse(ScoringArgs(), "--score", "a", "--score", "b", "--classifier", "none") == {
        "score": ["a", "b"], "classifiers": ["none"]}
    assert parse(ScoringArgs()) == {"score": None, "classifiers": None}


def test_plots(tmp_path):
    assert parse(PlotArgs(), "--no-plots") == Plots(False)
    assert parse(PlotArgs("a picture")) == Plots(False, None)
    (tmp_path / "p.png").write_bytes(b"")
    parser = Parser(prog="test")
    OutputArgs().add_parser_args(parser)
    PlotArgs("a picture").add_parser_args(parser)
    args = parser.parse_args(["--plot", str(tmp_path / "p.png")])
    with pytest.raises(TrtcalError, match="already exists"):
        PlotArgs("a picture").parse(args)
    with pytest.raises(TrtcalError, match="is also an input"):
        PlotArgs("a picture").parse(parser.parse_args(["--plot", str(tmp_path / "p.png"), "--force"]),
                                    inputs=[str(tmp_path / "p.png")])


def test_output():
    full = OutputArgs("the file", quiet=True)
    assert parse(full, "-o", "x", "--force", "-q", "--json") == Output("x", True, True, True)
    assert parse(full) == Output(None, False, False, False)
    assert parse(full, "-q").progress is False and parse(full).progress is None
    assert parse(OutputArgs(force=False)) == Output(None, False, False, False)
    assert options_of(OutputArgs(force=False, json=False, quiet=True)) == ["--quiet"]
    assert parse(OutputArgs("folder (default %(default)s)", default="report")).path == "report"


# --------------------------------------------------------------------------- subscriptions and help texts


#: Which groups each command subscribes to: the headings of its argument groups, in order.
SUBSCRIPTIONS = {
    "demo": ["output"],
    "calibrate": ["data", "feeding the data to the model's inputs", "thresholds", "output"],
    "thresholds": ["statistics", "thresholds", "output"],
    "cache inspect": ["output"], "cache diff": ["output"], "cache lint": ["output"], "cache edit": ["output"],
    "cache restamp": ["output"], "cache convert": ["output"],
    "onesided": ["statistics", "thresholds", "output"],
    "plot": ["statistics", "output"],
    "report": ["statistics", "data", "feeding the data to the model's inputs", "plots", "output"],
    "bits": ["statistics", "thresholds", "output"],
    "crosscheck": ["data", "feeding the data to the model's inputs", "thresholds", "output"],
    "qdq": ["ranges", "thresholds", "Q/DQ model", "output"],
    "fallback": ["ranges", "thresholds", "Q/DQ model", "data", "feeding the data to the model's inputs",
                 "scored outputs", "output"],
    "eval": ["data", "feeding the data to the model's inputs", "scored outputs", "plots", "output"],
    "quantize": ["data", "feeding the data to the model's inputs", "scored outputs", "output"],
    "smooth": ["data", "feeding the data to the model's inputs", "scored outputs", "output"],
    "build": ["data", "output"],
}

#: Options of a group whose help says what they are in each command (the constructor's words).
GROUP_OPTIONS_PER_COMMAND = {"--data", "--batch-size", "--output", "--algorithm", "--plot"}


def group_options():
    """(command, heading, option, help) for every option under a group's heading."""
    for words, parser in subcommands(build_parser()):
        for group in parser._action_groups[2:]:  # after "positional arguments" and "options"
            for action in group._group_actions:
                yield " ".join(words), group.title, action.option_strings[-1], action.help


def test_each_command_subscribes_to_its_groups():
    got = {" ".join(words): [g.title for g in parser._action_groups[2:]]
           for words, parser in subcommands(build_parser())}
    assert got == SUBSCRIPTIONS


def test_an_option_of_a_group_has_one_help_text_in_every_command():
    texts: dict[str, dict[str, list[str]]] = {}
    for command, _, option, text in group_options():
        texts.setdefault(option, {}).setdefault(text, []).append(command)
    differ = {o: t for o, t in texts.items() if len(t) > 1 and o not in GROUP_OPTIONS_PER_COMMAND}
    assert differ == {}
    assert {"--percentile", "--preprocess", "--force", "--json", "--score", "--batch-axis", "--weights",
            "--ignore-provenance"} <= {o for o, t in texts.items() if sum(map(len, t.values())) > 1}


def test_an_option_stands_under_one_heading():
    headings: dict[str, set[str]] = {}
    for _, title, option, _ in group_options():
        headings.setdefault(option, set()).add(title)
    # --stats: the statistics read, or (qdq, fallback) one of the two sources of the ranges
    assert {o: h for o, h in headings.items() if len(h) > 1} == {"--stats": {"statistics", "ranges"}}


def test_every_command_that_reads_statistics_says_the_same():
    readers = {" ".join(w): next(a.help for a in p._actions if "--stats" in a.option_strings)
               for w, p in subcommands(build_parser()) if any("--stats" in a.option_strings for a in p._actions)}
    assert {c for c, text in readers.items() if text != STATS_HELP} == {"calibrate", "quantize", "cache lint"}  # write, check


def test_batch_size_defaults_are_said_per_command():
    texts = {" ".join(w): a.help for w, p in subcommands(build_parser()) for a in p._actions
             if "--batch-size" in a.option_strings}
    assert {c for c, text in texts.items() if text == BATCH_SIZE_HELP} == {"eval", "report", "smooth"}


def test_the_summary_and_description_come_from_the_docstring():
    from trtcal.cli.eval_cmds import cmd_eval

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    summary = next(a.help for a in sub._choices_actions if a.dest == "eval")
    assert summary == "compare an INT8 (Q/DQ) model with its FP32 original on real data"
    description = sub.choices["eval"].description
    assert description.startswith("Run both models") and summary not in description
    assert " ".join(cmd_eval.__doc__.split()) == f"{summary} {' '.join(description.split())}"
