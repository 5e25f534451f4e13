"""The vehicle's task ledger: the open tasks, every task's one record, its sinks and its journal.

Every generated task ends as exactly one record (splitrt.edge_runtime.formats.records), also when
the run is interrupted, and, with a `TaskJournal` (splitrt.edge_runtime.vehicle.journal), also
when the process is killed: the next start records the tasks that were in flight as failed
(``vehicle restarted``). `TaskLedger` writes the journal's lines in the order recovery relies on:
``generated`` when a task arrives, before anything else happens to it, ``decided`` once its
(cut, node) is chosen, and its record before any sink sees it.

With ``verify`` each record carries the largest absolute error of the task's output against the
whole model's output on the same pool input (`reference_outputs`: the unsplit ONNX file when the
export kept it, else the segments run in one go), and ``verified`` (within `VERIFY_RTOL` of the
reference's magnitude; ``None`` for a remote result sent with a lossy encoding, which is not
expected to match). Records carry ``link_security`` (splitrt.edge_runtime.link.security).

Thread-safe: records are finished on the worker thread (local, fallback, failed) and on the
calling thread (remote); one lock guards the open tasks, the records and the sinks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.decide.deciders import Decider
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.records import DURATION_KEYS, RecordSink
from splitrt.edge_runtime.link.security import ClientSecurity
from splitrt.edge_runtime.vehicle.config import VehicleConfig
from splitrt.edge_runtime.vehicle.journal import TaskJournal
from splitrt.edge_runtime.vehicle.task import Task

VERIFY_RTOL = 1e-4


def reference_outputs(
    manifest: Manifest, runner: SegmentRunner, inputs: Sequence[np.ndarray], providers: Sequence[str], threads: int
) -> list[np.ndarray]:
    """The whole model's output for every pool input (unsplit file if the export kept it)."""
    whole = manifest.whole_path()
    if whole is None:
        return [runner.run(x) for x in inputs]
    session = open_session(whole, providers=providers, threads=threads)
    return [session.run(None, {manifest.input.name: x})[0] for x in inputs]


class TaskLedger:
    """The open tasks and the records of a vehicle (module docstring)."""

    def __init__(
        self,
        config: VehicleConfig,
        manifest: Manifest,
        decider: Decider,
        security: ClientSecurity,
        *,
        sinks: list[RecordSink],
        journal: TaskJournal | None,
        references: list[np.ndarray] | None,
        node_name: Callable[[int], str | None],
    ) -> None:
        self.config = config
        self.manifest = manifest
        self.decider = decider
        self.security = security
        self.sinks = sinks  # the vehicle's list: sinks added to it later see the records too
        self.journal = journal
        self.references = references
        self.records: list[dict[str, Any]] = []
        self._node_name = node_name
        self._lock = threading.Lock()  # records, open-task bookkeeping
        self._open: dict[str, Task] = {}

    # ---- the journal -----------------------------------------------------------------------
    def generated(self, task: Task) -> None:
        """Journal a new task (before anything else happens to it)."""
        if self.journal is not None:
            self.journal.generated(
                task_id=task.id,
                index=task.index,
                slot=task.slot,
                arrival_unix_s=task.arrival_unix,
                model=self.manifest.model,
                digest=self.manifest.digest,
                decider=self.decider.name,
                link_security=self.security.mode,
            )

    def decided(self, task: Task) -> None:
        """Journal the task's (cut, node)."""
        if self.journal is not None:
            self.journal.decided(
                task_id=task.id,
                cut=task.cut,
                node=task.node,
                edge=None if task.node is None else self.config.edges[task.node],
                encoding=task.encoding,
            )

    # ---- open tasks ------------------------------------------------------------------------
    def open(self, task: Task) -> None:
        with self._lock:
            self._open[task.id] = task

    def open_task(self, task_id: str) -> Task | None:
        """The open task of that id; ``None`` once it has its record."""
        with self._lock:
            return self._open.get(task_id)

    def idle(self) -> bool:
        """Whether every task so far has its record."""
        with self._lock:
            return not self._open

    def counts(self) -> tuple[int, int]:
        """(records, open tasks), read together."""
        with self._lock:
            return len(self.records), len(self._open)

    # ---- completion ------------------------------------------------------------------------
    def finish(self, task: Task, outcome: str, reason: str, done: float) -> None:
        record = self.record(task, outcome, reason, done)
        with self._lock:
            if self.journal is not None:  # journaled before any sink sees it (recovery relies on it)
                self.journal.record(record)
            self._open.pop(task.id, None)
            self.records.append(record)
            for sink in self.sinks:
                sink(record)

    def record(self, task: Task, outcome: str, reason: str, done: float) -> dict[str, Any]:
        d = {k: float(task.d.get(k, 0.0)) for k in DURATION_KEYS}
        server = task.reply.server if task.reply is not None and outcome == "remote" else {}
        max_err: float | None = None
        verified: bool | None = None
        if self.references is not None and task.output is not None:
            ref = self.references[task.x_index]
            max_err = float(np.max(np.abs(task.output.astype(np.float64) - ref)))
            if task.encoding == "fp32" or outcome != "remote":  # a lossy payload is not expected to match
                verified = max_err <= VERIFY_RTOL * max(float(np.max(np.abs(ref))), 1e-12)
        total = done - task.arrival
        return {
            "task_id": task.id,
            "vehicle_id": self.config.vehicle_id,
            "index": task.index,
            "slot": task.slot,
            "model": self.manifest.model,
            "digest": self.manifest.digest,
            "decider": self.decider.name,
            "cut": task.cut,
            "node": task.node,
            "edge": None if task.node is None else self.config.edges[task.node],
            "node_name": None if task.node is None else self._node_name(task.node),
            "encoding": task.encoding,
            "bytes": task.bytes,
            "outcome": outcome,
            "reason": reason,
            "arrival_unix_s": task.arrival_unix,
            "completion_unix_s": task.arrival_unix + total,
            "total_s": total,
            **d,
            "remote_backlog_tasks": server.get("backlog_tasks"),
            "remote_backlog_flops": server.get("backlog_flops"),
            "remote_backlog_s": server.get("backlog_s"),
            "q_loc_flops": task.q_loc_flops,
            "observation": task.observation,
            "backlog_age_s": task.backlog_age_s,
            "verified": verified,
            "max_abs_err": max_err,
            "link_security": self.security.mode,
        }
