"""Run an edge node (RSU or service vehicle) that serves the tail segments of offloaded tasks.

One ROUTER socket serves many vehicles at once. --role rsu keeps one queue per DNN type and gives
each type the compute share of the paper's KKT allocation (eqs 43-52), solved every slot and at
every arrival and enforced by start-time fair queueing over worker time; --role sv keeps one FIFO.
The node prints `listening ENDPOINT` once it is ready, answers state requests with a snapshot of
every queue, and on SIGINT/SIGTERM answers or explicitly fails every task it holds.

In a live experiment --telemetry publishes the snapshot at every slot boundary (the RSU also the
slot beacon), --start-at aligns the slots with the experiment's epoch, and --work counts every
task's FLOPs in the simulator's unit.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--segments", type=Path, nargs="+", required=True, metavar="DIR", help="export directories (one per DNN type)"
    )
    p.add_argument(
        "--bind", default="tcp://0.0.0.0:5555", help="ZeroMQ endpoint to bind (tcp://127.0.0.1:* picks a free port)"
    )
    p.add_argument(
        "--role", choices=["rsu", "sv"], default="rsu", help="rsu: per-type queues + KKT shares; sv: one FIFO"
    )
    p.add_argument("--name", default="", help="node name reported in replies (default: ROLE-PID)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--workers", type=int, default=1, help="tasks computed concurrently")
    p.add_argument("--slot-s", type=float, default=1.0, help="slot length tau in seconds (allocation period)")
    p.add_argument("--v", type=float, default=10.0, help="Lyapunov trade-off V of the allocation (P3)")
    p.add_argument(
        "--capacity-flops",
        type=float,
        default=None,
        metavar="FLOP/S",
        help="RSU compute F = f_rsu_max in FLOP/s (default: workers x mean effective FLOP/s of the models, "
        "from DIR/profile.json when it matches, else a start-up calibration)",
    )
    p.add_argument(
        "--discipline",
        choices=["sfq", "containers"],
        default="sfq",
        help="sfq: one task at a time, shares enforced over worker time; containers: one FIFO per type, "
        "each task held until its type's container (at f_k) has done its work (the paper's RSU)",
    )
    p.add_argument("--queue-limit", type=int, default=64, help="tasks per queue (queued + running) before 'busy'")
    p.add_argument(
        "--resolve-s",
        type=float,
        default=None,
        help="rsu: re-solve the allocation after arrivals at most this often (default: slot / 10)",
    )
    p.add_argument("--grace-s", type=float, default=10.0, help="on shutdown, wait this long for running tasks")
    p.add_argument("--calibration-runs", type=int, default=3, help="timed chain passes per model at start-up")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu, cuda or tensorrt")
    p.add_argument("--speed-factor", type=float, default=1.0, help="emulate a node this many times slower")
    p.add_argument(
        "--speed-mode",
        choices=["auto", "cgroup", "stretch", "pace"],
        default="auto",
        help="how --speed-factor is emulated (pace: each segment takes factor x its profiled time)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest ZeroMQ frame accepted; a bigger one disconnects its sender (default: the largest cut tensor)",
    )
    p.add_argument(
        "--curve-secret",
        type=Path,
        default=None,
        metavar="FILE",
        help="this node's NAME.key_secret (`splitrt keys`): CURVE-encrypted, authenticated link; "
        "without it the link is plain (unauthenticated, lab use only)",
    )
    p.add_argument(
        "--allow",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --curve-secret: serve only vehicles whose public key file (NAME.key) is in DIR",
    )

    p.add_argument(
        "--speed-profile-dir",
        default="",
        metavar="DIR",
        help="pace: reference profiles DIR/<model>/profile.json (default: each --segments DIR's profile.json)",
    )
    live = p.add_argument_group("live experiment")
    live.add_argument("--telemetry", default=None, metavar="mqtt://HOST:PORT", help="MQTT broker for telemetry")
    live.add_argument("--experiment", default="default", help="experiment id (the topics' <exp>)")
    live.add_argument(
        "--start-at",
        default=None,
        metavar="UNIX_S|now+S|beacon",
        help="slot 0 starts at this wall-clock time, or at the epoch of the experiment's slot beacon (MQTT)",
    )
    live.add_argument("--work", type=Path, default=None, help="work table: per-cut FLOPs in the simulator's unit")
    live.add_argument("--stats", type=Path, default=None, metavar="FILE", help="write the final snapshot here at exit")
    live.add_argument(
        "--status-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="append JSON status lines here: {event: ready, ...} once ready, {event: error, message} if the start fails (splitrt.edge_runtime.lifecycle.StatusFile)",
    )


def main(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import psutil

    from splitrt.edge_runtime.experiment.clock import SlotClock, parse_start_at
    from splitrt.edge_runtime.experiment.participant import NodeTelemetry, resolve_start, write_stats
    from splitrt.edge_runtime.formats.work import WorkTable
    from splitrt.edge_runtime.lifecycle import StatusFile
    from splitrt.edge_runtime.link.security import ServerSecurity
    from splitrt.edge_runtime.node.server import ServerConfig, serve

    security = ServerSecurity.from_files(args.curve_secret, args.allow)

    config = ServerConfig(
        bind=args.bind,
        role=args.role,
        name=args.name,
        threads=args.threads,
        workers=args.workers,
        slot_s=args.slot_s,
        v=args.v,
        capacity_flops_per_s=args.capacity_flops,
        queue_limit=args.queue_limit,
        resolve_s=args.resolve_s,
        grace_s=args.grace_s,
        calibration_runs=args.calibration_runs,
        providers=(args.provider,),
        speed_factor=args.speed_factor,
        speed_mode=args.speed_mode,
        max_message_bytes=args.max_message_bytes,
        speed_profile_dir=args.speed_profile_dir,
        discipline=args.discipline,
    )
    start_at = parse_start_at(args.start_at)
    work = WorkTable.load(args.work) if args.work else None
    name = args.name or f"{args.role}-{__import__('os').getpid()}"
    telemetry = NodeTelemetry(args.telemetry, args.experiment, name, args.role) if args.telemetry else None
    final: dict = {}

    def ready(server, endpoint: str) -> None:
        models = ", ".join(
            f"{m} ({s.flops_per_s / 1e9:.1f} GFLOP/s, {s.speed_source})" for m, s in server.models.items()
        )
        print(
            f"{server.name}: {config.role} serving {models}; capacity {server.capacity_flops_per_s / 1e9:.1f} GFLOP/s"
        )
        sec = server.security.describe()
        if sec["mode"] == "curve":
            print(
                f"link: CURVE (encrypted, {sec['allowed_keys']} allowed vehicle key(s)), server key {sec['public_key']}"
            )
        else:
            print("link: plain (UNAUTHENTICATED, unencrypted: lab use only; see --curve-secret)")
        print(f"listening {endpoint}", flush=True)
        final["server"] = server
        StatusFile(args.status_file).ready(role=config.role, name=server.name, endpoint=endpoint)

    def before_run(server) -> ServerConfig:
        epoch = resolve_start(start_at, args.telemetry, args.experiment, name)
        if telemetry is not None:
            telemetry.clock = SlotClock(epoch if epoch is not None else time.time(), config.slot_s)
        return dataclasses.replace(server.config, start_unix_s=epoch)

    hooks = [telemetry.on_slot] if telemetry is not None else []
    try:
        return serve(
            dataclasses.replace(config, name=name),
            args.segments,
            on_ready=ready,
            security=security,
            work=work,
            on_slot=hooks,
            before_run=before_run,
        )
    finally:
        stats: dict = {"node": name, "role": args.role}
        stats["cpu_s"] = sum(psutil.Process().cpu_times()[:2])  # user + system
        if "server" in final:
            stats["snapshot"] = final["server"].snapshot()
            server = final["server"]
            if config.discipline == "containers":  # the containers' hold is the node's emulated speed
                counters = server.counters
                stats["pace"] = {"runs": counters["completed"], "misses": counters["container_overruns"]}
            else:
                runners = [m.runner.pace_counters for m in server.models.values()]
                stats["pace"] = {k: sum(r[k] for r in runners) for k in ("runs", "misses", "overrun_s")}
        if telemetry is not None:
            stats["telemetry"] = telemetry.close()
        write_stats(args.stats, stats)
