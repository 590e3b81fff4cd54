"""``trtcal onesided``: the tensors that symmetric int8 gives only 7 bits, and what that costs."""

from __future__ import annotations

import argparse

from trtcal.cli.args.algorithm import AlgorithmArgs
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.table import print_table
from trtcal.core.errors import TrtcalError

STATS = StatsArgs()
#: ``--trt-version`` is taken, as everywhere the algorithm is, but no cache is written
ALGORITHM = AlgorithmArgs(stamps_cache=False)
OUTPUT = OutputArgs(force=False)


def cmd_onesided(args: argparse.Namespace) -> int:
    """one-sided (ReLU-like) tensors: codes wasted and SQNR lost to symmetric int8

    List every tensor whose values are all >= 0 (ReLU, Clip, Sigmoid, MaxPool of them...),
    the int8 codes it can use under symmetric quantization, and the SQNR of its values under
    symmetric int8 vs unsigned 8 bits at the same threshold, estimated from the saved
    histograms."""
    from trtcal.core.onesided import analyse
    from trtcal.core.stats import load_stats
    from trtcal.onnx.model import load_model, producers
    from trtcal.ort.pipeline import compute_thresholds

    stats = STATS.parse(args)
    model = load_model(args.model, fp32=True)
    histograms, _ = load_stats(stats)
    made = producers(model)
    unknown = [n for n in histograms if n not in made]
    if unknown:
        raise TrtcalError(f"{stats}: {len(unknown)} of its {len(histograms)} tensors are not in {args.model} "
                          f"(first: {unknown[0]!r}); statistics of another model?")
    if args.cache:
        from trtcal.cache.convert import read_any

        cache = read_any(args.cache)
        amaxes = {n: cache.amax(n) for n in cache.names()}
        source = f"ranges from {args.cache}"
    else:
        thresholding = ALGORITHM.parse(args)
        results = compute_thresholds(histograms, thresholding.algorithm, **thresholding.options)
        amaxes = {n: r.amax for n, r in results.items()}
        source = f"{thresholding.algorithm} thresholds"
    rows = analyse(histograms, amaxes, made)
    if OUTPUT.parse(args).json:
        print_json({"source": source, "tensors": len(histograms),
                    "one_sided": rows})
        return 0
    print(f"{len(rows)} of {len(histograms)} tensors are one-sided (min >= 0), {source}:")
    if rows:
        print_table(("producer", "amax", "codes", "int8 dB", "uint8 dB", "gain", "tensor"),
                    [(r.producer, f"{r.amax:.5g}", f"{r.codes_symmetric}/256", f"{r.sqnr_symmetric_db:.2f}",
                      f"{r.sqnr_unsigned_db:.2f}", f"{r.gain_db:.2f}", r.tensor) for r in rows], "<>>>>><")
        print("codes: the int8 codes its values can reach under TensorRT's symmetric int8 (128 of 256 at most); "
              "int8/uint8 dB: SQNR of its values at the same amax, symmetric vs unsigned with zero point 0 "
              "(ONNX Runtime accepts uint8 Q/DQ; TensorRT does not)")
    return 0


def register(sub) -> None:
    p = add_command(sub, "onesided", cmd_onesided, STATS, ALGORITHM, OUTPUT)
    p.add_argument("model", help="the FP32 ONNX model the statistics came from (names the producers)")
    p.add_argument("--cache", help="take the thresholds from this cache instead of computing them")
