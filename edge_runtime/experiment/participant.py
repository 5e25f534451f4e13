"""A node or vehicle taking part in a live experiment: its telemetry and its slot clock.

`splitrt serve` and `splitrt vehicle` use this with ``--telemetry mqtt://HOST:PORT --experiment
EXP`` (topics in splitrt.edge_runtime.experiment.telemetry):

- an edge node publishes its snapshot (`EdgeServer.snapshot`) as ``node/<name>/state`` at every
  slot boundary, right after its allocation was re-solved; the RSU also publishes the slot beacon
  (splitrt.edge_runtime.experiment.clock);
- a vehicle publishes ``vehicle/<id>/state`` at every slot boundary (local backlog, position, how
  late it noticed the boundary, missed slots) and every task record on ``vehicle/<id>/task``, and
  subscribes to the nodes' states: a node's backlog in its observation is the newest of its state
  reply, its last result and its telemetry (`Vehicle.observe_node_state`), and every record keeps
  the age of what was used.

Nothing here ever blocks a task: publishing only enqueues (telemetry.Publisher counts what it
cannot hand over), and a vehicle whose broker is gone keeps deciding with the last states it got.
``--start-at beacon`` waits (bounded) for the experiment's slot beacon before the first slot.
At exit ``--stats FILE`` gets the process's counters, its telemetry counters and beacon lags.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.experiment.clock import BEACON, BeaconWaiter, SlotClock
from splitrt.edge_runtime.experiment.telemetry import Publisher, Subscriber

log = logging.getLogger(__name__)

BEACON_TIMEOUT_S = 300.0


class NodeTelemetry:
    """An edge node's publisher; `on_slot` is an `EdgeServer` slot hook."""

    def __init__(self, broker: str, experiment: str, name: str, role: str) -> None:
        self.name = name
        self.role = role
        self.publisher = Publisher(broker, experiment, f"{experiment}-{name}")
        self.clock: SlotClock | None = None

    def on_slot(self, slot: int, snapshot: dict[str, Any]) -> None:
        body = {**snapshot, "slot": slot}
        if self.clock is not None:
            body["slot_start_unix_s"] = self.clock.slot_start_unix_s(slot)
        self.publisher.publish("node_state", body, self.name)
        if self.role == "rsu" and self.clock is not None:
            self.publisher.publish("slot", self.clock.beacon(slot))

    def close(self) -> dict[str, Any]:
        counters = self.publisher.counters()
        self.publisher.close()
        return counters


class VehicleTelemetry:
    """A vehicle's publisher (task records, per-slot state) and its view of the nodes' states.

    ``node_names`` maps the node names used on the ``node/<name>/state`` topics to the vehicle's
    edge indices (node 0 = the first --edge)."""

    def __init__(self, broker: str, experiment: str, vehicle_id: str, node_names: Sequence[str]) -> None:
        self.vehicle_id = vehicle_id
        self.node_index = {name: j for j, name in enumerate(node_names)}
        self.publisher = Publisher(broker, experiment, f"{experiment}-{vehicle_id}")
        self.vehicle = None  # set by `attach`; node states that arrive before are kept
        self._pending: dict[int, dict[str, Any]] = {}
        self.node_states = 0
        self.subscriber = Subscriber(
            broker, experiment, f"{experiment}-{vehicle_id}-sub", on_message=self._on_message, kinds=("node_state",)
        )

    def attach(self, vehicle: Any) -> None:
        self.vehicle = vehicle
        for j, state in self._pending.items():
            vehicle.observe_node_state(j, state)
        self._pending.clear()

    def _on_message(self, kind: str, ident: str | None, msg: dict[str, Any]) -> None:
        j = self.node_index.get(ident or "")
        if kind != "node_state" or j is None:
            return
        self.node_states += 1
        if self.vehicle is None:
            self._pending[j] = msg
        else:
            self.vehicle.observe_node_state(j, msg)

    def sink(self, record: dict[str, Any]) -> None:
        """A record sink (splitrt.edge_runtime.formats.records): every task record goes out on the task topic."""
        self.publisher.publish("task", record, self.vehicle_id)

    def on_slot(self, info: dict[str, Any]) -> None:
        self.publisher.publish("vehicle_state", {"vehicle": self.vehicle_id, **info}, self.vehicle_id)

    def close(self) -> dict[str, Any]:
        counters = {**self.publisher.counters(), "node_states_received": self.node_states}
        self.subscriber.close()
        self.publisher.close()
        return counters


def wait_for_epoch(broker: str, experiment: str, client_id: str, timeout_s: float = BEACON_TIMEOUT_S) -> SlotClock:
    """Block until the experiment's slot beacon arrives (``--start-at beacon``); its clock."""
    waiter = BeaconWaiter()
    sub = Subscriber(broker, experiment, client_id, on_message=lambda k, i, m: waiter.on_beacon(m), kinds=("slot",))
    try:
        return waiter.wait(timeout_s)
    finally:
        sub.close()


class BeaconLag:
    """Keeps listening to the beacons after the start: clock offset + broker latency per slot."""

    def __init__(self, broker: str, experiment: str, client_id: str) -> None:
        self.waiter = BeaconWaiter()
        self.subscriber = Subscriber(
            broker,
            experiment,
            client_id,
            on_message=lambda k, i, m: self.waiter.on_beacon(m),
            kinds=("slot",),
            connect_timeout_s=0,
        )

    def close(self) -> dict[str, Any]:
        self.subscriber.close()
        lags = sorted(self.waiter.lags_s)
        return {
            "beacons": len(lags),
            "beacon_lag_median_s": lags[len(lags) // 2] if lags else None,
            "beacon_lag_max_s": lags[-1] if lags else None,
        }


def resolve_start(start_at: float | str | None, broker: str | None, experiment: str, who: str) -> float | None:
    """The epoch (unix seconds) for ``--start-at``: given, from the beacon, or None (start now)."""
    if start_at != BEACON:
        return start_at  # type: ignore[return-value]
    if not broker:
        from splitrt.edge_runtime.errors import SplitrtError

        raise SplitrtError("--start-at beacon needs --telemetry mqtt://HOST:PORT (the beacon comes over MQTT)")
    started = time.monotonic()
    clock = wait_for_epoch(broker, experiment, f"{experiment}-{who}-beacon")
    log.info("%s: epoch %.3f from the slot beacon after %.2f s", who, clock.epoch_unix_s, time.monotonic() - started)
    return clock.epoch_unix_s


def write_stats(path: str | Path | None, stats: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=1, default=str) + "\n")
