"""Compare offloading methods in the simulator on the same seeded episodes.

Runs every method over every setting (#CVs x #SVs x V) for --seeds episodes each and writes
OUT/slots.csv (per slot), OUT/summary.json (mean completion time with 95% CI, queue backlogs),
OUT/skipped.json, OUT/config.json and PNG plots. Methods: local, offload, random, greedy, ga,
neurosurgeon, p2-optimal, best-known, lower-bound (and any registered in policy/methods/registry.py). The scenario is a preset
(--preset paper|calibrated) with --set KEY=VALUE overrides (--show-scenario lists them).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 3,5,7") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must list non-negative integers")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated numbers, e.g. 10,50,150") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must list non-negative numbers")
    return values


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--methods",
        default="lower-bound,best-known,p2-optimal,ga,neurosurgeon,greedy,random,local,offload",
        help="comma-separated methods (default: the two references and every baseline)",
    )
    p.add_argument(
        "--cvs", type=_ints, default=None, metavar="N[,N...]", help="numbers of client vehicles (default: the preset's)"
    )
    p.add_argument(
        "--svs",
        type=_ints,
        default=None,
        metavar="N[,N...]",
        help="numbers of service vehicles (default: the preset's)",
    )
    p.add_argument(
        "--v", type=_floats, default=None, metavar="V[,V...]", help="Lyapunov trade-off values (default: the preset's)"
    )
    p.add_argument("--seeds", type=int, default=10, help="episodes (seeds) per method and setting")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode e uses child e of SeedSequence(seed)")
    p.add_argument(
        "--grid",
        choices=["product", "sweeps"],
        default="product",
        help="product: every (cvs, svs, v); sweeps: vary one at a time around 5 CVs, 5 SVs, V = 10",
    )
    p.add_argument("--preset", default="paper", help="scenario preset: paper, calibrated, demo or overload")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario setting")
    p.add_argument("--vehicle-profiles", type=Path, metavar="DIR", help="profiles measured on a vehicle device")
    p.add_argument("--rsu-profiles", type=Path, metavar="DIR", help="profiles measured on the RSU device")
    p.add_argument(
        "--method-opt", action="append", default=[], metavar="METHOD.KEY=VALUE", help="e.g. ga.population=80"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=METHOD[:KEY=VALUE[;KEY=VALUE]]",
        help="a method under another name with its own options, usable in --methods, e.g. ga-250=ga:budget=250",
    )
    p.add_argument("--slots", type=int, default=None, metavar="T", help="episode length in slots (= --set slots=T)")
    p.add_argument(
        "--charge-decision",
        action="store_true",
        help="decide per environment and add each decision's measured time to the completion of the tasks it decided "
        "(off by default: the paper's eq 17 charges no decision time)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), metavar="DIR", help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--show-scenario", action="store_true", help="print the resolved scenario settings and exit")
    p.add_argument(
        "--rescore",
        type=Path,
        metavar="DIR",
        help="recompute the backlog statistics (means, slope, growth mark) of an earlier evaluation in DIR from its "
        "slots.csv with this version's definitions, print its table and exit",
    )


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    from tqdm import tqdm

    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.policy.evaluate import base_setting, format_summary, plot, settings_grid, sweep
    from splitrt.policy.methods.registry import METHODS, make_method, parse_method_options
    from splitrt.policy.sim import scenario as config
    from splitrt.tools.cli.paths import output_dir

    if args.rescore:
        from splitrt.policy.evaluate import rescore

        if not (args.rescore / "summary.json").is_file() or not (args.rescore / "slots.csv").is_file():
            raise SplitrtError(f"--rescore {args.rescore}: no summary.json and slots.csv there")
        print(format_summary(rescore(args.rescore)))
        return 0
    overrides = config.parse_overrides(args.set)
    if args.slots is not None:
        if args.slots < 1:
            raise SplitrtError(f"--slots must be >= 1, got {args.slots}")
        overrides["slots"] = args.slots
    if bool(args.vehicle_profiles) != bool(args.rsu_profiles):
        raise SplitrtError("--vehicle-profiles and --rsu-profiles go together")
    if args.vehicle_profiles:
        base = config.calibrated_scenario(args.vehicle_profiles, args.rsu_profiles, paper_ratios=False, **overrides)
    else:
        base = config.preset(args.preset, **overrides)
    # Unset sweeps take the preset's own values (demo: 3 CVs, 2 SVs).
    args.cvs = args.cvs or [base.n_cvs]
    args.svs = args.svs or [base.n_svs]
    args.v = args.v or [base.v]
    if args.show_scenario:
        print(config.describe(base))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from splitrt.policy.methods.registry import RENAMED, parse_variants

    variants = parse_variants(args.variant)
    unknown = [m for m in methods if m not in METHODS and m not in RENAMED and m not in variants]
    if unknown:
        raise SplitrtError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join([*METHODS, *variants])}")
    options = parse_method_options(args.method_opt)
    stray = [m for m in options if m not in methods]
    if stray:
        raise SplitrtError(f"--method-opt names {', '.join(stray)}, which is not in --methods")
    for label, (_, opts) in variants.items():
        options[label] = {**opts, **options.get(label, {})}
    for name in methods:  # options are checked now, not after the first method has run
        make_method(variants.get(name, (name, {}))[0], options.get(name))
    if args.seeds < 1:
        raise SplitrtError(f"--seeds must be >= 1, got {args.seeds}")
    if min(args.cvs) < 1:
        raise SplitrtError(f"--cvs must be >= 1, got {args.cvs}")
    settings = settings_grid(args.cvs, args.svs, args.v, args.grid)
    for s in settings:  # validate every setting before running anything
        base.replace(n_cvs=s.cvs, n_svs=s.svs, v=s.v)

    output_dir(args.out)
    (args.out / "config.json").write_text(
        json.dumps(
            {
                "scenario": base.to_dict(),
                "methods": methods,
                "method_options": options,
                "settings": [s.__dict__ for s in settings],
                "seeds": args.seeds,
                "seed": args.seed,
                "grid": args.grid,
                "variants": {k: {"method": m, "options": o} for k, (m, o) in variants.items()},
                "charge_decision": args.charge_decision,
            },
            indent=1,
        )
        + "\n"
    )
    bar = tqdm(
        total=len(settings) * len(methods) * base.slots, unit="slot", desc="evaluate", file=sys.stderr, disable=None
    )  # disable=None: no bar when stderr is not a terminal (logs, pipes)

    def progress(slots: int, label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(slots)

    try:
        summary, skipped, curves = sweep(
            base,
            methods,
            settings,
            args.seeds,
            args.seed,
            args.out,
            method_options=options,
            progress=progress,
            charge_decision=args.charge_decision,
            variants={k: m for k, (m, _) in variants.items()},
        )
    finally:
        bar.close()
    print(format_summary(summary))
    (args.out / "summary.md").write_text(format_summary(summary, markdown=True))
    for s in skipped:
        print(f"skipped {s['method']} cvs={s['cvs']} svs={s['svs']} V={s['v']:g}: {s['reason']}")
    if not args.no_plots and summary:
        for path in plot(summary, curves, base_setting(args.cvs, args.svs, args.v), args.out, base.slot_s):
            print(f"plot {path}")
    print(f"{len(summary)} results in {args.out / 'summary.json'}, per-slot rows in {args.out / 'slots.csv'}")
    return 0
