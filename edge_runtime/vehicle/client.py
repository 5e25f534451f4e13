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

One DEALER socket per edge node (``ZMQ_IMMEDIATE``: a send to a node with no live connection
fails at once instead of queueing, and ZeroMQ reconnects in the background, so a restarted node
is used again as soon as it is back). Replies to tasks that already fell back are counted as
``late_replies`` and dropped. The local worker is one thread (the vehicle's CPU); the calling
thread owns the sockets. Every generated task ends as exactly one record (splitrt.edge_runtime.formats.records),
also when the run is interrupted (SIGINT/SIGTERM: no new tasks; offloads in flight fall back
with reason ``shutdown``; the local queue is finished), and, with a `TaskJournal`
(splitrt.edge_runtime.vehicle.journal), also when the process is killed: the next start records the tasks that
were in flight as failed (``vehicle restarted``).

Link security (splitrt.edge_runtime.link.security): with a CURVE `ClientSecurity` every DEALER encrypts and
pins its node's public key; a node that refuses this vehicle's key makes the offload fall back
with reason ``refused: ...`` instead of ``unreachable``. Records carry ``link_security``.

Experiments (`splitrt hil`): ``start_at`` puts slot 0 at a shared epoch (splitrt.edge_runtime.experiment.clock);
state requests go out ``state_lead_s`` before every slot boundary, so a slot's decisions see the
backlogs of its start; at every boundary (0..T) the ``on_slot`` hooks get the vehicle's state
(local backlog, position, how late the loop noticed the boundary); a boundary noticed more than
``late_tolerance_s`` late (default tau / 20) is a missed slot, counted in ``missed_slots`` and
flagged in the hook's dict; with an epoch the vehicle stays up until the end of slot T - 1.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.decide.deciders import Decider, DecisionContext, make_decider
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.records import DURATION_KEYS, RecordSink
from splitrt.edge_runtime.formats.trace import LinkTrace
from splitrt.edge_runtime.formats.work import ModelWork
from splitrt.edge_runtime.lifecycle import stop_on_signals
from splitrt.edge_runtime.link.security import ClientSecurity, SocketEvents, warn_plain
from splitrt.edge_runtime.link.wire import (
    ENCODINGS,
    Encoded,
    Header,
    WireError,
    decode_payload,
    encode_tensor,
    pack,
    tensor_header,
    unpack,
)
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.edge_runtime.sysmodel.observation import node_backlog_flops
from splitrt.edge_runtime.vehicle.journal import TaskJournal

log = logging.getLogger(__name__)

INPUT_POOL = 8
VERIFY_RTOL = 1e-4
_INPROC = "inproc://splitrt-vehicle-{}"


def parse_arrivals(spec: str) -> tuple[str, float]:
    """``per-slot`` -> ("per-slot", 1); ``poisson:RATE`` -> ("poisson", RATE tasks per slot)."""
    if spec == "per-slot":
        return "per-slot", 1.0
    kind, _, rate = spec.partition(":")
    if kind == "poisson":
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if value > 0:
            return "poisson", value
    raise SplitrtError(f"--arrivals must be per-slot or poisson:RATE (mean tasks per slot, > 0), got {spec!r}")


def arrival_times(spec: str, slots: int, slot_s: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    """(offset seconds from the start, slot index) of every task of a run.

    per-slot: one task at the start of each slot (the paper). poisson:RATE: a Poisson process of
    RATE tasks per slot on average (exponential gaps), over ``slots`` slots.
    """
    kind, rate = parse_arrivals(spec)
    if kind == "per-slot":
        return [(s * slot_s, s) for s in range(slots)]
    out = []
    t = rng.exponential(slot_s / rate)
    while t < slots * slot_s:
        out.append((float(t), int(t // slot_s)))
        t += rng.exponential(slot_s / rate)
    return out


@dataclass(frozen=True)
class VehicleConfig:
    """A client vehicle's settings (units in the names)."""

    edges: tuple[str, ...]
    vehicle_id: str = "v0"
    decider: str = "greedy"
    slots: int = 30
    slot_s: float = 1.0
    arrivals: str = "per-slot"
    timeout_s: float = 5.0
    encoding: str = "fp32"
    threads: int = 1
    providers: tuple[str, ...] = ("cpu",)
    speed_factor: float = 1.0
    speed_mode: str = "auto"
    verify: bool = False
    seed: int = 0
    connect_s: float = 5.0
    warmup_runs: int = 0
    state_lead_s: float = 0.02
    late_tolerance_s: float | None = None

    def __post_init__(self) -> None:
        if not self.edges:
            raise SplitrtError("give at least one --edge tcp://HOST:PORT (node 0 is the RSU by convention)")
        if self.slots < 0 or not self.slot_s > 0:
            raise SplitrtError(f"--slots must be >= 0 and --slot-s > 0 s, got {self.slots} and {self.slot_s}")
        if not self.timeout_s > 0:
            raise SplitrtError(f"--timeout-s must be positive seconds, got {self.timeout_s}")
        if not self.connect_s >= 0:
            raise SplitrtError(f"--connect-s must be >= 0 s, got {self.connect_s}")
        if self.encoding not in ENCODINGS:
            raise SplitrtError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.warmup_runs < 0 or self.state_lead_s < 0 or (self.late_tolerance_s or 0) < 0:
            raise SplitrtError(
                f"warm-up runs, state lead and late tolerance must be >= 0, got {self.warmup_runs}, "
                f"{self.state_lead_s} s, {self.late_tolerance_s} s"
            )
        if not self.vehicle_id or len(self.vehicle_id) > 64:
            raise SplitrtError(f"--id must be 1..64 characters, got {self.vehicle_id!r}")
        parse_arrivals(self.arrivals)


@dataclass
class _Task:
    index: int
    id: str
    slot: int
    x_index: int
    arrival: float  # perf_counter
    arrival_unix: float
    cut: int = 0
    node: int | None = None
    observation: list[float] = field(default_factory=list)
    q_loc_flops: float = 0.0
    backlog_age_s: list[float | None] = field(default_factory=list)
    encoding: str = "fp32"
    head: np.ndarray | None = None  # the tensor at the cut (kept for a fallback)
    encoded: Encoded | None = None
    bytes: int = 0
    t_encoded: float = 0.0
    t_decided: float = 0.0
    deadline: float = 0.0
    t_fail: float = 0.0
    outcome: str = ""
    reason: str = ""
    reply: Header | None = None
    output: np.ndarray | None = None
    d: dict[str, float] = field(default_factory=dict)  # duration components


class _LocalQueue:
    """The vehicle's FIFO of local work with its backlog in FLOPs (eq 8's Q_loc)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.jobs: deque[tuple[str, _Task, float, float]] = deque()  # kind, task, flops, queued at
        self.flops = 0.0
        self.closed = False

    def put(self, kind: str, task: _Task, flops: float, front: bool = False) -> None:
        with self.cv:
            item = (kind, task, flops, time.perf_counter())
            self.jobs.appendleft(item) if front else self.jobs.append(item)
            self.flops += flops
            self.cv.notify()

    def get(self) -> tuple[str, _Task, float, float] | None:
        with self.cv:
            while not self.jobs and not self.closed:
                self.cv.wait()
            return self.jobs.popleft() if self.jobs else None

    def done(self, flops: float) -> None:
        with self.cv:
            self.flops = max(self.flops - flops, 0.0)

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


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
        self.records: list[dict[str, Any]] = []
        self.counters = {"generated": 0, "late_replies": 0, "bad_replies": 0, "state_replies": 0, "missed_slots": 0}
        self._cut_bytes = m.cut_bytes()
        # Queue accounting in the simulator's unit when a work table is given (splitrt.edge_runtime.formats.work):
        # the local FIFO's head work, and a fallback tail at the vehicle's own (SV-like) speed.
        self._flops_before = work.local_flops if work is not None else m.flops_before().astype(np.float64)
        self._flops_after = work.sv_flops if work is not None else m.flops_after().astype(np.float64)
        self.start_at = start_at
        #: called once warmed up and connected, before slot 0 (the CLI reports readiness from it)
        self.on_ready: Callable[[], None] | None = None
        self.trace = trace
        if trace is not None and trace.n_nodes != len(config.edges):
            raise SplitrtError(f"the trace has {trace.n_nodes} nodes, the vehicle {len(config.edges)} --edge(s)")
        self.on_slot = list(on_slot)
        rng = np.random.default_rng(config.seed)
        self._inputs = [rng.standard_normal(m.input.shape).astype(m.input.dtype) for _ in range(INPUT_POOL)]
        self._references = self._reference_outputs() if config.verify else None
        self._local = _LocalQueue()
        self._lock = threading.Lock()  # records, open-task bookkeeping
        self._open: dict[str, _Task] = {}
        self._stop = threading.Event()
        self._ctx = zmq.Context.instance()
        self._inproc = _INPROC.format(id(self))
        self._node_backlog = np.zeros(self.n_nodes)
        self._node_backlog_at = np.full(self.n_nodes, -np.inf)  # perf_counter of the newest update
        self._node_names: list[str | None] = [None] * self.n_nodes
        self._inflight: list[dict[str, _Task]] = [{} for _ in range(self.n_nodes)]
        self._dealers: list[zmq.Socket] = []
        self._link_events: list[SocketEvents] = []

    def _reference_outputs(self) -> list[np.ndarray]:
        """The whole model's output for every pool input (unsplit file if the export kept it)."""
        whole = self.manifest.whole_path()
        if whole is None:
            return [self.runner.run(x) for x in self._inputs]
        session = open_session(whole, providers=self.config.providers, threads=self.config.threads)
        return [session.run(None, {self.manifest.input.name: x})[0] for x in self._inputs]

    def stop(self) -> None:
        """Stop generating tasks; finish the open ones (thread-safe)."""
        self._stop.set()

    # ---- sockets ---------------------------------------------------------------------------
    def _dealer(self, endpoint: str, node: int = 0) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        self.security.apply(sock, node)
        self._link_events.append(SocketEvents(sock))
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt_string(zmq.ROUTING_ID, f"{self.config.vehicle_id}-{id(sock):x}")
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._link_events.pop().close()
            sock.close(0)
            raise SplitrtError(f"--edge {endpoint!r} is not a valid ZeroMQ endpoint: {exc}") from None
        return sock

    def _connected(self, j: int) -> bool:
        return bool(self._dealers[j].getsockopt(zmq.EVENTS) & zmq.POLLOUT)

    def _wait_connected(self) -> None:
        deadline = time.perf_counter() + self.config.connect_s
        while time.perf_counter() < deadline:
            if all(self._connected(j) for j in range(self.n_nodes)):
                return
            time.sleep(0.01)
        missing = [self.config.edges[j] for j in range(self.n_nodes) if not self._connected(j)]
        log.warning("%s: no connection yet to %s (tasks sent there fall back)", self.config.vehicle_id, missing)

    def observe_node_state(self, j: int, state: dict[str, Any]) -> None:
        """A node's snapshot from elsewhere (telemetry): newest wins, like the state replies."""
        self._node_backlog[j] = node_backlog_flops(state, self.manifest.model)
        self._node_backlog_at[j] = time.perf_counter()

    def _request_states(self) -> None:
        frames = pack(Header(kind="state_request", vehicle=self.config.vehicle_id))
        for sock in self._dealers:
            # Not connected: the node's backlog stays what we last heard.
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart(frames, zmq.NOBLOCK)

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cfg = self.config
        schedule = deque(arrival_times(cfg.arrivals, cfg.slots, cfg.slot_s, np.random.default_rng(cfg.seed + 1)))
        self._dealers = [self._dealer(e, j) for j, e in enumerate(cfg.edges)]
        if self.security.mode == "plain":
            warn_plain(cfg.vehicle_id, "splitrt vehicle --curve-secret")
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self._inproc)
        worker = threading.Thread(target=self._worker, name=f"{cfg.vehicle_id}-worker", daemon=True)
        worker.start()
        restore = self._install_signals()
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        for sock in self._dealers:
            poller.register(sock, zmq.POLLIN)
        try:
            for _ in range(cfg.warmup_runs):  # ONNX Runtime's first runs allocate; keep them out of the tasks
                self.runner.run(self._inputs[0])
            self._wait_connected()
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
                    self._fallback_all("shutdown", now)
                if not stopping and next_request < cfg.slots and now >= t0 + next_request * tau - lead:
                    next_request = int((now + lead - t0) / tau) + 1
                    self._request_states()
                while not stopping and next_tick <= cfg.slots and now >= t0 + next_tick * tau:
                    self._slot_tick(next_tick, now - (t0 + next_tick * tau), tolerance)
                    next_tick += 1
                while schedule and t0 + schedule[0][0] <= now:
                    offset, slot = schedule.popleft()
                    self._arrive(slot, t0 + offset)
                self._expire(now)
                with self._lock:
                    idle = not self._open
                if idle and not schedule and (stopping or now >= end):
                    break
                wake = [now + 0.05]
                if schedule:
                    wake.append(t0 + schedule[0][0])
                if next_request < cfg.slots:
                    wake.append(t0 + next_request * tau - lead)
                if next_tick <= cfg.slots and not stopping:
                    wake.append(t0 + next_tick * tau)
                deadlines = [t.deadline for inflight in self._inflight for t in inflight.values()]
                if deadlines:
                    wake.append(min(deadlines))
                timeout_ms = max(0.0, min(wake) - time.perf_counter()) * 1e3
                for sock, _ in poller.poll(timeout_ms):
                    if sock is pull:
                        self._send_ready(pull)
                    else:
                        self._receive(self._dealers.index(sock))
        finally:
            self._local.close()
            worker.join(timeout=10.0)
            pull.close(0)
            for events in self._link_events:
                events.close()
            for sock in self._dealers:
                sock.close(0)
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
        with self._local.cv:
            q_loc, q_tasks = self._local.flops, len(self._local.jobs)
        with self._lock:
            completed, open_tasks = len(self.records), len(self._open)
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
        with self._local.cv:
            q_loc = self._local.flops
        node_ok = np.array([self._connected(j) for j in range(self.n_nodes)], dtype=bool)
        pos, sv_pos, rate = 0.0, np.zeros(self.n_nodes - 1), None
        if self.trace is not None:
            link = self.trace.at(slot)
            pos, sv_pos, rate = link.pos_m, link.sv_pos_m, link.rate_bps
            node_ok &= link.node_ok
        obs = obs_layout.build_observation(q_loc, self._node_backlog[0], self._node_backlog[1:], pos, sv_pos)
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
        task = _Task(
            index=index,
            id=f"{cfg.vehicle_id}-{index}",
            slot=slot,
            x_index=index % INPUT_POOL,
            arrival=arrival,
            arrival_unix=time.time() - (time.perf_counter() - arrival),
        )
        if self.journal is not None:  # before anything else happens to the task
            self.journal.generated(
                task_id=task.id,
                index=index,
                slot=slot,
                arrival_unix_s=task.arrival_unix,
                model=self.manifest.model,
                digest=self.manifest.digest,
                decider=self.decider.name,
                link_security=self.security.mode,
            )
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
        age = task.t_decided - self._node_backlog_at
        task.backlog_age_s = [float(a) if np.isfinite(a) else None for a in age]
        spec = self.manifest.cut_spec(task.cut)
        task.encoding = cfg.encoding if np.dtype(spec.dtype).kind == "f" else "fp32"
        if self.journal is not None:
            self.journal.decided(
                task_id=task.id,
                cut=task.cut,
                node=task.node,
                edge=None if task.node is None else cfg.edges[task.node],
                encoding=task.encoding,
            )
        with self._lock:
            self._open[task.id] = task
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
            self._send(task)
        else:
            self._local.put("head", task, float(self._flops_before[task.cut]))

    # ---- local worker ----------------------------------------------------------------------
    def _worker(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._inproc)
        try:
            while (job := self._local.get()) is not None:
                kind, task, flops, _queued = job
                try:
                    if kind == "head":
                        self._run_head(task, push)
                    else:
                        self._run_tail(task)
                finally:
                    self._local.done(flops)
        finally:
            push.close()

    def _run_head(self, task: _Task, push: zmq.Socket) -> None:
        start = time.perf_counter()
        task.d["local_wait_s"] = start - task.t_decided
        try:
            head = self.runner.run(self._inputs[task.x_index], 0, task.cut)
        except Exception as exc:
            task.d["local_compute_s"] = time.perf_counter() - start
            self._finish(task, "failed", f"local: {type(exc).__name__}: {exc}", time.perf_counter())
            return
        end = time.perf_counter()
        task.d["local_compute_s"] = end - start
        if task.cut == self.n:
            task.output = head
            self._finish(task, "local", task.reason, end)
            return
        task.head = head
        task.encoded = encode_tensor(head, task.encoding)
        task.bytes = task.encoded.nbytes
        task.t_encoded = time.perf_counter()
        task.d["encode_s"] = task.t_encoded - end
        push.send_string(task.id)

    def _run_tail(self, task: _Task) -> None:
        start = time.perf_counter()
        task.d["local_wait_s"] = task.d.get("local_wait_s", 0.0) + (start - task.t_fail)
        assert task.head is not None
        try:
            task.output = self.runner.run(task.head, task.cut, self.n)
            outcome, reason = "fallback", task.reason
        except Exception as exc:
            outcome, reason = "failed", f"{task.reason}; local: {type(exc).__name__}: {exc}"
        end = time.perf_counter()
        task.d["local_compute_s"] = task.d.get("local_compute_s", 0.0) + (end - start)
        self._finish(task, outcome, reason, end)

    # ---- the link --------------------------------------------------------------------------
    def _send_ready(self, pull: zmq.Socket) -> None:
        while True:
            try:
                task_id = pull.recv_string(zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._lock:
                task = self._open.get(task_id)
            if task is not None:
                self._send(task)

    def _send(self, task: _Task) -> None:
        assert task.encoded is not None and task.node is not None
        enc = task.encoded
        header = tensor_header(
            "task",
            enc,
            id=task.id,
            vehicle=self.config.vehicle_id,
            model=self.manifest.model,
            digest=self.manifest.digest,
            cut=task.cut,
            sent=time.time(),
        )
        if self._stop.is_set():
            self._fail_remote(task, "shutdown", time.perf_counter())
            return
        try:
            self._dealers[task.node].send_multipart(pack(header, enc.payload), zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            reason = self._unreachable_reason(task.node) if exc.errno == zmq.EAGAIN else f"unreachable: {exc}"
            self._fail_remote(task, reason, time.perf_counter())
            return
        task.deadline = time.perf_counter() + self.config.timeout_s
        self._inflight[task.node][task.id] = task

    def _unreachable_reason(self, j: int) -> str:
        """``unreachable``, or why the node refused this vehicle (a CURVE handshake it rejected)."""
        events = self._link_events[j]
        events.drain()
        return events.last_failure or "unreachable"

    def _receive(self, j: int) -> None:
        sock = self._dealers[j]
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            received = time.perf_counter()
            try:
                header, payload = unpack(frames)
            except WireError as exc:
                self.counters["bad_replies"] += 1
                log.warning("%s: bad reply from %s: %s", self.config.vehicle_id, self.config.edges[j], exc)
                continue
            if header.node:
                self._node_names[j] = header.node
            if header.kind == "state":
                self.counters["state_replies"] += 1
                self._node_backlog[j] = node_backlog_flops(header.state, self.manifest.model)
                self._node_backlog_at[j] = received
                continue
            task = self._inflight[j].pop(header.id, None)
            if task is None:
                if header.kind == "error" and not header.id:
                    log.warning("%s: error from %s: %s", self.config.vehicle_id, self.config.edges[j], header.message)
                self.counters["late_replies"] += 1
                continue
            if header.kind == "result":
                self._complete_remote(task, header, payload, received)
            elif header.kind == "busy":
                self._fail_remote(task, "busy", received)
            elif header.kind == "error":
                self._fail_remote(task, f"error:{header.code}: {header.message}", received)
            else:
                self._fail_remote(task, f"error:unknown_kind: node replied {header.kind!r}", received)

    def _complete_remote(self, task: _Task, header: Header, payload: Any, received: float) -> None:
        spec = self.manifest.output
        try:
            if header.dtype != spec.dtype or tuple(header.shape) != spec.shape:
                raise WireError(
                    "shape_mismatch",
                    f"result is {header.dtype}{list(header.shape)}, expected {spec.dtype}{list(spec.shape)}",
                )
            output = np.array(decode_payload(header, payload))
        except WireError as exc:
            self.counters["bad_replies"] += 1
            self._fail_remote(task, f"error:bad_result: {exc}", received)
            return
        done = time.perf_counter()
        server = header.server
        server_s = float(server.get("server_s", 0.0))
        wait_s = float(server.get("wait_s", 0.0))
        compute_s = float(server.get("compute_s", 0.0))
        task.d["transfer_s"] = (received - task.t_encoded) - server_s
        task.d["remote_wait_s"] = wait_s
        task.d["remote_compute_s"] = compute_s
        task.d["remote_other_s"] = server_s - wait_s - compute_s
        task.d["decode_s"] = done - received
        task.reply = header
        task.output = output
        if "backlog_flops" in server and task.node is not None:
            self._node_backlog[task.node] = float(server["backlog_flops"])
            self._node_backlog_at[task.node] = received
        self._finish(task, "remote", "", done)

    def _fail_remote(self, task: _Task, reason: str, now: float) -> None:
        """The offload failed: time lost on the link so far, then the tail goes to the local FIFO."""
        task.t_fail = now
        task.d["transfer_s"] = now - task.t_encoded
        task.reason = reason
        task.encoded = None
        log.info("%s: task %s falls back (%s)", self.config.vehicle_id, task.id, reason)
        self._local.put("tail", task, float(self._flops_after[task.cut]), front=True)

    def _expire(self, now: float) -> None:
        for inflight in self._inflight:
            for task_id in [tid for tid, t in inflight.items() if t.deadline <= now]:
                self._fail_remote(inflight.pop(task_id), "timeout", now)

    def _fallback_all(self, reason: str, now: float) -> None:
        for inflight in self._inflight:
            for task in list(inflight.values()):
                self._fail_remote(task, reason, now)
            inflight.clear()

    # ---- completion ------------------------------------------------------------------------
    def _finish(self, task: _Task, outcome: str, reason: str, done: float) -> None:
        record = self._record(task, outcome, reason, done)
        with self._lock:
            if self.journal is not None:  # journaled before any sink sees it (recovery relies on it)
                self.journal.record(record)
            self._open.pop(task.id, None)
            self.records.append(record)
            for sink in self.sinks:
                sink(record)

    def _record(self, task: _Task, outcome: str, reason: str, done: float) -> dict[str, Any]:
        d = {k: float(task.d.get(k, 0.0)) for k in DURATION_KEYS}
        server = task.reply.server if task.reply is not None and outcome == "remote" else {}
        max_err: float | None = None
        verified: bool | None = None
        if self._references is not None and task.output is not None:
            ref = self._references[task.x_index]
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
            "node_name": None if task.node is None else self._node_names[task.node],
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
