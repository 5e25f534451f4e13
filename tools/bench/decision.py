"""On-device decision latency of the diffusion policy (issue: MAD2RL on the vehicle).

Figure ``decision`` / ``median_ms`` (and ``p95_ms``), params ``steps`` (M = 3, 5, 7, 9),
``samples`` (noise draws per decision: 1, and the runtime's default `DEFAULT_SAMPLES`) and
``method``: one decision at batch 1 through `splitrt.edge_runtime.decide.onnx_policy.OnDevicePolicy.decide` (mask
construction, noise draw, ONNX Runtime with one intra-op thread, action decoding), pinned to one
core; and the shipped default policy (policy/trained/default) as a vehicle runs it (param
``policy``: its own noise and samples from policy.json). The other actors are freshly initialised at the paper's default shape (5 CVs, 5 SVs: 13 inputs,
3 DNN types, 23 x 6 = 138 actions); latency does not depend on the weights. The paper reports
0.089-0.183 s per step for MAD2RL on its machine (Table II).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from splitrt.tools.bench.run import BenchContext, record


def _decision_latency(policy_dir: str, runs: int, samples: int) -> np.ndarray:
    from splitrt.edge_runtime.decide.deciders import DecisionContext
    from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy

    policy = OnDevicePolicy(policy_dir, threads=1, samples=samples)
    n_cuts = policy.n_cuts["vgg16"]
    rng = np.random.default_rng(0)
    samples = np.empty(runs)
    for i in range(runs + 20):
        obs = rng.uniform(0, 1e10, policy.meta["obs_dim"]).astype(np.float32)
        ctx = DecisionContext(
            obs, np.ones(n_cuts), np.zeros(n_cuts), np.zeros(n_cuts), rng.random(policy.n_nodes) < 0.8, model="vgg16"
        )
        start = time.perf_counter()
        policy.decide(ctx)
        if i >= 20:  # warm-up
            samples[i - 20] = time.perf_counter() - start
    return samples


def decision(ctx: BenchContext) -> list[dict[str, Any]]:
    import torch

    from splitrt.edge_runtime.decide.onnx_policy import DEFAULT_SAMPLES
    from splitrt.policy.learn.export import export_actor
    from splitrt.policy.learn.networks import DiffusionActor, MLPAgent
    from splitrt.policy.sim.scenario import preset
    from splitrt.policy.sim.workloads import load_manifest

    scenario = preset("paper")
    types = list(scenario.types)
    manifests = {m: load_manifest(m) for m in types}
    n_actions = max(man.n_cuts for man in manifests.values()) * scenario.n_nodes
    obs_dim = 2 * scenario.n_nodes + 1
    meta = {
        "n_nodes": scenario.n_nodes,
        "n_agents": scenario.n_cvs,
        "scenario": scenario.to_dict(),
        "types": [{"model": m, "n_cuts": manifests[m].n_cuts, "manifest_sha256": manifests[m].digest} for m in types],
    }
    runs = 50 if ctx.quick else 1000
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    out = []
    torch.manual_seed(0)
    try:
        if affinity:
            os.sched_setaffinity(0, {min(affinity)})
        with tempfile.TemporaryDirectory() as tmp:
            actors = [("mad2rl", m, DiffusionActor(obs_dim, len(types), n_actions, steps=m)) for m in (3, 5, 7, 9)]
            actors.append(("pqmix", 0, MLPAgent(obs_dim, len(types), n_actions)))
            for method, steps, actor in actors:
                directory = export_actor(actor, f"{tmp}/{method}{steps}", {**meta, "method": method})
                for samples in (1, DEFAULT_SAMPLES) if method == "mad2rl" else (1,):
                    times = _decision_latency(str(directory), runs, samples)
                    params = {"method": method, "steps": steps, "samples": samples}
                    out.append(record("decision", "median_ms", float(np.median(times)) * 1e3, "ms", **params))
                    out.append(record("decision", "p95_ms", float(np.percentile(times, 95)) * 1e3, "ms", **params))
        # the shipped default exactly as a vehicle runs it (its policy.json's noise and samples)
        from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
        from splitrt.policy.methods.learned import TRAINED_DIR

        shipped = OnDevicePolicy(TRAINED_DIR / "default", threads=1)
        times = _decision_latency(str(TRAINED_DIR / "default"), runs, shipped.samples)
        params = {"method": "mad2rl", "steps": shipped.steps, "samples": shipped.samples, "policy": "shipped default"}
        out.append(record("decision", "median_ms", float(np.median(times)) * 1e3, "ms", **params))
        out.append(record("decision", "p95_ms", float(np.percentile(times, 95)) * 1e3, "ms", **params))
    finally:
        if affinity:
            os.sched_setaffinity(0, affinity)
    return out
