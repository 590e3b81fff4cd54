"""``trtcal bits``: the smallest bit width per tensor that meets a target SQNR."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from trtcal.cli.args.algorithm import AlgorithmArgs
from trtcal.cli.args.numbers import DECIBELS
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.table import print_table
from trtcal.core.errors import TrtcalError

STATS = StatsArgs()
#: ``--bits`` here lists candidate widths: the algorithm group gives ``--algorithm`` only
ALGORITHM = AlgorithmArgs(("--algorithm",))
OUTPUT = OutputArgs("write {tensor: bits or 'float'} as JSON")


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise TrtcalError(f"--bits {text!r}: expected comma-separated integers, e.g. 4,6,8,16") from None
    bad = [w for w in widths if not 2 <= w <= 16]
    if not widths or bad:
        raise TrtcalError(f"--bits {text!r}: widths must be integers from 2 to 16")
    return widths


def cmd_bits(args: argparse.Namespace) -> int:
    """per-tensor bit width for a target SQNR

    For each tensor in a statistics file, the smallest bit width from --bits whose symmetric
    quantization (threshold from --algorithm at that width) keeps the tensor's SQNR at or above
    --target-sqnr, estimated from the histogram; tensors that meet it at no width stay in
    float."""
    from trtcal.core import fileio
    from trtcal.core.bitwidth import FLOAT, choose_bits
    from trtcal.core.stats import load_stats

    widths = _widths(args.bits)
    stats, method, output = STATS.parse(args), ALGORITHM.parse(args).algorithm, OUTPUT.parse(args)
    if args.qdq and not args.model:
        raise TrtcalError("--qdq needs the MODEL the statistics were collected on")
    for out in (output.path, args.qdq):
        if out:
            fileio.check_output(out, force=output.force, inputs=[stats] + ([args.model] if args.model else []))
    histograms, _ = load_stats(stats)
    choices = choose_bits(histograms, args.target_sqnr, widths, method=method)
    doc = {"target_sqnr_db": args.target_sqnr, "widths": widths, "algorithm": method,
           "tensors": [c.to_dict() for c in choices]}
    qdq = _write_qdq(args, choices, histograms, widths, method, output.force) if args.qdq else None
    if qdq is not None:
        doc["qdq"] = {"path": args.qdq, "target": args.target, "opset": qdq.opset,
                      "stored": {q.name: q.dtype for q in qdq.activations},
                      "weights": {q.name: q.dtype for q in qdq.weights}, "float_tensors": qdq.float_tensors}
    if output.path:
        import json

        fileio.atomic_write(output.path, json.dumps({c.tensor: c.bits for c in choices}, indent=1) + "\n",
                            force=output.force)
    if output.json:
        print_json(doc)
        return 0
    print_table(("bits", *(f"{w}-bit dB" for w in widths), "tensor"),
                [(str(c.bits), *(f"{c.sqnr_db[w]:.2f}" if w in c.sqnr_db else "" for w in widths), c.tensor)
                 for c in choices], ">" * (len(widths) + 1) + "<")
    counts = Counter(c.bits for c in choices)
    parts = [f"{counts[w]} x {w}-bit" for w in widths if counts[w]] + ([f"{counts[FLOAT]} float"] if counts[FLOAT] else [])
    print(f"target {args.target_sqnr:g} dB ({method}): " + ", ".join(parts))
    if qdq is not None:
        stored = Counter(q.dtype for q in qdq.activations)
        wstored = Counter(q.dtype for q in qdq.weights)
        print(f"{args.qdq} ({args.target}, opset {qdq.opset}): activations " +
              ", ".join(f"{n} x {d}" for d, n in sorted(stored.items())) + "; weights " +
              ", ".join(f"{n} x {d}" for d, n in sorted(wstored.items())) +
              f"; {len(qdq.float_tensors)} tensors in float, {len(qdq.float_nodes)} nodes in float")
    for out in (output.path, args.qdq):
        if out:
            print(f"wrote {out}")
    return 0


def _weight_bits(args, weights, widths) -> dict[str, int]:
    """Per quantized weight, the smallest width the target stores at least the smallest candidate
    width whose per-channel quantization meets --target-sqnr."""
    from onnx import numpy_helper

    from trtcal.core.bitwidth import choose_weight_bits
    from trtcal.onnx.model import load_model
    from trtcal.onnx.qdq import TARGET_WEIGHT_WIDTHS

    stored = TARGET_WEIGHT_WIDTHS[args.target]

    arrays = {t.name: t for t in load_model(args.model, load_weights=True).graph.initializer}
    out = {}
    for q in weights:
        if q.name not in arrays:
            continue  # a Constant node's weight: left at 8 bits
        chosen = choose_weight_bits(numpy_helper.to_array(arrays[q.name]), q.axis, args.target_sqnr, widths)
        out[q.name] = next((w for w in stored if w >= chosen), stored[-1])
    return out


def _write_qdq(args, choices, histograms, widths, method: str, force: bool):
    """The Q/DQ model with each activation at the width the target stores for its choice."""
    from trtcal.core.bitwidth import stored_ranges
    from trtcal.onnx.qdq import TARGET_WEIGHT_WIDTHS, TARGET_WIDTHS, write_qdq

    ranges, floats = stored_ranges(choices, histograms, TARGET_WIDTHS[args.target], method=method)
    if not ranges:
        raise TrtcalError(f"--qdq: no tensor can be quantized at {args.target_sqnr:g} dB with the widths "
                          f"{args.target} stores; lower --target-sqnr")
    result = write_qdq(args.model, ranges, target=args.target)
    weight_bits = _weight_bits(args, result.weights, widths) if len(TARGET_WEIGHT_WIDTHS[args.target]) > 1 else {}
    if any(b != 8 for b in weight_bits.values()):
        result = write_qdq(args.model, ranges, target=args.target, weight_bits=weight_bits)
    for name, why in floats.items():
        if name in result.float_tensors:
            result.float_tensors[name] = why
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    result.save(args.qdq, force=force, inputs=[args.model, args.stats])
    return result


def register(sub) -> None:
    p = add_command(sub, "bits", cmd_bits, STATS, ALGORITHM, OUTPUT)
    p.add_argument("model", nargs="?", help="the ONNX model (needed for --qdq; otherwise for the record)")
    p.add_argument("--target-sqnr", type=DECIBELS, required=True, metavar="DB", help="per-tensor SQNR to meet, in dB")
    p.add_argument("--bits", default="4,6,8,16", help="candidate widths, smallest first (default %(default)s)")
    p.add_argument("--qdq", metavar="OUT.onnx",
                   help="also write MODEL as a Q/DQ model with these widths: each activation at the smallest width "
                        "the --target stores that is at least its choice (threshold recomputed there), float where "
                        "none is")
    p.add_argument("--target", choices=["tensorrt", "onnxruntime"], default="onnxruntime",
                   help="for --qdq: tensorrt stores int8 only (wider choices stay float); onnxruntime stores "
                        "int4/int8/int16 activations (uint for one-sided tensors) and int4/int8 weights, chosen by "
                        "the same target, at opset 21 (default %(default)s)")
