"""The edge node: one ROUTER socket serving many vehicles, the RSU's per-type compute shares.

`EdgeServer` runs the tail segments of offloaded tasks (wire format: splitrt.edge_runtime.link.wire). Two roles:

``rsu``  one queue per DNN type (the paper's containers, SYSTEM_MODEL.md "Computation and
         queues"). The compute share of type k is f_k / F with f from `allocate_rsu` (P3, eqs
         43-52), solved at every slot boundary, before answering a state request (so the
         snapshot's allocation is that of its queues), and after arrivals while two or more types
         have work (only then can the shares change what runs next): at most every
         ``resolve_s`` (default tau / 10), and at once when the arriving type's share is 0 (so no
         type waits for its first share). The solve holds the GIL for about a millisecond, so it
         is kept off the path of an uncontended task. Inputs:
             Q_k = edge FLOPs of type-k tasks queued or running that arrived in earlier slots,
             W_k, n_k = edge FLOPs and count of type-k tasks of the current slot still queued
                        or running (the paper's offloads of this slot: the live RSU sees them
                        one by one instead of all at the slot start).
         The shares are enforced over worker time by start-time fair queueing
         (splitrt.edge_runtime.node.scheduler), which also meters served vs allocated (GPS) seconds.
``sv``   a service vehicle: one FIFO over all types (eqs 13-16).

Discipline. ``sfq`` (default): the shares are enforced over the workers' time, one task at a
time at full speed (above). ``containers``: the paper's RSU literally (SYSTEM_MODEL.md: one
container per DNN type with f_k of the compute): one worker per queue runs that queue's tasks in
FIFO order, each task's reply leaves once its container, progressing at the type's current f_k
(re-solved at every arrival and slot boundary), has done the task's work (FLOPs / f_k, integrated
over share changes), so types run side by side like CPU-share containers (the fluid sharing eqs
9-11 assume). The real inference runs first at whatever speed the host gives it; a task whose
compute alone took longer than its container's time is counted (``container_overruns``). An SV in
this discipline serves its FIFO at exactly its capacity. Needs the work (FLOPs, splitrt.edge_runtime.formats.work)
and the capacity to be in the same unit.

Experiments (`splitrt hil`). ``start_unix_s`` puts slot 0 at the experiment's shared epoch
(splitrt.edge_runtime.experiment.clock) instead of the start of `run()`; at every slot boundary, after the
allocation is re-solved, the ``on_slot`` hooks get the slot index and the node's snapshot (the
telemetry publishes it). A work table (splitrt.edge_runtime.formats.work) makes every task's FLOPs the
simulator's for its cut (profile-calibrated effective FLOPs) instead of the manifest's.

Capacity. F (f_rsu_max, FLOP/s) is ``capacity_flops_per_s`` when given, else ``workers`` x the
mean over the served models of their effective FLOP/s on this node (total FLOPs / whole-chain
median). Each model's speed comes from ``DIR/profile.json`` when it matches the export (digest),
the thread count and the speed emulation, else from a start-up calibration (``calibration_runs``
timed passes of the chain after one warm-up). The same numbers give every queued task's
estimated compute seconds (the profile's tail time at its cut).

Threads. The calling thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe):
it validates messages, queues tasks, answers state requests and errors, ticks the slots and
forwards replies. ``workers`` threads each take the scheduler's next task, run the tail with
ONNX Runtime (which releases the GIL) and hand the reply back over an inproc PUSH/PULL pair.

Replies. A result carries the model output (fp32) and the node's own timing in ``server``
(wire.SERVER_TIMING_KEYS: queue wait, compute, time at the node, backlog at arrival). A full
queue gives ``busy`` (code queue_full); a malformed or unknown message gives ``error`` with a
code and a sentence naming the problem; nothing is dropped silently (a reply that cannot be
routed back, because its vehicle is gone, is counted as ``undeliverable``).

Shutdown (`stop`, SIGINT, SIGTERM): new tasks are refused with error ``shutdown``, queued tasks
are answered with error ``shutdown``, running tasks finish and are answered (or, past
``grace_s``, answered with ``shutdown`` too), then the sockets close.

`snapshot()` keys (a JSON-able dict; the state reply, and what the Lyapunov controller and the
telemetry read):

| key | meaning |
|---|---|
| ``node``, ``role``, ``protocol``, ``pid`` | identity |
| ``uptime_s``, ``slot``, ``slot_s`` | time since start, current slot index, slot length tau |
| ``v``, ``capacity_flops_per_s``, ``workers``, ``threads``, ``queue_limit``, ``max_message_bytes`` | configuration (``max_message_bytes``: ZeroMQ ``MAXMSGSIZE`` per frame, default the largest cut tensor served: a bigger frame disconnects its sender) |
| ``security`` | ``{mode: plain or curve, authenticated, encrypted, allowed_keys, public_key}`` (splitrt.edge_runtime.link.security) |
| ``link`` | connection events of the ROUTER socket (ZeroMQ monitor): ``accepted, connected, disconnects, handshakes, auth_failures, handshake_failures`` |
| ``speed`` | ``{speed_factor, speed_mode}`` of the node's emulation |
| ``models`` | model -> ``{digest, n_cuts, flops_per_s, speed_source}`` |
| ``queues`` | queue -> ``{tasks, waiting, running, flops, est_s, models: {model: {tasks, flops}}}``; queue names are the model ids (rsu) or ``fifo`` (sv); ``flops``/``est_s`` count waiting and running tasks in full |
| ``allocation`` | rsu: ``{slot, time_s, tau_s, v, capacity_flops_per_s, q_flops, w_flops, n_tasks, f_flops_per_s, share}`` (dicts by model); the inputs and output of the last `allocate_rsu` call; sv: null |
| ``counters`` | ``received, tasks, accepted, completed, busy, errors, failed, state_requests, undeliverable, allocations`` (counts), ``errors_by_code``, ``completed_by_model``, ``served_s`` and ``entitled_s`` (queue -> worker seconds actually served vs allocated by the shares, splitrt.edge_runtime.node.scheduler) |
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.compute.profile import Profile
from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.compute.speed import SpeedEmulation, pace_times
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.work import WorkTable
from splitrt.edge_runtime.lifecycle import stop_on_signals
from splitrt.edge_runtime.link.security import ServerSecurity, SocketEvents, warn_plain
from splitrt.edge_runtime.link.wire import (
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    Header,
    WireError,
    check_task_tensor,
    decode_payload,
    encode_tensor,
    pack,
    tensor_header,
    unpack,
)
from splitrt.edge_runtime.node.scheduler import FairScheduler, Job
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu

log = logging.getLogger(__name__)

ROLES = ("rsu", "sv")
DISCIPLINES = ("sfq", "containers")
FIFO = "fifo"
_INPROC = "inproc://splitrt-replies-{}"


@dataclass(frozen=True)
class ServerConfig:
    """An edge node's settings (units in the names)."""

    bind: str = "tcp://0.0.0.0:5555"
    role: str = "rsu"
    name: str = ""
    threads: int = 1
    workers: int = 1
    slot_s: float = 1.0
    v: float = 10.0
    capacity_flops_per_s: float | None = None
    queue_limit: int = 64
    resolve_s: float | None = None
    grace_s: float = 10.0
    calibration_runs: int = 3
    providers: tuple[str, ...] = ("cpu",)
    speed_factor: float = 1.0
    speed_mode: str = "auto"
    max_message_bytes: int | None = None  # per ZeroMQ frame; None: the largest cut tensor served
    start_unix_s: float | None = None
    speed_profile_dir: str = ""
    discipline: str = "sfq"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SplitrtError(f"--role must be rsu or sv, got {self.role!r}")
        if self.discipline not in DISCIPLINES:
            raise SplitrtError(f"--discipline must be one of {', '.join(DISCIPLINES)}, got {self.discipline!r}")
        if self.threads < 1 or self.workers < 1:
            raise SplitrtError(f"--threads and --workers must be >= 1, got {self.threads} and {self.workers}")
        if not self.slot_s > 0:
            raise SplitrtError(f"--slot-s must be positive seconds, got {self.slot_s}")
        if not self.v >= 0:
            raise SplitrtError(f"--v must be >= 0, got {self.v}")
        if self.capacity_flops_per_s is not None and not self.capacity_flops_per_s > 0:
            raise SplitrtError(f"--capacity-flops must be positive FLOP/s, got {self.capacity_flops_per_s}")
        if self.queue_limit < 1:
            raise SplitrtError(f"--queue-limit must be >= 1 task, got {self.queue_limit}")
        if self.resolve_s is not None and not self.resolve_s >= 0:
            raise SplitrtError(f"--resolve-s must be >= 0 s, got {self.resolve_s}")
        if self.max_message_bytes is not None and not MAX_HEADER_BYTES <= self.max_message_bytes <= MAX_PAYLOAD_BYTES:
            raise SplitrtError(
                f"--max-message-bytes must be {MAX_HEADER_BYTES}..{MAX_PAYLOAD_BYTES} bytes, got {self.max_message_bytes}"
            )
        if self.grace_s < 0 or self.calibration_runs < 1:
            raise SplitrtError(
                f"grace must be >= 0 s and calibration runs >= 1, got {self.grace_s} s, {self.calibration_runs}"
            )


@dataclass
class ServedModel:
    """One DNN type this node serves: its segments and its speed on this node."""

    manifest: Manifest
    runner: SegmentRunner
    tail_s: np.ndarray  # (n_cuts,) estimated compute seconds of segments [c, n) on this node
    flops_per_s: float
    speed_source: str  # "profile", "calibration" or "pace"
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = self.digest or self.manifest.digest


def calibrate(runner: SegmentRunner, runs: int, seed: int = 0) -> np.ndarray:
    """Median seconds of every segment over ``runs`` chained passes after one warm-up pass."""
    spec = runner.manifest.input
    rng = np.random.default_rng(seed)
    x0 = (
        rng.standard_normal(spec.shape).astype(spec.dtype)
        if np.dtype(spec.dtype).kind == "f"
        else np.zeros(spec.shape, spec.dtype)
    )
    times = np.zeros((runs, runner.n_segments))
    for r in range(-1, runs):
        x = x0
        for i in range(runner.n_segments):
            start = time.perf_counter()
            x = runner.run_segment(x, i)
            if r >= 0:
                times[r, i] = time.perf_counter() - start
    return np.median(times, axis=0)


def load_models(
    dirs: Sequence[str | Path],
    *,
    threads: int = 1,
    providers: Sequence[str] = ("cpu",),
    speed_factor: float = 1.0,
    emulation: dict[str, Any] | None = None,
    calibration_runs: int = 3,
    pace: dict[str, np.ndarray] | None = None,
) -> dict[str, ServedModel]:
    """Load every export in ``dirs`` with its speed on this node (profile.json or calibration).

    ``speed_factor`` is the SegmentRunner stretch; ``emulation`` the node's
    ``SpeedEmulation.describe()``, which a profile must match to be used. ``pace`` (model ->
    per-segment seconds, splitrt.edge_runtime.compute.speed "pace") paces the segments, and those are the times.
    """
    emulation = emulation or {"speed_factor": 1.0, "speed_mode": "none"}
    models: dict[str, ServedModel] = {}
    for d in dirs:
        manifest = Manifest.load(d)
        if manifest.model in models:
            raise SplitrtError(f"model {manifest.model!r} is given twice (--segments {d})")
        paced = None if pace is None else pace.get(manifest.model)
        runner = SegmentRunner(manifest, providers=providers, threads=threads, speed_factor=speed_factor, pace_s=paced)
        seg_s, source = (
            (paced, "pace") if paced is not None else (_profile_times(manifest, threads, emulation), "profile")
        )
        if seg_s is None:
            seg_s, source = calibrate(runner, calibration_runs), "calibration"
        tail = np.concatenate([np.cumsum(seg_s[::-1])[::-1], [0.0]])
        total = float(tail[0])
        flops_per_s = manifest.total_flops / total if total > 0 else float(manifest.total_flops)
        models[manifest.model] = ServedModel(manifest, runner, tail, flops_per_s, source)
        log.info("%s: %.2f GFLOP/s on this node (%s)", manifest.model, flops_per_s / 1e9, source)
    if not models:
        raise SplitrtError("give at least one --segments directory")
    return models


def _profile_times(manifest: Manifest, threads: int, emulation: dict[str, Any]) -> np.ndarray | None:
    path = manifest.directory / "profile.json"
    if not path.is_file():
        return None
    try:
        prof = Profile.load(path, manifest)
    except SplitrtError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    dev = prof.data.get("device", {})
    same = (
        dev.get("threads") == threads
        and float(dev.get("speed_factor", 1.0)) == float(emulation["speed_factor"])
        and (emulation["speed_factor"] == 1.0 or dev.get("speed_mode") == emulation["speed_mode"])
    )
    if not same:
        log.info("%s was measured with other threads/speed emulation: calibrating instead", path)
        return None
    return prof.segment_median_s


@dataclass
class _Task:
    identity: bytes
    header: Header
    frames: list[Any]  # keeps the received frames (and so the zero-copy payload buffer) alive
    payload: memoryview
    model: ServedModel
    arrival_s: float
    backlog: dict[str, float] = field(default_factory=dict)


class EdgeServer:
    """An RSU or service vehicle (module docstring). ``run()`` blocks until `stop()`."""

    def __init__(
        self,
        config: ServerConfig,
        models: dict[str, ServedModel],
        *,
        speed: dict[str, Any] | None = None,
        security: ServerSecurity | None = None,
        work: WorkTable | None = None,
        on_slot: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    ):
        self.config = config
        self.models = models
        # Edge FLOPs per model and cut: the work table's (the simulator's unit) or the manifest's.
        self._edge_flops = {
            name: (
                work.for_model(m.manifest).edge_flops(config.role)
                if work is not None
                else np.array([c.flops_after for c in m.manifest.cuts], dtype=np.float64)
            )
            for name, m in models.items()
        }
        self.on_slot = list(on_slot)
        self._announced = -1
        self.name = config.name or f"{config.role}-{os.getpid()}"
        self.speed = speed or {"speed_factor": 1.0, "speed_mode": "none"}
        self.capacity_flops_per_s = config.capacity_flops_per_s or config.workers * float(
            np.mean([m.flops_per_s for m in models.values()])
        )
        queues = list(models) if config.role == "rsu" else [FIFO]
        self._sched = FairScheduler(queues, config.queue_limit)
        self._cv = threading.Condition(threading.RLock())
        self.security = security or ServerSecurity()
        self._ctx = self.security.context()
        self._events: SocketEvents | None = None
        # A frame bigger than the largest tensor this node accepts is refused by libzmq itself,
        # before it is buffered (the peer is disconnected, counted in link ``disconnects``).
        self.max_message_bytes = config.max_message_bytes or max(
            MAX_HEADER_BYTES, *(max(c.bytes for c in m.manifest.cuts[:-1]) for m in models.values())
        )
        self._router: zmq.Socket | None = None
        self._inproc = _INPROC.format(id(self))
        self.endpoint = ""
        self._stop = threading.Event()
        self._accepting = True
        self._workers_exit = False
        self._t0 = time.perf_counter()
        self.slot = 0
        self.allocation: dict[str, Any] | None = None
        self._alloc_dirty = False
        self._last_solve = -float("inf")
        self._resolve_s = config.resolve_s if config.resolve_s is not None else config.slot_s / 10
        self.counters: dict[str, Any] = {
            k: 0
            for k in (
                "received",
                "tasks",
                "accepted",
                "completed",
                "busy",
                "errors",
                "failed",
                "state_requests",
                "undeliverable",
                "allocations",
                "container_overruns",
            )
        }
        self.counters["errors_by_code"] = {}
        self.counters["completed_by_model"] = {m: 0 for m in models}
        self._ready = threading.Event()

    # ---- set-up ----------------------------------------------------------------------------
    def bind(self) -> str:
        """Bind the ROUTER socket; returns the endpoint (a ``*`` port is resolved)."""
        self.security.start(self._ctx)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self.security.apply(sock)
        self._events = SocketEvents(sock)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        try:
            sock.bind(self.config.bind)
        except zmq.ZMQError as exc:
            self._events.close()
            sock.close(0)
            self.security.stop()
            raise SplitrtError(f"cannot bind {self.config.bind}: {exc}") from None
        self._router = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.security.mode == "plain":
            warn_plain(self.name, "splitrt serve --curve-secret")
        return self.endpoint

    def stop(self) -> None:
        """Ask `run()` to shut down cleanly (thread-safe, idempotent)."""
        self._stop.set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        if self._router is None:
            self.bind()
        assert self._router is not None
        router = self._router
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self._inproc)
        restore = self._install_signals()
        if self.containers:  # one worker per container (queue)
            workers = [
                threading.Thread(target=self._worker, args=(q,), name=f"{self.name}-{q}", daemon=True)
                for q in self._sched.names
            ]
        else:
            workers = [
                threading.Thread(target=self._worker, name=f"{self.name}-worker{i}", daemon=True)
                for i in range(self.config.workers)
            ]
        for w in workers:
            w.start()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        events_sock = self._events.socket if self._events is not None else None
        if events_sock is not None:
            poller.register(events_sock, zmq.POLLIN)
        self._t0 = time.perf_counter()
        if self.config.start_unix_s is not None:
            self._t0 += self.config.start_unix_s - time.time()
        self._reallocate(time.perf_counter())
        self._ready.set()
        log.info("%s (%s) serving %s on %s", self.name, self.config.role, ", ".join(self.models), self.endpoint)
        shutdown_deadline: float | None = None
        try:
            while True:
                now = time.perf_counter()
                next_tick = self._t0 + (self.slot + 1) * self.config.slot_s
                wake = min(next_tick, now + 0.1)
                if self._announced < 0:
                    wake = min(wake, self._t0)
                if self._alloc_dirty:
                    wake = min(wake, self._last_solve + self._resolve_s)
                timeout_ms = max(0.0, wake - now) * 1e3
                events = dict(poller.poll(timeout_ms))
                if pull in events:
                    self._forward_replies(pull, router)
                if router in events:
                    self._serve_incoming(router)
                if events_sock in events:
                    self._drain_link_events()
                now = time.perf_counter()
                if now >= next_tick:
                    with self._cv:
                        self.slot = int((now - self._t0) / self.config.slot_s)
                    self._reallocate(now)
                    self._announce(now)
                elif self._announced < 0 and now >= self._t0:
                    self._announce(now)
                elif self._alloc_dirty and now >= self._last_solve + self._resolve_s:
                    if self._contended():
                        self._reallocate(now)
                    else:  # nothing contends: look again after resolve_s rather than spin on a past wake-up
                        self._last_solve = now
                if self._stop.is_set() and shutdown_deadline is None:
                    shutdown_deadline = now + self.config.grace_s
                    self._begin_shutdown(router)
                if shutdown_deadline is not None:
                    with self._cv:
                        running = [j for q in self._sched.names for j in self._sched.running(q)]
                    if not running:
                        self._forward_replies(pull, router)
                        break
                    if now >= shutdown_deadline:
                        for job in running:
                            self._reply_error(
                                router,
                                job.item.identity,
                                job.item.header.id,
                                "shutdown",
                                "the node stopped before this task finished",
                            )
                            self._count_failed()
                        break
        finally:
            with self._cv:
                self._workers_exit = True
                self._cv.notify_all()
            for w in workers:
                w.join(timeout=1.0)
            pull.close(0)
            if self._events is not None:  # before the socket: a monitor outliving it can hang libzmq
                self._events.close()
            router.close(linger=1000)
            self._router = None
            self.security.stop()
            restore()
            log.info("%s stopped: %s", self.name, {k: v for k, v in self.counters.items() if isinstance(v, int)})
        return 0

    def _announce(self, now: float) -> None:
        """Tell the slot hooks (telemetry) about the slot that has just begun, once per slot."""
        slot = max(int((now - self._t0) / self.config.slot_s), 0)
        if slot <= self._announced or not self.on_slot:
            self._announced = max(self._announced, slot)
            return
        self._announced = slot
        snapshot = self.snapshot()
        for hook in self.on_slot:
            try:
                hook(slot, snapshot)
            except Exception as exc:  # a hook (telemetry) must never stop the node
                log.warning("%s: slot hook failed: %s", self.name, exc)

    def _install_signals(self):
        return stop_on_signals(self.stop, f"{self.name}: shutting down")

    def _begin_shutdown(self, router: zmq.Socket) -> None:
        with self._cv:
            self._accepting = False
            dropped = self._sched.drain()
        for job in dropped:
            task: _Task = job.item
            self._reply_error(router, task.identity, task.header.id, "shutdown", "the node is stopping; task not run")
            self._count_failed()
        log.info("%s: shutting down, %d queued task(s) answered with 'shutdown'", self.name, len(dropped))

    # ---- incoming messages -----------------------------------------------------------------
    def _serve_incoming(self, router: zmq.Socket) -> None:
        for _ in range(1000):  # bounded, so replies and ticks are not starved by a flood
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(router, frames)

    def _handle(self, router: zmq.Socket, frames: list[Any]) -> None:
        arrival = time.perf_counter()
        identity = frames[0].bytes
        self._count("received")
        task_id = ""
        try:
            header, payload = unpack(frames[1:])
            task_id = header.id
            if header.kind == "state_request":
                self._count("state_requests")
                if self._alloc_dirty:  # the snapshot's allocation is that of the current queues
                    self._reallocate(arrival)
                self._send(router, identity, pack(Header(kind="state", node=self.name, state=self.snapshot())))
                return
            if header.kind != "task":
                raise WireError("unknown_kind", f"a node accepts task and state_request messages, not {header.kind!r}")
            self._count("tasks")
            assert payload is not None
            model = self._validate_task(header, payload)
        except WireError as exc:
            self._reply_error(router, identity, task_id, exc.code, str(exc))
            return
        if not self._accepting:
            self._reply_error(router, identity, header.id, "shutdown", "the node is stopping; task not accepted")
            self._count_failed()
            return
        task = _Task(identity, header, frames, payload, model, arrival)
        queue = header.model if self.config.role == "rsu" else FIFO
        edge_flops = float(self._edge_flops[header.model][header.cut])
        job = Job(task, queue, edge_flops, float(model.tail_s[header.cut]), arrival)
        with self._cv:
            self.slot = max(self.slot, int((arrival - self._t0) // self.config.slot_s))
            job.slot = self.slot
            backlog = list(self._sched.jobs(queue))
            task.backlog = {
                "backlog_tasks": len(backlog),
                "backlog_flops": float(sum(j.flops for j in backlog)),
                "backlog_s": float(sum(j.est_s for j in backlog)),
            }
            accepted = self._sched.push(job, arrival)
            if accepted:
                self.counters["accepted"] += 1
                self._alloc_dirty = self.config.role == "rsu"
                starving = self._sched.shares[queue] == 0.0
                self._wake_workers()
        due = accepted and self.config.role == "rsu" and (starving or arrival >= self._last_solve + self._resolve_s)
        if accepted and self.containers and self.config.role == "rsu":
            self._reallocate(arrival)  # a container's rate is its f_k: solve at every arrival
        elif due and self._contended():
            self._reallocate(arrival)
        if not accepted:
            self._count("busy")
            self._send(
                router,
                identity,
                pack(
                    Header(
                        kind="busy",
                        id=header.id,
                        node=self.name,
                        code="queue_full",
                        message=f"queue {queue!r} holds {self.config.queue_limit} tasks (its limit)",
                        server={k: float(v) for k, v in task.backlog.items()},
                    )
                ),
            )

    def _validate_task(self, header: Header, payload: memoryview) -> ServedModel:
        model = self.models.get(header.model)
        if model is None:
            raise WireError(
                "unknown_model", f"model {header.model!r} is not served here (serving: {', '.join(self.models)})"
            )
        if header.digest != model.digest:
            raise WireError(
                "digest_mismatch",
                f"model {header.model!r} here has manifest digest {model.digest[:12]}, the task says "
                f"{header.digest[:12]} (a different export)",
            )
        n = model.manifest.n_segments
        if not 0 <= header.cut < n:
            raise WireError(
                "bad_cut", f"cut {header.cut} is outside 0..{n - 1} for {header.model} (cut {n} runs fully local)"
            )
        check_task_tensor(header, model.manifest.cut_spec(header.cut), payload.nbytes)
        return model

    # ---- allocation (rsu) ------------------------------------------------------------------
    def _contended(self) -> bool:
        """Two or more types have work: only then can the shares change what runs next."""
        with self._cv:
            return sum(1 for name in self._sched.names if next(self._sched.jobs(name), None) is not None) >= 2

    def _reallocate(self, now: float) -> None:
        """Solve P3 (eqs 43-52) from the current queues and hand the shares to the scheduler.

        Only the I/O thread calls this. The inputs are read and the shares set under the lock; the
        solve itself (64 bisection steps of small numpy ops, about a millisecond) runs outside it,
        so workers are never held up by it.
        """
        if self.config.role != "rsu":
            return
        with self._cv:
            names = self._sched.names
            slot = self.slot
            q = np.zeros(len(names))
            w = np.zeros(len(names))
            n = np.zeros(len(names))
            for k, name in enumerate(names):
                for job in self._sched.jobs(name):
                    if job.slot < slot:
                        q[k] += job.flops
                    else:
                        w[k] += job.flops
                        n[k] += 1
            self._alloc_dirty = False
            self._last_solve = now
        f = allocate_rsu(q, w, n, self.capacity_flops_per_s, self.config.slot_s, self.config.v)
        shares = {name: float(f[k] / self.capacity_flops_per_s) for k, name in enumerate(names)}
        allocation = {
            "slot": slot,
            "time_s": now - self._t0,
            "tau_s": self.config.slot_s,
            "v": self.config.v,
            "capacity_flops_per_s": self.capacity_flops_per_s,
            "q_flops": dict(zip(names, q.tolist(), strict=True)),
            "w_flops": dict(zip(names, w.tolist(), strict=True)),
            "n_tasks": dict(zip(names, n.astype(int).tolist(), strict=True)),
            "f_flops_per_s": dict(zip(names, f.tolist(), strict=True)),
            "share": shares,
        }
        with self._cv:
            self._sched.set_shares(shares, time.perf_counter())
            self.counters["allocations"] += 1
            self.allocation = allocation
            if self.containers:
                self._cv.notify_all()  # running containers change speed

    # ---- workers ---------------------------------------------------------------------------
    @property
    def containers(self) -> bool:
        return self.config.discipline == "containers"

    def _wake_workers(self) -> None:
        """Caller holds ``_cv``. A container's worker serves one queue only: wake them all."""
        if self.containers:
            self._cv.notify_all()
        else:
            self._cv.notify()

    def _container_rate(self, queue: str) -> float:
        """FLOP/s of ``queue``'s container now: the RSU's f_k, an SV's whole capacity."""
        if self.config.role != "rsu":
            return self.capacity_flops_per_s
        alloc = self.allocation
        if alloc is None:
            return self.capacity_flops_per_s / len(self._sched.names)
        return float(alloc["f_flops_per_s"].get(queue, 0.0))

    def _hold(self, job: Job, start: float) -> None:
        """containers: return when the container, at its (changing) rate since ``start``, has done
        ``job.flops`` of work; the compute that already ran counts towards it."""
        remaining = job.flops
        last = start
        with self._cv:
            rate = self._container_rate(job.queue)
            first = True
            while not self._workers_exit:
                now = time.perf_counter()
                remaining -= (now - last) * rate
                last = now
                if remaining <= 0:
                    if first:
                        self.counters["container_overruns"] += 1
                    return
                first = False
                rate = self._container_rate(job.queue)
                self._cv.wait(remaining / rate if rate > 0 else 0.05)

    def _worker(self, queue: str | None = None) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self._inproc)
        try:
            while True:
                with self._cv:
                    job = None
                    while not self._workers_exit:
                        job = self._sched.pop(time.perf_counter(), queue)
                        if job is not None:
                            break
                        self._cv.wait()
                    if job is None:
                        return
                self._run_job(job, push)
        finally:
            push.close()

    def _run_job(self, job: Job, push: zmq.Socket) -> None:
        task: _Task = job.item
        header = task.header
        start = time.perf_counter()
        manifest = task.model.manifest
        try:
            x = decode_payload(header, task.payload)
            y = task.model.runner.run(x, header.cut, manifest.n_segments)
            if self.containers:
                self._hold(job, start)
            error = None
        except Exception as exc:  # a task must never kill the worker: answer it with the reason
            log.exception("%s: task %s failed", self.name, header.id)
            y, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        end = time.perf_counter()
        task.frames = []  # the payload buffer may go now
        if error is None:
            encoded = encode_tensor(np.ascontiguousarray(y), "fp32")
            timing = {"wait_s": start - task.arrival_s, "compute_s": end - start, **task.backlog}
            timing["server_s"] = time.perf_counter() - task.arrival_s
            reply = tensor_header(
                "result",
                encoded,
                id=header.id,
                vehicle=header.vehicle,
                model=header.model,
                digest=header.digest,
                cut=manifest.n_segments,
                node=self.name,
                sent=time.time(),
                server=timing,
            )
            frames = pack(reply, encoded.payload)
        else:
            self._count_error("compute_failed")
            frames = pack(Header(kind="error", id=header.id, node=self.name, code="compute_failed", message=error))
        with self._cv:  # counted before the reply leaves, so a vehicle never sees stale counters
            if error is None:
                self.counters["completed"] += 1
                self.counters["completed_by_model"][header.model] += 1
            else:
                self.counters["failed"] += 1
        # Hand the reply over before the job leaves `running`, so shutdown never misses it.
        push.send_multipart([task.identity, *frames], copy=False)
        with self._cv:
            self._sched.finish(job, end - start, time.perf_counter())
            self._wake_workers()

    # ---- replies ---------------------------------------------------------------------------
    def _forward_replies(self, pull: zmq.Socket, router: zmq.Socket) -> None:
        while True:
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._send(router, frames[0].bytes, frames[1:])

    def _send(self, router: zmq.Socket, identity: bytes, frames: list[Any]) -> None:
        try:
            router.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # EHOSTUNREACH (vehicle gone) or a full pipe
            self._count("undeliverable")
            log.warning("%s: reply to peer %s not delivered: %s", self.name, identity[:16].hex(), exc)

    def _reply_error(self, router: zmq.Socket, identity: bytes, task_id: str, code: str, message: str) -> None:
        self._count_error(code)
        log.info("%s: error %s to peer %s: %s", self.name, code, identity[:16].hex(), message)
        self._send(router, identity, pack(Header(kind="error", id=task_id, node=self.name, code=code, message=message)))

    def _count_error(self, code: str) -> None:
        with self._cv:
            self.counters["errors"] += 1
            by_code = self.counters["errors_by_code"]
            by_code[code] = by_code.get(code, 0) + 1

    def _count(self, key: str, n: int = 1) -> None:
        with self._cv:
            self.counters[key] += n

    def _count_failed(self) -> None:
        self._count("failed")

    def _drain_link_events(self) -> None:
        if self._events is not None:
            with self._cv:
                self._events.drain()

    # ---- state -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every queue's backlog, the allocation and the counters (keys in the module docstring)."""
        now = time.perf_counter()
        with self._cv:
            self._sched.advance(now)
            queues: dict[str, Any] = {}
            for name in self._sched.names:
                jobs = list(self._sched.jobs(name))
                per_model: dict[str, dict[str, float]] = {}
                for j in jobs:
                    entry = per_model.setdefault(j.item.header.model, {"tasks": 0, "flops": 0.0})
                    entry["tasks"] += 1
                    entry["flops"] += j.flops
                queues[name] = {
                    "tasks": len(jobs),
                    "waiting": len(self._sched.waiting(name)),
                    "running": len(self._sched.running(name)),
                    "flops": float(sum(j.flops for j in jobs)),
                    "est_s": float(sum(j.est_s for j in jobs)),
                    "models": per_model,
                }
            counters = {
                **{k: (dict(v) if isinstance(v, dict) else v) for k, v in self.counters.items()},
                "served_s": self._sched.served_s(),
                "entitled_s": self._sched.entitled_s(),
            }
            allocation = None if self.allocation is None else dict(self.allocation)
            slot = self.slot
            link = dict(self._events.counts) if self._events is not None else {}
        return {
            "node": self.name,
            "role": self.config.role,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uptime_s": now - self._t0,
            "slot": slot,
            "slot_s": self.config.slot_s,
            "v": self.config.v,
            "capacity_flops_per_s": self.capacity_flops_per_s,
            "workers": self.config.workers,
            "threads": self.config.threads,
            "queue_limit": self.config.queue_limit,
            "max_message_bytes": self.max_message_bytes,
            "security": self.security.describe(),
            "link": link,
            "speed": dict(self.speed),
            "models": {
                name: {
                    "digest": m.digest,
                    "n_cuts": m.manifest.n_cuts,
                    "flops_per_s": m.flops_per_s,
                    "speed_source": m.speed_source,
                }
                for name, m in self.models.items()
            },
            "queues": queues,
            "allocation": allocation,
            "counters": counters,
        }


def serve(
    config: ServerConfig,
    dirs: Sequence[str | Path],
    *,
    on_ready=None,
    security: ServerSecurity | None = None,
    work: WorkTable | None = None,
    on_slot: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    before_run: Callable[[EdgeServer], ServerConfig | None] | None = None,
) -> int:
    """Load the models (under the node's speed emulation), bind, serve until stopped.

    ``before_run(server)`` runs after the socket is bound and ``on_ready`` was called; it may
    return a new config (e.g. with the epoch a slot beacon brought, splitrt.edge_runtime.experiment.clock)."""
    cpus = min(config.threads * config.workers, os.cpu_count() or 1)
    emulation = SpeedEmulation(config.speed_factor, config.speed_mode, cpus=cpus)
    runner_factor = emulation.apply()
    try:
        pace = None
        if emulation.applied_mode == "pace":
            pace = {}
            for d in dirs:
                manifest = Manifest.load(d)
                where = Path(config.speed_profile_dir) / manifest.model if config.speed_profile_dir else Path(d)
                reference = Profile.load(where / "profile.json", manifest).segment_median_s
                pace[manifest.model] = pace_times(reference, config.speed_factor)
        models = load_models(
            dirs,
            threads=config.threads,
            providers=config.providers,
            speed_factor=runner_factor,
            emulation=emulation.describe(),
            calibration_runs=config.calibration_runs,
            pace=pace,
        )
        server = EdgeServer(config, models, speed=emulation.describe(), security=security, work=work, on_slot=on_slot)
        endpoint = server.bind()
        if on_ready is not None:
            on_ready(server, endpoint)
        if before_run is not None:
            server.config = before_run(server) or server.config
        return server.run()
    finally:
        emulation.close()
