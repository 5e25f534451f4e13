"""The vehicle's link to the edge nodes: one DEALER socket per node, sending tasks, receiving replies.

One DEALER socket per edge node (``ZMQ_IMMEDIATE``: a send to a node with no live connection
fails at once instead of queueing, and ZeroMQ reconnects in the background, so a restarted node
is used again as soon as it is back). `VehicleLink.connected` is whether a node's socket has a
live connection; at the start the vehicle waits up to ``connect_s`` for all of them
(`wait_connected`), then goes on: tasks sent to a node still missing fall back.

A sent task waits for its reply until ``timeout_s``. The node's ``result`` completes it
(``remote``: the transfer time is the round trip less the node's own time); on timeout, ``busy``,
an error reply, a bad result or a failed send it falls back to the vehicle's local worker
(splitrt.edge_runtime.vehicle.local). Replies to tasks that already fell back are counted as
``late_replies`` and dropped; replies that are not valid frames count as ``bad_replies``.

Node backlogs for the decisions (eq 53): state replies (requested with `request_states`, at every
slot start) and results (the backlog at arrival) update a node's backlog; telemetry may too
(`observe_node_state`); the newest wins, and ``node_backlog_at`` keeps when it was heard.

Link security (splitrt.edge_runtime.link.security): with a CURVE `ClientSecurity` every DEALER encrypts and
pins its node's public key; a node that refuses this vehicle's key makes the offload fall back
with reason ``refused: ...`` instead of ``unreachable`` (the socket's monitor events, `SocketEvents`).

Threads: the calling thread (the one in `Vehicle.run`) owns every socket here, the DEALERs and
the inproc PULL on which the local worker hands over the ids of encoded heads
(``ready_endpoint``); ZeroMQ sockets are not thread-safe, so every method but
`observe_node_state` (which touches no socket) runs on that thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.link.security import ClientSecurity, SocketEvents, warn_plain
from splitrt.edge_runtime.link.wire import Header, WireError, decode_payload, pack, tensor_header, unpack
from splitrt.edge_runtime.sysmodel.observation import node_backlog_flops
from splitrt.edge_runtime.vehicle.config import VehicleConfig
from splitrt.edge_runtime.vehicle.task import Task

log = logging.getLogger("splitrt.edge_runtime.vehicle.client")

#: The inproc address of the PULL socket encoded heads arrive on, formatted with the vehicle's id().
READY_ENDPOINT = "inproc://splitrt-vehicle-{}"


class VehicleLink:
    """A vehicle's sockets to its edge nodes and the tasks in flight on them (module docstring)."""

    def __init__(
        self,
        config: VehicleConfig,
        manifest: Manifest,
        security: ClientSecurity,
        counters: dict[str, int],
        stop: threading.Event,
        *,
        ready_endpoint: str,
        open_task: Callable[[str], Task | None],
        fall_back: Callable[[Task, str, float], None],
        finish: Callable[[Task, str, str, float], None],
    ) -> None:
        self.config = config
        self.manifest = manifest
        self.security = security
        self.counters = counters  # the vehicle's: late_replies, bad_replies, state_replies are counted here
        self.n_nodes = len(config.edges)
        self.ready_endpoint = ready_endpoint
        self._stop = stop
        self._open_task = open_task
        self._fall_back = fall_back
        self._finish = finish
        self._ctx = zmq.Context.instance()
        self.node_backlog = np.zeros(self.n_nodes)
        self.node_backlog_at = np.full(self.n_nodes, -np.inf)  # perf_counter of the newest update
        self._node_names: list[str | None] = [None] * self.n_nodes
        self._inflight: list[dict[str, Task]] = [{} for _ in range(self.n_nodes)]
        self._dealers: list[zmq.Socket] = []
        self._link_events: list[SocketEvents] = []
        self._pull: zmq.Socket | None = None
        self._poller: zmq.Poller | None = None

    # ---- sockets ---------------------------------------------------------------------------
    def open(self) -> None:
        """Connect a DEALER to every node, bind the PULL for the worker's heads, poll them all (`poll`)."""
        self._dealers = [self._dealer(e, j) for j, e in enumerate(self.config.edges)]
        if self.security.mode == "plain":
            warn_plain(self.config.vehicle_id, "splitrt vehicle --curve-secret")
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self.ready_endpoint)
        self._pull = pull
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        for sock in self._dealers:
            poller.register(sock, zmq.POLLIN)
        self._poller = poller

    def close(self) -> None:
        if self._pull is not None:
            self._pull.close(0)
        for events in self._link_events:
            events.close()
        for sock in self._dealers:
            sock.close(0)

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

    def connected(self, j: int) -> bool:
        return bool(self._dealers[j].getsockopt(zmq.EVENTS) & zmq.POLLOUT)

    def wait_connected(self) -> None:
        deadline = time.perf_counter() + self.config.connect_s
        while time.perf_counter() < deadline:
            if all(self.connected(j) for j in range(self.n_nodes)):
                return
            time.sleep(0.01)
        missing = [self.config.edges[j] for j in range(self.n_nodes) if not self.connected(j)]
        log.warning("%s: no connection yet to %s (tasks sent there fall back)", self.config.vehicle_id, missing)

    def node_name(self, j: int) -> str | None:
        """The name node j gave in its replies (None before the first)."""
        return self._node_names[j]

    # ---- node states -----------------------------------------------------------------------
    def observe_node_state(self, j: int, state: dict[str, Any]) -> None:
        """A node's snapshot from elsewhere (telemetry): newest wins, like the state replies."""
        self.node_backlog[j] = node_backlog_flops(state, self.manifest.model)
        self.node_backlog_at[j] = time.perf_counter()

    def request_states(self) -> None:
        frames = pack(Header(kind="state_request", vehicle=self.config.vehicle_id))
        for sock in self._dealers:
            # Not connected: the node's backlog stays what we last heard.
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart(frames, zmq.NOBLOCK)

    # ---- sending ---------------------------------------------------------------------------
    def poll(self, timeout_ms: float) -> None:
        """Wait up to ``timeout_ms`` for heads to send and replies, and handle what came."""
        assert self._poller is not None
        for sock, _ in self._poller.poll(timeout_ms):
            if sock is self._pull:
                self._send_ready(sock)
            else:
                self._receive(self._dealers.index(sock))

    def _send_ready(self, pull: zmq.Socket) -> None:
        while True:
            try:
                task_id = pull.recv_string(zmq.NOBLOCK)
            except zmq.Again:
                return
            task = self._open_task(task_id)
            if task is not None:
                self.send(task)

    def send(self, task: Task) -> None:
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
            self._fall_back(task, "shutdown", time.perf_counter())
            return
        try:
            self._dealers[task.node].send_multipart(pack(header, enc.payload), zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            reason = self._unreachable_reason(task.node) if exc.errno == zmq.EAGAIN else f"unreachable: {exc}"
            self._fall_back(task, reason, time.perf_counter())
            return
        task.deadline = time.perf_counter() + self.config.timeout_s
        self._inflight[task.node][task.id] = task

    def _unreachable_reason(self, j: int) -> str:
        """``unreachable``, or why the node refused this vehicle (a CURVE handshake it rejected)."""
        events = self._link_events[j]
        events.drain()
        return events.last_failure or "unreachable"

    # ---- receiving -------------------------------------------------------------------------
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
                self.node_backlog[j] = node_backlog_flops(header.state, self.manifest.model)
                self.node_backlog_at[j] = received
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
                self._fall_back(task, "busy", received)
            elif header.kind == "error":
                self._fall_back(task, f"error:{header.code}: {header.message}", received)
            else:
                self._fall_back(task, f"error:unknown_kind: node replied {header.kind!r}", received)

    def _complete_remote(self, task: Task, header: Header, payload: Any, received: float) -> None:
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
            self._fall_back(task, f"error:bad_result: {exc}", received)
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
            self.node_backlog[task.node] = float(server["backlog_flops"])
            self.node_backlog_at[task.node] = received
        self._finish(task, "remote", "", done)

    # ---- deadlines -------------------------------------------------------------------------
    def deadlines(self) -> list[float]:
        """The reply deadline of every task in flight."""
        return [t.deadline for inflight in self._inflight for t in inflight.values()]

    def expire(self, now: float) -> None:
        for inflight in self._inflight:
            for task_id in [tid for tid, t in inflight.items() if t.deadline <= now]:
                self._fall_back(inflight.pop(task_id), "timeout", now)

    def fallback_all(self, reason: str, now: float) -> None:
        for inflight in self._inflight:
            for task in list(inflight.values()):
                self._fall_back(task, reason, now)
            inflight.clear()
