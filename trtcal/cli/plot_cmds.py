"""``trtcal plot``: one tensor's histogram with every method's threshold, and the KL curve."""

from __future__ import annotations

import argparse

from trtcal.cli.args.output import OutputArgs
from trtcal.cli.args.stats import StatsArgs
from trtcal.cli.common import add_command
from trtcal.core.errors import TrtcalError

STATS = StatsArgs()
OUTPUT = OutputArgs("PNG to write", required=True, json=False)


def cmd_plot(args: argparse.Namespace) -> int:
    """plot one tensor's histogram with every method's threshold (PNG)

    Draw the |x| histogram of TENSOR from a statistics file (log counts) with the threshold of
    each method marked, and entropy2's KL curve over candidates. Needs the plot extra
    (matplotlib)."""
    from trtcal.core import fileio, thresholds
    from trtcal.core.stats import load_stats
    from trtcal.report.plots import _pyplot, plot_tensor

    stats, output = STATS.parse(args), OUTPUT.parse(args)
    fileio.check_output(output.path, force=output.force, inputs=[stats])
    _pyplot()
    histograms, _ = load_stats(stats)
    hist = histograms.get(args.tensor)
    if hist is None:
        close = [n for n in histograms if args.tensor.lower() in n.lower()][:5]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TrtcalError(f"{stats}: no tensor {args.tensor!r}{hint}")
    methods = args.methods.split(",") if args.methods else ["entropy2", "minmax", "percentile", "mse", "aciq", "onesided"]
    unknown = [m for m in methods if m not in thresholds.METHODS]
    if unknown:
        raise TrtcalError(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(thresholds.METHODS)})")
    results = {m: thresholds.compute(m, hist) for m in methods}
    if args.chosen and args.chosen not in results:
        raise TrtcalError(f"--chosen {args.chosen}: not among --methods")
    plot_tensor(hist, results, output.path, chosen=args.chosen or methods[0], force=output.force)
    for m, r in results.items():
        print(f"{m:>10}: amax {r.amax:.6g}")
    print(f"wrote {output.path}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "plot", cmd_plot, STATS, OUTPUT)
    p.add_argument("tensor", help="tensor name (as in the statistics)")
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--chosen", help="the method to highlight (default: the first)")
