"""The edge server in-process on a loopback port: results, errors, busy, snapshot, allocation, shutdown."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from splitrt.edge_runtime.compute.segments import SegmentRunner, open_session
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.link.wire import (
    SERVER_TIMING_KEYS,
    Header,
    decode_payload,
    encode_tensor,
    pack,
    tensor_header,
)
from splitrt.edge_runtime.node.server import EdgeServer, ServerConfig, load_models
from splitrt.edge_runtime.sysmodel.allocation import allocate_rsu
from splitrt.edge_runtime.sysmodel.observation import node_backlog_flops
from splitrt.models.segmenter import sample_input
from tests.edge_runtime.nodes import GatedRunner, served, wait_until


def task_frames(manifest, cut, x, *, encoding="fp32", task_id=None, **over):
    enc = encode_tensor(x, encoding)
    fields = dict(
        id=task_id or uuid.uuid4().hex[:8], vehicle="t", model=manifest.model, digest=manifest.digest, cut=cut
    )
    fields.update(over)
    return pack(tensor_header("task", enc, **fields), enc.payload)


def test_every_cut_returns_the_whole_models_output(tiny, node_factory):
    m = tiny["res"]
    node, client = node_factory({"res": served(m)}, role="rsu")
    runner = SegmentRunner(m)
    x = sample_input(m.input, seed=5)
    whole = open_session(m.whole_path()).run(None, {m.input.name: x})[0]
    for cut in range(m.n_segments):
        header, payload = client.request(task_frames(m, cut, runner.run(x, 0, cut)))
        assert header.kind == "result" and header.cut == m.n_segments and header.node == node.server.name
        np.testing.assert_allclose(decode_payload(header, payload), whole, rtol=1e-5, atol=1e-5)
        assert set(SERVER_TIMING_KEYS) <= set(header.server)
        s = header.server
        assert s["wait_s"] >= 0 and s["compute_s"] >= 0 and s["wait_s"] + s["compute_s"] <= s["server_s"]
    counters = node.server.snapshot()["counters"]
    assert counters["completed"] == counters["accepted"] == m.n_segments


def test_lossy_encodings_are_decoded_by_the_server(tiny, node_factory):
    m = tiny["chain"]
    _, client = node_factory({"chain": served(m)})
    runner = SegmentRunner(m)
    x = sample_input(m.input, seed=1)
    whole = runner.run(x)
    for encoding, tol in (("fp16", 1e-2), ("int8", 0.5)):
        header, payload = client.request(task_frames(m, 1, runner.run(x, 0, 1), encoding=encoding))
        assert header.kind == "result"
        y = decode_payload(header, payload)
        assert float(np.max(np.abs(y - whole))) <= tol * float(np.max(np.abs(whole)))


def test_every_malformed_message_gets_a_named_error_and_service_continues(tiny, node_factory):
    m = tiny["chain"]
    node, client = node_factory({"chain": served(m)})
    x1 = SegmentRunner(m).run(sample_input(m.input), 0, 1)
    good = task_frames(m, 1, x1)
    head = Header(
        kind="task", id="z", vehicle="t", model="chain", digest=m.digest, cut=1, dtype="float32", shape=x1.shape
    )
    other = tiny["chain_other_export"]
    cases = [
        ([b"a", b"b", b"c"], "bad_frames", "1 or 2 frames"),
        ([b"\x00garbage"], "bad_header", "not UTF-8 JSON"),
        ([b'{"v": 7, "kind": "task"}'], "bad_version", "protocol version 7"),
        (
            [Header(kind="result", id="q", dtype="float32", shape=(1,)).to_bytes(), b"1234"],
            "unknown_kind",
            "not 'result'",
        ),
        ([head.to_bytes()], "bad_frames", "no payload frame"),
        (task_frames(m, 1, x1, model="vgg99"), "unknown_model", "'vgg99' is not served here"),
        (task_frames(other, 1, x1), "digest_mismatch", "a different export"),
        (task_frames(m, m.n_segments, x1), "bad_cut", f"cut {m.n_segments} is outside 0..{m.n_segments - 1}"),
        (task_frames(m, -1, x1), "bad_cut", "cut -1 is outside"),
        (task_frames(m, 0, x1), "shape_mismatch", "cut 0 of chain carries float32[1, 3, 8, 8]"),
        ([good[0], bytes(good[1])[:-4]], "size_mismatch", "payload has"),
        (
            [head.to_bytes().replace(b'"kind"', b'"bogus":1,"kind"'), bytes(good[1])],
            "bad_header",
            "unknown header field",
        ),
    ]
    for frames, code, needle in cases:
        header, _ = client.request(frames)
        assert (header.kind, header.code) == ("error", code), (code, header)
        assert needle in header.message, (needle, header.message)
        # ... and the server still serves a good task right after.
        ok, _ = client.request(task_frames(m, 1, x1))
        assert ok.kind == "result"
    counters = node.server.snapshot()["counters"]
    assert counters["errors"] == len(cases)
    assert sum(counters["errors_by_code"].values()) == len(cases)
    assert counters["completed"] == len(cases)


def test_busy_past_the_queue_limit_and_snapshot_backlog(tiny, node_factory):
    m = tiny["chain"]
    runner = GatedRunner(m)
    node, client = node_factory({"chain": served(m, runner)}, role="sv", queue_limit=3)
    x1 = SegmentRunner(m).run(sample_input(m.input), 0, 1)
    for i in range(5):
        client.send(task_frames(m, 1, x1, task_id=f"t{i}"))
    replies = [client.recv()[0] for _ in range(2)]
    assert [(h.kind, h.code, h.id) for h in replies] == [("busy", "queue_full", "t3"), ("busy", "queue_full", "t4")]
    assert runner.entered.wait(10)  # the worker has taken t0 (otherwise it is still "waiting")
    state = node.server.snapshot()
    fifo = state["queues"]["fifo"]
    edge = m.cuts[1].flops_after
    assert (fifo["tasks"], fifo["running"], fifo["waiting"]) == (3, 1, 2)
    assert fifo["flops"] == 3 * edge and fifo["models"]["chain"] == {"tasks": 3, "flops": 3.0 * edge}
    assert node_backlog_flops(state, "chain") == 3 * edge
    assert state["allocation"] is None and state["counters"]["busy"] == 2
    # The backlog each task saw at arrival: 0, 1, 2 tasks before it.
    runner.gate.set()
    results = sorted((client.recv()[0] for _ in range(3)), key=lambda h: h.id)
    assert [h.server["backlog_tasks"] for h in results] == [0, 1, 2]
    assert [h.server["backlog_flops"] for h in results] == [0, edge, 2 * edge]


def test_rsu_allocation_is_allocate_rsu_of_its_queues(tiny, node_factory):
    chain, res = tiny["chain"], tiny["res"]
    rc, rr = GatedRunner(chain), GatedRunner(res)
    _, client = node_factory(
        {"chain": served(chain, rc), "res": served(res, rr)},
        role="rsu",
        slot_s=1000.0,
        v=10.0,
        capacity_flops_per_s=5e5,
    )
    x1 = SegmentRunner(chain).run(sample_input(chain.input), 0, 1)
    x0 = sample_input(res.input)
    for i in range(3):
        client.send(task_frames(chain, 1, x1, task_id=f"c{i}"))
    for i in range(2):
        client.send(task_frames(res, 0, x0, task_id=f"r{i}"))
    state = client.request(pack(Header(kind="state_request")))[0].state  # over the wire, as a vehicle sees it
    alloc = state["allocation"]
    assert alloc["n_tasks"] == {"chain": 3, "res": 2}
    assert alloc["w_flops"] == {"chain": 3.0 * chain.cuts[1].flops_after, "res": 2.0 * res.total_flops}
    assert alloc["q_flops"] == {"chain": 0.0, "res": 0.0}  # all arrived in the current slot
    expected = allocate_rsu(
        np.array([0.0, 0.0]),
        np.array([alloc["w_flops"]["chain"], alloc["w_flops"]["res"]]),
        np.array([3, 2]),
        5e5,
        1000.0,
        10.0,
    )
    assert [alloc["f_flops_per_s"]["chain"], alloc["f_flops_per_s"]["res"]] == expected.tolist()
    assert alloc["share"]["chain"] == pytest.approx(expected[0] / 5e5)
    assert state["queues"]["res"]["tasks"] == 2 and state["queues"]["chain"]["tasks"] == 3
    assert node_backlog_flops(state, "res") == 2.0 * res.total_flops
    rc.gate.set()
    rr.gate.set()
    kinds = [client.recv()[0].kind for _ in range(5)]
    assert kinds == ["result"] * 5


def test_shutdown_answers_every_task_it_holds(tiny, node_factory):
    m = tiny["chain"]
    runner = GatedRunner(m)
    node, client = node_factory({"chain": served(m, runner)}, role="sv", queue_limit=10)
    x1 = SegmentRunner(m).run(sample_input(m.input), 0, 1)
    for i in range(4):
        client.send(task_frames(m, 1, x1, task_id=f"t{i}"))
    wait_until(lambda: node.server.snapshot()["queues"]["fifo"]["tasks"] == 4)
    node.server.stop()  # t0 runs (gated), t1..t3 wait
    replies = {h.id: h for h in (client.recv()[0] for _ in range(3))}
    assert {(h.kind, h.code) for h in replies.values()} == {("error", "shutdown")}
    assert set(replies) == {"t1", "t2", "t3"}
    runner.gate.set()
    last = client.recv()[0]
    assert (last.kind, last.id) == ("result", "t0")
    node.thread.join(30)
    assert not node.thread.is_alive()
    assert not client.sock.poll(200)  # nothing else: each task answered exactly once


def test_compute_failure_is_answered_and_the_worker_survives(tiny, node_factory):
    m = tiny["chain"]
    runner = GatedRunner(m, fail=True)
    runner.gate.set()
    node, client = node_factory({"chain": served(m, runner)})
    x1 = SegmentRunner(m).run(sample_input(m.input), 0, 1)
    for _ in range(2):
        header, _ = client.request(task_frames(m, 1, x1))
        assert (header.kind, header.code) == ("error", "compute_failed") and "injected failure" in header.message
    assert node.server.snapshot()["counters"]["failed"] == 2


def test_load_models_calibrates_or_uses_a_matching_profile(tiny, tmp_path):
    import json

    from splitrt.edge_runtime.compute.profile import measure

    m = tiny["chain"]
    models = load_models([m.directory], calibration_runs=2)
    assert models["chain"].speed_source == "calibration" and models["chain"].flops_per_s > 0
    assert models["chain"].tail_s[-1] == 0.0 and np.all(np.diff(models["chain"].tail_s) <= 0)
    prof = measure(m, runs=2, warmup=0, speed_factor=2.0, speed_mode="stretch")
    assert prof["device"]["speed_factor"] == 2.0 and prof["device"]["speed_mode"] == "stretch"
    (m.directory / "profile.json").write_text(json.dumps(prof))
    try:
        # measured at speed factor 2: not used by a native-speed node, used by a factor-2 (stretch) node
        assert load_models([m.directory])["chain"].speed_source == "calibration"
        used = load_models([m.directory], speed_factor=2.0, emulation={"speed_factor": 2.0, "speed_mode": "stretch"})
        assert used["chain"].speed_source == "profile"
        np.testing.assert_allclose(
            used["chain"].tail_s[:-1], np.cumsum([s["median_s"] for s in prof["segments"]][::-1])[::-1]
        )
    finally:
        (m.directory / "profile.json").unlink()
    with pytest.raises(SplitrtError, match="'chain' is given twice"):
        load_models([m.directory, tiny["chain_other_export"].directory])


def test_bad_config_and_bind_are_user_errors(tiny):
    with pytest.raises(SplitrtError, match="--role must be rsu or sv"):
        ServerConfig(role="cloud")
    with pytest.raises(SplitrtError, match="--queue-limit"):
        ServerConfig(queue_limit=0)
    server = EdgeServer(ServerConfig(bind="tcp://256.1.1.1:5"), {"chain": served(tiny["chain"])})
    with pytest.raises(SplitrtError, match="cannot bind tcp://256.1.1.1:5"):
        server.bind()


def test_rsu_resolves_at_once_for_a_type_without_a_share(tiny, node_factory):
    """Re-solves after arrivals are coalesced (resolve_s), except when the arriving type has a
    zero share: then the node solves at once, so that type never waits a slot to be served."""
    chain, res = tiny["chain"], tiny["res"]
    rc, rr = GatedRunner(chain), GatedRunner(res)
    node, client = node_factory(
        {"chain": served(chain, rc), "res": served(res, rr)}, role="rsu", slot_s=1000.0, resolve_s=1000.0
    )
    try:
        x1 = SegmentRunner(chain).run(sample_input(chain.input), 0, 1)
        client.send(task_frames(chain, 1, x1, task_id="c0"))
        wait_until(lambda: node.server.snapshot()["queues"]["chain"]["tasks"] == 1)
        assert node.server.allocation["n_tasks"] == {"chain": 0, "res": 0}  # coalesced: not solved yet
        state = client.request(pack(Header(kind="state_request")))[0].state  # solves first
        assert state["allocation"]["share"] == {"chain": 1.0, "res": 0.0}
        client.send(task_frames(res, 0, sample_input(res.input), task_id="r0"))
        wait_until(lambda: node.server.allocation["n_tasks"]["res"] == 1)  # res had no share: solved at once
        assert node.server.allocation["share"]["res"] > 0
        assert node.server.snapshot()["counters"]["allocations"] == 3  # start, state request, starving type
    finally:
        rc.gate.set()
        rr.gate.set()
    assert {client.recv()[0].kind for _ in range(2)} == {"result"}


def _work_table(rows):
    from splitrt.edge_runtime.formats.work import WorkTable

    return WorkTable(
        "flops",
        "test",
        {
            m.model: {
                "manifest_sha256": m.digest,
                "local_flops": [0.0] * m.n_cuts,
                "rsu_flops": [float(w)] * m.n_cuts,
                "sv_flops": [float(w)] * m.n_cuts,
            }
            for m, w in rows
        },
    )


def _containers_node(models, work, **config):
    import threading

    from tests.edge_runtime.nodes import Client

    server = EdgeServer(
        ServerConfig(bind="tcp://127.0.0.1:*", discipline="containers", slot_s=1000.0, **config), models, work=work
    )
    endpoint = server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.wait_ready(10)
    return server, thread, Client(endpoint)


def test_containers_run_types_side_by_side_at_their_allocated_rates(tiny):
    """The paper's RSU: one container per type at f_k. A small task of type B arriving while a
    100x larger one of type A is in service leaves first (its container runs beside A's, at the
    KKT share sqrt(W_B) / (sqrt(W_A) + sqrt(W_B)) = 1/11 of F); each task's service time is at
    least work / F."""
    chain, res = tiny["chain"], tiny["res"]
    work = _work_table([(chain, 100.0), (res, 1.0)])
    capacity = 200.0  # work units per second: A alone would take 0.5 s at full speed
    server, thread, client = _containers_node(
        {"chain": served(chain), "res": served(res)}, work, role="rsu", capacity_flops_per_s=capacity
    )
    try:
        client.send(task_frames(chain, 0, sample_input(chain.input), task_id="A"))
        wait_until(lambda: server.snapshot()["queues"]["chain"]["running"] == 1)
        client.send(task_frames(res, 0, sample_input(res.input), task_id="B"))
        first, second = client.recv()[0], client.recv()[0]
        assert (first.id, second.id) == ("B", "A")
        assert first.server["compute_s"] >= 1.0 / capacity
        assert second.server["compute_s"] >= 100.0 / capacity
        snap = server.snapshot()
        assert snap["counters"]["container_overruns"] == 0 and snap["counters"]["completed"] == 2
    finally:
        server.stop()
        thread.join(30)
        client.close()


def test_an_sv_container_serves_its_fifo_at_its_capacity(tiny):
    chain = tiny["chain"]
    server, thread, client = _containers_node(
        {"chain": served(chain)}, _work_table([(chain, 4.0)]), role="sv", capacity_flops_per_s=100.0
    )
    try:
        for i in range(3):
            client.send(task_frames(chain, 0, sample_input(chain.input), task_id=f"t{i}"))
        replies = [client.recv()[0] for _ in range(3)]
        assert [r.id for r in replies] == ["t0", "t1", "t2"]  # FIFO
        assert all(r.server["compute_s"] >= 4.0 / 100.0 for r in replies)
        assert replies[2].server["wait_s"] >= 2 * 4.0 / 100.0 - 0.01  # waited for the two before it
    finally:
        server.stop()
        thread.join(30)
        client.close()
    with pytest.raises(SplitrtError, match="--discipline must be one of"):
        ServerConfig(discipline="edf")


def test_container_hold_banks_progress_at_the_rate_each_interval_had(monkeypatch):
    """A type's share drops while its task's inference still runs: the work done before the
    change counts at the old rate. 10 GFLOP, 2 s at 4 GFLOP/s then 1 s at 2 GFLOP/s = done; at
    today's rate for all 3 s it would be 4 GFLOP short (a 2 s hold)."""
    import threading
    import types

    from splitrt.edge_runtime.node import disciplines
    from splitrt.edge_runtime.node.scheduler import Job

    clock = [100.0]
    monkeypatch.setattr(disciplines.time, "perf_counter", lambda: clock[0])
    server = types.SimpleNamespace(
        _cv=threading.Condition(),
        config=types.SimpleNamespace(role="rsu"),
        allocation={"f_flops_per_s": {"a": 4e9, "b": 1e9}},
        capacity_flops_per_s=5e9,
        _sched=types.SimpleNamespace(names=["a", "b"]),
        counters={"container_overruns": 0},
        _workers_exit=False,
    )
    containers = disciplines.Containers(server)
    job = Job(item=None, queue="a", flops=10e9, est_s=1.0, arrival_s=100.0)
    containers.started(job, 100.0)
    clock[0] = 102.0
    server.allocation = {"f_flops_per_s": {"a": 2e9, "b": 3e9}}
    with server._cv:
        containers.shares_changed()
    clock[0] = 103.0
    begun = time.monotonic()
    containers.after_compute(job, 100.0)
    assert time.monotonic() - begun < 1.0  # returned at once: the work was done
    assert server.counters["container_overruns"] == 1 and containers._holds == {}
