"""The threshold algorithm group: how each tensor's range is chosen from its histogram.

:class:`AlgorithmArgs` adds ``--algorithm`` and the options that tune it (``--bits``,
``--percentile``, ``--distribution``, ``--zero-bin``), ``--trt-version`` (the release the
cache is stamped for) and, for ``calibrate``, EQ's ``--eq-samples``, ``--eq-steps`` and
``--eq-init``. A command takes all of them or the few it names. :meth:`AlgorithmArgs.parse`
returns a :class:`Thresholding`: the algorithm, the keyword arguments of
:func:`trtcal.ort.pipeline.compute_thresholds` (and :func:`~trtcal.ort.pipeline.calibrate`),
the parsed TensorRT version and EQ's search settings; an option given for an algorithm it does
not tune is refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from trtcal.cli.args.base import ArgGroup
from trtcal.cli.args.numbers import BITS, COUNT, PERCENT, STEPS
from trtcal.core.errors import TrtcalError

ALGORITHM_HELP = "threshold algorithm (default entropy2: TensorRT's EntropyCalibration2)"
EQ_HELP = "; eq refines entropy2 layer by layer (EasyQuant)"
BITS_HELP = "quantization bit width, 2..16 (default 8)"
PERCENTILE_HELP = "for --algorithm percentile: the percentage of |x| kept (default 99.99)"
DISTRIBUTION_HELP = "for --algorithm aciq: the assumed distribution (default gaussian)"
ZERO_BIN_HELP = ("for entropy2: how bin 0 counts in the KL search: neighbour (default; bin 0 takes bin 1's "
                 "count, as NVIDIA's pytorch-quantization and ModelOpt do, so exact zeros of ReLU/Clip "
                 "outputs do not collapse the range) or keep (bin 0 as counted; see docs/core.md)")
TRT_VERSION_HELP = "TensorRT release the cache is stamped for (default %(default)s)"

#: Every option of the group, in the order they are added.
OPTIONS = ("--algorithm", "--bits", "--percentile", "--distribution", "--zero-bin", "--trt-version")


@dataclass(frozen=True)
class EqSearch:
    """EQ's layer search (``calibrate --algorithm eq``): where it starts, on how many samples,
    with how many scale factors."""

    init: str
    samples: int
    steps: int
    search: str = "golden"


@dataclass(frozen=True)
class Thresholding:
    """What :meth:`AlgorithmArgs.parse` returns."""

    #: The algorithm chosen (``eq`` included; ``entropy2`` when none is given).
    algorithm: str
    #: Keyword arguments of the threshold computation: ``bits``, ``q``, ``distribution``, ``zero_bin``.
    options: dict = field(default_factory=dict)
    #: The parsed ``--trt-version`` (None where the command does not stamp a cache).
    trt_version: tuple | None = None
    #: EQ's search, for ``--algorithm eq``.
    eq: EqSearch | None = None

    @property
    def searched(self) -> str:
        """The algorithm run on the histograms: EQ's starting point for eq, else the algorithm."""
        return self.eq.init if self.eq is not None else self.algorithm


class AlgorithmArgs(ArgGroup):
    """``--algorithm`` and its options.

    ``options``: the options the command takes (from :data:`OPTIONS`). ``eq``: also offer
    ``--algorithm eq`` and its options (``calibrate``). ``with_stats``: the algorithm applies to
    ``--stats`` only (``qdq``, ``fallback``): ``--algorithm`` has no default, so a given one can
    be told from none. ``stamps_cache``: the command writes a cache, so ``parse`` reads
    ``--trt-version`` (``onesided`` takes the option but writes no cache).
    """

    title = "thresholds"

    def __init__(self, options: Sequence[str] = OPTIONS, *, eq: bool = False, with_stats: bool = False,
                 stamps_cache: bool = True):
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"not options of this group: {sorted(unknown)}")
        self.options, self.eq, self.with_stats = tuple(options), eq, with_stats
        self.stamps_cache = stamps_cache and "--trt-version" in options

    def add_options(self, group: argparse._ArgumentGroup) -> None:
        from trtcal.cache import format as trtcache
        from trtcal.core import thresholds as thr

        if "--algorithm" in self.options:
            group.add_argument("--algorithm", default=None if self.with_stats else "entropy2",
                               choices=list(thr.METHODS) + (["eq"] if self.eq else []),
                               help=("with --stats: " if self.with_stats else "") + ALGORITHM_HELP
                               + (EQ_HELP if self.eq else ""))
        if "--bits" in self.options:
            group.add_argument("--bits", type=BITS, default=None, help=BITS_HELP)
        if "--percentile" in self.options:
            group.add_argument("--percentile", type=PERCENT, default=None, help=PERCENTILE_HELP)
        if "--distribution" in self.options:
            group.add_argument("--distribution", choices=("gaussian", "laplace"), default=None,
                               help=DISTRIBUTION_HELP)
        if "--zero-bin" in self.options:
            group.add_argument("--zero-bin", choices=thr.ZERO_BIN_RULES, default=None, help=ZERO_BIN_HELP)
        if "--trt-version" in self.options:
            group.add_argument("--trt-version", default=trtcache.format_version(trtcache.DEFAULT_TRT_VERSION),
                               help=TRT_VERSION_HELP)
        if self.eq:
            group.add_argument("--eq-samples", type=COUNT, default=64,
                               help="for --algorithm eq: samples for the layer search (default %(default)s)")
            group.add_argument("--eq-steps", type=STEPS, default=100,
                               help="for --algorithm eq: scale factors tried in [0.5, 2] (default %(default)s)")
            group.add_argument("--eq-search", choices=("golden", "coarse", "grid"), default="golden",
                               help="for --algorithm eq: how each activation's factor is searched: golden "
                                    "sections after 5 coarse steps (about 12 scores), coarse to fine (about 23), or "
                                    "every --eq-steps factor (default %(default)s; the same choice where the score "
                                    "has one peak)")
            group.add_argument("--eq-init", default="entropy2", choices=[m for m in thr.METHODS if m != "eq"],
                               help="for --algorithm eq: the ranges the search starts from (default "
                                    "%(default)s, as EasyQuant; docs/accuracy.md compares starting points)")

    def given(self, args: argparse.Namespace) -> list[str]:
        """The options of this group that ``args`` holds a value for, other than ``--trt-version``
        (whose default is a value): with ``with_stats``, the ones given on the command line."""
        return [o for o in self.options if o != "--trt-version" and getattr(args, o[2:].replace("-", "_")) is not None]

    def parse(self, args: argparse.Namespace) -> Thresholding:
        from trtcal.cache import format as trtcache

        version = trtcache.parse_version(args.trt_version) if self.stamps_cache else None
        algorithm = getattr(args, "algorithm", None) or "entropy2"
        options: dict = {}
        if "--bits" in self.options and args.bits is not None:
            options["bits"] = args.bits
        if "--percentile" in self.options and args.percentile is not None:
            if algorithm != "percentile":
                raise TrtcalError("--percentile applies to --algorithm percentile only")
            options["q"] = args.percentile / 100
        if "--distribution" in self.options and args.distribution is not None:
            if algorithm != "aciq":
                raise TrtcalError("--distribution applies to --algorithm aciq only")
            options["distribution"] = args.distribution
        eq = EqSearch(args.eq_init, args.eq_samples, args.eq_steps, args.eq_search) if self.eq and algorithm == "eq" else None
        if "--zero-bin" in self.options and args.zero_bin is not None:
            # without --algorithm (crosscheck) the caller knows what the ranges are computed with
            searched = eq.init if eq is not None else algorithm
            if "--algorithm" in self.options and searched != "entropy2":
                raise TrtcalError("--zero-bin applies to --algorithm entropy2 only (or eq started from it)")
            options["zero_bin"] = args.zero_bin
        return Thresholding(algorithm, options, version, eq)
