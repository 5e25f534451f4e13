"""The node's worker threads: each takes the next task the scheduler gives it, runs the tail
segments with ONNX Runtime (which releases the GIL), and hands the reply back to the I/O thread
over an inproc PUSH/PULL pair (ZeroMQ sockets are not thread-safe: only the I/O thread touches the
ROUTER socket). What a worker does after the compute and whom it wakes is the service
discipline's (splitrt.edge_runtime.node.disciplines).

A result carries the model output (fp32) and the node's own timing in ``server``
(wire.SERVER_TIMING_KEYS: queue wait, compute, time at the node, backlog at arrival).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.link.wire import Header, decode_payload, encode_tensor, pack, tensor_header
from splitrt.edge_runtime.node.models import ServedModel
from splitrt.edge_runtime.node.scheduler import Job

log = logging.getLogger("splitrt.edge_runtime.node.server")

#: The `EdgeServer` whose queues the workers serve (not imported: the server imports this module).
EdgeServer = Any


@dataclass
class QueuedTask:
    """A task between its arrival (the I/O thread) and its reply (a worker)."""

    identity: bytes
    header: Header
    frames: list[Any]  # keeps the received frames (and so the zero-copy payload buffer) alive
    payload: memoryview
    model: ServedModel
    arrival_s: float
    backlog: dict[str, float] = field(default_factory=dict)


def worker_loop(server: EdgeServer, queue: str | None) -> None:
    """One worker thread: take the scheduler's next task (of ``queue``, or any), run it, hand the
    reply to the I/O thread over the inproc PUSH socket; until the server lets its workers go."""
    push = server._ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(server._inproc)
    try:
        while True:
            with server._cv:
                job = None
                while not server._workers_exit:
                    job = server._sched.pop(time.perf_counter(), queue)
                    if job is not None:
                        break
                    server._cv.wait()
                if job is None:
                    return
            run_job(server, job, push)
    finally:
        push.close()


def run_job(server: EdgeServer, job: Job, push: zmq.Socket) -> None:
    """Run one task's tail and push its reply (a result, or error ``compute_failed`` with the
    reason: a task never kills the worker); counted before the reply leaves."""
    task: QueuedTask = job.item
    header = task.header
    start = time.perf_counter()
    server.discipline.started(job, start)
    manifest = task.model.manifest
    try:
        x = decode_payload(header, task.payload)
        y = task.model.runner.run(x, header.cut, manifest.n_segments)
        server.discipline.after_compute(job, start)
        error = None
    except Exception as exc:  # a task must never kill the worker: answer it with the reason
        log.exception("%s: task %s failed", server.name, header.id)
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
            node=server.name,
            sent=time.time(),
            server=timing,
        )
        frames = pack(reply, encoded.payload)
    else:
        server._count_error("compute_failed")
        frames = pack(Header(kind="error", id=header.id, node=server.name, code="compute_failed", message=error))
    with server._cv:  # counted before the reply leaves, so a vehicle never sees stale counters
        if error is None:
            server.counters["completed"] += 1
            server.counters["completed_by_model"][header.model] += 1
        else:
            server.counters["failed"] += 1
    # Hand the reply over before the job leaves `running`, so shutdown never misses it.
    push.send_multipart([task.identity, *frames], copy=False)
    with server._cv:
        server._sched.finish(job, end - start, time.perf_counter())
        server.discipline.wake()
