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

Discipline: how the queues share the compute, ``sfq`` (default) or ``containers``
(splitrt.edge_runtime.node.disciplines).

Experiments (`splitrt hil`). ``start_unix_s`` puts slot 0 at the experiment's shared epoch
(splitrt.edge_runtime.experiment.clock) instead of the start of `run()`; at every slot boundary, after the
allocation is re-solved, the ``on_slot`` hooks get the slot index and the node's snapshot (the
telemetry publishes it). A work table (splitrt.edge_runtime.formats.work) makes every task's FLOPs the
simulator's for its cut (profile-calibrated effective FLOPs) instead of the manifest's.

Capacity. F (f_rsu_max, FLOP/s) is ``capacity_flops_per_s`` when given, else ``workers`` x the
mean over the served models of their effective FLOP/s on this node (splitrt.edge_runtime.node.models).

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

`snapshot()`: the node's state as the state reply carries it (splitrt.edge_runtime.node.snapshot).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.work import WorkTable
from splitrt.edge_runtime.lifecycle import stop_on_signals
from splitrt.edge_runtime.link.security import ServerSecurity, SocketEvents, warn_plain
from splitrt.edge_runtime.link.wire import (
    MAX_HEADER_BYTES,
    Header,
    WireError,
    pack,
    unpack,
)
from splitrt.edge_runtime.node.allocator import RsuAllocator
from splitrt.edge_runtime.node.config import DISCIPLINES, ROLES, ServerConfig
from splitrt.edge_runtime.node.disciplines import DISCIPLINE_CLASSES
from splitrt.edge_runtime.node.models import ServedModel, calibrate, load_models, validate_task
from splitrt.edge_runtime.node.scheduler import FairScheduler, Job
from splitrt.edge_runtime.node.snapshot import node_snapshot
from splitrt.edge_runtime.node.workers import QueuedTask, worker_loop

log = logging.getLogger(__name__)

__all__ = ["DISCIPLINES", "ROLES", "EdgeServer", "ServedModel", "ServerConfig", "calibrate", "load_models"]

FIFO = "fifo"
_INPROC = "inproc://splitrt-replies-{}"


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
        self.allocator = RsuAllocator(
            self.capacity_flops_per_s,
            config.slot_s,
            config.v,
            config.resolve_s if config.resolve_s is not None else config.slot_s / 10,
        )
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
        self.discipline = DISCIPLINE_CLASSES[config.discipline](self)

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
        workers = [
            threading.Thread(
                target=self._worker, args=(q,), name=f"{self.name}-{q if q else f'worker{i}'}", daemon=True
            )
            for i, q in enumerate(self.discipline.worker_queues())
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
                if self.allocator.dirty:
                    wake = min(wake, self.allocator.last_solve + self.allocator.resolve_s)
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
                elif self.allocator.dirty and now >= self.allocator.last_solve + self.allocator.resolve_s:
                    if self._contended():
                        self._reallocate(now)
                    else:  # nothing contends: look again after resolve_s rather than spin on a past wake-up
                        self.allocator.last_solve = now
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
            task: QueuedTask = job.item
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
                if self.allocator.dirty:  # the snapshot's allocation is that of the current queues
                    self._reallocate(arrival)
                self._send(router, identity, pack(Header(kind="state", node=self.name, state=self.snapshot())))
                return
            if header.kind != "task":
                raise WireError("unknown_kind", f"a node accepts task and state_request messages, not {header.kind!r}")
            self._count("tasks")
            assert payload is not None
            model = validate_task(self.models, header, payload)
        except WireError as exc:
            self._reply_error(router, identity, task_id, exc.code, str(exc))
            return
        if not self._accepting:
            self._reply_error(router, identity, header.id, "shutdown", "the node is stopping; task not accepted")
            self._count_failed()
            return
        task = QueuedTask(identity, header, frames, payload, model, arrival)
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
                self.allocator.dirty = self.config.role == "rsu"
                starving = self._sched.shares[queue] == 0.0
                self.discipline.wake()
        due = (
            accepted
            and self.config.role == "rsu"
            and (starving or arrival >= self.allocator.last_solve + self.allocator.resolve_s)
        )
        if (accepted and self.discipline.solve_at_every_arrival()) or (due and self._contended()):
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

    # ---- allocation (rsu) ------------------------------------------------------------------
    @property
    def allocation(self) -> dict[str, Any] | None:
        return self.allocator.allocation

    def _contended(self) -> bool:
        """Two or more types have work: only then can the shares change what runs next."""
        with self._cv:
            return self.allocator.contended(self._sched)

    def _reallocate(self, now: float) -> None:
        """Solve P3 from the current queues and hand the shares to the scheduler (RSU only).

        Only the I/O thread calls this. The inputs are read and the shares set under the lock; the
        solve itself (64 bisection steps of small numpy ops, about a millisecond) runs outside it,
        so workers are never held up by it.
        """
        if self.config.role != "rsu":
            return
        with self._cv:
            slot = self.slot
            inputs = self.allocator.inputs(self._sched, slot, now)
        shares, allocation = self.allocator.solve(inputs, slot, now - self._t0)
        with self._cv:
            self._sched.set_shares(shares, time.perf_counter())
            self.counters["allocations"] += 1
            self.allocator.allocation = allocation
            self.discipline.shares_changed()

    # ---- workers ---------------------------------------------------------------------------
    def _worker(self, queue: str | None = None) -> None:
        worker_loop(self, queue)

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
        """Every queue's backlog, the allocation and the counters (splitrt.edge_runtime.node.snapshot)."""
        return node_snapshot(self)
