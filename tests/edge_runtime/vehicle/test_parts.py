"""The vehicle's parts on their own: the local FIFO, the task ledger, the link's failed sends."""

from __future__ import annotations

import threading

import numpy as np

from splitrt.edge_runtime.decide.deciders import make_decider
from splitrt.edge_runtime.formats.records import DURATION_KEYS
from splitrt.edge_runtime.link.security import ClientSecurity
from splitrt.edge_runtime.link.wire import encode_tensor
from splitrt.edge_runtime.vehicle import client
from splitrt.edge_runtime.vehicle.config import VehicleConfig
from splitrt.edge_runtime.vehicle.link import READY_ENDPOINT, VehicleLink
from splitrt.edge_runtime.vehicle.local import LocalQueue
from splitrt.edge_runtime.vehicle.records import TaskLedger
from splitrt.edge_runtime.vehicle.task import Task

DEAD = "tcp://127.0.0.1:9"  # discard port: nothing listens there


def make_task(index: int = 0, **over) -> Task:
    return Task(index=index, id=f"v0-{index}", slot=0, x_index=0, arrival=0.0, arrival_unix=1000.0, **over)


def test_the_client_module_still_exports_its_names():
    for name in ("Vehicle", "VehicleConfig", "arrival_times", "parse_arrivals", "INPUT_POOL", "VERIFY_RTOL"):
        assert hasattr(client, name), name
    assert client.VehicleConfig is VehicleConfig


def test_local_queue_is_a_fifo_with_tails_in_front_and_its_backlog_in_flops():
    q = LocalQueue()
    a, b, c = make_task(0), make_task(1), make_task(2)
    q.put("head", a, 1.0)
    q.put("head", b, 2.0)
    q.put("tail", c, 4.0, front=True)  # a fallback tail is the oldest work
    assert q.backlog() == (7.0, 3)
    kinds = []
    for _ in range(3):
        kind, task, flops, _queued = q.get()
        kinds.append((kind, task.id))
        q.done(flops)
    assert kinds == [("tail", "v0-2"), ("head", "v0-0"), ("head", "v0-1")]
    assert q.backlog() == (0.0, 0)
    got = []
    waiter = threading.Thread(target=lambda: got.append(q.get()))
    waiter.start()
    q.close()  # an empty closed queue ends the worker's loop
    waiter.join(timeout=5.0)
    assert got == [None]


class OrderJournal:
    def __init__(self, order):
        self.order = order

    def generated(self, **fields):
        self.order.append(("generated", fields["task_id"]))

    def decided(self, **fields):
        self.order.append(("decided", fields["task_id"], fields["cut"], fields["edge"]))

    def record(self, record):
        self.order.append(("journal", record["task_id"]))


def test_the_ledger_journals_each_record_before_any_sink_sees_it(tiny):
    m = tiny["chain"]
    config = VehicleConfig(edges=(DEAD,))
    order: list = []
    sinks = [lambda r: order.append(("sink", r["task_id"]))]
    ledger = TaskLedger(
        config,
        m,
        make_decider("local", m.n_cuts, 1),
        ClientSecurity(),
        sinks=sinks,
        journal=OrderJournal(order),
        references=None,
        node_name=lambda j: "sv-a",
    )
    task = make_task(cut=1, node=0)
    ledger.generated(task)
    ledger.decided(task)
    ledger.open(task)
    assert not ledger.idle() and ledger.open_task(task.id) is task and ledger.counts() == (0, 1)
    ledger.finish(task, "fallback", "busy", 1.5)
    assert order == [("generated", "v0-0"), ("decided", "v0-0", 1, DEAD), ("journal", "v0-0"), ("sink", "v0-0")]
    assert ledger.idle() and ledger.open_task(task.id) is None and ledger.counts() == (1, 0)
    (record,) = ledger.records
    assert (record["outcome"], record["reason"], record["node_name"], record["edge"]) == (
        "fallback",
        "busy",
        "sv-a",
        DEAD,
    )
    assert record["total_s"] == 1.5 and record["link_security"] == "plain" and record["verified"] is None
    assert all(record[k] == 0.0 for k in DURATION_KEYS)


def test_a_send_to_a_node_without_a_connection_falls_back_at_once(tiny):
    m = tiny["chain"]
    config = VehicleConfig(edges=(DEAD,), connect_s=0.0)
    stop = threading.Event()
    failed: list = []
    link = VehicleLink(
        config,
        m,
        ClientSecurity(),
        {"late_replies": 0, "bad_replies": 0, "state_replies": 0},
        stop,
        ready_endpoint=READY_ENDPOINT.format(id(failed)),
        open_task=lambda task_id: None,
        fall_back=lambda task, reason, now: failed.append((task.id, reason)),
        finish=lambda *a: None,
    )
    link.open()
    try:
        assert not link.connected(0)
        x = np.zeros(m.cut_spec(1).shape, dtype=m.cut_spec(1).dtype)
        task = make_task(0, cut=1, node=0)
        task.encoded = encode_tensor(x, "fp32")
        link.send(task)
        stop.set()
        task = make_task(1, cut=1, node=0)
        task.encoded = encode_tensor(x, "fp32")
        link.send(task)
        assert failed == [("v0-0", "unreachable"), ("v0-1", "shutdown")]
        assert link.deadlines() == []  # nothing in flight
        link.observe_node_state(0, {"role": "sv", "queues": {"fifo": {"flops": 5e9}}})
        assert link.node_backlog[0] == 5e9 and np.isfinite(link.node_backlog_at[0])
    finally:
        link.close()
