"""Fault injection for live experiments, and the record of when each fault was active.

A fault window is one JSON line in ``faults.jsonl`` (`FaultLog`), written when the fault ends
(and a start line when it begins, so a crash mid-fault still shows it):

    {"event": "fault_start" | "fault", "kind": ..., "target": ..., "start_unix_s": ..., "end_unix_s": ..., "detail": {...}}

Kinds used in hil_tests/test_faults.py:

| kind | what | how |
|---|---|---|
| ``node_killed`` | an edge node dies (SIGKILL) and a new one starts on the same port | `kill_process`, restart |
| ``node_stalled`` | an edge node stops computing and answering (SIGSTOP ... SIGCONT) | `stall` |
| ``link_blackout`` | a vehicle-node link goes down for some slots | `splitrt.tools.hil.linkem.Topology.set_down` |
| ``link_loss`` | a link drops a fraction of its packets | `splitrt.tools.hil.linkem.Topology.set_loss` |
| ``vehicle_killed`` | a vehicle process dies (SIGKILL) and is started again | `kill_process`, restart (splitrt.edge_runtime.vehicle.journal recovers its open tasks) |

Times are wall clock (seconds since the epoch), like the task records' ``arrival_unix_s``, so a
report can place every task before, inside or after a window (`split_by_window`). Every line can
also go to other sinks (the MQTT telemetry's ``event`` topic takes the same dicts).

``splitrt hil --fault broker-kill@N|blackout@N:S`` (tools/hil/runner.py) logs its faults here too,
one ``OUT/<method>/faults.jsonl`` per method, with kinds ``broker_killed`` (the embedded broker
killed at slot N and not started again: the window lasts to the end of the run, ``restarted``:
false) and ``link_blackout`` (every link of cv0 down for slots N..N+S-1); their ``detail`` has
``slot`` and ``end_slot`` (slots [slot, end_slot)). The report (tools/hil/report.py
`fault_summary`, also with ``--report-only``) shows every window with the tasks before, during
and after it and shades it on the queue and Lyapunov plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FaultSink = Callable[[dict[str, Any]], None]


@dataclass
class FaultWindow:
    kind: str
    target: str
    start_unix_s: float
    end_unix_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def contains(self, t_unix_s: float) -> bool:
        end = self.end_unix_s if self.end_unix_s is not None else float("inf")
        return self.start_unix_s <= t_unix_s <= end


class FaultLog:
    """Appends fault windows to ``path`` (JSON lines, flushed) and to any extra sinks."""

    def __init__(self, path: str | Path, sinks: Sequence[FaultSink] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)
        self.windows: list[FaultWindow] = []
        self._lock = threading.Lock()

    def _emit(self, event: str, window: FaultWindow) -> None:
        line = {"event": event, **asdict(window)}
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
        for sink in self.sinks:
            sink(line)

    def start(self, kind: str, target: str, **detail: Any) -> FaultWindow:
        window = FaultWindow(kind, target, time.time(), None, detail)
        self.windows.append(window)
        self._emit("fault_start", window)
        return window

    def end(self, window: FaultWindow, **detail: Any) -> FaultWindow:
        window.end_unix_s = time.time()
        window.detail.update(detail)
        self._emit("fault", window)
        return window

    @contextlib.contextmanager
    def window(self, kind: str, target: str, **detail: Any) -> Iterator[FaultWindow]:
        """``with log.window("link_blackout", "cv0-rsu"): ...``: the block is the fault."""
        w = self.start(kind, target, **detail)
        try:
            yield w
        finally:
            self.end(w)


def read_windows(path: str | Path) -> list[FaultWindow]:
    """The completed windows of a faults.jsonl (a window without its end line is open-ended)."""
    done: dict[tuple[str, str, float], FaultWindow] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        x = json.loads(line)
        w = FaultWindow(x["kind"], x["target"], x["start_unix_s"], x.get("end_unix_s"), x.get("detail", {}))
        key = (w.kind, w.target, w.start_unix_s)
        if x["event"] == "fault" or key not in done:
            done[key] = w
    return sorted(done.values(), key=lambda w: w.start_unix_s)


def split_by_window(records: Iterable[dict[str, Any]], window: FaultWindow) -> dict[str, list[dict[str, Any]]]:
    """Records whose task arrived ``before``, ``during`` or ``after`` the window."""
    out: dict[str, list[dict[str, Any]]] = {"before": [], "during": [], "after": []}
    end = window.end_unix_s if window.end_unix_s is not None else float("inf")
    for r in records:
        t = r["arrival_unix_s"]
        out["before" if t < window.start_unix_s else "during" if t <= end else "after"].append(r)
    return out


# ---- injectors ------------------------------------------------------------------------------


def kill_process(pid: int, *, group: bool = True) -> None:
    """SIGKILL a process (its whole process group by default: a CLI and its children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)


def stall(pid: int, seconds: float, *, group: bool = True) -> None:
    """Freeze a process for ``seconds`` (SIGSTOP, then SIGCONT): its sockets stay open but nothing
    is computed or answered, as on an overloaded or thermally throttled board."""
    send = os.killpg if group else os.kill
    send(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        send(pid, signal.SIGCONT)
