"""A node's state as one JSON-able dict: the state reply's ``state``, and what the Lyapunov
controller and the telemetry read.

Keys:

| key | meaning |
|---|---|
| ``node``, ``role``, ``protocol``, ``pid`` | identity |
| ``uptime_s``, ``slot``, ``slot_s`` | time since start, current slot index, slot length tau |
| ``v``, ``capacity_flops_per_s``, ``workers``, ``threads``, ``queue_limit``, ``max_message_bytes`` | configuration (``max_message_bytes``: ZeroMQ ``MAXMSGSIZE`` per frame, default the largest cut tensor served: a bigger frame disconnects its sender) |
| ``security`` | ``{mode: plain or curve, authenticated, encrypted, allowed_keys, public_key}`` (splitrt.edge_runtime.link.security) |
| ``link`` | connection events of the ROUTER socket (ZeroMQ monitor): ``accepted, connected, disconnects, handshakes, auth_failures, handshake_failures`` |
| ``speed`` | ``{speed_factor, speed_mode}`` of the node's emulation |
| ``models`` | model -> ``{digest, n_cuts, flops_per_s, speed_source}`` |
| ``queues`` | queue -> ``{tasks, waiting, running, flops, est_s, models: {model: {tasks, flops}}}``; queue names are the model ids (rsu) or ``fifo`` (sv); ``flops``/``est_s`` count waiting and running tasks in full |
| ``allocation`` | rsu: ``{slot, time_s, tau_s, v, capacity_flops_per_s, q_flops, w_flops, n_tasks, f_flops_per_s, share}`` (dicts by model); the inputs and output of the last `allocate_rsu` call; sv: null |
| ``counters`` | ``received, tasks, accepted, completed, busy, errors, failed, state_requests, undeliverable, allocations`` (counts), ``errors_by_code``, ``completed_by_model``, ``served_s`` and ``entitled_s`` (queue -> worker seconds actually served vs allocated by the shares, splitrt.edge_runtime.node.scheduler) |
"""

from __future__ import annotations

import os
import time
from typing import Any

from splitrt.edge_runtime.link.wire import PROTOCOL_VERSION

#: The `EdgeServer` described (not imported: the server imports this module).
EdgeServer = Any


def node_snapshot(server: EdgeServer) -> dict[str, Any]:
    """Every queue's backlog, the allocation and the counters (keys in the module docstring)."""
    now = time.perf_counter()
    with server._cv:
        server._sched.advance(now)
        queues: dict[str, Any] = {}
        for name in server._sched.names:
            jobs = list(server._sched.jobs(name))
            per_model: dict[str, dict[str, float]] = {}
            for j in jobs:
                entry = per_model.setdefault(j.item.header.model, {"tasks": 0, "flops": 0.0})
                entry["tasks"] += 1
                entry["flops"] += j.flops
            queues[name] = {
                "tasks": len(jobs),
                "waiting": len(server._sched.waiting(name)),
                "running": len(server._sched.running(name)),
                "flops": float(sum(j.flops for j in jobs)),
                "est_s": float(sum(j.est_s for j in jobs)),
                "models": per_model,
            }
        counters = {
            **{k: (dict(v) if isinstance(v, dict) else v) for k, v in server.counters.items()},
            "served_s": server._sched.served_s(),
            "entitled_s": server._sched.entitled_s(),
        }
        allocation = None if server.allocation is None else dict(server.allocation)
        slot = server.slot
        link = dict(server._events.counts) if server._events is not None else {}
    return {
        "node": server.name,
        "role": server.config.role,
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "uptime_s": now - server._t0,
        "slot": slot,
        "slot_s": server.config.slot_s,
        "v": server.config.v,
        "capacity_flops_per_s": server.capacity_flops_per_s,
        "workers": server.config.workers,
        "threads": server.config.threads,
        "queue_limit": server.config.queue_limit,
        "max_message_bytes": server.max_message_bytes,
        "security": server.security.describe(),
        "link": link,
        "speed": dict(server.speed),
        "models": {
            name: {
                "digest": m.digest,
                "n_cuts": m.manifest.n_cuts,
                "flops_per_s": m.flops_per_s,
                "speed_source": m.speed_source,
            }
            for name, m in server.models.items()
        },
        "queues": queues,
        "allocation": allocation,
        "counters": counters,
    }
