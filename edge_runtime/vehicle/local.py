"""The vehicle's local queue and its worker: the vehicle's own CPU running task segments.

`LocalQueue` is the vehicle's FIFO of local work with its backlog in FLOPs, eq (8)'s Q_loc (the
running job included: its FLOPs leave the backlog when it is done). `LocalWorker` is one thread
that takes the FIFO's jobs in order:

- ``head`` (queued at the task's decision, cut >= 1): runs segments [0, cut) on the pool input.
  At cut n that is the whole model and the task ends ``local``; otherwise the head tensor is
  encoded here, kept on the task for a fallback, and handed to the link to send.
- ``tail`` (queued by `LocalWorker.fall_back` when an offload fails: timeout, ``busy``, an error
  reply, no connection, shutdown): runs segments [cut, n) from the tensor the task had reached
  (outcome ``fallback``). A tail goes to the front of the FIFO: it is the oldest work.

A segment that raises ends its task as ``failed`` with the reason. Threads: the worker owns one
socket only, an inproc PUSH connected to the link's PULL (``ready_endpoint``), on which it sends
the id of every encoded head; the calling thread (splitrt.edge_runtime.vehicle.link) owns the
PULL and all the sockets to the nodes (ZeroMQ sockets are not thread-safe). The FIFO is guarded
by its condition variable; `fall_back` is called on the calling thread, records are finished on
the worker's (splitrt.edge_runtime.vehicle.records).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import zmq

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.link.wire import encode_tensor
from splitrt.edge_runtime.vehicle.task import Task

log = logging.getLogger("splitrt.edge_runtime.vehicle.client")

#: finish(task, outcome, reason, done perf_counter): end a task with its record
Finish = Callable[[Task, str, str, float], None]


class LocalQueue:
    """The vehicle's FIFO of local work with its backlog in FLOPs (eq 8's Q_loc)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.jobs: deque[tuple[str, Task, float, float]] = deque()  # kind, task, flops, queued at
        self.flops = 0.0
        self.closed = False

    def put(self, kind: str, task: Task, flops: float, front: bool = False) -> None:
        with self.cv:
            item = (kind, task, flops, time.perf_counter())
            self.jobs.appendleft(item) if front else self.jobs.append(item)
            self.flops += flops
            self.cv.notify()

    def get(self) -> tuple[str, Task, float, float] | None:
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

    def backlog(self) -> tuple[float, int]:
        """(Q_loc in FLOPs, jobs waiting), read together."""
        with self.cv:
            return self.flops, len(self.jobs)


class LocalWorker:
    """The vehicle's local worker thread and its FIFO (module docstring)."""

    def __init__(
        self,
        runner: SegmentRunner,
        n: int,
        inputs: Sequence[np.ndarray],
        flops_before: np.ndarray,
        flops_after: np.ndarray,
        *,
        finish: Finish,
        ready_endpoint: str,
        vehicle_id: str,
    ) -> None:
        self.runner = runner
        self.n = n
        self.queue = LocalQueue()
        self._inputs = inputs
        self._flops_before = flops_before
        self._flops_after = flops_after
        self._finish = finish
        self._ready_endpoint = ready_endpoint
        self._vehicle_id = vehicle_id
        self._ctx = zmq.Context.instance()
        self._thread: threading.Thread | None = None

    # ---- queueing (any thread) -------------------------------------------------------------
    def head(self, task: Task) -> None:
        """Queue the task's head [0, cut) (at cut n: the whole model)."""
        self.queue.put("head", task, float(self._flops_before[task.cut]))

    def fall_back(self, task: Task, reason: str, now: float) -> None:
        """The offload failed: time lost on the link so far, then the tail goes to the local FIFO."""
        task.t_fail = now
        task.d["transfer_s"] = now - task.t_encoded
        task.reason = reason
        task.encoded = None
        log.info("%s: task %s falls back (%s)", self._vehicle_id, task.id, reason)
        self.queue.put("tail", task, float(self._flops_after[task.cut]), front=True)

    # ---- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=f"{self._vehicle_id}-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """No more jobs after the queued ones; wait up to ``timeout_s`` for the thread to finish them."""
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _work(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._ready_endpoint)
        try:
            while (job := self.queue.get()) is not None:
                kind, task, flops, _queued = job
                try:
                    if kind == "head":
                        self._run_head(task, push)
                    else:
                        self._run_tail(task)
                finally:
                    self.queue.done(flops)
        finally:
            push.close()

    def _run_head(self, task: Task, push: zmq.Socket) -> None:
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

    def _run_tail(self, task: Task) -> None:
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
