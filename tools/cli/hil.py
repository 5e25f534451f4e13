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

--hosts FILE places the processes on other machines over SSH (an inventory TOML, see
docs/deploy.md): the same run, with each host checked, its files shipped and verified, its clock
measured, and its records brought back; the links are left as they are and the simulator takes
the rates the vehicles measured (--links tc shapes them per slot instead, as root on the hosts).

--report-only DIR runs nothing live: it rebuilds the report in DIR from the files an earlier run
(or a real deployment, in the same layout: tools/hil/rebuild.py) left there, recomputing the
simulated side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_METHODS = "mad2rl,greedy,local,offload"
#: Warn when other processes already keep the CPUs this busy (percent) before the run.
OTHER_LOAD_WARN = 25.0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", help="scenario preset (demo, overload, paper, calibrated)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (those with a live form in splitrt.policy.methods.registry: mad2rl, "
        f"pqmix, local, offload, greedy, random; default {DEFAULT_METHODS}; with --report-only: every method "
        "directory in DIR)",
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
        help="device speed emulation of CVs and SVs (splitrt.edge_runtime.compute.speed; pace: exact profiled speed / factor)",
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
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="FILE",
        help="the as-run model's overheads (OUT/calibration.json of an earlier run; = --set calibration_file=FILE); "
        "default: fitted from this run's own records (in-sample)",
    )
    p.add_argument(
        "--hosts",
        type=Path,
        default=None,
        metavar="FILE",
        help="run the nodes and vehicles on the machines of this inventory (TOML, docs/deploy.md) over SSH",
    )
    p.add_argument(
        "--max-clock-offset",
        type=float,
        default=None,
        metavar="S",
        help="--hosts: refuse a host whose clock is further off than this (seconds; default 5%% of the slot)",
    )
    p.add_argument("--ignore-clock", action="store_true", help="--hosts: go on when a clock offset is too large")
    p.add_argument(
        "--links",
        choices=["measured", "tc"],
        default=None,
        help="--hosts: measured (default: links as they are, the simulator takes the rates the vehicles measured) "
        "or tc (root on every host: the channel model's rate per slot shaped on the hosts' interfaces)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing live: rebuild summary.json, plots and report in DIR from the files an earlier run "
        "or a real deployment left there (DIR/config.json, DIR/<method>/records; see docs/live.md)",
    )
    p.add_argument(
        "--vehicle-profiles",
        type=Path,
        default=None,
        metavar="DIR",
        help="--report-only of a deployment without config.json: the scenario calibrated with the profiles "
        "measured on the vehicles (with --rsu-profiles; as in `splitrt evaluate`)",
    )
    p.add_argument("--rsu-profiles", type=Path, default=None, metavar="DIR", help="see --vehicle-profiles")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@SLOT",
        help="fault injection for tests: broker-kill@N (kill the embedded broker at slot N; it stays down), "
        "crash@N (the orchestrator raises), blackout@N:S (cv0's links down for slots N..N+S-1; needs "
        "namespaces); each window goes to OUT/<method>/faults.jsonl and the report",
    )


def main(args: argparse.Namespace) -> int:
    import signal

    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.policy.methods.learned import TRAINED_DIR, find_policy
    from splitrt.policy.methods.registry import METHODS, MethodNotApplicable, live_methods
    from splitrt.tools.hil import report
    from splitrt.tools.hil.plan import MAX_CPU_LOAD, ensure_exports, make_plan
    from splitrt.tools.hil.rebuild import write_config
    from splitrt.tools.hil.runner import Experiment, parse_faults

    if args.report_only is None and (args.vehicle_profiles or args.rsu_profiles):
        raise SplitrtError("--vehicle-profiles/--rsu-profiles go with --report-only (a live run profiles this machine)")
    base = _scenario(args)
    if args.calibration is not None or base.calibration_file:
        from splitrt.policy.sim.asrun import load_calibration

        load_calibration(args.calibration or base.calibration_file)  # a bad file stops us before anything runs
    policies = _policies(args.policy)
    if args.report_only is not None:
        if args.hosts is not None:
            raise SplitrtError("--hosts runs live; --report-only rebuilds a report: not both")
        return _report_only(args, base, policies)
    inventory = None
    if args.hosts is not None:
        from splitrt.tools.hosts.inventory import check_roles, load_inventory

        inventory = load_inventory(args.hosts)  # a bad inventory stops us before anything runs
        check_roles(
            inventory, ["rsu", *[f"sv{j + 1}" for j in range(base.n_svs)], *[f"cv{i}" for i in range(base.n_cvs)]]
        )
    elif args.max_clock_offset is not None or args.ignore_clock or args.links is not None:
        raise SplitrtError("--max-clock-offset/--ignore-clock/--links go with --hosts")
    methods = [m.strip() for m in (args.methods or DEFAULT_METHODS).split(",") if m.strip()]
    if not methods:
        raise SplitrtError("--methods names no method")
    faults = parse_faults(args.fault)
    out = (args.out or Path("runs") / f"hil-{args.preset}").resolve()  # absolute before it reaches a child
    out.mkdir(parents=True, exist_ok=True)

    chosen: dict[str, tuple[str, dict[str, str]]] = {}
    skipped: dict[str, str] = {}
    for m in methods:
        spec = METHODS.get(m)
        if spec is None:
            raise SplitrtError(f"--methods: unknown method {m!r}; live: {', '.join(live_methods())}")
        if spec.learned:
            try:
                directory = policies.get(m) or find_policy(TRAINED_DIR, m, base)
            except MethodNotApplicable as exc:
                skipped[m] = str(exc)
                continue
            chosen[m] = (f"policy:{directory}", {"policy": str(directory), "match": "shape"})
        elif spec.live is not None:
            chosen[m] = (spec.live, {})
        else:
            skipped[m] = f"{spec.sim_only}: simulator only"
    if not chosen:
        raise SplitrtError("none of --methods can run live: " + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    for m, why in skipped.items():
        _say(f"skipping {m}: {why}")

    import psutil

    busy = psutil.cpu_percent(interval=1.0)  # before anything of ours runs: other users of the machine
    args.exports = args.exports.resolve()
    ensure_exports(base.types, args.exports, _say, reprofile=not args.keep_profiles)
    headroom = args.headroom if args.headroom is not None else (1.5 if args.speed_mode == "pace" else 1.0)
    plan = make_plan(base, args.seed, args.exports, out / "profiles", headroom=headroom)
    warnings = plan.cpu.check(args.max_cpu_load if args.max_cpu_load is not None else MAX_CPU_LOAD)
    if busy > OTHER_LOAD_WARN:
        warnings.append(
            f"other processes used {busy:.0f}% of the CPUs just before the run: profiles and timings share the "
            "machine with them"
        )
    _say(
        f"{args.preset}: {base.n_cvs} CVs, {base.n_svs} SVs, {plan.scenario.slots} slots of "
        f"{plan.scenario.slot_s * 1e3:.0f} ms; RSU {plan.rsu_flops_per_s / 1e9:.1f} GFLOP/s "
        f"(this machine / {plan.rsu_speed_factor:.2f}); "
        f"estimated CPU load {plan.cpu.load:.0%} of {plan.cpu.cpus} CPUs"
    )
    for w in warnings:
        _say(f"warning: {w}")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    summary, lives, sims, reps, sim_plans = [], {}, {}, {}, {}
    hosts_rows = None
    common = dict(
        broker_url=args.broker,
        broker_kind=args.broker_kind,
        say=_say,
        progress=not args.no_progress,
        faults=faults,
        speed_mode=args.speed_mode,
        discipline=args.discipline,
    )
    if inventory is not None:
        from splitrt.tools.hosts.experiment import HostsExperiment

        experiment = HostsExperiment(
            plan,
            out,
            inventory,
            policies=[Path(o["policy"]) for _, o in chosen.values() if "policy" in o],
            max_clock_offset_s=args.max_clock_offset,
            ignore_clock=args.ignore_clock,
            links=args.links or "measured",
            **common,
        )
    else:
        experiment = Experiment(plan, out, netns=not args.no_netns, **common)
    try:
        with experiment as exp:
            _say(f"links: {exp.link_note}; broker: {args.broker or exp.broker.kind + ' (embedded)'}")
            broker_text = args.broker or f"embedded {exp.broker.kind} broker"
            link_note = exp.link_note
            # written before the first method runs, so `--report-only` can rebuild an interrupted run
            write_config(
                out,
                plan,
                preset=args.preset,
                methods={m: d for m, (d, _) in chosen.items()},
                skipped=skipped,
                links=link_note,
                broker=broker_text,
                cpu_busy_before_pct=busy,
                headroom=headroom,
                speed_mode=args.speed_mode,
                discipline=args.discipline,
            )
            for k, (m, (decider, options)) in enumerate(chosen.items()):
                _say(
                    f"[{k + 1}/{len(chosen)}] {m}: starting {1 + len(plan.svs)} edge nodes and {len(plan.cvs)} vehicles"
                )
                live = exp.run(m, decider)
                _say(f"[{k + 1}/{len(chosen)}] {m}: simulating the same scenario")
                sim_plans[m] = plan
                if exp.link_emulation == "measured":  # real hosts: the simulator takes the measured rates
                    from splitrt.tools.hosts.links import measured_plan

                    sim_plans[m] = measured_plan(plan, live.records)
                sims[m], reps[m], record = report.compare(sim_plans[m], live, options)
                lives[m] = live
                summary.append(record)
                report.write_summary(summary, out)
            if inventory is not None:
                exp._write_hosts()
                hosts_rows = exp.hosts_rows()
    finally:
        signal.signal(signal.SIGTERM, previous)
    _as_run(plan, summary, lives, {m: o for m, (_, o) in chosen.items()}, out, args.calibration, sim_plans)
    _finish(
        plan,
        summary,
        lives,
        sims,
        reps,
        out,
        link_note,
        broker_text,
        warnings,
        skipped,
        title=f"--preset {args.preset}",
        hosts=hosts_rows,
    )
    return 0


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _scenario(args: argparse.Namespace):
    """The preset (or the profile-calibrated scenario) with --set, --slots and --v applied."""
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.policy.sim.scenario import calibrated_scenario, parse_overrides, preset

    overrides = parse_overrides(args.set)
    if args.slots is not None:
        overrides["slots"] = args.slots
    if args.v is not None:
        overrides["v"] = args.v
    if args.calibration is not None:  # recorded in config.json, so --report-only finds it again
        overrides["calibration_file"] = str(Path(args.calibration).resolve())
    if bool(args.vehicle_profiles) != bool(args.rsu_profiles):
        raise SplitrtError("--vehicle-profiles and --rsu-profiles go together")
    if args.vehicle_profiles:
        return calibrated_scenario(args.vehicle_profiles, args.rsu_profiles, paper_ratios=False, **overrides)
    return preset(args.preset, **overrides)


def _policies(dirs: list[Path]) -> dict[str, Path]:
    """--policy DIR ... -> {method named in DIR/policy.json: DIR}."""
    import json

    from splitrt.edge_runtime.errors import SplitrtError

    policies = {}
    for d in dirs:
        meta_path = Path(d) / "policy.json"
        try:
            policies[json.loads(meta_path.read_text())["method"]] = Path(d).resolve()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SplitrtError(f"--policy {d}: cannot read the method from {meta_path}: {exc}") from None
    return policies


def _report_only(args: argparse.Namespace, base, policies: dict[str, Path]) -> int:
    """`--report-only DIR`: the report from DIR's files (tools/hil/rebuild.py); nothing runs live."""
    from splitrt.tools.hil import report
    from splitrt.tools.hil.rebuild import carry_over, load_run

    out = args.report_only
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    run = load_run(out, base=base, seed=args.seed, methods=methods, policies=policies)
    hosts = _read_hosts(out)
    summary, sims, reps, plans = [], {}, {}, {}
    for m, live in run.lives.items():
        _say(f"{m}: {len(live.records)} task records from {live.out_dir}; simulating the same scenario")
        plans[m] = run.plan
        if live.link_emulation == "measured":  # a multi-host run on unshaped links: the measured rates
            from splitrt.tools.hosts.links import measured_plan

            plans[m] = measured_plan(run.plan, live.records)
        sims[m], reps[m], record = report.compare(plans[m], live, run.options[m])
        summary.append(carry_over(record, run.previous.get(m)))
    report.write_summary(summary, out)
    _as_run(run.plan, summary, run.lives, run.options, out, args.calibration, plans)
    _finish(
        run.plan,
        summary,
        run.lives,
        sims,
        reps,
        out,
        run.link_note,
        run.broker,
        run.notes,
        run.skipped,
        title=f"--report-only {out}",
        source=f"{out} (report rebuilt from files; nothing ran live)",
        hosts=hosts,
    )
    return 0


def _read_hosts(out: Path):
    """The hosts rows of a multi-host run's OUT/hosts.json (None for a one-machine run)."""
    import json

    from splitrt.edge_runtime.errors import SplitrtError

    path = out / "hosts.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["hosts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SplitrtError(f"{path}: not a hosts file of a multi-host run ({exc})") from None


def _as_run(plan, summary, lives, options, out: Path, calibration: Path | None, plans=None) -> None:
    """The as-run model's columns of every method's record (summary.json rewritten), and this
    run's own calibration (OUT/calibration.json, fitted from its records). The overheads are
    ``calibration`` or the scenario's calibration_file when given, else this run's own fit."""
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.policy.sim.asrun import load_calibration
    from splitrt.tools.hil import report
    from splitrt.tools.hil.calibrate import write_calibration

    own = out / "calibration.json"
    given = calibration or (Path(plan.scenario.calibration_file) if plan.scenario.calibration_file else None)
    overheads = load_calibration(given) if given is not None else None  # before the own fit overwrites it
    try:
        fitted, path = write_calibration(own, plan, list(lives.values()), str(out), plans)
    except SplitrtError as exc:
        if overheads is None:
            _say(f"no as-run model: {exc}")
            return
        fitted, path = overheads, given
    if overheads is None or given.resolve() == own.resolve():
        overheads = overheads or fitted
        note = f"overheads fitted from this run's own records, {path} (in-sample)"
    else:
        note = f"overheads from {given} (fitted from another run's records)"
    for record in summary:
        m = record["method"]
        _say(f"{m}: the as-run model of the same scenario")
        *_, keys = report.compare_as_run((plans or {}).get(m, plan), lives[m], options.get(m), overheads, note)
        record.update(keys)
    report.write_summary(summary, out)


def _finish(
    plan, summary, lives, sims, reps, out, link_note, broker, warnings, skipped, *, title, source="", hosts=None
):
    """Plots, report.md / report.html and the results table (both paths)."""
    from splitrt.tools.hil import report

    plots = report.plot(plan, summary, lives, sims, reps, out)
    md, html_path = report.write_report(
        plan,
        summary,
        plots,
        out,
        link_note=link_note,
        broker=broker,
        warnings=warnings,
        skipped=skipped,
        source=source,
        hosts=hosts,
    )
    print(f"splitrt hil {title}: links {summary[0]['link_emulation']} ({link_note})")
    print(report.text_table(report.results_rows(summary)))
    print(f"report: {html_path} (and {md.name}), summary: {out / 'summary.json'}")
