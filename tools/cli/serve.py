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

from splitrt.tools.cli.options import add_live_flags


def configure(p: argparse.ArgumentParser) -> None:
    from splitrt.edge_runtime.configfields import add_flags
    from splitrt.edge_runtime.node.config import ServerConfig

    p.add_argument(
        "--segments", type=Path, nargs="+", required=True, metavar="DIR", help="export directories (one per DNN type)"
    )
    add_flags(p, ServerConfig)  # every ServerConfig field but start_unix_s (filled in from --start-at)
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
    live = p.add_argument_group("live experiment")
    add_live_flags(live, stats="write the final snapshot here at exit")


def main(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import time

    import psutil

    from splitrt.edge_runtime.configfields import from_args
    from splitrt.edge_runtime.experiment.clock import SlotClock, parse_start_at
    from splitrt.edge_runtime.experiment.participant import NodeTelemetry, resolve_start, write_stats
    from splitrt.edge_runtime.formats.work import WorkTable
    from splitrt.edge_runtime.lifecycle import StatusFile
    from splitrt.edge_runtime.link.security import ServerSecurity
    from splitrt.edge_runtime.node.config import ServerConfig
    from splitrt.edge_runtime.node.process import serve

    security = ServerSecurity.from_files(args.curve_secret, args.allow)

    # the node's name is filled in here (the flag's default "" names it ROLE-PID), start_unix_s
    # by before_run once the epoch is known
    name = args.name or f"{args.role}-{os.getpid()}"
    config = from_args(ServerConfig, args, name=name)
    start_at = parse_start_at(args.start_at)
    work = WorkTable.load(args.work) if args.work else None
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
            config,
            args.segments,
            on_ready=ready,
            security=security,
            work=work,
            on_slot=hooks,
            before_run=before_run,
        )
    finally:
        stats: dict = {"node": name, "role": config.role}
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
