"""``trtcal qdq``: an explicit-quantization (Q/DQ) ONNX model from a cache or statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtcal.cli.args.output import OUTPUT_FILE_HELP, OutputArgs
from trtcal.cli.args.qdq import QdqArgs
from trtcal.cli.args.ranges import RangesArgs, RangeSource
from trtcal.cli.common import add_command, fmt_float, print_json
from trtcal.cli.table import print_table
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

RANGES = RangesArgs()
QDQ = QdqArgs(excludes=True)
OUTPUT = OutputArgs(OUTPUT_FILE_HELP, required=True, metavar="OUT")


def vet_ranges(model, ranges, record, source: RangeSource, placement: dict) -> list[str]:
    """Refuse ranges that do not belong to ``model``: a provenance record (cache sidecar or
    statistics metadata) naming another model or random data, or ranges for under half of the
    activations the placement rules quantize (``placement``: :meth:`QdqArgs.placement`). With
    ``--ignore-provenance`` these are returned as warnings instead; otherwise a
    :class:`TrtcalError` says which, and how to go on."""
    from trtcal.onnx.qdq import range_coverage
    from trtcal.trt.provenance import cache_mismatches, file_sha256

    problems = cache_mismatches(record, model_sha256=file_sha256(model))
    covered, missing = range_coverage(model, ranges, **placement)
    wanted = len(covered) + len(missing)
    if wanted and 2 * len(covered) < wanted:
        problems.append(f"it has ranges for {len(covered)} of the {wanted} activations this model quantizes "
                        f"(none for {missing[0]!r}, ...): a cache of another model, or a partial one?")
    if not problems:
        return []
    if source.ignore_provenance:
        return [f"{source.path}: used although {p} (--ignore-provenance)" for p in problems]
    raise TrtcalError(f"{source.path}: {source.kind} not used: {'; '.join(problems)} (pass --ignore-provenance to use it "
                      "anyway)")


def apply_overrides(model_path, ranges, overrides_path, target: str):
    """``ranges`` (a cache or ``{name: Range}``) with an overrides file applied: ``({name: Range}, warnings)``.

    TensorRT is symmetric: every override becomes ``[-amax, amax]`` (asymmetric ones with a
    warning counting the codes lost). ONNX Runtime's target keeps a one-sided override ``[0, max]``
    (uint8 there); other asymmetric ones are symmetrized with the same warning.
    """
    from trtcal.cache import overrides as ovr
    from trtcal.cache.format import CalibrationCache
    from trtcal.core.ranges import Range, coerce, from_cache
    from trtcal.onnx.model import load_model, model_tensors

    entries = ovr.read(overrides_path)
    ranges = from_cache(ranges) if isinstance(ranges, CalibrationCache) else coerce(ranges)
    names = model_tensors(load_model(model_path)).activations
    keep_one_sided = target == "onnxruntime"
    symmetric_only = [e for e in entries if not (keep_one_sided and e.low == 0)]
    applied, warnings = ovr.resolve(symmetric_only, names, symmetric=True, target=str(model_path))
    one_sided, more = ovr.resolve([e for e in entries if e not in symmetric_only], names, symmetric=False,
                                  target=str(model_path)) if len(symmetric_only) < len(entries) else ({}, [])
    out = dict(ranges)
    for name, a in applied.items():
        out[name] = Range.symmetric(a.amax, source=f"override {a.override.index}")
    for name, a in one_sided.items():
        out[name] = Range(0.0, a.high, 8, f"override {a.override.index}")
    return out, warnings + more


def cmd_qdq(args: argparse.Namespace) -> int:
    """write a Q/DQ (explicit INT8) ONNX model from a cache or statistics

    Insert QuantizeLinear/DequantizeLinear by TensorRT's placement rules: the inputs of Conv,
    ConvTranspose, Gemm and MatMul (activations per tensor from the ranges, weights per output
    channel from the weights), the residual input of an Add after a quantized conv; biases and
    outputs stay in float. Tensors without a usable range stay in float and are listed. See
    docs/qdq.md."""
    from trtcal.onnx.qdq import CACHE_HAS_NO_SIGNS, write_qdq

    if not Path(args.model).is_file():  # say this before anything about the output
        raise TrtcalError(f"{args.model}: " + ("is a directory, expected an ONNX model file"
                                               if Path(args.model).is_dir() else "no such model file"))
    output = OUTPUT.parse(args)
    fileio.check_output(output.path, force=output.force, inputs=[args.model, args.cache or args.stats])
    source = RANGES.parse(args)
    ranges, record = source.load()
    placement = QDQ.placement(args)
    override_warnings: list[str] = []
    if source.overrides:
        ranges, override_warnings = apply_overrides(args.model, ranges, source.overrides, placement["target"])
    override_warnings += vet_ranges(args.model, ranges, record, source, placement)
    result = write_qdq(args.model, ranges, **QDQ.parse(args))
    if source.cache and placement["target"] == "onnxruntime" and CACHE_HAS_NO_SIGNS not in result.warnings:
        result.warnings.append(CACHE_HAS_NO_SIGNS)  # with --overrides the cache arrives as a dict
    for w in override_warnings:
        print(f"warning: {w}", file=sys.stderr)
    result.save(output.path, force=output.force, inputs=[args.model, source.path])
    if output.json:
        doc = result.to_dict()
        doc["output"] = output.path
        print_json(doc)
        return 0
    _print(result, output.path)
    return 0


def _print(result, output: str) -> None:
    acts, weights = result.activations, result.weights
    zp = "int8, zero point 0" if result.target == "tensorrt" else "int8/uint8, zero point 0"
    n = len(result.quantized_nodes)
    print(f"{result.target}: {n} node{'s' if n != 1 else ''} quantized ({zp}): "
          f"{len(acts)} activation{'s' if len(acts) != 1 else ''}, {len(weights)} weight tensor{'s' if len(weights) != 1 else ''}")
    rows = [(fmt_float(q.amax), fmt_float(q.scale), q.dtype, f"{q.name} -> {', '.join(q.consumers)}") for q in acts]
    for q in weights:
        where = f"per channel, axis {q.axis}, {q.channels} channels" if q.axis is not None else "per tensor"
        zero = f", {q.zero_channels} all-zero" if q.zero_channels else ""
        rows.append(("", "", q.dtype, f"{q.name} (weights, {where}{zero}) -> {', '.join(q.consumers)}"))
    print_table(("amax", "scale", "type", "tensor -> consumers"), rows, ">>><")
    if result.float_tensors:
        print(f"left in float: {len(result.float_tensors)} tensor(s)")
        for name, why in result.float_tensors.items():
            print(f"  {name}: {why}")
    if result.float_nodes:
        print(f"nodes in float: {len(result.float_nodes)}")
        for name, why in result.float_nodes.items():
            print(f"  {name}: {why}")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {output} (opset {result.opset})")


def register(sub) -> None:
    p = add_command(sub, "qdq", cmd_qdq, RANGES, QDQ, OUTPUT)
    p.add_argument("model", help="FP32 ONNX model (opset < 13 is converted to 13, or refused)")
