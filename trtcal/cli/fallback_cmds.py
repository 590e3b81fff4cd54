"""``trtcal fallback``: keep the few tensors that hurt the output most in float."""

from __future__ import annotations

import argparse
import sys

from trtcal.cli.args.data import EVALUATION_DATA_HELP, DataArgs
from trtcal.cli.args.numbers import COUNT, COUNT0
from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.qdq import QdqArgs
from trtcal.cli.args.ranges import RangesArgs
from trtcal.cli.args.scoring import ScoringArgs
from trtcal.cli.common import add_command, print_json
from trtcal.cli.table import print_table

RANGES = RangesArgs()
QDQ = QdqArgs()
DATA = DataArgs(EVALUATION_DATA_HELP, required=True, batch_size_help="samples per batch", max_batches=False)
SCORING = ScoringArgs()
OUTPUT = OutputArgs("the Q/DQ model with the fallback applied", required=True, quiet=True)


def cmd_fallback(args: argparse.Namespace) -> int:
    """find the tensors whose quantization hurts most and keep them in float

    Sensitivity: for each quantized activation of the Q/DQ model, measure the error of the
    scored outputs (--score) against FP32 (--metric) with that tensor (and so its consuming
    layers) in float, or with it alone quantized (--mode); keep the --max-float most harmful in
    float. Writes the Q/DQ model and, with --list, the layers to keep in float for trtcal build
    --fallback-list (TensorRT 10 layer precisions)."""
    from trtcal.cli.qdq_cmds import apply_overrides, vet_ranges
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.onnx.model import load_model
    from trtcal.ort.runner import first_samples
    from trtcal.ort.sensitivity import analyse

    output = OUTPUT.parse(args)
    force = output.force
    fileio.check_output(output.path, force=force, inputs=[args.model])
    if args.list:
        fileio.check_output(args.list, force=force, inputs=[args.model])
    load_model(args.model, fp32=True)  # the model's problems before the data's
    source = RANGES.parse(args)
    ranges, record = source.load()
    placement = QDQ.placement(args)
    if source.overrides:
        ranges, _ = apply_overrides(args.model, ranges, source.overrides, placement["target"])
    for warning in vet_ranges(args.model, ranges, record, source, placement):
        print(f"warning: {warning}", file=sys.stderr)
    data = DATA.parse(args)
    batches = first_samples(args.model, samples=args.samples, **data)
    qdq = QDQ.parse(args)
    with Progress(None, args.mode, enabled=output.progress) as bar:
        sens, final = analyse(args.model, ranges, batches, max_float=args.max_float, greedy=args.greedy,
                              metric=args.metric, mode=args.mode, progress=bar, batch_axes=data["batch_axes"],
                              _whole_models=args.whole_models, **SCORING.parse(args), **qdq)
    final.save(output.path, force=force, inputs=[args.model])
    if args.list:
        text = "# layers to keep in float (trtcal build --fallback-list), most harmful first\n"
        text += "".join(f"{name}\n" for name in sens.layers)
        fileio.atomic_write(args.list, text, force=force)
    if output.json:
        doc = sens.to_dict()
        doc.update(output=str(output.path), list=args.list)
        print_json(doc)
        return 0
    measure = "KL divergence shrinks by, in dB" if sens.metric == "kl" else "output SQNR gain"
    if sens.mode == "one-at-a-time":
        measure += ", estimated from its error alone"
    over = f"{len(sens.outputs)} outputs' mean relative error" if len(sens.outputs) > 1 else next(iter(sens.outputs))
    print_table(("gain dB", f"tensor left in float ({measure}; output SQNR ({over}) {sens.baseline_db:.2f} dB with "
                            f"everything quantized, {sens.samples} samples)"),
                [(f"{gain:.2f}", name + ("  <- float" if name in sens.chosen else ""))
                 for name, gain in list(sens.gains.items())[:max(args.max_float, 10)]], "><")
    agree = ""
    if sens.agreement:
        agree = f"; top-1 agreement {100 * sens.agreement[0]:.2f}% -> {100 * sens.agreement[1]:.2f}%"
    if sens.kl:
        agree += f"; KL {sens.kl[0]:.2g} -> {sens.kl[1]:.2g} nats"
    print(f"{len(sens.chosen)} tensor(s) in float: output SQNR {sens.baseline_db:.2f} -> {sens.final_db:.2f} dB{agree}")
    if len(sens.outputs) > 1 or any(d.get("positions") and d["positions"] != sens.samples for d in sens.outputs.values()):
        for name, d in sens.outputs.items():
            line = f"  {name}: SQNR {d['sqnr_db'][0]:.2f} -> {d['sqnr_db'][1]:.2f} dB"
            if "top1_agreement" in d:
                per = " per position" if d["positions"] != sens.samples else ""
                line += (f", top-1 agreement{per} {100 * d['top1_agreement'][0]:.2f}% -> "
                         f"{100 * d['top1_agreement'][1]:.2f}%, KL {d['kl_mean'][0]:.2g} -> {d['kl_mean'][1]:.2g} nats")
            print(line)
    if sens.not_scored:
        print("not scored: " + ", ".join(f"{n} ({why})" for n, why in sens.not_scored.items()))
    print(f"wrote {output.path}" + (f" and {args.list}" if args.list else ""))
    return 0


def register(sub) -> None:
    from trtcal.ort.sensitivity import METRICS, MODES

    p = add_command(sub, "fallback", cmd_fallback, RANGES, QDQ, DATA, SCORING, OUTPUT)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--samples", type=COUNT, default=256, help="samples to measure on (default %(default)s)")
    p.add_argument("--max-float", type=COUNT0, default=5, help="tensors to keep in float at most (default %(default)s)")
    p.add_argument("--greedy", action="store_true", help="pick one tensor at a time, re-measuring with the ones "
                   "already picked (slower; catches interacting errors)")
    p.add_argument("--metric", choices=list(METRICS), default="sqnr",
                   help="what a tensor's fallback must improve: sqnr, the output SQNR (any model; several outputs: "
                        "their mean relative error), or kl, the mean KL divergence of the class-score outputs' "
                        "softmaxes (see --classifier; follows top-1 agreement more closely; default %(default)s)")
    p.add_argument("--mode", choices=list(MODES), default="leave-one-out",
                   help="leave-one-out: measure each tensor's fallback with everything else quantized; "
                        "one-at-a-time: quantize each tensor alone and estimate its fallback's gain from the "
                        "share of the error it causes (default %(default)s)")
    p.add_argument("--list", help="also write the layers kept in float (one tensor name per line)")
    # the way before issue 17, for bench/bench_fallback.py: write and run every candidate's whole Q/DQ model
    p.add_argument("--whole-models", action="store_true", help=argparse.SUPPRESS)
