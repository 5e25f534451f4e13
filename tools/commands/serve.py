"""Run an edge node (RSU or service vehicle) that serves the tail segments of offloaded tasks.

One ROUTER socket serves many vehicles at once. --role rsu keeps one queue per DNN type and gives
each type the compute share of the paper's KKT allocation (eqs 43-52), solved every slot and at
every arrival and enforced by start-time fair queueing over worker time; --role sv keeps one FIFO.
The node prints `listening ENDPOINT` once it is ready, answers state requests with a snapshot of
every queue, and on SIGINT/SIGTERM answers or explicitly fails every task it holds.
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
        "--speed-mode", choices=["auto", "cgroup", "stretch"], default="auto", help="how --speed-factor is emulated"
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


def main(args: argparse.Namespace) -> int:
    from edge_runtime.security import ServerSecurity
    from edge_runtime.server import ServerConfig, serve

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
    )

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

    return serve(config, args.segments, on_ready=ready, security=security)
