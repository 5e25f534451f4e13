"""Simulator benchmarks: batched throughput, and the per-slot decision time of the GA and p2-optimal.

Figures (benchmark / figure / params):
- ``simulator`` / ``vehicle_slots_per_s`` / n_envs, cvs, svs: (CVs + SVs) x environments x slots
  simulated per second, whole episodes including reset (episode generation), paper preset,
  on one core (the process is pinned to one CPU while it runs). Goal >= 1e6 batched.
- ``simulator`` / ``vehicle_slots_per_cpu_s`` / same: the same count per second of this process's
  CPU time, which other load on a shared machine does not inflate (wall time does).
- ``as_run`` / ``vehicle_slots_per_s`` (and ``vehicle_slots_per_cpu_s``) / n_envs, cvs, svs,
  decisions: the same count through the as-run model (policy/sim/asrun.py, event by event in
  Python), for all-local decisions, uniformly random valid ones, and all offloaded to the RSU
  (cut 0), the queues drained at the end included; paper preset, one core. Next to
  ``simulator``: what the as-run model's fidelity costs.
- ``ga`` / ``s_per_slot`` / cvs, svs: median wall time of one GA decision (default population 50 x
  50 generations) for one environment. The paper's Table II: 0.30 -> 1.34 s (5 CVs, 3 -> 7 SVs).
- ``p2_optimal`` / ``s_per_slot`` / cvs, svs: median wall time of one exhaustive per-slot search of P2(t).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from splitrt.tools.bench.run import BenchContext, record


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin this process to one CPU for the block (where the OS allows it)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        yield
    finally:
        os.sched_setaffinity(0, before)


def simulator(ctx: BenchContext) -> list[dict[str, Any]]:
    from splitrt.policy.sim.env import VecEnv
    from splitrt.policy.sim.scenario import paper

    scenario = paper()
    out = []
    batch_sizes = (1, 64) if ctx.quick else (1, 256, 1024, 4096)
    with one_core():
        for n_envs in batch_sizes:
            env = VecEnv(scenario, n_envs=n_envs, seed=0)
            actions = np.zeros((n_envs, scenario.n_cvs), dtype=np.int64)  # cost does not depend on them
            env.reset()
            budget_s = 0.2 if ctx.quick else 3.0
            episodes = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            while True:
                env.reset()
                for _ in range(scenario.slots):
                    env.step(actions)
                episodes += 1
                elapsed = time.perf_counter() - start
                if elapsed >= budget_s:
                    break
            cpu = time.process_time() - start_cpu
            done = n_envs * (scenario.n_cvs + scenario.n_svs) * scenario.slots * episodes
            params = {"n_envs": n_envs, "cvs": scenario.n_cvs, "svs": scenario.n_svs}
            out.append(record("simulator", "vehicle_slots_per_s", done / elapsed, "vehicle-slots/s", **params))
            out.append(record("simulator", "vehicle_slots_per_cpu_s", done / cpu, "vehicle-slots/CPU-s", **params))
    return out


def as_run(ctx: BenchContext) -> list[dict[str, Any]]:
    from splitrt.policy.sim.asrun import AsRunEnv
    from splitrt.policy.sim.scenario import paper

    scenario = paper(slots=30 if ctx.quick else 300)
    out = []
    rng = np.random.default_rng(0)
    with one_core():
        for decisions in ("local", "random", "rsu"):
            env = AsRunEnv(scenario, n_envs=1, seed=0)
            local = (env.tables.n_cuts - 1) * env.n_nodes
            start, start_cpu = time.perf_counter(), time.process_time()
            _, _, mask = env.reset()
            for _ in range(scenario.slots):
                if decisions == "local":
                    actions = local[None, :]
                elif decisions == "rsu":
                    actions = np.zeros((1, env.n_agents), dtype=np.int64)
                else:
                    actions = np.array([[rng.choice(np.flatnonzero(m)) for m in mask[0]]])
                _, _, mask, *_ = env.step(actions)
            env.finish()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            done = (scenario.n_cvs + scenario.n_svs) * scenario.slots
            params = {"n_envs": 1, "cvs": scenario.n_cvs, "svs": scenario.n_svs, "decisions": decisions}
            out.append(record("as_run", "vehicle_slots_per_s", done / elapsed, "vehicle-slots/s", **params))
            out.append(record("as_run", "vehicle_slots_per_cpu_s", done / cpu, "vehicle-slots/CPU-s", **params))
    return out


def _decision_time(method_name: str, cvs: int, svs: int, slots: int) -> float:
    from splitrt.policy.methods.registry import make_method
    from splitrt.policy.sim.env import VecEnv
    from splitrt.policy.sim.scenario import paper

    env = VecEnv(paper(n_cvs=cvs, n_svs=svs), n_envs=1, seed=0)
    method = make_method(method_name)
    method.reset(env, 0)
    obs, state, mask = env.reset()
    times = []
    for _ in range(slots):
        view = env.view()
        start = time.perf_counter()
        actions = method.act(obs, state, mask, view)
        times.append(time.perf_counter() - start)
        obs, state, mask, *_ = env.step(actions)
    return float(np.median(times))


def ga(ctx: BenchContext) -> list[dict[str, Any]]:
    sizes = [(3, 3)] if ctx.quick else [(5, 3), (5, 5), (5, 7), (3, 5), (7, 5)]
    slots = 1 if ctx.quick else 5
    return [
        record("ga", "s_per_slot", _decision_time("ga", c, s, slots), "s", cvs=c, svs=s, population=50, generations=50)
        for c, s in sizes
    ]


def p2_optimal(ctx: BenchContext) -> list[dict[str, Any]]:
    sizes = [(1, 1), (2, 1)] if ctx.quick else [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)]
    slots = 1 if ctx.quick else 3
    return [
        record("p2_optimal", "s_per_slot", _decision_time("p2-optimal", c, s, slots), "s", cvs=c, svs=s)
        for c, s in sizes
    ]
