"""Run a client vehicle: generate DNN tasks, split each one, offload the tail to edge nodes.

Tasks arrive per slot (one at each slot start, as in the paper) or as a Poisson process, wait in
the local FIFO, and for each the decider picks (cut, node): node 0 is the first --edge (by
convention the RSU), node j the (j+1)-th. The head runs here, the tensor crosses the ZeroMQ link,
the node runs the tail. On timeout, busy, error or a lost node the vehicle finishes the task
itself from the cut it reached. One JSON record per task (--out), a summary table at the end.

In a live experiment (`splitrt hil` starts vehicles like this) --telemetry publishes the task
records and the vehicle's state every slot and feeds the nodes' published states into the
observation, --start-at puts slot 0 at the experiment's shared epoch, --trace gives positions,
link rates and SVs in range per slot, and --work counts the local queue in the simulator's unit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splitrt.tools.cli.options import add_live_flags


def configure(p: argparse.ArgumentParser) -> None:
    from splitrt.edge_runtime.configfields import add_flags
    from splitrt.edge_runtime.vehicle.config import VehicleConfig

    live_fields = ("late_tolerance_s",)
    p.add_argument("--segments", type=Path, required=True, metavar="DIR", help="this vehicle's export directory")
    add_flags(p, VehicleConfig, exclude=live_fields)  # every VehicleConfig field but state_lead_s
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="append one JSON line per task here")
    p.add_argument(
        "--speed-profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="pace: the reference profile of this device (default: the export's profile.json)",
    )
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
    live = p.add_argument_group("live experiment")
    live.add_argument(
        "--node-names",
        default="",
        help="comma-separated names of the --edge nodes as they publish telemetry (e.g. rsu,sv1)",
    )
    live.add_argument("--trace", type=Path, default=None, help="per-slot positions, link rates, SVs in range (JSON)")
    add_flags(live, VehicleConfig, only=live_fields)
    add_live_flags(live, stats="write counters here at the end")


def main(args: argparse.Namespace) -> int:
    import psutil

    from splitrt.edge_runtime.compute.profile import Profile
    from splitrt.edge_runtime.compute.speed import SpeedEmulation, pace_times
    from splitrt.edge_runtime.configfields import from_args
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.edge_runtime.experiment.clock import parse_start_at
    from splitrt.edge_runtime.experiment.participant import BeaconLag, VehicleTelemetry, resolve_start, write_stats
    from splitrt.edge_runtime.formats.manifest import Manifest
    from splitrt.edge_runtime.formats.records import JsonlSink, format_summary, summarize
    from splitrt.edge_runtime.formats.trace import LinkTrace
    from splitrt.edge_runtime.formats.work import WorkTable
    from splitrt.edge_runtime.lifecycle import StatusFile
    from splitrt.edge_runtime.link.security import ClientSecurity
    from splitrt.edge_runtime.vehicle.client import Vehicle
    from splitrt.edge_runtime.vehicle.config import VehicleConfig
    from splitrt.edge_runtime.vehicle.journal import TaskJournal, default_journal_path

    config = from_args(VehicleConfig, args)
    manifest = Manifest.load(args.segments)
    decider = make_vehicle_decider(config.decider, manifest, len(config.edges), config.seed)
    start_at = parse_start_at(args.start_at)
    trace = LinkTrace.load(args.trace) if args.trace else None
    work = WorkTable.load(args.work).for_model(manifest) if args.work else None
    names = [n for n in args.node_names.split(",") if n] if args.node_names else []
    if args.telemetry and names and len(names) != len(config.edges):
        raise SplitrtError(f"--node-names lists {len(names)} names for {len(config.edges)} --edge nodes")
    security = ClientSecurity.from_files(args.curve_secret, args.server_key, len(config.edges))
    if args.journal is not None and args.no_journal:
        raise SplitrtError("--journal and --no-journal contradict each other")
    journal_path = args.journal or (None if args.no_journal or not args.out else default_journal_path(args.out))
    if args.out is not None and args.out.is_dir():
        raise SplitrtError(f"--out {args.out} is a directory; give a file for the JSON-lines records")
    journal = None
    if journal_path is not None:
        journal = TaskJournal.open(
            journal_path, config.vehicle_id, records_path=args.out, start={"argv": " ".join(sys.argv)}
        )
    telemetry = None
    sinks: list = []
    on_slot: list = []
    runner_pace_s = None
    emulation = SpeedEmulation(config.speed_factor, config.speed_mode, cpus=config.threads)
    lag = None
    vehicle = None
    try:
        if args.out:
            try:
                sinks.append(JsonlSink(args.out))
            except OSError as exc:
                raise SplitrtError(f"--out {args.out}: cannot open for writing ({exc.strerror or exc})") from None
        if args.telemetry:
            telemetry = VehicleTelemetry(args.telemetry, args.experiment, config.vehicle_id, names)
            sinks.append(telemetry.sink)
            on_slot.append(telemetry.on_slot)
        factor = emulation.apply()
        if emulation.applied_mode == "pace":
            reference = Profile.load(args.speed_profile or args.segments / "profile.json", manifest)
            runner_pace_s = pace_times(reference.segment_median_s, config.speed_factor)

        def ready() -> None:  # called by Vehicle.run after the warm-up and the connections
            if start_at is not None:  # it then waits for the epoch: say so
                print(f"{config.vehicle_id}: ready", flush=True)
            StatusFile(args.status_file).ready(vehicle=config.vehicle_id)

        def epoch() -> float:
            return resolve_start(start_at, args.telemetry, args.experiment, config.vehicle_id)

        vehicle = Vehicle(
            config,
            manifest,
            decider=decider,
            sinks=sinks,
            on_slot=on_slot,
            trace=trace,
            work=work,
            security=security,
            journal=journal,
            runner_speed_factor=factor,
            runner_pace_s=runner_pace_s,
            start_at=epoch if start_at is not None else None,
            on_ready=ready,
        )
        for record in journal.recovered if journal is not None else ():
            for sink in sinks:  # the tasks a killed run left open, recorded as failed first
                sink(record)
        if telemetry is not None:
            telemetry.attach(vehicle)

        if args.telemetry and start_at is not None:
            lag = BeaconLag(args.telemetry, args.experiment, f"{args.experiment}-{config.vehicle_id}-lag")
        records = vehicle.run()
    finally:
        emulation.close()
        for sink in sinks:
            if isinstance(sink, JsonlSink):
                sink.close()
        if journal is not None:
            journal.close()
        stats = {"vehicle": config.vehicle_id, "speed": emulation.describe()}
        stats["cpu_s"] = sum(psutil.Process().cpu_times()[:2])  # user + system
        if vehicle is not None:
            stats["counters"] = dict(vehicle.counters)
            stats["pace"] = dict(vehicle.runner.pace_counters)
            stats["records"] = len(vehicle.records)
        if telemetry is not None:
            stats["telemetry"] = telemetry.close()
        if lag is not None:
            stats["slot_clock"] = lag.close()
        write_stats(args.stats, stats)
    if journal is not None and (journal.recovered or journal.repaired):
        print(
            f"{config.vehicle_id}: journal {journal.path}: {len(journal.recovered)} task(s) of the previous run recorded as "
            f"failed (vehicle restarted), {journal.repaired} record(s) restored"
        )
    print(f"{config.vehicle_id}: {len(records)} tasks")
    if records:
        print(format_summary(summarize(records)))
    if config.verify:
        bad = [r["task_id"] for r in records if r["verified"] is False]
        print(
            f"verify: {len(records) - len(bad)} of {len(records)} outputs match the whole model"
            + (f"; mismatched: {bad[:10]}" if bad else "")
        )
        return 1 if bad else 0
    return 0


def make_vehicle_decider(spec: str, manifest, n_nodes: int, seed: int):
    """The decider for this vehicle; a trained policy is checked against the model at start."""
    from splitrt.edge_runtime.decide.deciders import make_decider

    decider = make_decider(spec, manifest.n_cuts, n_nodes, seed)
    check = getattr(decider, "check_model", None)
    if check is not None:
        check(manifest.model, manifest.digest)
        if decider.n_cuts[manifest.model] != manifest.n_cuts:
            from splitrt.edge_runtime.errors import SplitrtError

            raise SplitrtError(
                f"policy {spec[len('policy:') :]} was trained with {decider.n_cuts[manifest.model]} cuts of "
                f"{manifest.model}, this export has {manifest.n_cuts}"
            )
    return decider
