"""``trtcal plot``: one tensor's histogram with every method's threshold, and the KL curve."""

from __future__ import annotations

import argparse

from trtcal.cli.common import add_force
from trtcal.core.errors import TrtcalError


def cmd_plot(args: argparse.Namespace) -> int:
    from trtcal.core import fileio, thresholds
    from trtcal.core.stats import load_stats
    from trtcal.report.plots import _pyplot, plot_tensor

    fileio.check_output(args.output, force=args.force, inputs=[args.stats])
    _pyplot()
    histograms, _ = load_stats(args.stats)
    hist = histograms.get(args.tensor)
    if hist is None:
        close = [n for n in histograms if args.tensor.lower() in n.lower()][:5]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TrtcalError(f"{args.stats}: no tensor {args.tensor!r}{hint}")
    methods = args.methods.split(",") if args.methods else ["entropy2", "minmax", "percentile", "mse", "aciq", "onesided"]
    unknown = [m for m in methods if m not in thresholds.METHODS]
    if unknown:
        raise TrtcalError(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(thresholds.METHODS)})")
    results = {m: thresholds.compute(m, hist) for m in methods}
    if args.chosen and args.chosen not in results:
        raise TrtcalError(f"--chosen {args.chosen}: not among --methods")
    plot_tensor(hist, results, args.output, chosen=args.chosen or methods[0], force=args.force)
    for m, r in results.items():
        print(f"{m:>10}: amax {r.amax:.6g}")
    print(f"wrote {args.output}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot one tensor's histogram with every method's threshold (PNG)",
                       description="Draw the |x| histogram of TENSOR from a statistics file (log counts) with the "
                                   "threshold of each method marked, and entropy2's KL curve over candidates. "
                                   "Needs the plot extra (matplotlib).")
    p.add_argument("tensor", help="tensor name (as in the statistics)")
    p.add_argument("--stats", required=True, help="statistics (.npz) from trtcal calibrate --stats")
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--chosen", help="the method to highlight (default: the first)")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    add_force(p)
    p.set_defaults(func=cmd_plot)
