"""Reliability benchmarks: an edge node under hostile frames (``fuzz``) and under twice the load it
can serve (``overload``), real processes on loopback.

Figures (benchmark / figure / params):

- ``fuzz`` / ``frames``, ``errors_answered``, ``crashes``: hostile messages sent to a real
  ``splitrt serve`` (tools/bench/fuzz.py: every category of wire-format flaw, plus frames over the
  node's MAXMSGSIZE and raw non-ZeroMQ TCP connections), how many were answered with the error
  their flaw calls for, and node crashes (0 or 1). Also ``disconnects_expected`` (oversized frames:
  libzmq cuts the sender off, nothing to answer), ``unexpected``, ``unanswered``,
  ``raw_connections``, ``rss_before_mb`` / ``rss_after_mb`` of the node, ``vehicle_tasks`` and
  ``vehicle_not_remote`` (a well-behaved `splitrt vehicle` served at the same time: it must see no
  failure). 10,000 frames (``--quick``: 1,000).
- ``overload`` / ``tasks_per_s``, ``p50_s``, ``p99_s``, ``rejected``, ``lost``, ``peak_rss_mb``: 16
  `splitrt vehicle` processes offload MobileNetV2 to edge nodes (`splitrt serve`, one worker each,
  ``--queue-limit`` 8, ``--speed-factor`` 4 in stretch mode so their compute costs little CPU) at
  about twice what the RSU alone can serve at cut 10 (its own calibrated tail time gives the
  capacity mu; arrivals are Poisson at 2 mu in total, the same in every variant). Three variants,
  one after the other (param ``decider``): ``fixed`` (every task cut at 10 and sent to the RSU,
  the only node: blind offloading), ``greedy:10`` (cut 10, sent to the node with the shortest
  known backlog among the RSU and two SVs of the same speed: state requests every slot, backlogs
  carried by every reply) and ``greedy`` (the paper's greedy: the same node choice, and the cut
  with the smallest tensor, which for MobileNetV2 is cut 33: nearly the whole network on the
  vehicle). ``tasks_per_s``: tasks completed per second over all vehicles; ``p50_s``/``p99_s``:
  completion times; ``rejected``: the nodes' ``busy`` replies; ``lost``: tasks the vehicles'
  journals say were generated that have no record (must be 0); ``peak_rss_mb``: the largest
  node's peak resident memory (sampled every 0.5 s). Also ``task_share`` and ``work_share`` by
  ``place`` (``rsu``, ``sv``, ``local``: where the tails ran, and where the FLOPs were computed,
  heads included), ``capacity_tasks_per_s`` (mu), ``offered_tasks_per_s``,
  ``remote_tasks_per_s``, ``fallback_fraction``, ``failed``, ``max_queue_tasks`` (largest queue
  a state request saw), ``cuts_used`` and ``rss_start_mb``. Duration ``--duration-s`` per variant
  (default 600 s; ``--quick``: 20 s).

The deciders are per-vehicle rules on what each vehicle knows (splitrt.edge_runtime.decide.deciders), not the
Lyapunov controller of `splitrt hil` (which keeps the books; it does not decide for the vehicles).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.edge_runtime.link.wire import Header, pack, unpack
from splitrt.edge_runtime.vehicle.journal import account, default_journal_path
from splitrt.tools.bench.run import BenchContext, record
from splitrt.tools.processes import Child, cli_command


def _cli_child(name: str, args: list[str], work: Path) -> Child:
    """A `splitrt` CLI child that dies with the bench (tools.processes); logs in ``work``."""
    return Child(name, cli_command(*args), work, status=True)


def _serve(model_dir: Path, work: Path, *args: str, log: str = "serve") -> tuple[Child, str]:
    proc = _cli_child(log, ["serve", "--segments", str(model_dir), "--bind", "tcp://127.0.0.1:*", *args], work)
    endpoint = proc.wait_ready(180.0)["endpoint"]
    return proc, endpoint


def _state(endpoint: str, timeout_ms: int = 10_000) -> dict[str, Any]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(pack(Header(kind="state_request")))
        if not sock.poll(timeout_ms):
            raise RuntimeError(f"no state reply from {endpoint}")
        return unpack(sock.recv_multipart())[0].state
    finally:
        sock.close(0)


def _vehicle(model_dir: Path, edges: str | list[str], out: Path, *args: str) -> Child:
    """A vehicle; ``edges`` is one endpoint or already the ``--edge E ...`` arguments."""
    edge_args = ["--edge", edges] if isinstance(edges, str) else edges
    argv = ["vehicle", "--segments", str(model_dir), *edge_args, "--out", str(out), "--id", out.stem, *args]
    return _cli_child(out.stem, argv, out.parent)


# ---- fuzz -----------------------------------------------------------------------------------


def fuzz(ctx: BenchContext) -> list[dict[str, Any]]:
    from splitrt.edge_runtime.formats.manifest import Manifest
    from splitrt.tools.bench import fuzz as fuzzing

    frames = 1000 if ctx.quick else 10_000
    manifest = ctx.export("mobilenet_v2")
    with tempfile.TemporaryDirectory(prefix="splitrt-fuzz-") as tmp:
        work = Path(tmp)
        server, endpoint = _serve(manifest.directory, work, "--role", "rsu")
        vehicle = None
        try:
            node = psutil.Process(server.popen.pid)
            state = _state(endpoint)
            rss_before = node.memory_info().rss
            out = work / "v0.jsonl"
            # A well-behaved vehicle for the whole fuzzing run (about 6 ms a frame here).
            slots = int(frames * 0.006 / 0.1) + 20
            vehicle = _vehicle(
                manifest.directory, endpoint, out, "--decider", "fixed:10", "--slots", str(slots), "--slot-s", "0.1"
            )
            deadline = time.monotonic() + 120
            while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.1)
            target = fuzzing.Target.of(Manifest.load(manifest.directory), state["max_message_bytes"])
            stats = fuzzing.run(
                endpoint,
                target,
                frames,
                seed=0,
                alive=lambda: server.popen.poll() is None,
                oversized=max(3, frames // 1000),
                raw_connections=max(3, frames // 1000),
            )
            rss_after = node.memory_info().rss if server.popen.poll() is None else float("nan")
            vehicle.popen.wait(slots * 0.1 + 300)
            records = read_jsonl(out)
        finally:
            if vehicle is not None:
                vehicle.terminate(grace_s=30.0)
            server.terminate(grace_s=30.0)
    params = {"model": manifest.model, "frames_asked": frames}
    out_records = [
        record("fuzz", "frames", stats.frames, "count", **params),
        record("fuzz", "errors_answered", stats.errors_answered, "count", **params),
        record("fuzz", "crashes", stats.crashes, "count", **params),
        record("fuzz", "disconnects_expected", stats.disconnects_expected, "count", **params),
        record("fuzz", "unexpected", stats.unexpected, "count", **params),
        record("fuzz", "unanswered", stats.unanswered, "count", **params),
        record("fuzz", "raw_connections", stats.raw_connections, "count", **params),
        record("fuzz", "rss_before_mb", rss_before / 2**20, "MiB", **params),
        record("fuzz", "rss_after_mb", rss_after / 2**20, "MiB", **params),
        record("fuzz", "vehicle_tasks", len(records), "count", **params),
        record("fuzz", "vehicle_not_remote", sum(r["outcome"] != "remote" for r in records), "count", **params),
    ]
    for category, n in sorted(stats.by_category.items()):
        out_records.append(record("fuzz", "frames_by_category", n, "count", category=category, **params))
    return out_records


# ---- overload -------------------------------------------------------------------------------

OVERLOAD_VEHICLES = 16
OVERLOAD_CUT = 10
OVERLOAD_SPEED = 4.0
OVERLOAD_QUEUE = 8
OVERLOAD_SVS = 2
SLOT_S = 0.1
#: The variants, in run order (splitrt.edge_runtime.decide.deciders specs): blind offloading at the fixed cut to
#: the RSU alone; then, with the RSU and two SVs to choose from, the queue-aware greedy decider at
#: the same cut (it only picks the node with the shortest known backlog) and the paper's greedy
#: (it also picks the cut: the smallest tensor).
OVERLOAD_DECIDERS = ("fixed", f"greedy:{OVERLOAD_CUT}", "greedy")


def overload(ctx: BenchContext) -> list[dict[str, Any]]:
    """Every variant (`OVERLOAD_DECIDERS`), one after the other, each for the whole duration, all
    at the arrival rate the first run's RSU calibration gives."""
    duration_s = ctx.duration_s or (20.0 if ctx.quick else 600.0)
    manifest = ctx.export("mobilenet_v2")
    out: list[dict[str, Any]] = []
    capacity = None
    for decider in OVERLOAD_DECIDERS:
        records, capacity = _overload_run(manifest, decider, duration_s, capacity)
        out += records
    return out


def _overload_run(
    manifest, decider: str, duration_s: float, capacity: float | None
) -> tuple[list[dict[str, Any]], float]:
    flops_after = float(manifest.cuts[OVERLOAD_CUT].flops_after)
    n_svs = 0 if decider == "fixed" else OVERLOAD_SVS
    node_args = ["--workers", "1", "--threads", "1", "--queue-limit", str(OVERLOAD_QUEUE),
                 "--speed-factor", str(OVERLOAD_SPEED), "--speed-mode", "stretch"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="splitrt-overload-") as tmp:
        work = Path(tmp)
        servers: list[tuple[Child, str]] = []
        vehicles: list[Child] = []
        try:
            names = ["rsu", *[f"sv{k + 1}" for k in range(n_svs)]]
            for name in names:
                role = "rsu" if name == "rsu" else "sv"
                servers.append(_serve(manifest.directory, work, "--role", role, "--name", name, *node_args, log=name))
            endpoints = [e for _, e in servers]
            nodes = [psutil.Process(p.popen.pid) for p, _ in servers]
            state = _state(endpoints[0])
            rss_start = nodes[0].memory_info().rss
            # The RSU's service rate at the fixed cut, from its own calibration (stretch included);
            # every variant gets the same arrivals: twice what the RSU alone serves at that cut.
            if capacity is None:
                capacity = state["workers"] * state["models"][manifest.model]["flops_per_s"] / flops_after
            offered = 2.0 * capacity
            per_slot = offered / OVERLOAD_VEHICLES * SLOT_S
            slots = int(duration_s / SLOT_S)
            outs = [work / f"v{i:02d}.jsonl" for i in range(OVERLOAD_VEHICLES)]
            spec = f"fixed:{OVERLOAD_CUT}" if decider == "fixed" else decider
            common = ["--decider", spec, "--arrivals", f"poisson:{per_slot:.4f}", "--node-names", ",".join(names)]
            common += ["--slots", str(slots), "--slot-s", str(SLOT_S), "--timeout-s", "10", "--connect-s", "60"]
            edges = [a for e in endpoints for a in ("--edge", e)]
            for i, out in enumerate(outs):
                vehicles.append(_vehicle(manifest.directory, edges, out, *common, "--seed", str(i)))
            peak_rss = [n.memory_info().rss for n in nodes]
            max_queue = 0
            deadline = time.monotonic() + duration_s + 300
            while any(v.popen.poll() is None for v in vehicles):
                if time.monotonic() > deadline:
                    raise RuntimeError("overload: vehicles still running long after the run should have ended")
                peak_rss = [max(p, n.memory_info().rss) for p, n in zip(peak_rss, nodes, strict=True)]
                for e in endpoints:
                    snap = _state(e)
                    max_queue = max(max_queue, *(q["tasks"] for q in snap["queues"].values()))
                time.sleep(0.5)
            failed_vehicles = [v.stderr_tail(500) for v in vehicles if v.popen.returncode != 0]
            if failed_vehicles:
                raise RuntimeError(f"overload: a vehicle exited with an error: {failed_vehicles[0]}")
            finals = [_state(e) for e in endpoints]
            records = [r for out in outs for r in read_jsonl(out)]
            accounts = [account(default_journal_path(out), read_jsonl(out)) for out in outs]
        finally:
            for v in vehicles:
                v.kill()
            for s, _ in servers:
                s.terminate(grace_s=30.0)
    lost = sum(a["missing"] + a["duplicates"] for a in accounts)
    first = min(r["arrival_unix_s"] for r in records)
    last = max(r["completion_unix_s"] for r in records)
    span = last - first
    total = np.array([r["total_s"] for r in records])
    done = [r for r in records if r["outcome"] != "failed"]
    params = {
        "decider": decider,
        "svs": n_svs,
        "vehicles": OVERLOAD_VEHICLES,
        "model": manifest.model,
        "cut": "smallest tensor" if decider == "greedy" else OVERLOAD_CUT,
        "queue_limit": OVERLOAD_QUEUE,
        "speed_factor": OVERLOAD_SPEED,
        "duration_s": duration_s,
    }
    cuts = sorted({int(r["cut"]) for r in records})
    return ([
        record("overload", "tasks_per_s", len(done) / span, "1/s", **params),
        record("overload", "p50_s", float(np.percentile(total, 50)), "s", **params),
        record("overload", "p99_s", float(np.percentile(total, 99)), "s", **params),
        record("overload", "rejected", sum(f["counters"]["busy"] for f in finals), "count", **params),
        record("overload", "lost", lost, "count", **params),
        record("overload", "peak_rss_mb", max(peak_rss) / 2**20, "MiB", **params),
        record("overload", "rss_start_mb", rss_start / 2**20, "MiB", **params),
        record("overload", "capacity_tasks_per_s", capacity, "1/s", **params),
        record("overload", "offered_tasks_per_s", offered, "1/s", **params),
        record("overload", "generated", sum(a["generated"] for a in accounts), "count", **params),
        record("overload", "remote_tasks_per_s", sum(r["outcome"] == "remote" for r in records) / span, "1/s", **params),
        record("overload", "fallback_fraction", sum(r["outcome"] == "fallback" for r in records) / len(records), "fraction", **params),
        record("overload", "failed", len(records) - len(done), "count", **params),
        record("overload", "max_queue_tasks", max_queue, "count", **params),
        record("overload", "node_completed", sum(f["counters"]["completed"] for f in finals), "count", **params),
        record("overload", "cuts_used", len(cuts), "count", **params, cuts=",".join(map(str, cuts))),
    ] + [
        record("overload", "tasks_by_outcome", n, "count", **params, outcome=outcome, reason=reason)
        for (outcome, reason), n in sorted(_outcomes(records).items())
    ] + [
        record("overload", "task_share", share, "fraction", **params, place=place)
        for place, share in task_shares(records).items()
    ] + [
        record("overload", "work_share", share, "fraction", **params, place=place)
        for place, share in work_shares(records, manifest).items()
    ]), capacity  # fmt: skip


def _place(record: dict[str, Any]) -> str:
    """Where a task's tail ran: ``rsu``, ``sv`` (any SV) or ``local`` (local and fallback)."""
    if record["outcome"] != "remote":
        return "local"
    return "rsu" if record["node"] == 0 else "sv"


def task_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """Fraction of the completed tasks whose tail ran at the RSU, at an SV, or on the vehicle."""
    done = [r for r in records if r["outcome"] != "failed"]
    return {p: sum(_place(r) == p for r in done) / max(1, len(done)) for p in ("rsu", "sv", "local")}


def work_shares(records: list[dict[str, Any]], manifest) -> dict[str, float]:
    """Fraction of the completed tasks' FLOPs computed at the RSU, at SVs, or on the vehicles (the
    head of every task, and the tail of the local and fallback ones)."""
    flops = {"rsu": 0.0, "sv": 0.0, "local": 0.0}
    for r in records:
        if r["outcome"] == "failed":
            continue
        cut = manifest.cuts[int(r["cut"])]
        flops["local"] += float(cut.flops_before)
        flops[_place(r)] += float(cut.flops_after)
    whole = sum(flops.values()) or 1.0
    return {p: f / whole for p, f in flops.items()}


def _outcomes(records: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(outcome, reason up to its first colon) -> tasks."""
    out: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r["outcome"], r["reason"].split(":")[0])
        out[key] = out.get(key, 0) + 1
    return out
