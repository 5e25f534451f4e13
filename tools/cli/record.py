"""Record an experiment's telemetry: every message into OUT/<kind>.jsonl, until stopped.

Subscribes to splitrt/<experiment>/# on the broker and appends node states, vehicle states, task
records, controller records, slot beacons and events as JSON lines (flushed per message). Stops
on SIGINT/SIGTERM, after --duration-s, or when the experiment publishes the event "stop".
With --controller SETUP.json it also runs the Lyapunov controller on what it receives (the same
books `splitrt hil` keeps), publishes a record per slot on the controller topic and writes
OUT/controller_final.jsonl at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="mqtt://HOST:PORT", help="the experiment's MQTT broker")
    p.add_argument("--experiment", required=True, help="experiment id (the topics' <exp>)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the JSON-lines files")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--controller",
        type=Path,
        default=None,
        metavar="SETUP.json",
        help="also run the Lyapunov controller (splitrt.edge_runtime.experiment.controller.ControllerSetup as JSON)",
    )


def main(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading
    import time

    from splitrt.edge_runtime.experiment.clock import BeaconWaiter
    from splitrt.edge_runtime.experiment.controller import ControllerSetup, LyapunovController
    from splitrt.edge_runtime.experiment.recorder import Recorder
    from splitrt.edge_runtime.experiment.telemetry import Publisher
    from splitrt.edge_runtime.formats.work import WorkTable

    stop = threading.Event()
    controller = None
    publisher = None
    beacon = BeaconWaiter()
    callbacks = []
    if args.controller:
        setup = ControllerSetup.load(args.controller)
        publisher = Publisher(args.broker, args.experiment, f"{args.experiment}-controller")
        controller = LyapunovController(setup, WorkTable.load(setup.work), publish=lambda k, b: publisher.publish(k, b))
        callbacks.append(controller.on_message)
        callbacks.append(lambda k, i, m: beacon.on_beacon(m) if k == "slot" else None)
    recorder = Recorder(args.broker, args.experiment, args.out, callbacks=callbacks)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"recording {args.experiment} from {args.broker} into {args.out}", flush=True)
    deadline = time.monotonic() + args.duration_s if args.duration_s else float("inf")
    emitted = -1
    try:
        while not stop.is_set() and not recorder.stop_event.is_set() and time.monotonic() < deadline:
            stop.wait(0.05)
            if controller is not None and beacon.clock is not None:
                clock = beacon.clock
                # slot t's online record once slot t + 1 has begun (its Q(t + 1) is published then)
                current = clock.slot_at(time.time() - 0.1 * clock.slot_s) - 1
                while emitted < min(current, controller.setup.slots - 1):
                    emitted += 1
                    controller.emit(emitted)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        counts = recorder.close()
        if controller is not None:
            with (args.out / "controller_final.jsonl").open("w") as f:
                for rec in controller.records():
                    f.write(json.dumps(rec) + "\n")
        if publisher is not None:
            publisher.close()
    print("recorded " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
