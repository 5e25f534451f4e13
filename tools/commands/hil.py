"""Run a scenario live (RSU, SVs, CVs as processes over emulated links) and compare it with the simulator.

For each method: the RSU, every SV and every CV start as separate `splitrt serve` / `splitrt
vehicle` processes (each in its own network namespace with per-slot tc rate shaping when run as
root, else over loopback), share a slot clock through the MQTT slot beacon, publish telemetry
to an embedded broker (or --broker), decide every task with the method (the ONNX policy for
mad2rl/pqmix, a baseline otherwise) and run it for real; the Lyapunov controller keeps the
books on the measured queues. Then the same scenario (same mobility, fading seed and device
profiles measured on this machine) runs in the simulator, and OUT gets summary.json, per-task
and per-slot records, PNG plots and report.md / report.html. The results table is printed at
the end. Everything started is stopped and every namespace removed, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: How each method decides on a live vehicle (edge_runtime.decision specs); learned methods use
#: their ONNX policy. Planners that need every CV's state at once run in the simulator only.
LIVE_DECIDERS = {"local": "local", "offload": "offload", "greedy": "greedy", "random": "random"}
LEARNED = ("mad2rl", "pqmix")
#: Warn when other processes already keep the CPUs this busy (percent) before the run.
OTHER_LOAD_WARN = 25.0
SIM_ONLY = {
    "ga": "a centralised per-slot planner (needs every CV's links and queues at once): simulator only",
    "oracle": "a centralised exhaustive planner: simulator only",
    "neurosurgeon": "needs every node's speed and the RSU's share on the vehicle: simulator only for now",
}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", help="scenario preset (demo, overload, paper, calibrated)")
    p.add_argument(
        "--methods",
        default="mad2rl,greedy,local,offload",
        help="comma-separated methods (live: mad2rl, pqmix, local, offload, greedy, random)",
    )
    p.add_argument("--slots", type=int, default=None, help="slots T (default: the preset's)")
    p.add_argument("--v", type=float, default=None, help="Lyapunov V (default: the preset's)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the episode (mobility, fading, speeds) and the policies"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario setting")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory (default runs/hil-PRESET)")
    p.add_argument("--exports", type=Path, default=Path("exports"), help="exports (made and profiled if missing)")
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="DIR",
        help="a trained policy directory (policy.json names its method); default: the shipped one that fits",
    )
    p.add_argument("--broker", default=None, metavar="mqtt://HOST:PORT", help="external MQTT broker (loopback links)")
    p.add_argument("--broker-kind", choices=["auto", "mosquitto", "amqtt"], default="auto", help="embedded broker")
    p.add_argument("--no-netns", action="store_true", help="plain loopback even as root (no link emulation)")
    p.add_argument(
        "--keep-profiles",
        action="store_true",
        help="reuse the exports' profile.json instead of measuring them again (this machine's speed drifts)",
    )
    p.add_argument(
        "--max-cpu-load", type=float, default=None, help="refuse scenarios above this estimated CPU load (0.7)"
    )
    p.add_argument(
        "--speed-mode",
        choices=["pace", "cgroup", "stretch", "auto"],
        default="pace",
        help="device speed emulation of CVs and SVs (edge_runtime.speed; pace: exact profiled speed / factor)",
    )
    p.add_argument(
        "--discipline",
        choices=["containers", "sfq"],
        default="containers",
        help="edge nodes' service discipline (`splitrt serve --discipline`; containers = the paper's RSU)",
    )
    p.add_argument(
        "--headroom",
        type=float,
        default=None,
        help="the RSU runs at this machine's measured speed / HEADROOM (default 1.5 with pace, else 1: native)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@SLOT",
        help="fault injection for tests: broker-kill@N (kill the embedded broker at slot N), crash@N",
    )


def main(args: argparse.Namespace) -> int:
    import json
    import signal
    import sys

    from edge_runtime.errors import SplitrtError
    from policy.config import parse_overrides, preset
    from policy.learned import TRAINED_DIR, find_policy
    from policy.methods import MethodNotApplicable
    from tools.hil import report
    from tools.hil.live import Experiment, parse_faults
    from tools.hil.plan import MAX_CPU_LOAD, ensure_exports, make_plan
    from tools.hil.simulate import replay, simulate

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    overrides = parse_overrides(args.set)
    if args.slots is not None:
        overrides["slots"] = args.slots
    if args.v is not None:
        overrides["v"] = args.v
    base = preset(args.preset, **overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise SplitrtError("--methods names no method")
    faults = parse_faults(args.fault)
    out = args.out or Path("runs") / f"hil-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)

    policies = {}
    for d in args.policy:
        meta_path = Path(d) / "policy.json"
        try:
            policies[json.loads(meta_path.read_text())["method"]] = Path(d)
        except (OSError, ValueError, KeyError) as exc:
            raise SplitrtError(f"--policy {d}: cannot read the method from {meta_path}: {exc}") from None

    chosen: dict[str, tuple[str, dict[str, str]]] = {}
    skipped: dict[str, str] = {}
    for m in methods:
        if m in LIVE_DECIDERS:
            chosen[m] = (LIVE_DECIDERS[m], {})
        elif m in LEARNED:
            try:
                directory = policies.get(m) or find_policy(TRAINED_DIR, m, base)
            except MethodNotApplicable as exc:
                skipped[m] = str(exc)
                continue
            chosen[m] = (f"policy:{directory}", {"policy": str(directory), "match": "shape"})
        elif m in SIM_ONLY:
            skipped[m] = SIM_ONLY[m]
        else:
            raise SplitrtError(f"--methods: unknown method {m!r}; live: {', '.join([*LEARNED, *LIVE_DECIDERS])}")
    if not chosen:
        raise SplitrtError("none of --methods can run live: " + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    for m, why in skipped.items():
        say(f"skipping {m}: {why}")

    import psutil

    busy = psutil.cpu_percent(interval=1.0)  # before anything of ours runs: other users of the machine
    ensure_exports(base.types, args.exports, say, reprofile=not args.keep_profiles)
    headroom = args.headroom if args.headroom is not None else (1.5 if args.speed_mode == "pace" else 1.0)
    plan = make_plan(base, args.seed, args.exports, out / "profiles", headroom=headroom)
    warnings = plan.cpu.check(args.max_cpu_load if args.max_cpu_load is not None else MAX_CPU_LOAD)
    if busy > OTHER_LOAD_WARN:
        warnings.append(
            f"other processes used {busy:.0f}% of the CPUs just before the run: profiles and timings share the "
            "machine with them"
        )
    say(
        f"{args.preset}: {base.n_cvs} CVs, {base.n_svs} SVs, {plan.scenario.slots} slots of "
        f"{plan.scenario.slot_s * 1e3:.0f} ms; RSU {plan.rsu_flops_per_s / 1e9:.1f} GFLOP/s "
        f"(this machine / {plan.rsu_speed_factor:.2f}); "
        f"estimated CPU load {plan.cpu.load:.0%} of {plan.cpu.cpus} CPUs"
    )
    for w in warnings:
        say(f"warning: {w}")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    summary, lives, sims, reps = [], {}, {}, {}
    try:
        with Experiment(
            plan,
            out,
            broker_url=args.broker,
            netns=not args.no_netns,
            broker_kind=args.broker_kind,
            say=say,
            progress=not args.no_progress,
            faults=faults,
            speed_mode=args.speed_mode,
            discipline=args.discipline,
        ) as exp:
            say(f"links: {exp.link_note}; broker: {args.broker or exp.broker.kind + ' (embedded)'}")
            broker_text = args.broker or f"embedded {exp.broker.kind} broker"
            link_note = exp.link_note
            for k, (m, (decider, options)) in enumerate(chosen.items()):
                say(
                    f"[{k + 1}/{len(chosen)}] {m}: starting {1 + len(plan.svs)} edge nodes and {len(plan.cvs)} vehicles"
                )
                live = exp.run(m, decider)
                say(f"[{k + 1}/{len(chosen)}] {m}: simulating the same scenario")
                sim = simulate(plan, m, options)
                rep = replay(plan, m, live.records)
                report.write_sim(sim, live.out_dir / "sim_tasks.jsonl")
                report.write_sim(rep, live.out_dir / "replay_tasks.jsonl")
                (live.out_dir / "sim_slots.json").write_text(json.dumps(sim.slots) + "\n")
                lives[m], sims[m], reps[m] = live, sim, rep
                summary.append(report.method_summary(plan, live, sim, rep))
                report.write_summary(summary, out)
    finally:
        signal.signal(signal.SIGTERM, previous)
    plots = report.plot(plan, summary, lives, sims, reps, out)
    (out / "config.json").write_text(
        json.dumps(
            {
                "preset": args.preset,
                "scenario": plan.scenario.to_dict(),
                "seed": plan.seed,
                "methods": {m: d for m, (d, _) in chosen.items()},
                "skipped": skipped,
                "cvs": [{"id": c.id, "model": c.model, "speed_factor": c.speed_factor} for c in plan.cvs],
                "svs": [{"name": s.name, "speed_factor": s.speed_factor} for s in plan.svs],
                "cpu_estimate": {"load": plan.cpu.load, "detail": plan.cpu.detail},
                "cpu_busy_before_pct": busy,
                "links": link_note,
                "broker": broker_text,
            },
            indent=1,
        )
        + "\n"
    )
    md, html_path = report.write_report(
        plan, summary, plots, out, link_note=link_note, broker=broker_text, warnings=warnings, skipped=skipped
    )
    print(f"splitrt hil --preset {args.preset}: links {summary[0]['link_emulation']} ({link_note})")
    print(report.text_table(report.results_rows(summary)))
    print(f"report: {html_path} (and {md.name}), summary: {out / 'summary.json'}")
    return 0
