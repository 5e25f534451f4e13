"""Service disciplines: how a node's queues share its compute, behind one interface.

``sfq`` (`SharedWorkers`, default): ``workers`` threads each take the scheduler's next task
(start-time fair queueing over worker time, splitrt.edge_runtime.node.scheduler) and run it at
full speed; the RSU's shares f_k / F are enforced over the workers' time, one task at a time.

``containers`` (`Containers`): the paper's RSU literally (SYSTEM_MODEL.md: one container per DNN
type with f_k of the compute): one worker per queue runs that queue's tasks in FIFO order, each
task's reply leaves once its container, progressing at the type's current f_k (re-solved at every
arrival and slot boundary), has done the task's work (FLOPs / f_k, integrated over share changes:
every change banks the progress made at the old rate, also while the inference itself runs),
so types run side by side like CPU-share containers (the fluid sharing eqs 9-11 assume). The real
inference runs first at whatever speed the host gives it; a task whose compute alone took longer
than its container's time is counted (``container_overruns``). An SV in this discipline serves its
FIFO at exactly its capacity. Needs the work (FLOPs, splitrt.edge_runtime.formats.work) and the
capacity to be in the same unit.

The server calls a discipline at six points: which queue each worker thread serves, whom to
wake when a task is queued or finished, whether to re-solve the allocation at every arrival,
what to do when the shares change, and what a worker does before and after a task's compute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from splitrt.edge_runtime.node.scheduler import Job

#: The `EdgeServer` a discipline serves (not imported: the server imports this module). A
#: discipline reads its ``config``, ``_cv`` (the lock and condition every worker waits on),
#: ``_sched``, ``allocation``, ``capacity_flops_per_s``, ``counters`` and ``_workers_exit``.
EdgeServer = Any


class Discipline:
    """The interface (see the module docstring). Methods marked "lock" run with ``server._cv`` held."""

    name = ""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server

    def worker_queues(self) -> list[str | None]:
        """One entry per worker thread: the queue it serves (None: whichever the scheduler picks)."""
        raise NotImplementedError

    def wake(self) -> None:
        """(lock) A task was queued or finished: wake the worker(s) that may run next."""
        raise NotImplementedError

    def solve_at_every_arrival(self) -> bool:
        """Re-solve the RSU's allocation at every accepted task (else only when it can matter)."""
        return False

    def shares_changed(self) -> None:
        """(lock) The allocation has new shares."""

    def started(self, job: Job, start: float) -> None:
        """(worker thread, no lock) The task's service begins at ``start`` (before its inference)."""

    def after_compute(self, job: Job, start: float) -> None:
        """(worker thread, no lock) After the task's inference, before its reply leaves."""


class SharedWorkers(Discipline):
    name = "sfq"

    def worker_queues(self) -> list[str | None]:
        return [None] * self.server.config.workers

    def wake(self) -> None:
        self.server._cv.notify()


@dataclass
class _Hold:
    """A running job's progress in its container: FLOPs left at ``last``, and the rate since."""

    queue: str
    remaining: float
    last: float
    rate: float

    def bank(self, now: float) -> None:
        self.remaining -= max(now - self.last, 0.0) * self.rate
        self.last = max(now, self.last)


class Containers(Discipline):
    name = "containers"

    def __init__(self, server: EdgeServer) -> None:
        super().__init__(server)
        self._holds: dict[int, _Hold] = {}  # id(job) -> progress, from `started` to the end of its hold

    def worker_queues(self) -> list[str | None]:
        return list(self.server._sched.names)  # one worker per container (queue)

    def wake(self) -> None:
        self.server._cv.notify_all()  # a container's worker serves one queue only: wake them all

    def solve_at_every_arrival(self) -> bool:
        return self.server.config.role == "rsu"  # a container's rate is its f_k

    def rate(self, queue: str) -> float:
        """FLOP/s of ``queue``'s container now: the RSU's f_k, an SV's whole capacity."""
        server = self.server
        if server.config.role != "rsu":
            return server.capacity_flops_per_s
        alloc = server.allocation
        if alloc is None:
            return server.capacity_flops_per_s / len(server._sched.names)
        return float(alloc["f_flops_per_s"].get(queue, 0.0))

    def started(self, job: Job, start: float) -> None:
        """The container's progress on ``job`` counts from ``start`` at its current rate."""
        with self.server._cv:
            self._holds[id(job)] = _Hold(job.queue, job.flops, start, self.rate(job.queue))

    def shares_changed(self) -> None:
        """(lock) Bank every running job's progress at its old rate up to now; go on at the new one."""
        now = time.perf_counter()
        for hold in self._holds.values():
            hold.bank(now)
            hold.rate = self.rate(hold.queue)
        self.server._cv.notify_all()  # running containers change speed

    def after_compute(self, job: Job, start: float) -> None:
        """Return when the container, at its (changing) rate since ``start``, has done
        ``job.flops`` of work; the compute that already ran counts towards it, every interval at
        the rate it had then (`shares_changed` banks the progress whenever the shares change)."""
        server = self.server
        with server._cv:
            hold = self._holds[id(job)]  # `started` made it (splitrt.edge_runtime.node.workers.run_job)
            first = True
            try:
                while not server._workers_exit:
                    left = hold.remaining - (time.perf_counter() - hold.last) * hold.rate
                    if left <= 0:
                        if first:
                            server.counters["container_overruns"] += 1
                        return
                    first = False
                    server._cv.wait(left / hold.rate if hold.rate > 0 else 0.05)
            finally:
                self._holds.pop(id(job), None)


#: discipline name -> class (the names `ServerConfig.discipline` accepts; it checks them)
DISCIPLINE_CLASSES: dict[str, type[Discipline]] = {cls.name: cls for cls in (SharedWorkers, Containers)}
