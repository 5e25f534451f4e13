"""Run the project's benchmarks; write JSON records and print a table.

Records: {"benchmark", "figure", "value", "unit", "params"}. Benchmarks: see `--list`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", metavar="NAME[,NAME...]", help="run only these benchmarks")
    p.add_argument("--out", type=Path, default=Path("bench/results.json"), metavar="FILE", help="JSON records")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("bench/work"),
        metavar="DIR",
        help="scratch directory (exports are kept there and reused)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that benchmarks run, figures mean little")
    p.add_argument("--models", default=None, help="comma-separated models for the segment benchmarks")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        metavar="S",
        help="length of the long-running benchmarks (overload: default 600 s, 20 s with --quick)",
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")


def main(args: argparse.Namespace) -> int:
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.tools.bench import run as bench
    from splitrt.tools.cli.paths import output_dir, output_file
    from splitrt.tools.processes import exit_on_sigterm

    if args.list:
        for name, target in bench.BENCHMARKS.items():
            print(f"{name:<20} {target}")
        return 0
    names = [n.strip() for group in (args.only or []) for n in group.split(",") if n.strip()] or None
    output_file(args.out)
    output_dir(args.work, "--work")
    if args.duration_s is not None and not args.duration_s > 0:
        raise SplitrtError(f"--duration-s must be positive seconds, got {args.duration_s}")
    ctx = bench.BenchContext(work=args.work, quick=args.quick, duration_s=args.duration_s)
    if args.models:
        ctx.models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    exit_on_sigterm()  # its servers and vehicles end with it (tools.processes)
    records = bench.run(names, ctx, out=args.out)
    print(bench.format_table(records))
    print(f"{len(records)} records written to {args.out}")
    return 0
