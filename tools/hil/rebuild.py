"""Rebuild a `splitrt hil` report from files (``splitrt hil --report-only DIR``): nothing runs live.

`load_run` reads what an earlier ``splitrt hil --out DIR`` left, or what a real deployment
collected into the same layout, and returns the plan and every method's `LiveResult`; the
command then recomputes the simulated side (tools/hil/simulate.py, the same scenario and seed)
and writes summary.json, the plots and report.md / report.html into DIR, as a live run does.

Layout of DIR (``<m>`` = a method name of splitrt.policy.methods.registry, e.g. ``greedy`` or ``mad2rl``):

| path | what | needed |
|---|---|---|
| ``config.json`` | written by `splitrt hil` before its first method runs: ``scenario`` (every `Scenario` setting, already re-based on the machine it ran on), ``seed``, ``preset``, ``methods`` (method -> decider), ``links``, ``broker``, ``skipped``, ``cpu_estimate`` | no: without it the scenario is ``--preset`` / ``--vehicle-profiles`` + ``--rsu-profiles`` / ``--set`` / ``--slots`` / ``--v`` / ``--seed`` as given, taken as it stands (a deployment's own devices, not re-based), and the methods are the subdirectories |
| ``profiles/<model>/{manifest.json,profile.json}`` | the profiles the run's scenario was calibrated with | when config.json's scenario names profile directories (they are looked for here first, then at the recorded paths) |
| ``summary.json`` | an earlier summary: the figures only a live run knows (``wall_s``, measured ``cpu_load``, ``experiment``) are carried over | no |
| ``<m>/records.jsonl`` or ``<m>/<cv>.jsonl`` | task records (`splitrt vehicle --out`); vehicles are named ``cv0`` .. ``cv<N-1>`` and run the scenario's models in that order (CV i runs ``models[i % K]``), slots 0 .. T-1 | yes |
| ``<m>/<id>.stats.json`` | ``--stats`` of the vehicles (``cv0``..) and nodes (``rsu``, ``sv1``..) | no: generated-task counts (else one per record), missed slots, telemetry drops, pace misses |
| ``<m>/controller.jsonl`` | the Lyapunov controller's final per-slot records | no: else recomputed from ``<m>/telemetry/vehicle_state.jsonl`` and ``node_state.jsonl`` (`splitrt record --out DIR/<m>/telemetry`) and the task records; without either the measured queue columns are empty |
| ``<m>/tc_rates.jsonl`` | the per-slot rates `splitrt hil` set on the emulated links | present: ``link_emulation`` = ``tc`` |

``link_emulation`` is ``tc`` (rates were shaped), ``loopback`` (a `splitrt hil` run without
shaping), ``measured`` (a `splitrt hil --hosts` run without tc, its ``hosts.json`` present: the simulator takes
the rates the vehicles measured, tools/hosts/links.py) or ``real`` (no config.json: a deployment's
own links).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.experiment.controller import LyapunovController
from splitrt.edge_runtime.experiment.recorder import read_recorded
from splitrt.policy.sim.scenario import Scenario
from splitrt.tools.hil.plan import CpuEstimate, HilPlan, plan_for
from splitrt.tools.hil.runner import LiveResult, controller_setup, load_result

PROFILE_KEYS = ("manifest_dir", "vehicle_profile_dir", "rsu_profile_dir")


@dataclass
class RunFiles:
    """What `load_run` found: the plan, every method's live result and what the report needs."""

    plan: HilPlan
    lives: dict[str, LiveResult]
    options: dict[str, dict[str, str]]  # method -> simulator options (learned: the policy)
    link_note: str
    broker: str
    skipped: dict[str, str] = field(default_factory=dict)
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> earlier summary record
    notes: list[str] = field(default_factory=list)


def write_config(
    out: Path,
    plan: HilPlan,
    *,
    preset: str,
    methods: dict[str, str],
    skipped: dict[str, str],
    links: str,
    broker: str,
    **extra: Any,
) -> Path:
    """``out/config.json``: what a rebuild needs to replay the run's world (module docstring);
    ``methods`` maps each method to the vehicles' decider; ``extra`` (conditions) is kept as is."""
    import dataclasses

    data = {
        "preset": preset,
        "scenario": plan.scenario.to_dict(),
        "seed": plan.seed,
        "methods": methods,
        "skipped": skipped,
        "cvs": [{"id": c.id, "model": c.model, "speed_factor": c.speed_factor} for c in plan.cvs],
        "svs": [{"name": s.name, "speed_factor": s.speed_factor} for s in plan.svs],
        "cpu_estimate": dataclasses.asdict(plan.cpu),
        "links": links,
        "broker": broker,
        **extra,
    }
    path = out / "config.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitrtError(f"cannot read {what} {path}: {exc}") from None


def run_plan(run_dir: Path, config: dict[str, Any] | None, base: Scenario, seed: int) -> HilPlan:
    """The plan of the run: config.json's scenario (profiles from ``run_dir/profiles``), else ``base``."""
    if config is None:
        profile_dir = Path(base.vehicle_profile_dir or base.manifest_dir or ".")
        return plan_for(
            base, base, seed, profile_dir, profile_dir, rebased=False, reference_flops_per_s=base.rsu_flops_per_s
        )
    source = str(run_dir / "config.json")
    if not isinstance(config.get("scenario"), dict):
        raise SplitrtError(f"{source} has no scenario object")
    data = dict(config["scenario"])
    local = run_dir / "profiles"
    if any(data.get(k) for k in PROFILE_KEYS):
        if local.is_dir():
            data.update({k: str(local) for k in PROFILE_KEYS if data.get(k)})
        elif not all(Path(data[k]).is_dir() for k in PROFILE_KEYS if data.get(k)):
            raise SplitrtError(
                f"{local} is missing: the profiles {source}'s scenario was calibrated with "
                f"(recorded as {data.get('vehicle_profile_dir') or data.get('manifest_dir')}, not found either)"
            )
    scenario = Scenario.from_dict(data, source)
    profile_dir = Path(scenario.vehicle_profile_dir or scenario.manifest_dir or ".")
    try:
        seed = int(config.get("seed", seed))
    except (TypeError, ValueError):
        raise SplitrtError(f"{source}: seed {config.get('seed')!r} is not an integer") from None
    plan = plan_for(scenario, scenario, seed, profile_dir, profile_dir)
    est = config.get("cpu_estimate")
    if isinstance(est, dict) and set(est) >= {"cpus", "per_slot_cpu_s", "load", "peak_cpus", "detail"}:
        import dataclasses

        plan = dataclasses.replace(plan, cpu=CpuEstimate(**{k: est[k] for k in CpuEstimate.__dataclass_fields__}))
    return plan


def _has_records(mdir: Path, cv_ids: list[str]) -> bool:
    return (mdir / "records.jsonl").is_file() or any((mdir / f"{cv}.jsonl").is_file() for cv in cv_ids)


def recompute_controller(plan: HilPlan, live: LiveResult) -> list[dict[str, Any]]:
    """The controller's final records from recorded states (``<m>/telemetry``) and the records."""
    tel = live.out_dir / "telemetry"
    controller = LyapunovController(controller_setup(plan), plan.work)
    n = 0
    for kind, key in (("vehicle_state", "vehicle"), ("node_state", "node")):
        for msg in read_recorded(tel / f"{kind}.jsonl"):
            controller.on_message(kind, msg.get(key), msg)
            n += 1
    if not n:
        return []
    controller.add_records(live.records)
    return controller.records()


def check_records(plan: HilPlan, live: LiveResult) -> None:
    """Every record belongs to a CV of the plan, runs its model and falls in slots 0..T-1."""
    models = {cv.id: cv.model for cv in plan.cvs}
    t_slots = plan.scenario.slots
    for r in live.records:
        vid = r["vehicle_id"]
        if vid not in models:
            raise SplitrtError(
                f"{live.out_dir}: task {r['task_id']} is from vehicle {vid!r}, not one of the scenario's CVs "
                f"{', '.join(models)} (start each vehicle with `--id cvI`, CV i running models[i % K])"
            )
        if r.get("model", models[vid]) != models[vid]:
            raise SplitrtError(
                f"{live.out_dir}: {vid} ran {r['model']}, but the scenario's {vid} runs {models[vid]} "
                f"(models {', '.join(plan.scenario.models)} assigned round-robin)"
            )
        if not (isinstance(r["slot"], int) and 0 <= r["slot"] < t_slots):
            raise SplitrtError(
                f"{live.out_dir}: task {r['task_id']} is in slot {r['slot']!r}, outside the scenario's "
                f"{t_slots} slots (--slots / --set slots=)"
            )


def simulator_options(
    method: str, decider: str | None, policies: dict[str, Path], scenario: Scenario
) -> dict[str, str]:
    """Options of the simulated method: learned methods run the policy the vehicles ran."""
    from splitrt.policy.methods.learned import TRAINED_DIR, find_policy
    from splitrt.policy.methods.registry import METHODS, MethodNotApplicable

    if method not in METHODS:
        raise SplitrtError(f"--report-only: {method!r} is not a method the simulator knows ({', '.join(METHODS)})")
    if method not in ("mad2rl", "pqmix"):
        return {}
    directory = policies.get(method)
    if directory is None and decider and decider.startswith("policy:") and Path(decider[7:]).is_dir():
        directory = Path(decider[7:])
    if directory is None:
        try:
            directory = find_policy(TRAINED_DIR, method, scenario, "shape")
        except MethodNotApplicable as exc:
            raise SplitrtError(f"--report-only: no policy for {method} (give --policy DIR): {exc}") from None
    return {"policy": str(directory), "match": "shape"}


def load_run(
    run_dir: Path,
    *,
    base: Scenario,
    seed: int,
    methods: list[str] | None = None,
    policies: dict[str, Path] | None = None,
) -> RunFiles:
    """Everything a report needs from ``run_dir`` (module docstring); clear errors for what is missing."""
    if not run_dir.exists():
        raise SplitrtError(f"--report-only {run_dir}: no such directory")
    if not run_dir.is_dir():
        raise SplitrtError(f"--report-only {run_dir}: not a directory")
    config_path = run_dir / "config.json"
    config = read_json(config_path, "run configuration") if config_path.is_file() else None
    if config is not None and not isinstance(config, dict):
        raise SplitrtError(f"{config_path} is not a JSON object")
    plan = run_plan(run_dir, config, base, seed)
    cv_ids = [cv.id for cv in plan.cvs]
    deciders = dict(config.get("methods") or {}) if config else {}
    present = [d.name for d in sorted(run_dir.iterdir()) if d.is_dir() and _has_records(d, cv_ids)]
    notes = []
    if methods:
        missing = [m for m in methods if m not in present]
        if missing:
            raise SplitrtError(
                f"--report-only {run_dir}: no task records for {', '.join(missing)} (looked for "
                f"{run_dir}/<method>/records.jsonl or <method>/{cv_ids[0]}.jsonl; found: {', '.join(present) or 'none'})"
            )
        chosen = list(methods)
    else:
        order = [m for m in deciders if m in present] + [m for m in present if m not in deciders]
        chosen = order
        for m in deciders:
            if m not in present:
                notes.append(
                    f"{m}: listed in config.json but no task records in {run_dir / m} (the run ended before it)"
                )
    if not chosen:
        raise SplitrtError(
            f"--report-only {run_dir}: no method directory with task records (expected "
            f"{run_dir}/<method>/records.jsonl or {run_dir}/<method>/<cv>.jsonl for the CVs {', '.join(cv_ids)})"
        )
    previous = {}
    if (run_dir / "summary.json").is_file():
        old = read_json(run_dir / "summary.json", "earlier summary")
        if isinstance(old, list):
            previous = {s["method"]: s for s in old if isinstance(s, dict) and "method" in s}
    link_note = str(config.get("links", "")) if config else "a deployment's own links, not emulated"
    broker = str(config.get("broker", "")) if config else "the deployment's broker (recorded files)"
    lives = {}
    options = {}
    for m in chosen:
        mdir = run_dir / m
        emulation = "tc" if (mdir / "tc_rates.jsonl").is_file() else ("loopback" if config else "real")
        if emulation != "tc" and (run_dir / "hosts.json").is_file():  # `splitrt hil --hosts`, unshaped links
            emulation = "measured"
        live = load_result(mdir, m, emulation, link_note, cv_ids)
        check_records(plan, live)
        if not live.controller:
            live.controller = recompute_controller(plan, live)
            if live.controller:
                notes.append(f"{m}: controller records recomputed from {mdir / 'telemetry'} and the task records")
            else:
                notes.append(
                    f"{m}: no controller.jsonl and no recorded states in {mdir / 'telemetry'}: no measured queues"
                )
        if m in previous:
            live.experiment = str(previous[m].get("experiment", live.experiment))
        options[m] = simulator_options(m, deciders.get(m), policies or {}, plan.scenario)
        lives[m] = live
    skipped = dict(config.get("skipped") or {}) if config else {}
    return RunFiles(plan, lives, options, link_note, broker, skipped, previous, notes)


def carry_over(record: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``record`` with the figures only the live run measured taken from its earlier summary."""
    if not previous:
        return record
    if record.get("wall_s") is None and _finite(previous.get("wall_s")):
        record["wall_s"] = previous["wall_s"]
    old = previous.get("cpu_load")
    if isinstance(old, dict) and record["cpu_load"].get("measured") is None and _finite(old.get("measured")):
        record["cpu_load"]["measured"] = old["measured"]
    return record


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
