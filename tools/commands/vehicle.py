"""Run a client vehicle: generate DNN tasks, split each one, offload the tail to edge nodes.

Tasks arrive per slot (one at each slot start, as in the paper) or as a Poisson process, wait in
the local FIFO, and for each the decider picks (cut, node): node 0 is the first --edge (by
convention the RSU), node j the (j+1)-th. The head runs here, the tensor crosses the ZeroMQ link,
the node runs the tail. On timeout, busy, error or a lost node the vehicle finishes the task
itself from the cut it reached. One JSON record per task (--out), a summary table at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segments", type=Path, required=True, metavar="DIR", help="this vehicle's export directory")
    p.add_argument(
        "--edge",
        action="append",
        required=True,
        metavar="tcp://HOST:PORT",
        help="an edge node (repeat; order = node index)",
    )
    p.add_argument(
        "--decider", default="greedy", help="local | offload[@J] | fixed:K[@J] | greedy (K = cut, J = node index)"
    )
    p.add_argument("--slots", type=int, default=30, help="slots to generate tasks in")
    p.add_argument("--slot-s", type=float, default=1.0, help="slot length in seconds")
    p.add_argument(
        "--arrivals", default="per-slot", help="per-slot (one task per slot) or poisson:RATE (mean tasks per slot)"
    )
    p.add_argument("--timeout-s", type=float, default=5.0, help="give up on a node's reply after this long")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="append one JSON line per task here")
    p.add_argument("--encoding", choices=["fp32", "fp16", "int8"], default="fp32", help="payload encoding")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu, cuda or tensorrt")
    p.add_argument("--speed-factor", type=float, default=1.0, help="emulate a device this many times slower")
    p.add_argument(
        "--speed-mode",
        choices=["auto", "cgroup", "stretch"],
        default="auto",
        help="cgroup: CPU quota of 1/X (root); stretch: idle X-1 times each segment; auto: cgroup where allowed",
    )
    p.add_argument("--verify", action="store_true", help="compare every result with the whole model's output")
    p.add_argument("--id", default="v0", help="vehicle id (task ids are ID-N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and of Poisson arrivals")
    p.add_argument("--connect-s", type=float, default=5.0, help="wait this long for the edge connections at start")
    p.add_argument(
        "--journal",
        type=Path,
        default=None,
        metavar="FILE",
        help="write-ahead task journal (default: OUT.journal with --out): after a kill, the next start "
        "records the tasks that were in flight as failed ('vehicle restarted') and repairs --out",
    )
    p.add_argument("--no-journal", action="store_true", help="keep no journal (a killed vehicle loses its open tasks)")
    p.add_argument(
        "--curve-secret",
        type=Path,
        default=None,
        metavar="FILE",
        help="this vehicle's NAME.key_secret (`splitrt keys`): CURVE-encrypted, authenticated link "
        "(without it: plain, unauthenticated, lab use only)",
    )
    p.add_argument(
        "--server-key",
        type=Path,
        action="append",
        default=None,
        metavar="FILE",
        help="the edge node's public key NAME.key (once for all --edge, or once per --edge in order)",
    )


def main(args: argparse.Namespace) -> int:
    from edge_runtime.errors import SplitrtError
    from edge_runtime.journal import TaskJournal
    from edge_runtime.records import JsonlSink, format_summary, summarize
    from edge_runtime.security import ClientSecurity
    from edge_runtime.vehicle import VehicleConfig, run_vehicle

    config = VehicleConfig(
        edges=tuple(args.edge),
        vehicle_id=args.id,
        decider=args.decider,
        slots=args.slots,
        slot_s=args.slot_s,
        arrivals=args.arrivals,
        timeout_s=args.timeout_s,
        encoding=args.encoding,
        threads=args.threads,
        providers=(args.provider,),
        speed_factor=args.speed_factor,
        speed_mode=args.speed_mode,
        verify=args.verify,
        seed=args.seed,
        connect_s=args.connect_s,
    )
    security = ClientSecurity.from_files(args.curve_secret, args.server_key, len(config.edges))
    if args.journal is not None and args.no_journal:
        raise SplitrtError("--journal and --no-journal contradict each other")
    journal_path = args.journal or (None if args.no_journal or not args.out else Path(f"{args.out}.journal"))
    if args.out is not None and args.out.is_dir():
        raise SplitrtError(f"--out {args.out} is a directory; give a file for the JSON-lines records")
    journal = None
    if journal_path is not None:
        journal = TaskJournal.open(journal_path, args.id, records_path=args.out, start={"argv": " ".join(sys.argv)})
    sinks = []
    try:
        if args.out:
            try:
                sinks.append(JsonlSink(args.out))
            except OSError as exc:
                raise SplitrtError(f"--out {args.out}: cannot open for writing ({exc.strerror or exc})") from None
        records = run_vehicle(config, args.segments, sinks=sinks, security=security, journal=journal)
    finally:
        for sink in sinks:
            sink.close()
        if journal is not None:
            journal.close()
    if journal is not None and (journal.recovered or journal.repaired):
        print(
            f"{args.id}: journal {journal.path}: {len(journal.recovered)} task(s) of the previous run recorded as "
            f"failed (vehicle restarted), {journal.repaired} record(s) restored"
        )
    print(f"{args.id}: {len(records)} tasks")
    if records:
        print(format_summary(summarize(records)))
    if args.verify:
        bad = [r["task_id"] for r in records if r["verified"] is False]
        print(
            f"verify: {len(records) - len(bad)} of {len(records)} outputs match the whole model"
            + (f"; mismatched: {bad[:10]}" if bad else "")
        )
        return 1 if bad else 0
    return 0
