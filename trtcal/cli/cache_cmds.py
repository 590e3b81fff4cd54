"""``trtcal cache ...``: inspect, diff, lint, edit, restamp and convert calibration caches."""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter

from trtcal.cache import checks as cache_checks
from trtcal.cache import convert as cache_io
from trtcal.cache import edit as cache_edit
from trtcal.cache import format as trtcache
from trtcal.cache.format import CalibrationCache, format_version
from trtcal.cache.provenance import read_sidecar, sidecar_path
from trtcal.cli.args.numbers import RTOL
from trtcal.cli.args.output import OUTPUT_FILE_HELP, OutputArgs
from trtcal.cli.common import add_command, fmt_float, json_float, print_json
from trtcal.cli.table import print_table, table
from trtcal.core import fileio
from trtcal.core.errors import TrtcalError

#: ``inspect``, ``diff`` and ``lint`` print; ``edit``, ``restamp`` and ``convert`` write a file.
PRINTS = OutputArgs(force=False)
WRITES = OutputArgs(OUTPUT_FILE_HELP, required=True, metavar="OUT")
WRITES_TEXT = OutputArgs(OUTPUT_FILE_HELP, required=True, metavar="OUT", json=False)

# --------------------------------------------------------------------------- inspect


def header_summary(cache: CalibrationCache) -> str:
    if cache.is_legacy_header:
        return f"legacy header {cache.header!r} (TensorRT 3/4 era)"
    if cache.header_text is None:
        return "no header (TensorRT version and algorithm unknown)"
    return f"TensorRT {format_version(cache.version)} (header {cache.version_number}), {cache.algorithm}"


def provenance_findings(path) -> list[cache_checks.Finding]:
    """Findings from the ``.trtcal.json`` sidecar trtcal writes beside its caches."""
    meta = read_sidecar(path)
    if meta and meta.get("fake_data"):
        return [cache_checks.Finding("fake-data", cache_checks.ERROR,
                                     f"calibrated on random data ({meta.get('data', '?')}): the ranges are meaningless "
                                     f"(see {sidecar_path(path).name})")]
    return []


def cmd_inspect(args: argparse.Namespace) -> int:
    """table of every tensor's range and a summary of suspicious entries

    Show the header, every tensor's scale, amax and hex, and flag zero, inf, NaN, denormal,
    negative, huge and duplicate entries."""
    output = PRINTS.parse(args)
    cache = cache_io.read_any(args.file, args.source_format)
    findings = cache_checks.check_cache(cache) + provenance_findings(args.file)
    if output.json:
        print_json({
            "file": str(args.file),
            "header": cache.header_text,
            "trt_version": None if cache.version is None else format_version(cache.version),
            "header_number": cache.version_number,
            "algorithm": cache.algorithm,
            "count": len(cache),
            "entries": [{"name": e.name, "scale": json_float(e.scale), "amax": json_float(e.amax), "hex": e.hex}
                        for e in cache.entries],
            "suspicious": dict(Counter(f.code for f in findings)),
            "findings": [f.to_dict() for f in findings],
        })
        return 0
    print(f"{args.file}: {header_summary(cache)}, {len(cache)} tensors")
    if not args.summary and len(cache):
        flag = {f.tensor: f.code for f in findings if f.tensor is not None}
        print_table(("amax", "scale", "hex", "tensor"),
                    [(fmt_float(e.amax), fmt_float(e.scale), e.hex,
                      e.name + (f"   <- {flag[e.name]}" if e.name in flag else "")) for e in cache.entries], ">>><")
    counts = Counter(f.code for f in findings)
    if counts:
        print("suspicious: " + ", ".join(f"{code} {n}" for code, n in sorted(counts.items())))
        for f in findings:
            if f.tensor is None:
                print(f"  {f.severity}: {f.message}")
    else:
        print("suspicious: none")
    return 0


# --------------------------------------------------------------------------- diff


def _agree(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return False
    if a == b:
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(a), abs(b))


def _ratio(a: float, b: float) -> float:
    if a == b:
        return 1.0
    if a == 0:
        return math.inf
    with_nan = math.isnan(a) or math.isnan(b)
    return math.nan if with_nan else b / a


def diff_caches(a: CalibrationCache, b: CalibrationCache, rtol: float) -> dict:
    """Per-tensor comparison of two caches (by name; the last entry of a duplicated name)."""
    amax_a, amax_b = a.amaxes(), b.amaxes()
    rows = []
    for name, va in amax_a.items():
        if name in amax_b:
            vb = amax_b[name]
            same_bits = a.entry(name).bits == b.entry(name).bits  # identical entries agree, NaN included
            rows.append({"tensor": name, "amax_a": va, "amax_b": vb, "ratio": 1.0 if same_bits else _ratio(va, vb),
                         "agree": same_bits or _agree(va, vb, rtol)})

    def badness(row):
        r = row["ratio"]
        return math.inf if not math.isfinite(r) or r <= 0 else abs(math.log(r))

    rows.sort(key=badness, reverse=True)
    return {
        "rtol": rtol,
        "header_a": a.header_text,
        "header_b": b.header_text,
        "common": len(rows),
        "differ": sum(not r["agree"] for r in rows),
        "only_a": [n for n in amax_a if n not in amax_b],
        "only_b": [n for n in amax_b if n not in amax_a],
        "rows": rows,
    }


def cmd_diff(args: argparse.Namespace) -> int:
    """compare two caches tensor by tensor (exit 1 when they differ)

    Per-tensor amax ratio B/A, tensors only in one cache. Exit status 0 when every common
    tensor agrees within --rtol and no tensor is missing, else 1."""
    output = PRINTS.parse(args)
    if not (args.rtol >= 0 and math.isfinite(args.rtol)):
        raise TrtcalError(f"--rtol {args.rtol}: must be a finite number >= 0")
    a = cache_io.read_any(args.a)
    b = cache_io.read_any(args.b)
    d = diff_caches(a, b, args.rtol)
    same = d["differ"] == 0 and not d["only_a"] and not d["only_b"]
    if output.json:
        d["rows"] = [{**r, "amax_a": json_float(r["amax_a"]), "amax_b": json_float(r["amax_b"]),
                      "ratio": json_float(r["ratio"])} for r in d["rows"]]
        print_json({"a": str(args.a), "b": str(args.b), "same": same, **d})
        return 0 if same else 1
    print(f"A: {args.a}: {header_summary(a)}, {len(a)} tensors")
    print(f"B: {args.b}: {header_summary(b)}, {len(b)} tensors")
    if d["header_a"] != d["header_b"]:
        print(f"headers differ: {d['header_a']!r} vs {d['header_b']!r}")
    shown = [r for r in d["rows"] if args.all or not r["agree"]]
    if shown:
        print_table(("amax A", "amax B", "B/A", "tensor"),
                    [(fmt_float(r["amax_a"]), fmt_float(r["amax_b"]), fmt_float(r["ratio"]),
                      r["tensor"] + ("" if r["agree"] else "   <- differs")) for r in shown], ">>><")
    for side, key in (("A", "only_a"), ("B", "only_b")):
        for name in d[key]:
            print(f"only in {side}: {name}")
    print(f"{d['common']} common tensors, {d['differ']} differ beyond rtol {args.rtol:g}, "
          f"{len(d['only_a'])} only in A, {len(d['only_b'])} only in B: {'same' if same else 'DIFFERENT'}")
    return 0 if same else 1


# --------------------------------------------------------------------------- lint


def cmd_lint(args: argparse.Namespace) -> int:
    """find problems in a cache, against a model and a TensorRT release

    Everything inspect flags, plus (with --model) names the model lacks and model tensors
    without a range, and (with --trt-version) a header that release would ignore. Exit status 1
    on any error or warning."""
    output = PRINTS.parse(args)
    cache = cache_io.read_any(args.file)
    histograms = None
    if args.stats is not None:
        from trtcal.core.stats import load_stats

        histograms, _ = load_stats(args.stats)
    findings = cache_checks.check_calibration(cache, histograms) + provenance_findings(args.file)
    if args.trt_version is not None:
        findings += cache_checks.check_header_for(cache, trtcache.parse_version(args.trt_version), args.algorithm)
    if args.model is not None:
        from trtcal.onnx.model import load_model, model_tensors

        tensors = model_tensors(load_model(args.model))
        others = tensors.all_names() - set(tensors.activations)
        findings += cache_checks.check_against_model(cache, tensors.activations, others)
    bad = cache_checks.failing(findings)
    if output.json:
        print_json({"file": str(args.file), "ok": not bad, "counts": dict(Counter(f.code for f in findings)),
                    "findings": [f.to_dict() for f in findings]})
        return 1 if bad else 0
    infos = [f for f in findings if f not in bad]
    for f in bad:
        print(f"{f.severity}: {f.tensor + ': ' if f.tensor else ''}{f.message}")
    if infos and args.verbose:
        for f in infos:
            print(f"info: {f.tensor + ': ' if f.tensor else ''}{f.message}")
    elif infos:
        print(f"info: {len(infos)} names not in the model are TensorRT-internal (expected; --verbose lists them)")
    counts = Counter(f.code for f in bad)
    summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "no findings"
    print(f"{args.file}: {len(cache)} tensors: {summary}")
    return 1 if bad else 0


# --------------------------------------------------------------------------- edit


class _OrderedOp(argparse.Action):
    """Collect --set/--scale/--drop into one list, in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        ops = getattr(namespace, "ops", None) or []
        ops.append((self.dest, values))
        namespace.ops = ops


def cmd_edit(args: argparse.Namespace) -> int:
    """set, scale or drop ranges (by name or glob) into a new cache

    Apply --set/--scale/--drop in the order given and write a new cache. Patterns are globs on
    tensor names (an exact name always matches itself); a pattern matching nothing is an error."""
    from trtcal.cache import overrides as ovr
    from trtcal.cache.provenance import write_sidecar

    output = WRITES.parse(args)
    ops = [cache_edit.parse_op(kind, text) for kind, text in (args.ops or [])]
    if not ops and not args.overrides:
        raise TrtcalError("cache edit: nothing to do; give --set, --scale, --drop or --overrides")
    fileio.check_output(output.path, force=output.force, inputs=[args.file])
    entries = ovr.read(args.overrides) if args.overrides else []
    if entries:
        fileio.check_output(sidecar_path(output.path), force=output.force, inputs=[args.file])
    cache = cache_io.read_any(args.file, "trt")
    edited, changes = cache_edit.edit(cache, ops, allow_new=args.allow_new)
    applied, warnings = {}, []
    if entries:
        before = edited
        edited, applied, warnings = ovr.apply_to_cache(edited, entries, allow_new=args.allow_new)
        changes += [cache_edit.Change(name, "override", before.amax(name) if name in before else None,
                                      edited.amax(name)) for name in applied]
    edited.write(output.path, force=output.force, inputs=[args.file])
    if entries:  # the reasons travel beside the cache (a TensorRT cache has no room for them)
        meta = dict(read_sidecar(args.file) or {})
        meta.pop("trtcal_version", None)
        meta["overrides"] = {"file": str(args.overrides), "applied": [a.to_dict() for a in applied.values()]}
        write_sidecar(output.path, meta, force=output.force)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if output.json:
        print_json({"output": str(output.path), "changes": [
            {"tensor": c.tensor, "op": c.op, "old_amax": json_float(c.old_amax), "new_amax": json_float(c.new_amax)}
            for c in changes], "overrides": [a.to_dict() for a in applied.values()], "warnings": warnings})
        return 0
    lines = table(("change", "amax", "", "new amax", "tensor"),
                  [(c.op, fmt_float(c.old_amax), "->", fmt_float(c.new_amax),
                    c.tensor + (f"  ({applied[c.tensor].override.reason})" if c.op == "override" else ""))
                   for c in changes], ">><<<")
    for line in lines[1:]:  # no header: each line reads as a sentence
        print(line)
    print(f"wrote {output.path}: {len(changes)} changes, {len(edited)} tensors")
    return 0


# --------------------------------------------------------------------------- restamp


def cmd_restamp(args: argparse.Namespace) -> int:
    """rewrite the header for another TensorRT release

    TensorRT ignores a cache stamped for another release or calibrator. Rewrite the header
    (the ranges are kept bit for bit)."""
    output = WRITES_TEXT.parse(args)
    version = trtcache.parse_version(args.trt_version)
    fileio.check_output(output.path, force=output.force, inputs=[args.file])
    cache = cache_io.read_any(args.file, "trt")
    new = cache.restamped(version, args.algorithm)
    new.write(output.path, force=output.force, inputs=[args.file])
    old = cache.header if cache.header is not None else cache.header_line
    print(f"wrote {output.path}: header {old!r} -> {new.header_line!r}, {len(new)} tensors unchanged")
    if cache.algorithm and args.algorithm and args.algorithm != cache.algorithm:
        print(f"note: the ranges were computed by {cache.algorithm}; the header now claims {args.algorithm}")
    return 0


# --------------------------------------------------------------------------- convert


def cmd_convert(args: argparse.Namespace) -> int:
    """convert between TensorRT caches, JSON and ONNX Runtime tables

    Formats: trt (TensorRT cache), json (trtcal's JSON), ort-table (ONNX Runtime
    calibration.cache), ort-json (calibration.json), ort-flatbuffers (calibration.flatbuffers,
    read by the TensorRT EP)."""
    output = WRITES_TEXT.parse(args)
    version = trtcache.parse_version(args.trt_version)
    fileio.check_output(output.path, force=output.force, inputs=[args.file])
    data = fileio.read_bytes(args.file, what="calibration cache")
    src = cache_io.detect_format(data, str(args.file)) if args.source_format == "auto" else args.source_format
    out = cache_io.convert(data, args.to, source=str(args.file), fmt=src, version=version, algorithm=args.algorithm)
    fileio.atomic_write(output.path, out, force=output.force, inputs=[args.file])
    print(f"wrote {output.path}: {src} -> {args.to}")
    return 0


# --------------------------------------------------------------------------- registration


def register(sub) -> None:
    group = sub.add_parser("cache", help="inspect, diff, lint, edit, restamp and convert calibration caches",
                           description="Work with TensorRT calibration caches (and ONNX Runtime's TensorRT-EP tables).")
    cmds = group.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    cmds.required = True

    p = add_command(cmds, "inspect", cmd_inspect, PRINTS)
    p.add_argument("file", help="calibration cache (any format trtcal reads)")
    p.add_argument("--from", dest="source_format", default="auto", choices=("auto",) + cache_io.FORMATS,
                   help="input format (default: detected)")
    p.add_argument("--summary", action="store_true", help="only the header and the suspicious entries")

    p = add_command(cmds, "diff", cmd_diff, PRINTS)
    p.add_argument("a", help="first cache")
    p.add_argument("b", help="second cache")
    p.add_argument("--rtol", type=RTOL, default=1e-6, help="relative tolerance on amax (default 1e-6)")
    p.add_argument("--all", action="store_true", help="list agreeing tensors too")

    p = add_command(cmds, "lint", cmd_lint, PRINTS)
    p.add_argument("file", help="calibration cache")
    p.add_argument("--model", help="ONNX model the cache is meant for")
    p.add_argument("--trt-version", help="TensorRT release that will read the cache, e.g. 10.9.0")
    p.add_argument("--algorithm", choices=trtcache.KNOWN_ALGORITHMS,
                   help="calibrator that will read the cache (with --trt-version)")
    p.add_argument("--stats", help="statistics (.npz) of the tensors (trtcal calibrate --stats): also check each "
                   "range against its data (an amax below every value, NaN/Inf), as trtcal calibrate reports")
    p.add_argument("-v", "--verbose", action="store_true", help="also list informational findings")

    p = add_command(cmds, "edit", cmd_edit, WRITES)
    p.add_argument("file", help="input cache (never modified)")
    p.add_argument("--set", dest="set", action=_OrderedOp, metavar="NAME=AMAX", help="set a tensor's amax")
    p.add_argument("--scale", dest="scale", action=_OrderedOp, metavar="PATTERN=FACTOR",
                   help="multiply the amax of matching tensors")
    p.add_argument("--drop", dest="drop", action=_OrderedOp, metavar="PATTERN", help="remove matching tensors")
    p.add_argument("--overrides", metavar="FILE", help="hand-set ranges (YAML or JSON, see docs/overrides.md), "
                   "applied after --set/--scale/--drop; their reasons go to OUT's .trtcal.json")
    p.add_argument("--allow-new", action="store_true", help="let --set (and exact-name overrides) add a tensor the "
                   "cache lacks")
    p.set_defaults(ops=None)

    p = add_command(cmds, "restamp", cmd_restamp, WRITES_TEXT)
    p.add_argument("file", help="input cache (never modified)")
    p.add_argument("--trt-version", required=True, help="target TensorRT release, e.g. 10.9.0 or 8.6.1")
    p.add_argument("--algorithm", choices=trtcache.KNOWN_ALGORITHMS, help="calibrator name (default: keep)")

    p = add_command(cmds, "convert", cmd_convert, WRITES_TEXT)
    p.add_argument("file", help="input file (never modified)")
    p.add_argument("--to", required=True, choices=cache_io.FORMATS, help="output format")
    p.add_argument("--from", dest="source_format", default="auto", choices=("auto",) + cache_io.FORMATS,
                   help="input format (default: detected)")
    p.add_argument("--trt-version", default=format_version(trtcache.DEFAULT_TRT_VERSION),
                   help="header version when the input has none (default %(default)s)")
    p.add_argument("--algorithm", default="EntropyCalibration2", choices=trtcache.KNOWN_ALGORITHMS,
                   help="header algorithm when the input has none (default %(default)s)")
