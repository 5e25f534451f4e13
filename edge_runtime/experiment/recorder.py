"""Record everything an experiment publishes: one JSON-lines file per kind of message.

`Recorder` subscribes to ``splitrt/<exp>/#`` (splitrt.edge_runtime.experiment.telemetry) and appends every valid
message to ``OUT/<kind>.jsonl`` (``node_state``, ``vehicle_state``, ``task``, ``controller``,
``slot``, ``event``) as ``{"recv_unix_s", "id", "msg"}``, flushed per line, so a crash loses
nothing already received. Invalid messages are counted (``rejected``), never written as if valid.
Extra ``on_message`` callbacks (the Lyapunov controller) see the same stream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from splitrt.edge_runtime.experiment.telemetry import KINDS, BrokerAddress, Subscriber

Callback = Callable[[str, str | None, dict[str, Any]], None]


class Recorder:
    """Writes an experiment's telemetry to ``out_dir`` (see the module docstring)."""

    def __init__(
        self,
        broker: BrokerAddress | str,
        experiment: str,
        out_dir: str | Path,
        *,
        client_id: str | None = None,
        callbacks: Sequence[Callback] = (),
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.callbacks = list(callbacks)
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.stop_event = threading.Event()
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()
        self.subscriber = Subscriber(
            broker,
            experiment,
            client_id or f"{experiment}-recorder-{time.monotonic_ns() % 10**9}",
            on_message=self._on_message,
            connect_timeout_s=connect_timeout_s,
        )

    def _on_message(self, kind: str, ident: str | None, msg: dict[str, Any]) -> None:
        line = json.dumps({"recv_unix_s": time.time(), "id": ident, "msg": msg}, separators=(",", ":"))
        with self._lock:
            f = self._files.get(kind)
            if f is None:
                f = self._files[kind] = (self.out_dir / f"{kind}.jsonl").open("a", encoding="utf-8")
            f.write(line + "\n")
            f.flush()
            self.counts[kind] += 1
        if kind == "event" and msg.get("event") == "stop":
            self.stop_event.set()
        for cb in self.callbacks:
            cb(kind, ident, msg)

    @property
    def rejected(self) -> int:
        return self.subscriber.rejected

    def close(self) -> dict[str, int]:
        self.subscriber.close()
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()
        return {**self.counts, "rejected": self.rejected}


def read_recorded(path: str | Path) -> list[dict[str, Any]]:
    """The ``msg`` of every line of a recorded ``<kind>.jsonl`` ([] if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line)["msg"] for line in path.read_text().splitlines() if line.strip()]
