"""``trtcal fallback``: keep the few tensors that hurt the output most in float."""

from __future__ import annotations

import argparse
import sys

from trtcal.cli.common import (
    BATCH,
    COUNT,
    COUNT0,
    add_data_options,
    add_force,
    add_json,
    add_output_choice,
    add_preprocess,
    data_options,
    print_json,
)
from trtcal.cli.table import print_table


def cmd_fallback(args: argparse.Namespace) -> int:
    from trtcal.cli.qdq_cmds import _ranges, apply_overrides, vet_ranges, weight_options
    from trtcal.core import fileio
    from trtcal.core.progress import Progress
    from trtcal.onnx.model import load_model
    from trtcal.ort.runner import first_samples
    from trtcal.ort.sensitivity import analyse

    fileio.check_output(args.output, force=args.force, inputs=[args.model])
    if args.list:
        fileio.check_output(args.list, force=args.force, inputs=[args.model])
    load_model(args.model, fp32=True)  # the model's problems before the data's
    ranges, source, record = _ranges(args)
    if args.overrides:
        ranges, _ = apply_overrides(args.model, ranges, args.overrides, args.target)
    for warning in vet_ranges(args, ranges, source, record):
        print(f"warning: {warning}", file=sys.stderr)
    from trtcal.data.images import Preprocess

    preprocess = Preprocess.parse(args.preprocess) if args.preprocess else None
    batches = first_samples(args.model, args.data, samples=args.samples, batch_size=args.batch_size,
                            preprocess=preprocess, **data_options(args))
    weights = weight_options(args)
    with Progress(None, args.mode, enabled=False if args.quiet else None) as bar:
        sens, final = analyse(args.model, ranges, batches, max_float=args.max_float, target=args.target,
                              greedy=args.greedy, metric=args.metric, mode=args.mode, progress=bar,
                              score=args.score, classifiers=args.classifier,
                              batch_axes=data_options(args)["batch_axes"], **weights)
    final.save(args.output, force=args.force, inputs=[args.model])
    if args.list:
        text = "# layers to keep in float (trtcal build --fallback-list), most harmful first\n"
        text += "".join(f"{name}\n" for name in sens.layers)
        fileio.atomic_write(args.list, text, force=args.force)
    if args.json:
        doc = sens.to_dict()
        doc.update(output=str(args.output), list=args.list)
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
    print(f"wrote {args.output}" + (f" and {args.list}" if args.list else ""))
    return 0


def register(sub) -> None:
    from trtcal.cli.qdq_cmds import add_ranges_args
    from trtcal.ort.sensitivity import METRICS, MODES

    p = sub.add_parser("fallback", help="find the tensors whose quantization hurts most and keep them in float",
                       description="Sensitivity: for each quantized activation of the Q/DQ model, measure the "
                                   "error of the scored outputs (--score) against FP32 (--metric) with that tensor (and so its consuming "
                                   "layers) in float, or with it alone quantized (--mode); keep the --max-float "
                                   "most harmful in float. Writes the Q/DQ "
                                   "model and, with --list, the layers to keep in float for trtcal build "
                                   "--fallback-list (TensorRT 10 layer precisions).")
    p.add_argument("model", help="FP32 ONNX model")
    add_ranges_args(p)
    p.add_argument("--data", required=True, help="evaluation data (as for trtcal eval)")
    add_preprocess(p)
    add_data_options(p)
    add_output_choice(p)
    p.add_argument("--samples", type=COUNT, default=256, help="samples to measure on (default %(default)s)")
    p.add_argument("--batch-size", type=BATCH, help="samples per batch")
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
    p.add_argument("-o", "--output", required=True, help="the Q/DQ model with the fallback applied")
    p.add_argument("--list", help="also write the layers kept in float (one tensor name per line)")
    add_force(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_json(p)
    p.set_defaults(func=cmd_fallback, bits=None)
