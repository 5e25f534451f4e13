"""The client vehicle: generates DNN tasks, decides each split, runs the head, offloads the tail.

Per task (SYSTEM_MODEL.md "DNN partitioning", eqs 7-8, 17):

1. The task arrives (one per slot at the slot start, the paper's default, or Poisson) with an
   input from a fixed seeded pool, and the `Decider` picks (cut, node) from a `DecisionContext`:
   the eq (53) observation built from the local backlog Q_loc (FLOPs of the head/tail work in the
   local queue, running job included) and each node's backlog from its latest reply (state replies
   are requested at every slot start; results carry the backlog at arrival; the newest wins).
   Telemetry (splitrt.edge_runtime.experiment.participant) may feed node states too (`observe_node_state`); every record
   keeps the age of the backlogs it saw. Positions, link rates and the SVs in V2V range come
   from a `LinkTrace` when one is given (an emulated experiment), else positions are 0, rates
   unknown and every node usable. ``node_ok`` is whether the node's socket has a live connection
   (and, with a trace, the node is in range).
2. Cut n: the whole model runs in the local FIFO (outcome ``local``). Cut 0: the raw input is
   encoded and sent at once (the paper's d_loc = 0 for phi = 1). Otherwise the head [0, cut)
   runs in the local FIFO, is encoded there, and is sent.
3. The node's result completes the task (``remote``). On timeout, ``busy``, an error reply, or no
   connection to the node, the vehicle runs the tail [cut, n) itself from the tensor it had
   reached (``fallback``; the tail job goes to the front of the local FIFO, it is the oldest work).

`Vehicle` runs the arrivals, the decisions and the slot clock; its parts, one module each:

| part | module (splitrt.edge_runtime.vehicle.) | holds |
|---|---|---|
| settings, arrivals | ``config`` | `VehicleConfig`, `parse_arrivals`, `arrival_times` |
| the task | ``task`` | `Task`: one task's state from its arrival to its record |
| the link | ``link`` | `VehicleLink`: a DEALER per edge node, sends, replies, timeouts, link events, node backlogs |
| the local queue | ``local`` | `LocalQueue`, `LocalWorker`: the FIFO, the worker thread, heads, fallback tails |
| the records | ``records`` | `TaskLedger`: open tasks, records, sinks, the journal's lines, verification |
| the journal | ``journal`` | `TaskJournal`: the write-ahead log and its recovery |

The link has one DEALER socket per edge node, which reconnects by itself, so a restarted node is
used again as soon as it is back; with CURVE link security a node that refuses this vehicle's key
makes the offload fall back with reason ``refused: ...`` (splitrt.edge_runtime.vehicle.link).
The local worker is one thread (the vehicle's CPU); the calling thread owns the sockets: the
DEALERs and the inproc PULL on which the worker hands over its encoded heads, while the worker
owns only its inproc PUSH (ZeroMQ sockets are not thread-safe; none is used by two threads).
Every generated task ends as exactly one record (splitrt.edge_runtime.formats.records),
also when the run is interrupted (SIGINT/SIGTERM: no new tasks; offloads in flight fall back
with reason ``shutdown``; the local queue is finished), and, with a `TaskJournal`
(splitrt.edge_runtime.vehicle.journal), also when the process is killed: the next start records the tasks that
were in flight as failed (``vehicle restarted``).

Experiments (`splitrt hil`): ``start_at`` puts slot 0 at a shared epoch (splitrt.edge_runtime.experiment.clock);
state requests go out ``state_lead_s`` before every slot boundary, so a slot's decisions see the
backlogs of its start; at every boundary (0..T) the ``on_slot`` hooks get the vehicle's state
(local backlog, position, how late the loop noticed the boundary); a boundary noticed more than
``late_tolerance_s`` late (default tau / 20) is a missed slot, counted in ``missed_slots`` and
flagged in the hook's dict; with an epoch the vehicle stays up until the end of slot T - 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.decide.deciders import Decider, DecisionContext, make_decider
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.records import RecordSink
from splitrt.edge_runtime.formats.trace import LinkTrace
from splitrt.edge_runtime.formats.work import ModelWork
from splitrt.edge_runtime.lifecycle import stop_on_signals
from splitrt.edge_runtime.link.security import ClientSecurity
from splitrt.edge_runtime.link.wire import encode_tensor
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.edge_runtime.vehicle.config import VehicleConfig, arrival_times, parse_arrivals
from splitrt.edge_runtime.vehicle.journal import TaskJournal
from splitrt.edge_runtime.vehicle.link import READY_ENDPOINT, VehicleLink
from splitrt.edge_runtime.vehicle.local import LocalWorker
from splitrt.edge_runtime.vehicle.records import VERIFY_RTOL, TaskLedger, reference_outputs
from splitrt.edge_runtime.vehicle.task import Task

__all__ = ["INPUT_POOL", "VERIFY_RTOL", "Vehicle", "VehicleConfig", "arrival_times", "parse_arrivals"]

log = logging.getLogger(__name__)

INPUT_POOL = 8


class Vehicle:
    """A client vehicle (module docstring). ``run()`` returns every task's record."""

    def __init__(
        self,
        config: VehicleConfig,
        segments: str | Path | Manifest,
        *,
        sinks: Sequence[RecordSink] = (),
        decider: Decider | None = None,
        runner_speed_factor: float = 1.0,
        security: ClientSecurity | None = None,
        journal: TaskJournal | None = None,
        runner_pace_s: np.ndarray | None = None,
        start_at: float | Callable[[], float] | None = None,
        on_ready: Callable[[], None] | None = None,
        trace: LinkTrace | None = None,
        work: ModelWork | None = None,
        on_slot: Sequence[Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        self.config = config
        self.security = security or ClientSecurity()
        self.journal = journal  # write-ahead log of every task (splitrt.edge_runtime.vehicle.journal)
        self._index_base = journal.next_index if journal is not None else 0
        self.manifest = segments if isinstance(segments, Manifest) else Manifest.load(segments)
        m = self.manifest
        self.n = m.n_segments
        self.n_nodes = len(config.edges)
        self.runner = SegmentRunner(
            m,
            providers=config.providers,
            threads=config.threads,
            speed_factor=runner_speed_factor,
            pace_s=runner_pace_s,
        )
        self.decider = decider or make_decider(config.decider, m.n_cuts, self.n_nodes)
        self.sinks = list(sinks)
        self.counters = {"generated": 0, "late_replies": 0, "bad_replies": 0, "state_replies": 0, "missed_slots": 0}
        self._cut_bytes = m.cut_bytes()
        # Queue accounting in the simulator's unit when a work table is given (splitrt.edge_runtime.formats.work):
        # the local FIFO's head work, and a fallback tail at the vehicle's own (SV-like) speed.
        self._flops_before = work.local_flops if work is not None else m.flops_before().astype(np.float64)
        self._flops_after = work.sv_flops if work is not None else m.flops_after().astype(np.float64)
        self.start_at = start_at
        #: called once warmed up and connected, before slot 0 (the CLI reports readiness from it)
        self.on_ready = on_ready
        self.trace = trace
        if trace is not None and trace.n_nodes != len(config.edges):
            raise SplitrtError(f"the trace has {trace.n_nodes} nodes, the vehicle {len(config.edges)} --edge(s)")
        self.on_slot = list(on_slot)
        rng = np.random.default_rng(config.seed)
        self._inputs = [rng.standard_normal(m.input.shape).astype(m.input.dtype) for _ in range(INPUT_POOL)]
        references = (
            reference_outputs(m, self.runner, self._inputs, config.providers, config.threads) if config.verify else None
        )
        self._stop = threading.Event()
        ready_endpoint = READY_ENDPOINT.format(id(self))
        # The parts (module docstring); the link's node names reach the records through node_name.
        self.ledger = TaskLedger(
            config,
            m,
            self.decider,
            self.security,
            sinks=self.sinks,
            journal=journal,
            references=references,
            node_name=lambda j: self.link.node_name(j),
        )
        self.records: list[dict[str, Any]] = self.ledger.records
        self.local = LocalWorker(
            self.runner,
            self.n,
            self._inputs,
            self._flops_before,
            self._flops_after,
            finish=self.ledger.finish,
            ready_endpoint=ready_endpoint,
            vehicle_id=config.vehicle_id,
        )
        self.link = VehicleLink(
            config,
            m,
            self.security,
            self.counters,
            self._stop,
            ready_endpoint=ready_endpoint,
            open_task=self.ledger.open_task,
            fall_back=self.local.fall_back,
            finish=self.ledger.finish,
        )

    def stop(self) -> None:
        """Stop generating tasks; finish the open ones (thread-safe)."""
        self._stop.set()

    def observe_node_state(self, j: int, state: dict[str, Any]) -> None:
        """A node's snapshot from elsewhere (telemetry): newest wins, like the state replies."""
        self.link.observe_node_state(j, state)

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cfg = self.config
        schedule = deque(arrival_times(cfg.arrivals, cfg.slots, cfg.slot_s, np.random.default_rng(cfg.seed + 1)))
        self.link.open()
        self.local.start()
        restore = self._install_signals()
        try:
            for _ in range(cfg.warmup_runs):  # ONNX Runtime's first runs allocate; keep them out of the tasks
                self.runner.run(self._inputs[0])
            self.link.wait_connected()
            if self.on_ready is not None:
                self.on_ready()
            t0 = self._epoch()
            end = t0 + cfg.slots * cfg.slot_s if self.start_at is not None else -np.inf
            tau, lead = cfg.slot_s, cfg.state_lead_s
            tolerance = cfg.late_tolerance_s if cfg.late_tolerance_s is not None else tau / 20
            next_request = next_tick = 0
            stopping = False
            while True:
                now = time.perf_counter()
                if self._stop.is_set() and not stopping:
                    stopping = True
                    schedule.clear()
                    self.link.fallback_all("shutdown", now)
                if not stopping and next_request < cfg.slots and now >= t0 + next_request * tau - lead:
                    next_request = int((now + lead - t0) / tau) + 1
                    self.link.request_states()
                while not stopping and next_tick <= cfg.slots and now >= t0 + next_tick * tau:
                    self._slot_tick(next_tick, now - (t0 + next_tick * tau), tolerance)
                    next_tick += 1
                while schedule and t0 + schedule[0][0] <= now:
                    offset, slot = schedule.popleft()
                    self._arrive(slot, t0 + offset)
                self.link.expire(now)
                if self.ledger.idle() and not schedule and (stopping or now >= end):
                    break
                wake = [now + 0.05]
                if schedule:
                    wake.append(t0 + schedule[0][0])
                if next_request < cfg.slots:
                    wake.append(t0 + next_request * tau - lead)
                if next_tick <= cfg.slots and not stopping:
                    wake.append(t0 + next_tick * tau)
                deadlines = self.link.deadlines()
                if deadlines:
                    wake.append(min(deadlines))
                timeout_ms = max(0.0, min(wake) - time.perf_counter()) * 1e3
                self.link.poll(timeout_ms)
        finally:
            self.local.stop(timeout_s=10.0)
            self.link.close()
            restore()
        return self.records

    def _epoch(self) -> float:
        """Slot 0's start on the perf_counter clock: now, or the shared epoch (splitrt.edge_runtime.experiment.clock)."""
        if self.start_at is None:
            return time.perf_counter()
        epoch_unix = self.start_at() if callable(self.start_at) else float(self.start_at)
        t0 = time.perf_counter() + (epoch_unix - time.time())
        if t0 < time.perf_counter():
            log.warning("%s: the epoch is %.3f s in the past", self.config.vehicle_id, time.perf_counter() - t0)
        return t0

    def _slot_tick(self, slot: int, late_s: float, tolerance_s: float) -> None:
        """A slot boundary: count a miss, tell the hooks (telemetry) the vehicle's state."""
        missed = late_s > tolerance_s
        if missed:
            self.counters["missed_slots"] += 1
            log.warning("%s: slot %d boundary noticed %.1f ms late", self.config.vehicle_id, slot, late_s * 1e3)
        if not self.on_slot:
            return
        q_loc, q_tasks = self.local.queue.backlog()
        completed, open_tasks = self.ledger.counts()
        info = {
            "slot": slot,
            "late_s": late_s,
            "missed": missed,
            "q_loc_flops": q_loc,
            "q_loc_jobs": q_tasks,
            "pos_m": None if self.trace is None else self.trace.at(slot).pos_m,
            "generated": self.counters["generated"],
            "completed": completed,
            "open": open_tasks,
            "missed_slots": self.counters["missed_slots"],
        }
        for hook in self.on_slot:
            try:
                hook(info)
            except Exception as exc:  # a hook (telemetry) must never stop the vehicle
                log.warning("%s: slot hook failed: %s", self.config.vehicle_id, exc)

    def _install_signals(self):
        return stop_on_signals(self.stop, f"{self.config.vehicle_id}: no new tasks, finishing the open ones")

    # ---- arrivals and decisions ------------------------------------------------------------
    def decision_context(self, slot: int) -> DecisionContext:
        """What the decider sees now (eq 53 observation, cut sizes, FLOPs, reachable nodes)."""
        q_loc, _ = self.local.queue.backlog()
        node_ok = np.array([self.link.connected(j) for j in range(self.n_nodes)], dtype=bool)
        pos, sv_pos, rate = 0.0, np.zeros(self.n_nodes - 1), None
        if self.trace is not None:
            at = self.trace.at(slot)
            pos, sv_pos, rate = at.pos_m, at.sv_pos_m, at.rate_bps
            node_ok &= at.node_ok
        obs = obs_layout.build_observation(q_loc, self.link.node_backlog[0], self.link.node_backlog[1:], pos, sv_pos)
        return DecisionContext(
            observation=obs,
            cut_bytes=self._cut_bytes,
            flops_before=self._flops_before,
            flops_after=self._flops_after,
            node_ok=node_ok,
            model=self.manifest.model,
            slot=slot,
            rate_bps=rate,
        )

    def _arrive(self, slot: int, arrival: float) -> None:
        cfg = self.config
        index = self._index_base + self.counters["generated"]
        self.counters["generated"] += 1
        task = Task(
            index=index,
            id=f"{cfg.vehicle_id}-{index}",
            slot=slot,
            x_index=index % INPUT_POOL,
            arrival=arrival,
            arrival_unix=time.time() - (time.perf_counter() - arrival),
        )
        self.ledger.generated(task)  # before anything else happens to the task
        ctx = self.decision_context(slot)
        try:
            cut, node = (int(v) for v in self.decider.decide(ctx))
            if not (0 <= cut <= self.n and 0 <= node < self.n_nodes):
                raise ValueError(f"(cut {cut}, node {node}) is outside cuts 0..{self.n}, nodes 0..{self.n_nodes - 1}")
        except Exception as exc:  # a broken decider must not lose the task: run it locally, say why
            log.error("%s: decider %s failed on task %s: %s", cfg.vehicle_id, self.decider.name, task.id, exc)
            cut, node = self.n, 0
            task.reason = f"decider: {type(exc).__name__}: {exc}"
        task.t_decided = time.perf_counter()
        task.d["decide_s"] = task.t_decided - arrival
        task.cut = cut
        task.node = None if cut == self.n else node
        task.observation = [float(v) for v in ctx.observation]
        task.q_loc_flops = float(ctx.observation[obs_layout.Q_LOC])
        age = task.t_decided - self.link.node_backlog_at
        task.backlog_age_s = [float(a) if np.isfinite(a) else None for a in age]
        spec = self.manifest.cut_spec(task.cut)
        task.encoding = cfg.encoding if np.dtype(spec.dtype).kind == "f" else "fp32"
        self.ledger.decided(task)
        self.ledger.open(task)
        if task.cut == 0:
            x = self._inputs[task.x_index]
            task.d["local_compute_s"] = 0.0
            start = time.perf_counter()
            task.head = x
            task.encoded = encode_tensor(x, task.encoding)
            task.bytes = task.encoded.nbytes
            task.t_encoded = time.perf_counter()
            task.d["local_wait_s"] = start - task.t_decided
            task.d["encode_s"] = task.t_encoded - start
            self.link.send(task)
        else:
            self.local.head(task)
