"""The scoring group: which model outputs ``eval`` and ``fallback`` score
(:func:`trtcal.ort.evaluate.choose_outputs`).

:class:`ScoringArgs` adds ``--score`` and ``--classifier``; :meth:`ScoringArgs.parse` returns
the keyword arguments ``score`` and ``classifiers`` of :func:`trtcal.ort.evaluate.evaluate` and
:func:`trtcal.ort.sensitivity.analyse`.
"""

from __future__ import annotations

import argparse

from trtcal.cli.args.base import ArgGroup

SCORE_HELP = ("score this model output (repeatable; default: every float output; integer and boolean outputs "
              "are never scored)")
CLASSIFIER_HELP = ("score this output as class scores over its last axis: top-1 agreement (per position for "
                   "[N, T, C]) and KL divergence (repeatable; then no other output is; 'none': no output is). "
                   "Default: the outputs made by Softmax/LogSoftmax over the last axis, else the model's only "
                   "float output when it is [N, C] from a linear layer")


class ScoringArgs(ArgGroup):
    """``--score OUTPUT`` and ``--classifier OUTPUT``, both repeatable."""

    title = "scored outputs"

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--score", action="append", metavar="OUTPUT", help=SCORE_HELP)
        group.add_argument("--classifier", action="append", metavar="OUTPUT", help=CLASSIFIER_HELP)

    def parse(self, args: argparse.Namespace) -> dict:
        return {"score": args.score, "classifiers": args.classifier}
