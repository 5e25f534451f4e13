"""The as-run model: what the live runtime does with a slot's decisions, event by event.

The paper's equations (policy/sim/slot.py) charge every task of a slot at the slot's start: the
RSU's type-k queue served at one f_k for the whole slot, eq 11's "half of this slot's same-type
offloads" as waiting, zero local wait, 8 D / R on the link. The live system (`splitrt hil` with the
``containers`` discipline, edge_runtime/node/disciplines.py) does something else, and this model
follows it step by step:

| step | the runtime | here |
|---|---|---|
| arrival, decision | one task per CV at the slot start; the decider takes ``decide_s`` | arrival at t tau, decided ``decide_s`` later (calibrated, per decider) |
| local FIFO | one worker thread per CV runs jobs in order: head [0, cut) (or the whole model), then the encode of the head's tensor | a FIFO per CV; a job starts ``local_handoff_s`` after its decision when the worker is idle, else when the previous job (and its encode) ends; b / f_loc of compute |
| cut 0 | the raw input is encoded on the vehicle's I/O thread and sent at once | no local queue |
| uplink | one tc-shaped veth per CV-node link, the rate set at every slot boundary | the bytes drain at the slot's rate of that link, piecewise across boundaries, plus ``link_s`` + ``link_s_per_byte`` x bytes (both directions and the hand-offs of the round trip), plus a normal draw of ``link_jitter_s`` (seeded; it decides the order of near-simultaneous arrivals, as the live links do) |
| RSU | one container (worker) per DNN type, FIFO within the type; a task is held until its container, progressing at f_k, has done its work; P3 (eqs 43-52) is re-solved at every arrival and at every slot boundary from the tasks queued or running (Q_k: full FLOPs of earlier slots' tasks, W_k / n_k: this slot's), not when a task leaves | the same, exactly: f_k piecewise constant between arrivals and boundaries, each container's head job drained at its f_k; a job starts ``rsu_handoff_s`` after its arrival when its container is idle |
| SV | one FIFO at the SV's capacity | the same; ``sv_handoff_s`` when idle |
| result | the node's own handling (``remote_other_s``), the reply, the vehicle's decode (``decode_s``) | ``rsu_other_s`` / ``sv_other_s`` and ``decode_s`` after the service |
| observation | Q_loc: FLOPs of the jobs in the local FIFO (running included) at the decision; node backlogs: the state reply requested ``state_lead_s`` before the boundary (every task queued or running, in full FLOPs), replaced by a newer result's backlog (the node's queue when that task arrived) | the same values from the simulated queues |

Not modelled: fallbacks (a timeout or a refused task; the report counts them separately), CPU
contention between processes (the calibration run's overheads include what it had), a CV's own
transfers overlapping on one link (one task per slot rarely overlaps).

Every overhead is an `Overheads` field, fitted from a live run's task records by
splitrt.tools.hil.calibrate and read from the calibration file the scenario names; zero
overheads give the pure queueing model. `AsRun` simulates one environment; `AsRunEnv` is the
`VecEnv` interface over it (observations from the simulated queues), which the closed-loop
comparison of tools/hil and `splitrt evaluate` with ``--set sim_model=as-run`` use. Each task
ends as exactly one `TaskTimes` (`AsRun.finish` drains the queues after the last slot).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.jsonfile import read_versioned
from splitrt.edge_runtime.sysmodel import lyapunov
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu, queue_inputs
from splitrt.policy.sim.env import VecEnv
from splitrt.policy.sim.slot import Tables, link_rates_bps

#: ``format_version`` of a calibration file (splitrt.edge_runtime.formats.jsonfile)
CALIBRATION_VERSION = 1
#: state requests go out this long before every slot boundary (`VehicleConfig.state_lead_s`'s default)
STATE_LEAD_S = 0.02


@dataclass(frozen=True)
class Overheads:
    """Per-task fixed costs of the runtime (seconds; module docstring), fitted by calibration."""

    decide_s: float = 0.0  # arrival -> decision (a decider without its own entry in ``decide_by``)
    local_handoff_s: float = 0.0  # decision -> head start when the local worker is idle
    encode_s: float = 0.0  # encoding the cut tensor: fixed part ...
    encode_s_per_byte: float = 0.0  # ... and per payload byte
    link_s: float = 0.0  # the round trip beyond the shaped uplink: fixed part ...
    link_s_per_byte: float = 0.0  # ... and per payload byte
    rsu_handoff_s: float = 0.0  # arrival at the RSU -> start when its container is idle
    sv_handoff_s: float = 0.0  # arrival at an SV -> start when its FIFO is idle
    rsu_other_s: float = 0.0  # the RSU's handling beyond wait and compute (receive, decode, reply)
    sv_other_s: float = 0.0  # the same at an SV
    decode_s: float = 0.0  # the vehicle decoding the result
    link_jitter_s: float = 0.0  # spread of the link time around its fit (the residual std): a task's
    # uplink gets a normal draw of it (clipped at the shaped time), which decides near-simultaneous
    # arrivals' order at a FIFO as the live links do; 0: deterministic
    decide_by: dict[str, float] = field(default_factory=dict)  # decider name -> decide_s

    def decide_for(self, decider: str | None) -> float:
        return float(self.decide_by.get(decider or "", self.decide_s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "overheads") -> Overheads:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SplitrtError(f"{source}: unknown overhead(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "decide_by":
                if not isinstance(value, dict):
                    raise SplitrtError(f"{source}: decide_by must map decider names to seconds, got {value!r}")
                values[key] = {str(k): _seconds(f"{source}: decide_by.{k}", v) for k, v in value.items()}
            else:
                values[key] = _seconds(f"{source}: {key}", value)
        return cls(**values)


def _seconds(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SplitrtError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def load_calibration(path: str | Path) -> Overheads:
    """The overheads of a calibration file (written by splitrt.tools.hil.calibrate)."""
    data = read_versioned(path, "the calibration", CALIBRATION_VERSION, required=("overheads",))
    if not isinstance(data["overheads"], dict):
        raise SplitrtError(f"the calibration {path}: overheads must be an object")
    return Overheads.from_dict(data["overheads"], str(path))


def shaped_end_s(rates_bps: np.ndarray, slot_s: float, start_s: float, n_bytes: float) -> float:
    """When ``n_bytes`` sent at ``start_s`` (seconds from slot 0) have crossed a link whose rate is
    ``rates_bps[s]`` in slot s (tc sets it at every boundary; the last slot's rate goes on): the
    bytes drain piecewise across boundaries; inf if the link stays at 0."""
    bits = 8.0 * n_bytes
    t = max(start_s, 0.0)
    last = len(rates_bps) - 1
    s = min(int(t // slot_s), last)
    while (s + 1) * slot_s <= t and s < last:  # t // slot_s can round down at a boundary
        s += 1
    while bits > 0:
        rate = float(rates_bps[s])
        end_of_slot = (s + 1) * slot_s if s < last else math.inf
        if rate > 0 and t + bits / rate <= end_of_slot:
            return t + bits / rate
        if not math.isfinite(end_of_slot):
            return math.inf
        bits -= max(end_of_slot - t, 0.0) * rate
        t = end_of_slot
        s += 1
    return t


# ---- one environment, event by event ---------------------------------------------------------
@dataclass
class TaskTimes:
    """One task through the as-run model: its decision, timestamps (s from slot 0) and delay parts."""

    slot: int
    cv: int
    cut: int
    node: int | None  # None: fully local
    arrival: float
    decided: float = math.nan
    local_start: float = math.nan
    local_end: float = math.nan
    sent: float = math.nan
    node_arrival: float = math.nan
    remote_start: float = math.nan
    remote_end: float = math.nan
    done: float = math.nan
    flops_local: float = 0.0
    flops_remote: float = 0.0
    bytes: float = 0.0
    backlog_at_arrival: float = 0.0  # the node's queue when it arrived (what its result carries)
    remote_compute_s: float = 0.0

    @property
    def completion_s(self) -> float:
        return self.done - self.arrival

    def components(self, ov: Overheads) -> dict[str, float]:
        """The record's nine parts (splitrt.edge_runtime.formats.records) as modelled."""
        local = self.node is None
        cut0 = not local and self.cut == 0
        enc = 0.0 if local else ov.encode_s + ov.encode_s_per_byte * self.bytes
        parts = {
            "decide_s": self.decided - self.arrival,
            "local_wait_s": 0.0 if cut0 else self.local_start - self.decided,
            "local_compute_s": 0.0 if cut0 else self.local_end - self.local_start,
            "encode_s": enc,
            "transfer_s": 0.0,
            "remote_wait_s": 0.0,
            "remote_compute_s": 0.0,
            "remote_other_s": 0.0,
            "decode_s": 0.0,
        }
        if not local:
            other = self.done - ov.decode_s - self.remote_end
            parts.update(
                transfer_s=self.node_arrival - self.sent,
                remote_wait_s=self.remote_start - self.node_arrival,
                remote_compute_s=self.remote_end - self.remote_start,
                remote_other_s=other,
                decode_s=ov.decode_s,
            )
        return parts


@dataclass
class _Job:
    task: TaskTimes
    flops: float
    remaining: float
    slot: int  # the node's slot at arrival (queue_inputs' Q / W split)
    start: float  # earliest service start (arrival + hand-off, or the previous job's end)


class _Node:
    """One edge node: named FIFO queues, each drained one job at a time at its rate."""

    def __init__(self, queues: list[str], handoff_s: float, after_s: float) -> None:
        self.queues: dict[str, deque[_Job]] = {q: deque() for q in queues}
        self.handoff_s = handoff_s
        self.after_s = after_s  # service end -> the vehicle has the result (node handling + decode)
        self.pending: list[tuple[float, int, str, _Job]] = []  # heap of (arrival, seq, queue, job)
        self.now = 0.0
        self.slot = 0
        self._seq = 0
        self.finished: list[_Job] = []

    def rate(self, queue: str) -> float:
        raise NotImplementedError

    def arrived(self, now: float) -> None:
        """A job was queued at ``now`` (the RSU re-solves its shares here)."""

    def boundary(self, slot: int) -> None:
        """Slot ``slot`` begins at ``self.now``."""
        self.slot = max(self.slot, slot)

    def push(self, arrival: float, queue: str, job: _Job) -> None:
        heapq.heappush(self.pending, (arrival, self._seq, queue, job))
        self._seq += 1

    def backlog(self, queue: str | None = None) -> float:
        """FLOPs of the jobs queued or running (in full), in ``queue`` or in all."""
        qs = [self.queues[queue]] if queue is not None else list(self.queues.values())
        return float(sum(j.flops for q in qs for j in q))

    def advance(self, until: float, slot_s: float) -> None:
        """Process every arrival and completion up to ``until`` (math.inf: until idle)."""
        while True:
            t_arr = self.pending[0][0] if self.pending else math.inf
            t_done, done_q = math.inf, None
            for name, q in self.queues.items():
                if q:
                    r = self.rate(name)
                    if r > 0:
                        t = max(self.now, q[0].start) + q[0].remaining / r
                        if t < t_done:
                            t_done, done_q = t, name
            t_next = min(t_arr, t_done)
            if t_next > until:
                self._progress(until)
                return
            if not math.isfinite(t_next):
                return
            self._progress(t_next)
            if t_done <= t_arr and done_q is not None:
                q = self.queues[done_q]
                job = q.popleft()
                job.remaining = 0.0
                job.task.remote_end = t_done
                job.task.done = t_done + self.after_s
                self.finished.append(job)
                if q:
                    self._start(q[0], t_done)
            else:
                arrival, _, name, job = heapq.heappop(self.pending)
                self.slot = max(self.slot, int(arrival // slot_s))
                job.slot = self.slot
                q = self.queues[name]
                job.task.backlog_at_arrival = self.backlog(name)
                q.append(job)
                if len(q) == 1:
                    self._start(job, arrival + self.handoff_s)
                self.arrived(arrival)

    @staticmethod
    def _start(job: _Job, at: float) -> None:
        job.start = at
        job.task.remote_start = at

    def _progress(self, t: float) -> None:
        for name, q in self.queues.items():
            if q:
                busy = t - max(self.now, q[0].start)
                if busy > 0:
                    q[0].remaining -= busy * self.rate(name)
        self.now = max(self.now, t)


class _Sv(_Node):
    def __init__(self, flops_per_s: float, ov: Overheads) -> None:
        super().__init__(["fifo"], ov.sv_handoff_s, ov.sv_other_s + ov.decode_s)
        self.flops_per_s = flops_per_s

    def rate(self, queue: str) -> float:
        return self.flops_per_s


class _Rsu(_Node):
    """The ``containers`` RSU: f_k from P3 on the live queues, re-solved at arrivals and boundaries."""

    def __init__(self, types: list[str], tables: Tables, ov: Overheads) -> None:
        super().__init__(types, ov.rsu_handoff_s, ov.rsu_other_s + ov.decode_s)
        self.tables = tables
        self.f = {k: tables.rsu_flops_per_s / len(types) for k in types}
        self.solves = 0

    def rate(self, queue: str) -> float:
        return self.f[queue]

    def solve(self) -> None:
        names = list(self.queues)
        rows = np.array([queue_inputs(((j.slot, j.flops) for j in self.queues[n]), self.slot) for n in names])
        tb = self.tables
        f = allocate_rsu(rows[:, 0], rows[:, 1], rows[:, 2], tb.rsu_flops_per_s, tb.slot_s, tb.v)
        self.f = dict(zip(names, (float(x) for x in f), strict=True))
        self.solves += 1

    def arrived(self, now: float) -> None:
        self.solve()

    def boundary(self, slot: int) -> None:
        super().boundary(slot)
        self.solve()


class AsRun:
    """One environment of the as-run model (module docstring).

    ``rates_bps`` (T, N, J): every CV's rate to every node in each slot (the tc rates of a live
    run); ``cv_flops_per_s`` (N,), ``sv_flops_per_s`` (S,). Per slot: `begin_slot` (the queues at
    the boundary and what each CV observes), then `decide` with the joint action; `finish` drains.
    """

    def __init__(
        self,
        tables: Tables,
        rates_bps: np.ndarray,
        cv_flops_per_s: np.ndarray,
        sv_flops_per_s: np.ndarray,
        overheads: Overheads | None = None,
        decider: str | None = None,
        types: list[str] | None = None,
        state_lead_s: float = STATE_LEAD_S,
        jitter_seed: int | None = None,
    ) -> None:
        self.tables = tables
        self.rng = np.random.default_rng(jitter_seed)
        self.ov = overheads or Overheads()
        self.decide_s = self.ov.decide_for(decider)
        self.rates = np.asarray(rates_bps, dtype=np.float64)
        self.f_cv = np.asarray(cv_flops_per_s, dtype=np.float64)
        self.n = tables.n_agents
        self.j = tables.n_nodes
        self.tau = tables.slot_s
        self.lead = min(state_lead_s, self.tau / 2)
        names = types or [f"type{k}" for k in range(tables.n_types)]
        self.type_names = names
        self.rsu = _Rsu(names, tables, self.ov)
        self.svs = [_Sv(float(f), self.ov) for f in np.asarray(sv_flops_per_s, dtype=np.float64)]
        self.nodes: list[_Node] = [self.rsu, *self.svs]
        self.free_at = np.zeros(self.n)  # the local worker is busy until then
        self.local_jobs: list[deque[tuple[float, float]]] = [deque() for _ in range(self.n)]  # (done, flops)
        self.tasks: list[TaskTimes] = []
        self.slot = -1
        # what each CV knows of each node: (time it learned it, backlog FLOPs)
        self.seen = np.zeros((self.n, self.j))
        self.seen_at = np.full((self.n, self.j), -math.inf)
        self.allocations: list[np.ndarray] = []

    # ---- the queues --------------------------------------------------------------------------
    def _advance(self, until: float) -> None:
        for node in self.nodes:
            node.advance(until, self.tau)

    def q_loc(self, i: int, at: float) -> float:
        jobs = self.local_jobs[i]
        while jobs and jobs[0][0] <= at:
            jobs.popleft()
        return float(sum(f for _, f in jobs))

    def backlogs(self) -> tuple[np.ndarray, np.ndarray]:
        """The nodes' true backlogs now: RSU per type (K,), SVs (S,)."""
        return (
            np.array([self.rsu.backlog(k) for k in self.type_names]),
            np.array([sv.backlog() for sv in self.svs]),
        )

    def _node_value(self, i: int, j: int) -> float:
        node = self.nodes[j]
        if j == 0:
            return node.backlog(self.type_names[self.tables.agent_type[i]])
        return node.backlog()

    def begin_slot(self, t: int) -> dict[str, np.ndarray]:
        """Slot ``t`` starts: the state replies (``state_lead_s`` before), the boundary's re-solve.
        Returns the CVs' observed backlogs (``q_loc`` (N,), ``seen`` (N, J)) and the true ones."""
        if t != self.slot + 1:
            raise ValueError(f"slot {t} after slot {self.slot}")
        b = t * self.tau
        if t > 0:
            self._advance(b - self.lead)
            for i in range(self.n):
                for j in range(self.j):
                    self._learn(i, j, b - self.lead, self._node_value(i, j))
            self._advance(b)
        for node in self.nodes:
            node.now = max(node.now, b)
            node.boundary(t)
        self.allocations.append(np.array([self.rsu.f[k] for k in self.type_names]))
        self.slot = t
        decided = b + self.decide_s
        # results that reached a CV before its decision carry the node's backlog at their arrival
        for node_j, node in enumerate(self.nodes):
            later = []
            for job in node.finished:
                if job.task.done <= decided:
                    self._learn(job.task.cv, node_j, job.task.done, job.task.backlog_at_arrival)
                else:
                    later.append(job)
            node.finished = later
        q_rsu, q_sv = self.backlogs()
        return {
            "q_loc": np.array([self.q_loc(i, decided) for i in range(self.n)]),
            "seen": self.seen.copy(),
            "q_rsu": q_rsu,
            "q_sv": q_sv,
        }

    def _learn(self, i: int, j: int, at: float, value: float) -> None:
        if at >= self.seen_at[i, j]:
            self.seen_at[i, j] = at
            self.seen[i, j] = value

    # ---- a slot's decisions ------------------------------------------------------------------
    def decide(self, t: int, actions: np.ndarray, tasks: np.ndarray) -> list[TaskTimes]:
        """The joint ``actions`` (N,) of slot ``t`` for ``tasks`` (N,) tasks per CV."""
        if t != self.slot:
            raise ValueError(f"decide({t}) without begin_slot({t})")
        tb, ov = self.tables, self.ov
        b = t * self.tau
        out = []
        for i in range(self.n):
            for _ in range(int(tasks[i])):
                a = int(actions[i])
                cut, node = a // self.j, a % self.j
                local = cut >= tb.n_cuts[i] - 1
                task = TaskTimes(slot=t, cv=i, cut=cut, node=None if local else node, arrival=b)
                task.decided = b + self.decide_s
                task.flops_local = float(tb.local_flops[i, cut])
                if cut == 0:
                    task.local_start = task.local_end = task.decided
                    ready = task.decided
                else:
                    idle = self.free_at[i] <= task.decided
                    task.local_start = task.decided + ov.local_handoff_s if idle else self.free_at[i]
                    task.local_end = task.local_start + task.flops_local / self.f_cv[i]
                    ready = task.local_end
                    self.local_jobs[i].append((task.local_end, task.flops_local))
                if local:
                    task.done = task.local_end
                    self.free_at[i] = task.local_end
                else:
                    task.bytes = float(tb.cut_bytes[i, cut])
                    task.sent = ready + ov.encode_s + ov.encode_s_per_byte * task.bytes
                    if cut > 0:
                        self.free_at[i] = task.sent  # the worker encodes the head
                        self.local_jobs[i][-1] = (task.sent, task.flops_local)
                    extra = ov.link_s + ov.link_s_per_byte * task.bytes
                    if ov.link_jitter_s > 0:
                        extra = max(extra + self.rng.normal(0.0, ov.link_jitter_s), 0.0)
                    task.node_arrival = self._uplink(i, node, task.sent, task.bytes) + extra
                    w = float(tb.rsu_flops[i, cut] if node == 0 else tb.sv_flops[i, cut])
                    task.flops_remote = w
                    queue = self.type_names[tb.agent_type[i]] if node == 0 else "fifo"
                    self.nodes[node].push(task.node_arrival, queue, _Job(task, w, w, 0, math.inf))
                self.tasks.append(task)
                out.append(task)
        return out

    def _uplink(self, i: int, j: int, start: float, n_bytes: float) -> float:
        """When ``n_bytes`` sent at ``start`` have crossed link (i, j) (`shaped_end_s`)."""
        return shaped_end_s(self.rates[:, i, j], self.tau, start, n_bytes)

    def finish(self) -> list[TaskTimes]:
        """Drain every queue; every task decided has its completion. The nodes keep ticking
        slots after the last one (the RSU re-solves at every boundary), as a live node does."""
        t = self.slot + 1
        while any(node.pending or any(node.queues.values()) for node in self.nodes):
            if t > self.slot + 1 + 1_000_000:
                raise SplitrtError("the as-run model's queues do not drain (a node with no rate)")
            self._advance(t * self.tau)
            for node in self.nodes:
                node.boundary(t)
            t += 1
        stuck = [tk for tk in self.tasks if not math.isfinite(tk.done)]
        if stuck:
            raise SplitrtError(f"{len(stuck)} task(s) never complete in the as-run model (a node with no rate)")
        return self.tasks


# ---- the VecEnv interface --------------------------------------------------------------------
class AsRunEnv(VecEnv):
    """`VecEnv` whose slots run through `AsRun` (one per environment) instead of eqs 3-17.

    Same episodes (positions, fading, speeds, arrivals) and masks as the paper-model env of the
    same seed; the observation's queues are what each CV would observe live (module docstring).
    ``info`` per step has the queues at the next boundary and the allocation, but the tasks'
    completions only exist once their work has been served: ``completion_s`` is NaN in every
    step, and `finish()` (after the last slot) returns every task's `TaskTimes` and fills
    `slot_table` with the per-slot completion, penalty and P2 of the episode.
    """

    def __init__(
        self,
        scenario,
        n_envs: int = 1,
        seed: int | None = None,
        *,
        overheads: Overheads | None = None,
        decider: str | None = None,
        invalid_action: str = "raise",
        mobility=None,
        jitter_seed: int = 0,
        link_rates_bps: np.ndarray | None = None,
    ) -> None:
        super().__init__(
            scenario, n_envs, seed, invalid_action=invalid_action, mobility=mobility, link_rates_bps=link_rates_bps
        )
        self.jitter_seed = jitter_seed  # the link jitter's draws (`Overheads.link_jitter_s`)
        self._episodes = 0
        self._seen: np.ndarray | None = None  # (E, N, J) what each CV knows of each node's backlog
        if overheads is None:
            overheads = load_calibration(scenario.calibration_file) if scenario.calibration_file else Overheads()
        self.overheads = overheads
        self.decider = decider
        self.engines: list[AsRun] = []

    def reset(self, seed: int | None = None):
        if self.scenario.arrivals != "paper":
            raise SplitrtError(
                f"the as-run model replays the live runtime's one task per CV per slot, not arrivals = "
                f"{self.scenario.arrivals!r}"
            )
        self.engines = []
        super().reset(seed)
        sc = self.scenario
        for e in range(self.n_envs):
            if self.link_rates_bps is not None:  # given (measured) rates; the last row holds after them
                given = self.link_rates_bps
                rates = given[np.minimum(np.arange(sc.slots + 1), len(given) - 1)]
            else:
                rates = np.stack(
                    [link_rates_bps(sc, self._positions[e, t], self._fading[e, t])[0] for t in range(sc.slots + 1)]
                )
            self.engines.append(
                AsRun(
                    self.tables,
                    rates,
                    self._f_cv[e],
                    self._f_sv[e],
                    self.overheads,
                    self.decider,
                    list(sc.types),
                    jitter_seed=int(np.random.SeedSequence([self.jitter_seed, e, self._episodes]).generate_state(1)[0]),
                )
            )
        self._episodes += 1
        self._begin()
        self.slot_rows: list[list[dict[str, Any]]] = [[] for _ in range(self.n_envs)]
        return self._observe()

    def _begin(self) -> None:
        views = [eng.begin_slot(self._t) for eng in self.engines]
        self._q_loc = np.stack([v["q_loc"] for v in views])
        self._q_rsu = np.stack([v["q_rsu"] for v in views])
        self._q_sv = np.stack([v["q_sv"] for v in views])
        self._seen = np.stack([v["seen"] for v in views])  # (E, N, J)

    def _observe(self):
        t = self._t
        pos = self._positions[:, t, :, 0]
        n = self.n_agents
        seen = self._seen
        if seen is None or not self.engines:  # inside VecEnv.reset, before the engines exist
            return super()._observe()
        obs = obs_layout.build_observation(self._q_loc, seen[..., 0], seen[..., 1:], pos[:, :n], pos[:, None, n:])
        return obs, obs.reshape(self.n_envs, self.state_dim), self._mask_now().copy()

    def _play(self, actions: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        before = [self._q_loc, self._q_rsu, self._q_sv]
        tasks = self._tasks[:, self._t]
        for e, eng in enumerate(self.engines):
            eng.decide(self._t, actions[e], tasks[e])
        self._t += 1
        self._done = self._t >= self.scenario.slots
        self._begin()
        after = [self._q_loc, self._q_rsu, self._q_sv]
        nan = np.full((self.n_envs, self.n_agents), np.nan)
        l_now, l_next = lyapunov.lyapunov(before), lyapunov.lyapunov(after)
        return np.full(self.n_envs, np.nan), {
            "completion_s": nan,
            "local_s": nan,
            "tx_s": nan,
            "rsu_s": nan,
            "sv_s": nan,
            "tasks": tasks,
            "q_loc_flops": self._q_loc,
            "q_rsu_flops": self._q_rsu,
            "q_sv_flops": self._q_sv,
            "lyapunov": l_next,
            "drift": l_next - l_now,
            "penalty": np.full(self.n_envs, np.nan),
            "pressure": np.full(self.n_envs, np.nan),
            "p2": np.full(self.n_envs, np.nan),
            "rsu_alloc_flops_per_s": np.stack([eng.allocations[-1] for eng in self.engines]),
        }

    def finish(self) -> list[list[TaskTimes]]:
        """Every task of every environment, drained (call after the last slot)."""
        if not self._done:
            raise RuntimeError("finish() before the episode's last slot")
        return [eng.finish() for eng in self.engines]


def make_env(scenario, n_envs: int = 1, seed: int | None = None, **kw: Any) -> VecEnv:
    """The env of ``scenario.sim_model``: `VecEnv` (the paper's equations) or `AsRunEnv`."""
    if scenario.sim_model == "as-run":
        return AsRunEnv(scenario, n_envs, seed, **kw)
    return VecEnv(scenario, n_envs, seed, **kw)


def task_table(env: AsRunEnv) -> dict[str, np.ndarray]:
    """After `AsRunEnv.finish`: per (env, slot, CV) the completion and the paper's four delay
    parts (local = decision + local wait + head; tx = encode + link + decode; rsu / sv = the
    node's wait, service and handling), summed over the CV's tasks of the slot; and the counts."""
    e, t, n = env.n_envs, env.scenario.slots, env.n_agents
    out = {k: np.zeros((e, t, n)) for k in ("completion_s", "local_s", "tx_s", "rsu_s", "sv_s", "tasks")}
    for k, times in enumerate(env.finish()):
        for tk in times:
            c = tk.components(env.overheads)
            at = (k, tk.slot, tk.cv)
            out["completion_s"][at] += tk.completion_s
            out["local_s"][at] += c["decide_s"] + c["local_wait_s"] + c["local_compute_s"]
            out["tx_s"][at] += c["encode_s"] + c["transfer_s"] + c["decode_s"]
            edge = c["remote_wait_s"] + c["remote_compute_s"] + c["remote_other_s"]
            out["rsu_s" if tk.node == 0 else "sv_s"][at] += edge
            out["tasks"][at] += 1
    return out
