"""Faults with real processes: edge nodes killed and restarted (RSU and SV), a link blacked out,
a lossy link, a stalled node, a vehicle killed and restarted, malformed frames, a vehicle
interrupted. No task is ever lost: the vehicle's journal says what was generated, the records say
how each task ended, and every test checks generated = completed + failed, each task once."""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from hil_tests.conftest import free_port, read_records, request_state
from splitrt.edge_runtime.formats.records import DURATION_KEYS
from splitrt.edge_runtime.link.wire import Header, encode_tensor, pack, tensor_header, unpack
from splitrt.edge_runtime.vehicle.journal import RESTART_REASON, account
from splitrt.tools.hil.faults import FaultLog, kill_process, read_windows, split_by_window, stall
from splitrt.tools.hil.linkem import Topology, availability

LINKS_OK, LINKS_WHY = availability()
needs_links = pytest.mark.skipif(not LINKS_OK, reason=f"link emulation unavailable: {LINKS_WHY}")


def check_records(records: list[dict], n_tasks: int) -> None:
    assert sorted(r["index"] for r in records) == list(range(n_tasks))
    assert len({r["task_id"] for r in records}) == n_tasks
    for r in records:
        assert r["verified"] is True, r
        assert sum(r[k] for k in DURATION_KEYS) == pytest.approx(r["total_s"], abs=1e-6), r


def check_accounting(out: Path, failed_reasons: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """The per-experiment accounting of one vehicle: every task its journal says was generated ended
    exactly once, as completed or as failed for one of ``failed_reasons`` (none where a fallback
    is possible)."""
    records = read_records(out)
    acc = account(Path(f"{out}.journal"), records)
    print(out.name, acc)
    assert acc["generated"] == acc["completed"] + acc["failed"] == len(records) > 0, acc
    assert (acc["duplicates"], acc["missing"], acc["unknown"]) == (0, 0, 0), acc
    assert set(acc["failed_by_reason"]) <= set(failed_reasons), acc
    return records, acc


def fault_outcomes(records: list[dict], window, timeout_s: float, margin_s: float = 0.3) -> tuple[set, set, set]:
    """Outcomes of the tasks that completed before the fault began; of those that arrived early
    enough in the fault that their reply deadline fell inside it (``timeout_s`` after sending,
    ``margin_s`` allowed for the head compute before the send); and of those that arrived after it."""
    end = window.end_unix_s
    before = {r["outcome"] for r in records if r["completion_unix_s"] < window.start_unix_s}
    inside = {
        (r["outcome"], r["reason"])
        for r in records
        if window.start_unix_s <= r["arrival_unix_s"] <= end - timeout_s - margin_s
    }
    after = {r["outcome"] for r in records if r["arrival_unix_s"] > end}
    return before, inside, after


def wait_records(path, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or len(read_records(path)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} records in {path} after {timeout_s} s"
        time.sleep(0.05)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("role", ["sv", "rsu"])
def test_killed_node_falls_back_then_restarted_node_is_used_again(procs, small_models, role):
    model = small_models["resnet18"]
    port = free_port()
    faults = FaultLog(procs.workdir / "faults.jsonl")
    server, endpoint = procs.server(role, [model], "--role", role, port=port)
    slots = 120
    vehicle, out = procs.vehicle(
        "va", model, [endpoint], "--decider", "fixed:4", "--slots", str(slots), "--slot-s", "0.1", "--timeout-s", "1.0"
    )
    wait_records(out, 5)  # the node served a few tasks ...
    window = faults.start("node_killed", role, port=port)
    kill_process(server.popen.pid)  # ... then dies without a word (SIGKILL)
    server.popen.wait(30)
    wait_records(out, len(read_records(out)) + 5)  # tasks keep completing, locally
    restarted, _ = procs.server(f"{role}2", [model], "--role", role, port=port)
    faults.end(window)
    assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
    records, _ = check_accounting(out)
    check_records(records, slots)
    parts = split_by_window(records, window)
    remote_before = [r for r in parts["before"] if r["outcome"] == "remote"]
    fallbacks = [r for r in records if r["outcome"] == "fallback"]
    remote_after = [r for r in parts["after"] if r["outcome"] == "remote"]
    assert remote_before and fallbacks and remote_after, (len(remote_before), len(fallbacks), len(remote_after))
    assert {r["reason"] for r in fallbacks} <= {"timeout", "unreachable"}
    assert {r["node_name"] for r in remote_after} == {f"{role}2"}
    # The new node completed exactly the remote tasks that arrived after it was up (plus those in
    # flight from the outage window that it served).
    assert request_state(endpoint)["counters"]["completed"] == len(remote_after) + sum(
        r["outcome"] == "remote" for r in parts["during"]
    )
    assert [(w.kind, w.target) for w in read_windows(faults.path)] == [("node_killed", role)]
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(60) == 0


@pytest.mark.timeout(600)
def test_stalled_node_times_out_then_serves_again(procs, small_models):
    """A node frozen for several slots (SIGSTOP: sockets open, nothing computed or answered)."""
    model = small_models["resnet18"]
    faults = FaultLog(procs.workdir / "faults.jsonl")
    server, endpoint = procs.server("sv", [model], "--role", "sv")
    slots = 60
    vehicle, out = procs.vehicle(
        "va", model, [endpoint], "--decider", "fixed:6", "--slots", str(slots), "--slot-s", "0.1", "--timeout-s", "0.5"
    )
    wait_records(out, 5)
    with faults.window("node_stalled", "sv", seconds=1.5) as window:
        stall(server.popen.pid, 1.5)  # 15 slots
    assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
    records, _ = check_accounting(out)
    check_records(records, slots)
    before, inside, after = fault_outcomes(records, window, timeout_s=0.5)
    assert before == {"remote"}
    assert inside == {("fallback", "timeout")}  # a frozen node answers nothing: each one timed out
    assert "remote" in after  # it serves again once thawed
    state = request_state(endpoint)
    # It computed the tasks that waited through the stall too: their late replies were dropped by
    # the vehicle, which had finished them itself; nothing was counted twice in the records.
    assert state["counters"]["completed"] >= sum(r["outcome"] == "remote" for r in records)
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0


def link_setup(topo: Topology, procs, model: Path, *vehicle_args: str):
    """An RSU in its own namespace, a vehicle in another, one veth link between them."""
    topo.add_namespace("rsu")
    topo.add_namespace("cv0")
    link = topo.add_link("cv0", "rsu")
    _, endpoint = procs.server("rsu", [model], "--role", "rsu", host=link.ip_b, prefix=topo.exec_prefix("rsu"))
    vehicle, out = procs.vehicle("va", model, [endpoint], *vehicle_args, prefix=topo.exec_prefix("cv0"))
    return link, vehicle, out


@needs_links
@pytest.mark.timeout(600)
def test_link_blackout_falls_back_and_recovers(procs, small_models):
    faults = FaultLog(procs.workdir / "faults.jsonl")
    slots = 50
    with Topology() as topo:
        try:
            link, vehicle, out = link_setup(
                topo, procs, small_models["mobilenet_v2"], "--decider", "fixed:26", "--slots", str(slots),
                "--slot-s", "0.2", "--timeout-s", "0.5",
            )  # fmt: skip
            wait_records(out, 5)
            with faults.window("link_blackout", link.name, slots=8) as window:
                topo.set_down(link)
                time.sleep(1.6)  # 8 slots
                topo.set_down(link, down=False)
            assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
        finally:
            procs.stop_all()
    records, _ = check_accounting(out)
    check_records(records, slots)
    before, inside, after = fault_outcomes(records, window, timeout_s=0.5)
    assert before == {"remote"}
    assert inside and {o for o, _ in inside} == {"fallback"}  # nothing crosses a dead link
    assert {reason for _, reason in inside} <= {"timeout", "unreachable"}
    assert "remote" in after  # the link is used again


@needs_links
@pytest.mark.timeout(600)
def test_lossy_link_loses_no_task(procs, small_models):
    faults = FaultLog(procs.workdir / "faults.jsonl")
    slots = 60
    with Topology() as topo:
        try:
            link, vehicle, out = link_setup(
                topo, procs, small_models["mobilenet_v2"], "--decider", "fixed:26", "--slots", str(slots),
                "--slot-s", "0.1", "--timeout-s", "2.0",
            )  # fmt: skip
            wait_records(out, 5)
            with faults.window("link_loss", link.name, loss=0.10) as window:
                window.detail["method"] = topo.set_loss(link, 0.10)
                time.sleep(3.0)
                window.detail["dropped_packets"] = topo.dropped_packets(link)
                topo.set_loss(link, 0.0)
            assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
        finally:
            procs.stop_all()
    records, _ = check_accounting(out)
    check_records(records, slots)
    during = split_by_window(records, window)["during"]
    assert len(during) >= 20  # the loss lasted 30 slots
    dropped = window.detail["dropped_packets"]
    assert dropped is None or dropped > 0, window.detail  # packets really were lost (nftables counts)
    # TCP retransmits what was lost; a task whose reply is too late falls back: none fails.
    assert {r["outcome"] for r in during} <= {"remote", "fallback"}
    print("during the loss:", {o: sum(r["outcome"] == o for r in during) for o in ("remote", "fallback")}, window)


@pytest.mark.timeout(600)
def test_killed_vehicle_restarts_and_its_open_tasks_are_failed_once(procs, small_models):
    """SIGKILL a vehicle with work in flight; the same command started again recovers from its
    journal: the tasks it had open are recorded as failed ('vehicle restarted'), exactly once."""
    model = small_models["resnet18"]
    faults = FaultLog(procs.workdir / "faults.jsonl")
    _, endpoint = procs.server("sv", [model], "--role", "sv")
    # More arrivals than the (4x slowed) vehicle can compute: its local queue is never empty.
    args = ["--decider", "fixed:4", "--arrivals", "poisson:3", "--slot-s", "0.1", "--speed-factor", "4"]
    args += ["--speed-mode", "stretch", "--timeout-s", "2.0"]
    vehicle, out = procs.vehicle("va", model, [endpoint], *args, "--slots", "40")
    wait_records(out, 10)
    window = faults.start("vehicle_killed", "va")
    kill_process(vehicle.popen.pid)
    vehicle.popen.wait(30)
    generated_before = account(Path(f"{out}.journal"), read_records(out))
    assert generated_before["missing"] >= 1, generated_before  # it died with tasks open
    again, _ = procs.vehicle("va", model, [endpoint], *args, "--slots", "10")
    faults.end(window)
    assert again.wait(300) == 0, again.stderr()[-3000:]
    assert f"{generated_before['missing']} task(s) of the previous run recorded as failed" in again.stdout()
    records, acc = check_accounting(out, failed_reasons=(RESTART_REASON,))
    assert acc["failed"] == generated_before["missing"]  # exactly the open ones, once each
    restarted = [r for r in records if r["reason"] == RESTART_REASON]
    assert all(r["arrival_unix_s"] < window.start_unix_s for r in restarted)
    ok = [r for r in records if r["outcome"] != "failed"]
    assert {r["outcome"] for r in ok} <= {"remote", "fallback"} and all(r["verified"] for r in ok)
    assert sorted(r["index"] for r in records) == list(range(len(records)))  # ids continue after a restart


@pytest.mark.timeout(600)
def test_malformed_frames_are_answered_while_a_vehicle_is_served(procs, small_models):
    model_dir = small_models["mobilenet_v2"]
    server, endpoint = procs.server("rsu", [model_dir], "--role", "rsu")
    slots = 40
    vehicle, out = procs.vehicle(
        "va", model_dir, [endpoint], "--decider", "fixed:10", "--slots", str(slots), "--slot-s", "0.05"
    )
    wait_records(out, 1)
    payload = encode_tensor(np.zeros((1, 4), np.float32))
    good = tensor_header("task", payload, id="x", vehicle="m", model="mobilenet_v2", digest="0" * 64, cut=1)
    cases = [
        ([b"one", b"two", b"three"], "bad_frames"),
        ([b"\x89PNG\r\n"], "bad_header"),
        ([b'{"v": 2, "kind": "task"}'], "bad_version"),
        ([Header(kind="state", state={"queues": {}}).to_bytes()], "unknown_kind"),
        (pack(replace(good, model="nosuch"), payload.payload), "unknown_model"),
        (pack(good, payload.payload), "digest_mismatch"),
    ]
    # Raw bytes that are not ZeroMQ at all: the node drops that connection and serves on.
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1])), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
    attacker = zmq.Context.instance().socket(zmq.DEALER)
    attacker.setsockopt(zmq.LINGER, 0)
    try:
        attacker.connect(endpoint)
        for frames, code in cases * 3:
            attacker.send_multipart(frames)
            assert attacker.poll(10_000), f"no reply to a {code} message"
            header, _ = unpack(attacker.recv_multipart())
            assert (header.kind, header.code) == ("error", code), header
            assert header.message
    finally:
        attacker.close(0)
    assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
    records = read_records(out)
    check_records(records, slots)
    assert {r["outcome"] for r in records} == {"remote"}  # the concurrent vehicle never noticed
    state = request_state(endpoint)
    by_code = state["counters"]["errors_by_code"]
    # Each malformed message was answered with its code. The raw TCP garbage may add more: libzmq
    # reads a peer without a ZMTP 3 greeting as ZMTP 1.0 and hands its bytes over as messages,
    # which the node answers as bad_header/bad_frames errors like any other.
    assert all(by_code.get(code, 0) >= 3 for _, code in cases), by_code
    assert state["counters"]["errors"] == sum(by_code.values()) >= 3 * len(cases)
    assert state["counters"]["completed"] == slots
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0


@pytest.mark.timeout(300)
def test_interrupted_vehicle_records_every_generated_task(procs, small_models):
    model = small_models["resnet18"]
    _, endpoint = procs.server("sv", [model], "--role", "sv")
    vehicle, out = procs.vehicle(
        "va", model, [endpoint], "--decider", "greedy", "--arrivals", "poisson:3", "--slots", "1000", "--slot-s", "0.1"
    )
    wait_records(out, 5)
    vehicle.signal(signal.SIGINT)
    assert vehicle.wait(120) == 0, vehicle.stderr()[-3000:]
    records = read_records(out)
    generated = int(vehicle.stdout().split("va: ")[1].split(" tasks")[0])
    assert generated == len(records) and generated < 3000
    check_records(records, generated)
