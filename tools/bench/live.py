"""Live-system benchmarks: the per-slot control loop's cost and the simulated-vs-measured gap.

Figures (benchmark / figure / params):

- ``control_loop`` / ``median_ms``, ``p95_ms`` / cvs, svs, decider: wall time of one slot's control
  work for the demo's shape (3 CVs, 2 SVs, AlexNet / ResNet18 / MobileNetV2), in one process,
  with the runtime's own code: every CV builds its eq (53) observation and `DecisionContext` and
  decides (the shipped ONNX policy for the demo when there is one, else greedy; ``decider`` says
  which), the RSU re-solves its allocation (`allocate_rsu` through `EdgeServer._reallocate`) and
  takes its snapshot, every node's state and every CV's state are published to a real embedded
  broker, and the Lyapunov controller books the slot and publishes it. Also the medians of the
  parts (``observation_ms``, ``decision_ms``, ``allocation_ms``, ``telemetry_ms``, ``controller_ms``).
- ``sim_to_real`` / ``gap_pct``, ``measured_mean_s``, ``simulated_mean_s`` / preset, method,
  slots, links, speed_mode, discipline: `splitrt hil` run for real (a subprocess; the same as
  `make demo`) on ``demo`` and ``paper`` (``--quick``: demo only, 10 slots, two methods); the
  conditions (link emulation, CPU busy before the run) go in the params.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.tools.bench.run import BenchContext, record
from splitrt.tools.processes import cli_command
from splitrt.tools.processes import run as run_child

log = logging.getLogger(__name__)

DEMO_MODELS = ("alexnet", "resnet18", "mobilenet_v2")


def control_loop(ctx: BenchContext) -> list[dict[str, Any]]:
    from splitrt.edge_runtime.decide.deciders import DecisionContext, GreedyDecider
    from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
    from splitrt.edge_runtime.experiment.controller import ControllerSetup, LyapunovController
    from splitrt.edge_runtime.experiment.telemetry import Publisher
    from splitrt.edge_runtime.node.server import EdgeServer, ServerConfig, load_models
    from splitrt.edge_runtime.sysmodel import observation as obs_layout
    from splitrt.policy.methods.learned import TRAINED_DIR, find_policy
    from splitrt.policy.methods.registry import MethodNotApplicable
    from splitrt.policy.sim.scenario import demo
    from splitrt.policy.sim.workloads import work_table
    from splitrt.tools.hil.broker import start_broker

    slots = 50 if ctx.quick else 500
    sc = demo()
    manifests = {m: ctx.export(m) for m in DEMO_MODELS}
    models = load_models([manifests[m].directory for m in DEMO_MODELS], calibration_runs=1)
    rsu = EdgeServer(ServerConfig(role="rsu", slot_s=sc.slot_s, name="rsu"), models)
    svs = [EdgeServer(ServerConfig(role="sv", slot_s=sc.slot_s, name=f"sv{j + 1}"), models) for j in range(2)]
    try:
        decider: Any = OnDevicePolicy(find_policy(TRAINED_DIR, "mad2rl", sc), seed=0)
        decider_name = "mad2rl"
    except MethodNotApplicable as exc:
        log.warning("control_loop: no shipped demo policy (%s); timing greedy instead", exc)
        decider, decider_name = GreedyDecider(), "greedy"
    cvs = [f"cv{i}" for i in range(sc.n_cvs)]
    cv_models = sc.cv_models()
    setup = ControllerSetup(
        v=sc.v,
        slot_s=sc.slot_s,
        slots=slots,
        cvs={cv: {"model": m, "flops_per_s": sc.cv_flops_per_s[0]} for cv, m in zip(cvs, cv_models, strict=True)},
        rsu={"name": "rsu", "capacity_flops_per_s": sc.rsu_flops_per_s, "types": list(sc.types)},
        svs={"sv1": sc.sv_flops_per_s[0], "sv2": sc.sv_flops_per_s[0]},
    )
    rng = np.random.default_rng(0)
    parts: dict[str, list[float]] = {
        k: [] for k in ("observation", "decision", "allocation", "telemetry", "controller")
    }
    totals = []
    with start_broker() as broker:
        pub = Publisher(broker.url, "bench", "bench-control-loop")
        controller = LyapunovController(setup, work_table(sc), publish=lambda k, b: pub.publish(k, b))
        try:
            for slot in range(slots):
                t0 = time.perf_counter()
                contexts = []
                for m in cv_models:
                    man = manifests[m]
                    obs = obs_layout.build_observation(
                        rng.random() * 1e9, rng.random() * 1e9, rng.random(2) * 1e9, rng.uniform(-500, 500),
                        rng.uniform(-500, 500, 2),
                    )  # fmt: skip
                    contexts.append(
                        DecisionContext(
                            observation=obs,
                            cut_bytes=man.cut_bytes(),
                            flops_before=man.flops_before().astype(np.float64),
                            flops_after=man.flops_after().astype(np.float64),
                            node_ok=np.array([True, rng.random() < 0.5, rng.random() < 0.5]),
                            model=m,
                            slot=slot,
                            rate_bps=rng.uniform(1e8, 2e8, 3),
                        )
                    )
                t1 = time.perf_counter()
                decisions = [decider.decide(c) for c in contexts]
                t2 = time.perf_counter()
                rsu._reallocate(t2)
                t3 = time.perf_counter()
                for node in [rsu, *svs]:
                    pub.publish("node_state", {**node.snapshot(), "slot": slot}, node.name)
                for cv, (cut, node_j) in zip(cvs, decisions, strict=True):
                    state = {"slot": slot, "q_loc_flops": 0.0, "cut": cut, "node": node_j}
                    pub.publish("vehicle_state", state, cv)
                    controller.on_message("vehicle_state", cv, state)
                t4 = time.perf_counter()
                controller.emit(max(slot - 1, 0))
                t5 = time.perf_counter()
                for key, a, b in (
                    ("observation", t0, t1),
                    ("decision", t1, t2),
                    ("allocation", t2, t3),
                    ("telemetry", t3, t4),
                    ("controller", t4, t5),
                ):
                    parts[key].append(b - a)
                totals.append(t5 - t0)
        finally:
            pub.close()
    params = {"cvs": sc.n_cvs, "svs": sc.n_svs, "decider": decider_name, "slots": slots}
    total = np.array(totals[5:]) * 1e3  # the first slots warm up sessions and connections
    out = [
        record("control_loop", "median_ms", float(np.median(total)), "ms", **params),
        record("control_loop", "p95_ms", float(np.percentile(total, 95)), "ms", **params),
    ]
    out += [record("control_loop", f"{k}_ms", float(np.median(v[5:])) * 1e3, "ms", **params) for k, v in parts.items()]
    return out


def sim_to_real(ctx: BenchContext) -> list[dict[str, Any]]:
    runs = (
        [("demo", 10, "local,offload")]
        if ctx.quick
        else [("demo", 40, "mad2rl,greedy,local,offload"), ("paper", 30, "mad2rl,greedy,local,offload")]
    )
    exports = ctx.work / "exports"
    out = []
    for preset, slots, methods in runs:
        run_dir = ctx.work / f"hil-{preset}"
        cmd = cli_command(
            "hil", "--preset", preset, "--methods", methods, "--slots", str(slots),
            "--exports", str(exports), "--out", str(run_dir), "--no-progress",
        )  # fmt: skip
        # SIGTERM, not SIGKILL, if the bench dies: the hil run takes its namespaces and links down first
        result = run_child(cmd, death_signal=signal.SIGTERM, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            log.warning("sim_to_real %s failed: %s", preset, result.stderr[-2000:])
            out.append(record("sim_to_real", "failed", 1, "count", preset=preset, error=result.stderr[-300:]))
            continue
        config = json.loads((run_dir / "config.json").read_text())
        for s in json.loads((run_dir / "summary.json").read_text()):
            params = {
                "preset": preset,
                "method": s["method"],
                "slots": slots,
                "links": s["link_emulation"],
                "speed_mode": "pace",
                "discipline": "containers",
                "cpu_busy_before_pct": config.get("cpu_busy_before_pct"),
                "tasks": s["tasks_completed"],
            }
            out += [
                record("sim_to_real", "gap_pct", s["gap_pct"], "%", **params),
                record("sim_to_real", "replay_gap_pct", s["replay_gap_pct"], "%", **params),
                record("sim_to_real", "measured_mean_s", s["measured_mean_completion_s"], "s", **params),
                record("sim_to_real", "simulated_mean_s", s["simulated_mean_completion_s"], "s", **params),
            ]
    return out
