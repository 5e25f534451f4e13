"""The simulator's prediction of a live run: the same scenario, seed and episode (tools/hil/plan.py).

Two models predict it: the paper's equations (``model="paper"``, policy/sim/slot.py) and the
as-run model (``model="as-run"``, policy/sim/asrun.py: the runtime's queues event by event, with
the per-task overheads of a calibration). `simulate` runs a method exactly as `splitrt evaluate` would (splitrt.policy.methods.registry registry, one
environment seeded like the plan, so the same positions, fading, device speeds and arrivals), and
`replay` feeds the decisions the live vehicles actually made through the same slot model: the
first compares the closed loops (the method decides on simulated observations), the second the
model alone (same decisions, so only the delays can differ).

Per task the simulated delay (eq 17) is split like the measured one:

| component | simulated | measured (task record) |
|---|---|---|
| ``local_wait_s`` | Q_loc / f_loc (eq 7's backlog term) | ``local_wait_s`` + ``decide_s`` |
| ``local_compute_s`` | b / f_loc | ``local_compute_s`` |
| ``transfer_s`` | 8 D / R (eqs 4-5) | ``encode_s`` + ``transfer_s`` + ``decode_s`` |
| ``remote_queue_s`` | RSU/SV delay - w / f (eqs 9 + 11, 13 + 15: backlog and eq 11's waiting) | ``remote_wait_s`` |
| ``remote_compute_s`` | w / f (f = P3's f_k at the RSU, f_veh at an SV) | ``remote_compute_s`` + ``remote_other_s`` |

In the as-run model every task has the record's own nine parts (`TaskTimes.components`),
grouped into the five above exactly as the measured ones are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.policy.methods.live_rules import LiveRule
from splitrt.policy.methods.registry import make_method
from splitrt.policy.sim.asrun import AsRunEnv, Overheads
from splitrt.policy.sim.env import SlotView, VecEnv
from splitrt.tools.hil.plan import HilPlan, vehicle_seed

MODELS = ("paper", "as-run")

COMPONENTS = ("local_wait_s", "local_compute_s", "transfer_s", "remote_queue_s", "remote_compute_s")


def measured_components(record: dict[str, Any]) -> dict[str, float]:
    """A task record's nine parts (splitrt.edge_runtime.formats.records) in the five above: a live
    record, or an as-run task's `TaskTimes.components`."""
    return {
        "local_wait_s": record["local_wait_s"] + record["decide_s"],
        "local_compute_s": record["local_compute_s"],
        "transfer_s": record["encode_s"] + record["transfer_s"] + record["decode_s"],
        "remote_queue_s": record["remote_wait_s"],
        "remote_compute_s": record["remote_compute_s"] + record["remote_other_s"],
    }


@dataclass
class SimResult:
    method: str
    kind: str  # "method" (the method decides) or "replay" (the live decisions)
    tasks: list[dict[str, Any]]
    slots: list[dict[str, Any]]
    actions: np.ndarray  # (T, N)
    invalid_actions: int = 0


def _env(
    plan: HilPlan, model: str, overheads: Overheads | None, decider: str | None, draw: int = 0, **kw: Any
) -> VecEnv:
    rates = plan.rates_bps if plan.links == "measured" else None  # else the env's own channel model
    if model == "paper":
        return VecEnv(plan.scenario, n_envs=1, seed=plan.seed, link_rates_bps=rates, **kw)
    if model == "as-run":
        return AsRunEnv(
            plan.scenario,
            n_envs=1,
            seed=plan.seed,
            overheads=overheads,
            decider=decider,
            jitter_seed=draw,
            link_rates_bps=rates,
            **kw,
        )
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def simulate(
    plan: HilPlan,
    method: str,
    options: dict[str, str] | None = None,
    *,
    model: str = "paper",
    overheads: Overheads | None = None,
    draw: int = 0,
) -> SimResult:
    """``method`` (a splitrt.policy.methods.registry name) on the plan's scenario and seed;
    ``draw`` seeds the as-run model's link jitter."""
    m = make_method(method, options)
    if isinstance(m, LiveRule):  # the vehicles' own seeds: a seeded rule draws what they drew
        m.cv_seeds = {i: vehicle_seed(plan.seed, i) for i in range(len(plan.cvs))}
    env = _env(plan, model, overheads, method, draw)
    m.reset(env, plan.seed)
    return _run(env, method, "method", lambda obs, state, mask, view, t: m.act(obs, state, mask, view))


def live_actions(plan: HilPlan, records: list[dict[str, Any]], n_cuts: np.ndarray, j: int) -> np.ndarray:
    """(T, N) the live run's decisions (cut, node per CV and slot); fully local where none."""
    ids = [cv.id for cv in plan.cvs]
    actions = np.tile((n_cuts - 1) * j, (plan.scenario.slots, 1))
    for r in records:
        if r["vehicle_id"] in ids and 0 <= r["slot"] < plan.scenario.slots and r.get("cut") is not None:
            i = ids.index(r["vehicle_id"])
            node = r["node"] if r["node"] is not None else 0
            actions[r["slot"], i] = obs_layout.encode_action(int(r["cut"]), int(node), j)
    return actions


def replay(
    plan: HilPlan,
    method: str,
    records: list[dict[str, Any]],
    *,
    model: str = "paper",
    overheads: Overheads | None = None,
    draw: int = 0,
) -> SimResult:
    """The live run's decisions (cut, node per CV and slot) through the simulator."""
    decider = records[0].get("decider") if records else method
    env = _env(plan, model, overheads, decider, draw, invalid_action="local")
    actions = live_actions(plan, records, env.tables.n_cuts, env.n_nodes)
    return _run(env, method, "replay", lambda obs, state, mask, view, t: actions[t][None, :])


def _run(env: VecEnv, method: str, kind: str, choose: Callable[..., np.ndarray]) -> SimResult:
    if isinstance(env, AsRunEnv):
        return _run_as_run(env, method, kind, choose)
    return _run_paper(env, method, kind, choose)


def _run_as_run(env: AsRunEnv, method: str, kind: str, choose: Callable[..., np.ndarray]) -> SimResult:
    sc = env.scenario
    obs, state, mask = env.reset()
    models = sc.cv_models()
    all_actions = np.zeros((sc.slots, env.n_agents), dtype=np.int64)
    invalid = 0
    slots: list[dict[str, Any]] = []
    for t in range(sc.slots):
        view: SlotView = env.view()
        actions = np.asarray(choose(obs, state, mask, view, t), dtype=np.int64).reshape(1, env.n_agents)
        all_actions[t] = actions[0]
        obs, state, mask, _, _, info = env.step(actions)
        invalid += int(info["invalid_actions"].sum())
        q = [info["q_loc_flops"][0], info["q_rsu_flops"][0], info["q_sv_flops"][0]]
        slots.append(
            {
                "slot": t,
                "q_loc_flops": q[0].tolist(),
                "q_rsu_flops": q[1].tolist(),
                "q_sv_flops": q[2].tolist(),
                "backlog_flops": float(sum(x.sum() for x in q)),
                "lyapunov": float(info["lyapunov"][0]),
                "drift": float(info["drift"][0]),
                "p2": None,  # no per-slot pressure: the completions come after the queues serve them
                "rsu_alloc_flops_per_s": info["rsu_alloc_flops_per_s"][0].tolist(),
            }
        )
    tasks: list[dict[str, Any]] = []
    by_slot: dict[int, list[float]] = {}
    for tk in env.finish()[0]:
        parts = tk.components(env.overheads)
        row = {
            "slot": tk.slot,
            "vehicle_id": f"cv{tk.cv}",
            "model": models[tk.cv],
            "cut": tk.cut,
            "node": tk.node,
            "completion_s": tk.completion_s,
            **measured_components(parts),
            "parts_s": parts,
        }
        tasks.append(row)
        by_slot.setdefault(tk.slot, []).append(tk.completion_s)
    for row in slots:  # the slot's completions, now that they exist
        comp = by_slot.get(row["slot"], [])
        row["tasks"] = len(comp)
        row["mean_completion_s"] = float(np.mean(comp)) if comp else None
        row["penalty"] = float(lyapunov.penalty(np.asarray(comp), sc.v)) if comp else 0.0
    return SimResult(method, kind, tasks, slots, all_actions, invalid)


def _run_paper(env: VecEnv, method: str, kind: str, choose: Callable[..., np.ndarray]) -> SimResult:
    sc = env.scenario
    tables = env.tables
    j = env.n_nodes
    obs, state, mask = env.reset()
    ep = env.episode(0)
    models = sc.cv_models()
    tasks: list[dict[str, Any]] = []
    slots: list[dict[str, Any]] = []
    all_actions = np.zeros((sc.slots, env.n_agents), dtype=np.int64)
    invalid = 0
    for t in range(sc.slots):
        view: SlotView = env.view()
        actions = np.asarray(choose(obs, state, mask, view, t), dtype=np.int64).reshape(1, env.n_agents)
        all_actions[t] = actions[0]
        q_loc = obs[0, :, obs_layout.Q_LOC].astype(np.float64)
        obs, state, mask, _, _, info = env.step(actions)
        invalid += int(info["invalid_actions"].sum())
        f_k = info["rsu_alloc_flops_per_s"][0]
        comp = []
        for i in range(env.n_agents):
            if info["tasks"][0, i] == 0:
                continue
            a = int(actions[0, i])
            cut, node = a // j, a % j
            n_cuts = int(tables.n_cuts[i])
            f_loc = float(ep.cv_flops_per_s[i])
            offloaded = cut < n_cuts - 1
            row = {
                "slot": t,
                "vehicle_id": f"cv{i}",
                "model": models[i],
                "cut": cut,
                "node": node if offloaded else None,
                "completion_s": float(info["completion_s"][0, i]),
                "local_wait_s": q_loc[i] / f_loc if cut > 0 else 0.0,
                "local_compute_s": float(tables.local_flops[i, cut]) / f_loc if cut > 0 else 0.0,
                "transfer_s": float(info["tx_s"][0, i]),
                "remote_queue_s": 0.0,
                "remote_compute_s": 0.0,
            }
            if offloaded:
                if node == 0:
                    w, f, edge = float(tables.rsu_flops[i, cut]), float(f_k[tables.agent_type[i]]), info["rsu_s"]
                else:
                    w, f, edge = float(tables.sv_flops[i, cut]), float(ep.sv_flops_per_s[node - 1]), info["sv_s"]
                row["remote_compute_s"] = w / f
                row["remote_queue_s"] = float(edge[0, i]) - w / f
            tasks.append(row)
            comp.append(row["completion_s"])
        slots.append(
            {
                "slot": t,
                "tasks": len(comp),
                "mean_completion_s": float(np.mean(comp)) if comp else None,
                "q_loc_flops": info["q_loc_flops"][0].tolist(),
                "q_rsu_flops": info["q_rsu_flops"][0].tolist(),
                "q_sv_flops": info["q_sv_flops"][0].tolist(),
                "backlog_flops": float(
                    info["q_loc_flops"][0].sum() + info["q_rsu_flops"][0].sum() + info["q_sv_flops"][0].sum()
                ),
                "lyapunov": float(info["lyapunov"][0]),
                "drift": float(info["drift"][0]),
                "penalty": float(info["penalty"][0]),
                "p2": float(info["p2"][0]),
                "rsu_alloc_flops_per_s": f_k.tolist(),
            }
        )
    return SimResult(method, kind, tasks, slots, all_actions, invalid)
