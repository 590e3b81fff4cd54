"""Every number option of every subcommand: 0, -1, a huge value and a non-number fail in one line
naming the option, exit status 2, no traceback, nothing written (issue 14)."""

from __future__ import annotations

import argparse

import pytest
from conftest import run_cli

from trtcal.cli.args.numbers import Bounded
from trtcal.cli.main import build_parser


def subcommands(parser, prefix=()):
    """(command words, subparser) for every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, prefix + (name,))
            return
    yield prefix, parser


def number_options():
    out = []
    for words, p in subcommands(build_parser()):
        positionals = [a for a in p._actions if not a.option_strings and a.nargs != 0]
        for a in p._actions:
            if a.option_strings and a.type in (int, float) or a.option_strings and isinstance(a.type, Bounded):
                out.append(pytest.param(words, a, positionals, id=" ".join(words) + " " + a.option_strings[-1]))
    return out


OPTIONS = number_options()


def test_every_number_option_is_bounded():
    plain = [p.id for p in OPTIONS if p.values[1].type in (int, float)]
    assert plain == [], "options with a bare int/float type accept 0, -1 and huge values: " + ", ".join(plain)
    assert len(OPTIONS) >= 20


@pytest.mark.parametrize(("words", "action", "positionals"), OPTIONS)
@pytest.mark.parametrize("value", ["0", "-1", "1e300", "10000000000000000000000", "nan", "inf", "abc"])
def test_bad_numbers_fail_in_one_line(words, action, positionals, value, tmp_path):
    kind: Bounded = action.type
    try:
        parsed = kind.kind(value)
        ok = kind.low <= parsed <= kind.high and not (kind.open_low and parsed == kind.low) and parsed == parsed
    except ValueError:
        ok = False
    if ok:
        pytest.skip(f"{value} is a valid {action.option_strings[-1]}")
    # positional arguments point to files that do not exist: the option must fail first, by name
    args = [*words, *(str(tmp_path / f"p{i}") for i in range(len(positionals))), action.option_strings[-1], value]
    rc, out, err = run_cli(*args)
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert action.option_strings[-1] in err and value in err
    assert list(tmp_path.iterdir()) == []


#: Options whose meaning depends on the command (so their help says what it is there), each with
#: why. Every other option that several commands take has one help text everywhere.
MEANS_PER_COMMAND = {
    "--algorithm": "a threshold method (calibrate: also eq; qdq, fallback: with --stats only), a TensorRT "
                   "calibrator (build) or a cache header's name (cache ...)",
    "--all": "cache diff lists agreeing tensors, eval every tensor",
    "--batch-size": "the defaults differ (calibrate: --memory-budget; build: the OPT shape; crosscheck: TensorRT's)",
    "--bits": "a bit width, or bits' candidate widths",
    "--data": "calibration data or evaluation data",
    "--int8": "report: an INT8 model; build: implicit INT8",
    "--output": "each command writes a different kind of file",
    "--overrides": "applied to a cache, to ranges, or with set_dynamic_range",
    "--shapes": "build: an optimization profile NAME:MIN,OPT,MAX; elsewhere one batch's shape NAME=DxD (not unified yet)",
    "--target": "bits' --qdq target stores other widths; quantize reads no cache (its ranges carry their signs)",
    "--target-sqnr": "bits: each tensor's SQNR from its histogram; quantize: the model's output SQNR",
    "--cache": "the cache read, and what it is used for; quantize: the cache it writes",
    "--stats": "calibrate and quantize write statistics, cache lint checks a cache against them; every command "
               "that reads them says the same (test_cli_args)",
    "--trt-version": "the release a cache is stamped for, or will be read by",
    "--verbose": "cache lint's informational findings, build's TensorRT messages",
    "--rtol": "amax tolerance of cache diff and of crosscheck (defaults differ)",
}


def test_shared_options_have_one_help_text():
    texts: dict[str, dict[str, list[str]]] = {}
    for words, p in subcommands(build_parser()):
        for a in p._actions:
            for opt in a.option_strings:
                if opt.startswith("--") and opt != "--help":
                    texts.setdefault(opt, {}).setdefault(a.help, []).append(" ".join(words))
    differ = {opt: t for opt, t in texts.items() if len(t) > 1 and opt not in MEANS_PER_COMMAND}
    assert differ == {}, differ
    shared = [opt for opt, t in texts.items() if sum(map(len, t.values())) > 1]
    assert {"--force", "--preprocess", "--max-batches", "--percentile", "--ignore-provenance", "--labels",
            "--json", "--quiet", "--distribution", "--zero-bin", "--score", "--classifier", "--batch-axis",
            "--allow-nonfinite", "--weights", "--weight-scales"} <= set(shared)
