"""The Lyapunov queue controller on measured data (SYSTEM_MODEL.md eqs 29-33, 43-52).

The live system's control actions are the vehicles' decisions and the RSU's per-type allocation,
which the RSU re-solves from its real queues at every slot (splitrt.edge_runtime.node.server). This module
keeps the books those actions are judged by, from what the processes measure and publish:

- Q(t): every queue at the start of slot t, measured by its owner and published at the slot
  boundary (telemetry ``vehicle/<id>/state`` ``q_loc_flops``, ``node/<id>/state`` queues);
  a state that did not arrive (broker outage, a late process) is replaced by the newest one
  before it, and its age in slots is recorded (``stale``).
- A(t): the work that slot t's tasks brought to each queue (from the task records: cut, node,
  and the work table's FLOPs of that cut, splitrt.edge_runtime.formats.work): local b_i (eq 8), W_k per RSU type
  (eq 10), W_j per SV (eq 16).
- S(t): the nominal service f tau: the CVs' and SVs' speeds, and the RSU's f_k from P3 solved on
  the measured Q_k(t), W_k(t), n_k(t) with the same `allocate_rsu` the RSU and the simulator use.
- the penalty V sum_i d_i of slot t's tasks, d_i = their *measured* completion times.

Per slot t (JSON record; quadratic terms in GFLOP^2 like splitrt.edge_runtime.sysmodel.lyapunov):

| key | meaning |
|---|---|
| ``slot``, ``v``, ``slot_s`` | t, V, tau |
| ``q_loc_flops``, ``q_rsu_flops``, ``q_sv_flops`` | Q(t) per CV / RSU type / SV (FLOPs) |
| ``backlog_flops``, ``backlog_s`` | total Q(t); seconds of work where the owner reports it (RSU/SV ``est_s``, CVs Q / f_loc) |
| ``backlog_next_flops`` | total Q(t + 1) (the simulator logs the backlog after the slot) |
| ``arrivals_flops``, ``service_flops``, ``rsu_alloc_flops_per_s`` | A(t), S(t) per queue kind, P3's f_k |
| ``lyapunov_start``, ``lyapunov`` | L(Q(t)) and L(Q(t+1)) (eq 29; the simulator logs the latter) |
| ``drift`` | L(Q(t+1)) - L(Q(t)) |
| ``pressure`` | sum Q(t) (A(t) - S(t)) |
| ``penalty`` | V sum_i d_i over slot t's completed tasks |
| ``p2`` | pressure + penalty (eq 33) |
| ``dpp`` | drift + penalty: the realised drift-plus-penalty (eq 31) |
| ``tasks``, ``tasks_done``, ``mean_completion_s`` | slot t's tasks generated (from the records) and completed |
| ``stale`` | source -> how many slots old the state used for Q(t) or Q(t+1) was (only stale ones) |
| ``final`` | false for the online record published one slot later, true once every task of the slot is in |
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.work import ModelWork, WorkTable
from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu
from splitrt.edge_runtime.sysmodel.arrivals import task_arrivals


@dataclass(frozen=True)
class ControllerSetup:
    """What the controller must know about an experiment (``controller.json``)."""

    v: float
    slot_s: float
    slots: int
    cvs: dict[str, dict[str, Any]]  # id -> {model, flops_per_s}
    rsu: dict[str, Any]  # {name, capacity_flops_per_s, types}
    svs: dict[str, float] = field(default_factory=dict)  # name -> flops_per_s
    work: str = ""  # path of the work table

    @classmethod
    def load(cls, path: str | Path) -> ControllerSetup:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            raise SplitrtError(f"controller setup {path} does not exist") from None
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise SplitrtError(f"cannot read controller setup {path}: {exc}") from None

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.__dict__, indent=1) + "\n")
        return path


class LyapunovController:
    """Feed telemetry messages with `on_message`; `record(t)` gives slot t's books (module doc).

    Thread-safe: messages come from the MQTT client's thread, records are read from another.
    ``publish(kind, body)`` (optional) sends the online record of each slot when `emit` is called.
    """

    def __init__(
        self,
        setup: ControllerSetup,
        work: WorkTable | dict[str, ModelWork],
        *,
        publish: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.setup = setup
        self.cv_ids = list(setup.cvs)
        self.types = list(setup.rsu["types"])
        self.sv_names = list(setup.svs)
        self.work = (
            work if isinstance(work, dict) else {m: _row(work, m) for m in {c["model"] for c in setup.cvs.values()}}
        )
        self.publish = publish
        self._lock = threading.Lock()
        self._states: dict[tuple[str, int], dict[str, Any]] = {}  # (source, slot) -> state
        self._tasks: dict[str, dict[str, Any]] = {}  # task_id -> record
        self.emitted: list[dict[str, Any]] = []

    # ---- input ---------------------------------------------------------------------------
    def on_message(self, kind: str, ident: str | None, msg: dict[str, Any]) -> None:
        if kind in ("vehicle_state", "node_state") and ident is not None and isinstance(msg.get("slot"), int):
            with self._lock:
                self._states[(ident, msg["slot"])] = msg
        elif kind == "task" and "task_id" in msg:
            with self._lock:
                self._tasks[msg["task_id"]] = msg

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Task records from the vehicles' own files (complete even when telemetry lost some)."""
        with self._lock:
            for r in records:
                self._tasks[r["task_id"]] = r

    # ---- books ---------------------------------------------------------------------------
    def _state(self, source: str, slot: int, stale: dict[str, int]) -> dict[str, Any] | None:
        for s in range(slot, -1, -1):
            msg = self._states.get((source, s))
            if msg is not None:
                if s != slot:
                    stale[source] = max(stale.get(source, 0), slot - s)
                return msg
        stale[source] = max(stale.get(source, 0), slot + 1)
        return None

    def queues(self, slot: int, stale: dict[str, int]) -> tuple[list[np.ndarray], float]:
        """[Q_loc (N,), Q_k (K,), Q_sv (S,)] at the start of ``slot`` and the seconds of work."""
        q_loc = np.zeros(len(self.cv_ids))
        seconds = 0.0
        for i, cv in enumerate(self.cv_ids):
            msg = self._state(cv, slot, stale)
            if msg is not None:
                q_loc[i] = float(msg.get("q_loc_flops", 0.0))
                seconds += q_loc[i] / float(self.setup.cvs[cv]["flops_per_s"])
        q_rsu = np.zeros(len(self.types))
        msg = self._state(self.setup.rsu["name"], slot, stale)
        if msg is not None:
            for k, name in enumerate(self.types):
                queue = msg.get("queues", {}).get(name, {})
                q_rsu[k] = float(queue.get("flops", 0.0))
                seconds += float(queue.get("est_s", 0.0))
        q_sv = np.zeros(len(self.sv_names))
        for j, sv in enumerate(self.sv_names):
            msg = self._state(sv, slot, stale)
            if msg is not None:
                queues = msg.get("queues", {})
                q_sv[j] = float(sum(q.get("flops", 0.0) for q in queues.values()))
                seconds += float(sum(q.get("est_s", 0.0) for q in queues.values()))
        return [q_loc, q_rsu, q_sv], seconds

    def arrivals(self, slot: int) -> tuple[list[np.ndarray], np.ndarray, list[float], int]:
        """A(t) per queue kind, n_k (tasks per RSU type), slot t's measured delays, tasks known."""
        a_loc = np.zeros(len(self.cv_ids))
        w_k = np.zeros(len(self.types))
        n_k = np.zeros(len(self.types))
        w_sv = np.zeros(len(self.sv_names))
        delays = []
        tasks = [r for r in self._tasks.values() if r.get("slot") == slot]
        for r in tasks:
            if r["vehicle_id"] not in self.setup.cvs:
                continue
            if r.get("cut") is None:  # never decided (its vehicle's host was lost): it brought no work
                continue
            i = self.cv_ids.index(r["vehicle_id"])
            work = self.work[r["model"]]
            cut = int(r["cut"])
            node = int(r["node"]) if r.get("node") is not None else -1
            got = task_arrivals(
                np.array(cut),
                np.array(node),
                np.array(len(work.local_flops)),
                work.local_flops[cut],
                work.rsu_flops[cut],
                work.sv_flops[cut],
            )  # the simulator's rule (splitrt.edge_runtime.sysmodel.arrivals)
            a_loc[i] += got.b
            if got.to_rsu:
                k = self.types.index(r["model"])
                w_k[k] += got.w_rsu
                n_k[k] += 1
            elif got.to_sv and node <= len(self.sv_names):
                w_sv[node - 1] += got.w_sv
            if r.get("outcome") != "failed":
                delays.append(float(r["total_s"]))
        return [a_loc, w_k, w_sv], n_k, delays, len(tasks)

    def record(self, slot: int, *, final: bool = True) -> dict[str, Any]:
        """Slot ``slot``'s books from everything received so far (see the module docstring)."""
        su = self.setup
        tau, v = float(su.slot_s), float(su.v)
        with self._lock:
            stale: dict[str, int] = {}
            q_now, seconds = self.queues(slot, stale)
            q_next, _ = self.queues(slot + 1, stale)
            arrivals, n_k, delays, n_tasks = self.arrivals(slot)
        f_cv = np.array([float(su.cvs[c]["flops_per_s"]) for c in self.cv_ids])
        f_sv = np.array([float(su.svs[s]) for s in self.sv_names])
        capacity = float(su.rsu["capacity_flops_per_s"])
        f_k = allocate_rsu(q_now[1], arrivals[1], n_k, capacity, tau, v) if self.types else np.zeros(0)
        service = [f_cv * tau, f_k * tau, f_sv * tau]
        l_now = float(lyapunov.lyapunov(q_now))
        l_next = float(lyapunov.lyapunov(q_next))
        pressure = float(lyapunov.queue_pressure(q_now, arrivals, service))
        penalty = float(lyapunov.penalty(np.array(delays), v)) if delays else 0.0
        return {
            "slot": slot,
            "v": v,
            "slot_s": tau,
            "q_loc_flops": dict(zip(self.cv_ids, q_now[0].tolist(), strict=True)),
            "q_rsu_flops": dict(zip(self.types, q_now[1].tolist(), strict=True)),
            "q_sv_flops": dict(zip(self.sv_names, q_now[2].tolist(), strict=True)),
            "backlog_flops": float(sum(q.sum() for q in q_now)),
            "backlog_next_flops": float(sum(q.sum() for q in q_next)),
            "backlog_s": seconds,
            "arrivals_flops": {"local": arrivals[0].tolist(), "rsu": arrivals[1].tolist(), "sv": arrivals[2].tolist()},
            "service_flops": {"local": service[0].tolist(), "rsu": service[1].tolist(), "sv": service[2].tolist()},
            "rsu_alloc_flops_per_s": dict(zip(self.types, f_k.tolist(), strict=True)),
            "lyapunov_start": l_now,
            "lyapunov": l_next,
            "drift": l_next - l_now,
            "pressure": pressure,
            "penalty": penalty,
            "p2": pressure + penalty,
            "dpp": l_next - l_now + penalty,
            "tasks": n_tasks,
            "tasks_done": len(delays),
            "mean_completion_s": float(np.mean(delays)) if delays else None,
            "stale": stale,
            "final": final,
        }

    def emit(self, slot: int) -> dict[str, Any]:
        """The online record of ``slot`` (published when a publisher is set)."""
        rec = self.record(slot, final=False)
        self.emitted.append(rec)
        if self.publish is not None:
            self.publish("controller", rec)
        return rec

    def records(self) -> list[dict[str, Any]]:
        """The final record of every slot 0..T-1."""
        return [self.record(t, final=True) for t in range(self.setup.slots)]


def _row(table: WorkTable, model: str) -> ModelWork:
    row = table.models.get(model)
    if row is None:
        raise SplitrtError(f"the work table has no row for {model!r}")
    return ModelWork(
        model,
        np.asarray(row["local_flops"], dtype=np.float64),
        np.asarray(row["rsu_flops"], dtype=np.float64),
        np.asarray(row["sv_flops"], dtype=np.float64),
    )
