"""Start-time fair queueing: shares are enforced over service time, deterministically (a fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from splitrt.edge_runtime.node.scheduler import FairScheduler, Job


def simulate(
    sched: FairScheduler,
    service_s: dict[str, float],
    horizon_s: float,
    *,
    refill: bool = True,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """One worker on a fake clock; each queue kept backlogged (``refill``); returns served seconds."""
    served = dict.fromkeys(sched.names, 0.0)
    now = 0.0
    while now < horizon_s:
        if refill:
            for name in sched.names:
                while len(sched.waiting(name)) < 3:
                    sched.push(Job(None, name, 1.0, service_s[name], now), now)
        job = sched.pop(now)
        if job is None:
            break
        actual = service_s[job.queue] * (rng.uniform(0.5, 1.5) if rng is not None else 1.0)
        now += actual
        sched.finish(job, actual, now)
        served[job.queue] += actual
    return served


@pytest.mark.parametrize(
    "shares",
    [{"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.9, "b": 0.05, "c": 0.05}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}],
)
def test_backlogged_queues_get_their_shares(shares):
    """Different task sizes per queue, noisy actual service times: the served time of each queue
    follows its share within SFQ's lag bound (a couple of task lengths per queue)."""
    service = {"a": 0.010, "b": 0.035, "c": 0.004}
    sched = FairScheduler(["a", "b", "c"], limit=100, shares=shares)
    horizon = 20.0
    served = simulate(sched, service, horizon, rng=np.random.default_rng(0))
    total = sum(served.values())
    for name, share in shares.items():
        bound = 2 * 1.5 * max(service.values())  # lag bound: ~2 max tasks
        assert abs(served[name] - share * total) <= bound, (name, served[name] / total, share)
    # The GPS meter sees the same (every queue backlogged all the time).
    entitled = sched.entitled_s()
    for name in shares:
        assert served[name] == pytest.approx(sched.served_s()[name], abs=1e-9)
        assert abs(entitled[name] - served[name]) <= 2 * 1.5 * max(service.values())


def test_work_conserving_and_zero_share_runs_when_alone():
    sched = FairScheduler(["a", "b"], limit=10, shares={"a": 1.0, "b": 0.0})
    for i in range(3):
        sched.push(Job(i, "b", 1.0, 0.01, 0.0), 0.0)
    order = []
    now = 0.0
    while (job := sched.pop(now)) is not None:
        now += 0.01
        sched.finish(job, 0.01, now)
        order.append(job.item)
    assert order == [0, 1, 2]  # FIFO within a queue, and served although its share is 0


def test_idle_queue_earns_no_credit():
    """Queue b idles while a runs alone for a long time; once b is backlogged it gets its share,
    not a burst that would repay the idle time."""
    sched = FairScheduler(["a", "b"], limit=100, shares={"a": 0.5, "b": 0.5})
    now = 0.0
    for _ in range(200):  # a alone: 2 s
        sched.push(Job(None, "a", 1.0, 0.01, now), now)
        job = sched.pop(now)
        now += 0.01
        sched.finish(job, 0.01, now)
    served = simulate(sched, {"a": 0.01, "b": 0.01}, now + 1.0)
    assert served["a"] == pytest.approx(served["b"], abs=0.021)


def test_share_change_rescales_the_lead():
    """b had ~0 share (its tag ran far ahead); once given half, it is served at once, not starved."""
    sched = FairScheduler(["a", "b"], limit=100, shares={"a": 1.0, "b": 0.0})
    now = 0.0
    sched.push(Job(None, "b", 1.0, 0.01, now), now)
    job = sched.pop(now)  # b runs alone (work-conserving), charged est / MIN_SHARE
    assert job.queue == "b"
    now += 0.01
    sched.finish(job, 0.01, now)
    sched.set_shares({"a": 0.5, "b": 0.5}, now)
    served = simulate(sched, {"a": 0.01, "b": 0.01}, now + 1.0)
    assert served["b"] == pytest.approx(served["a"], abs=0.021)


def test_gps_meter_counts_only_backlogged_queues():
    """a (share 0.25) and b (0.75) both backlogged for 1 s with one worker; c (share 0) idle: GPS
    entitles a 0.25 s and b 0.75 s."""
    sched = FairScheduler(["a", "b", "c"], limit=100, shares={"a": 1.0, "b": 3.0, "c": 0.0})
    assert sched.shares == {"a": 0.25, "b": 0.75, "c": 0.0}
    simulate(sched, {"a": 0.001, "b": 0.001, "c": 0.001}, 1.0, refill=True)
    # refill keeps c backlogged too; with zero share it is entitled nothing.
    entitled = sched.entitled_s()
    assert entitled["c"] == 0.0
    assert entitled["a"] == pytest.approx(0.25, abs=0.005)
    assert entitled["b"] == pytest.approx(0.75, abs=0.005)


def test_limits_and_drain():
    sched = FairScheduler(["a"], limit=2)
    assert sched.push(Job(1, "a", 1.0, 0.1, 0.0), 0.0)
    assert sched.push(Job(2, "a", 1.0, 0.1, 0.0), 0.0)
    assert not sched.push(Job(3, "a", 1.0, 0.1, 0.0), 0.0)  # full: queued + running >= limit
    job = sched.pop(0.0)
    assert not sched.push(Job(3, "a", 1.0, 0.1, 0.0), 0.0)  # running counts
    assert [j.item for j in sched.drain()] == [2]
    assert sched.n_waiting() == 0 and sched.n_running() == 1
    sched.finish(job, 0.1, 0.1)
    assert sched.n_running() == 0
    with pytest.raises(ValueError, match="limit"):
        FairScheduler(["a"], limit=0)
    with pytest.raises(ValueError, match="non-negative"):
        sched.set_shares({"a": -1.0})
