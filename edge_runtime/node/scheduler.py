"""Which queued task an edge node runs next: start-time fair queueing over worker time.

The RSU keeps one queue per DNN type (the paper's containers) and must give type k the share
f_k / F of its compute that the KKT allocation (splitrt.edge_runtime.sysmodel.allocation, eqs 43-52) prescribes.
A service vehicle keeps one FIFO over all types (eqs 13-16): the same class with one queue.

Scheduling (start-time fair queueing, Goyal et al. 1996, over measured worker seconds):

    S_k   = max(tag_k, vtime)             start tag of queue k's head task
    pick  k* = argmin over backlogged k of S_k  (ties: queue order)
    vtime = S_k*;  tag_k* = S_k* + est_s / share_k*          charged at dispatch
    tag_k += (actual_s - est_s) / share_k                     corrected at completion

A queue that was idle restarts at the system virtual time (no credit for idling, no burst); the
scheduler is work-conserving (an idle type's share goes to the backlogged ones in proportion to
their shares). When shares change, every queue's lead over vtime is rescaled by old/new share,
so a type whose share was ~0 is not starved once it gets a real share. A zero share is treated
as `MIN_SHARE` (the type runs only when nothing else is queued).

Measurement (`served_s` vs `entitled_s`): between events the meter integrates, over the time
the workers are busy, the seconds each queue was actually served and the seconds an ideal
fluid (GPS) server with the same shares and the same set of backlogged queues would have given
it: entitled_k += dt * busy_workers * share_k / sum_{j backlogged} share_j. Under load the two
agree to within about one task's service time per queue (SFQ's lag bound); this is what the
hardware-in-the-loop tests check against the allocation.

All times are passed in (``now``), so the class is deterministic and clock-free; the server
holds the lock around it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_SHARE = 1e-6


@dataclass
class Job:
    """A queued unit of work: ``item`` is the caller's (a task), the rest is accounting."""

    item: Any
    queue: str
    flops: float
    est_s: float
    arrival_s: float
    slot: int = 0


@dataclass
class _Queue:
    waiting: deque[Job] = field(default_factory=deque)
    running: list[Job] = field(default_factory=list)
    tag: float = 0.0
    served_s: float = 0.0
    entitled_s: float = 0.0
    dispatched: int = 0


class FairScheduler:
    """Start-time fair queueing over named queues with shares (module docstring)."""

    def __init__(self, queues: Sequence[str], limit: int, shares: Mapping[str, float] | None = None) -> None:
        if not queues:
            raise ValueError("a scheduler needs at least one queue")
        if limit < 1:
            raise ValueError(f"queue limit must be >= 1 task, got {limit}")
        self.limit = limit
        self._q: dict[str, _Queue] = {name: _Queue() for name in queues}
        self.shares: dict[str, float] = {name: 1.0 / len(queues) for name in queues}
        self.vtime = 0.0
        self._meter_s: float | None = None
        if shares is not None:
            self.set_shares(shares)

    # ---- queue state -----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._q)

    def waiting(self, queue: str) -> Sequence[Job]:
        return tuple(self._q[queue].waiting)

    def running(self, queue: str) -> Sequence[Job]:
        return tuple(self._q[queue].running)

    def jobs(self, queue: str) -> Iterator[Job]:
        """Waiting and running jobs of ``queue`` (the backlog)."""
        q = self._q[queue]
        yield from q.running
        yield from q.waiting

    def n_waiting(self) -> int:
        return sum(len(q.waiting) for q in self._q.values())

    def n_running(self) -> int:
        return sum(len(q.running) for q in self._q.values())

    def is_full(self, queue: str) -> bool:
        """Queued plus running tasks of ``queue`` reached the limit."""
        q = self._q[queue]
        return len(q.waiting) + len(q.running) >= self.limit

    def served_s(self) -> dict[str, float]:
        return {name: q.served_s for name, q in self._q.items()}

    def entitled_s(self) -> dict[str, float]:
        return {name: q.entitled_s for name, q in self._q.items()}

    # ---- shares ----------------------------------------------------------------------------
    def set_shares(self, shares: Mapping[str, float], now: float | None = None) -> None:
        """New shares (any non-negative weights; normalised here). Unnamed queues keep theirs."""
        if now is not None:
            self.advance(now)
        merged = {name: float(shares.get(name, self.shares[name])) for name in self._q}
        if any(s < 0 for s in merged.values()):
            raise ValueError(f"shares must be non-negative, got {merged}")
        total = sum(merged.values())
        new = {k: v / total for k, v in merged.items()} if total > 0 else {k: 1.0 / len(merged) for k in merged}
        for name, q in self._q.items():
            old_eff, new_eff = max(self.shares[name], MIN_SHARE), max(new[name], MIN_SHARE)
            lead = q.tag - self.vtime
            if lead > 0:
                q.tag = self.vtime + lead * old_eff / new_eff
        self.shares = new

    # ---- dispatch --------------------------------------------------------------------------
    def push(self, job: Job, now: float) -> bool:
        """Queue ``job``; False (not queued) when its queue is full."""
        q = self._q[job.queue]
        if self.is_full(job.queue):
            return False
        self.advance(now)
        if not q.waiting and not q.running:
            q.tag = max(q.tag, self.vtime)  # an idle queue earns no credit
        q.waiting.append(job)
        return True

    def pop(self, now: float, queue: str | None = None) -> Job | None:
        """The next job to run (None when nothing waits), from ``queue`` only when given (then
        in FIFO order); it counts as running until `finish`."""
        best: tuple[float, str] | None = None
        for name, q in self._q.items():
            if q.waiting and (queue is None or name == queue):
                start = max(q.tag, self.vtime)
                if best is None or start < best[0]:
                    best = (start, name)
        if best is None:
            return None
        self.advance(now)
        start, name = best
        q = self._q[name]
        job = q.waiting.popleft()
        self.vtime = start
        q.tag = start + job.est_s / max(self.shares[name], MIN_SHARE)
        q.running.append(job)
        q.dispatched += 1
        return job

    def finish(self, job: Job, actual_s: float, now: float) -> None:
        """``job`` is done after ``actual_s`` seconds of service: correct its queue's tag."""
        self.advance(now)
        q = self._q[job.queue]
        q.running.remove(job)
        q.tag += (actual_s - job.est_s) / max(self.shares[job.queue], MIN_SHARE)

    def drain(self) -> list[Job]:
        """Remove and return every waiting job (shutdown); running ones stay until finished."""
        out: list[Job] = []
        for q in self._q.values():
            out.extend(q.waiting)
            q.waiting.clear()
        return out

    # ---- measurement -----------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Integrate served and GPS-entitled seconds up to ``now`` (see the module docstring)."""
        if self._meter_s is None or now <= self._meter_s:
            self._meter_s = now if self._meter_s is None else max(self._meter_s, now)
            return
        dt = now - self._meter_s
        self._meter_s = now
        busy = 0
        for q in self._q.values():
            q.served_s += dt * len(q.running)
            busy += len(q.running)
        if busy == 0:
            return
        backlogged = [name for name, q in self._q.items() if q.waiting or q.running]
        weights = {name: self.shares[name] for name in backlogged}
        total = sum(weights.values())
        for name in backlogged:
            w = weights[name] / total if total > 0 else 1.0 / len(backlogged)
            self._q[name].entitled_s += dt * busy * w
