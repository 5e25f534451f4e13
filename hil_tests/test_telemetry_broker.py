"""Telemetry through real brokers (mosquitto and the in-process amqtt fallback)."""

from __future__ import annotations

import shutil
import time

import pytest

from hil_tests.conftest import wait_for
from splitrt.edge_runtime.experiment.telemetry import Publisher, Subscriber
from splitrt.tools.hil.broker import start_broker

BROKERS = [
    "amqtt",
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(
            shutil.which("mosquitto") is None and not __import__("os").path.exists("/usr/sbin/mosquitto"),
            reason="mosquitto is not installed (apt-get install mosquitto); the amqtt variant still runs",
        ),
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", BROKERS)
def test_every_topic_round_trips_through_a_real_broker(kind):
    with start_broker(kind) as broker:
        got = []
        sub = Subscriber(broker.url, "exp", "sub", on_message=lambda k, i, m: got.append((k, i, m)))
        pub = Publisher(broker.url, "exp", "pub")
        try:
            assert sub.wait_subscribed(10)
            sent = [
                ("node_state", "rsu", {"backlog_flops": {"resnet18": 3.5e9}}),
                ("vehicle_state", "cv0", {"q_loc_flops": 1e9, "pos_m": -40.0}),
                ("task", "cv0", {"task_id": "cv0-1", "total_s": 0.2}),
                ("controller", None, {"slot": 3, "lyapunov": 12.5}),
                ("slot", None, {"slot": 3, "start": 1.0, "slot_s": 1.0}),
                ("event", None, {"event": "fault_start", "what": "broker"}),
            ]
            for k, ident, body in sent:
                assert pub.publish(k, body, ident)
            assert wait_for(lambda: len(got) == len(sent))
            assert [(k, i) for k, i, _ in got] == [(k, i) for k, i, _ in sent]
            for (_, _, body), (_, _, msg) in zip(sent, got, strict=True):
                assert {k: msg[k] for k in body} == body and msg["schema"] == 1
            state, age = sub.latest("node_state", "rsu")
            assert state["backlog_flops"] == {"resnet18": 3.5e9} and age < 10
            assert pub.dropped == 0 and sub.rejected == 0
        finally:
            pub.close()
            sub.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", BROKERS)
def test_broker_outage_is_counted_and_recovered(kind):
    broker = start_broker(kind)
    port = broker.port
    pub = Publisher(broker.url, "exp", "pub", max_queued=5)
    try:
        assert wait_for(lambda: pub.connected)
        broker.kill()
        assert wait_for(lambda: not pub.connected)
        t0 = time.monotonic()
        results = [pub.publish("node_state", {"i": i}, "rsu") for i in range(20)]
        results += [pub.publish("task", {"i": i}, "cv0") for i in range(20)]
        assert time.monotonic() - t0 < 1.0  # never blocks on a dead broker
        assert not any(results[:20])  # QoS-0 state while disconnected: dropped, counted
        assert pub.dropped_by_kind["node_state"] == 20
        assert pub.dropped_by_kind.get("task", 0) >= 20 - 5  # beyond the bounded queue: counted
        broker = start_broker(kind, port=port)
        assert wait_for(lambda: pub.connected, 20)
        assert pub.publish("node_state", {"i": "after"}, "rsu")
    finally:
        pub.close()
        broker.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", BROKERS)
def test_recorder_writes_every_kind_and_rejects_garbage(kind, tmp_path):
    from splitrt.edge_runtime.experiment.recorder import Recorder, read_recorded

    with start_broker(kind) as broker:
        seen = []
        rec = Recorder(broker.url, "exp", tmp_path, callbacks=[lambda k, i, m: seen.append(k)])
        pub = Publisher(broker.url, "exp", "pub")
        try:
            assert rec.subscriber.wait_subscribed(10)
            pub.publish("node_state", {"slot": 0, "queues": {}}, "rsu")
            pub.publish("task", {"task_id": "cv0-0", "total_s": 0.1}, "cv0")
            pub.publish("controller", {"slot": 0, "lyapunov": 1.5})
            pub.client.publish("splitrt/exp/controller", b"not json", qos=1)  # invalid: counted, not written
            pub.publish("event", {"event": "stop"})
            assert rec.stop_event.wait(10)  # the stop event ends a recording
            assert wait_for(lambda: rec.rejected == 1)
        finally:
            pub.close()
            counts = rec.close()
    assert counts["node_state"] == counts["task"] == counts["controller"] == counts["event"] == 1
    assert counts["rejected"] == 1 and sorted(seen) == ["controller", "event", "node_state", "task"]
    assert read_recorded(tmp_path / "task.jsonl") == [
        {**read_recorded(tmp_path / "task.jsonl")[0], "task_id": "cv0-0", "total_s": 0.1}
    ]
    assert read_recorded(tmp_path / "controller.jsonl")[0]["lyapunov"] == 1.5
    assert read_recorded(tmp_path / "slot.jsonl") == []


@pytest.mark.timeout(120)
def test_splitrt_record_writes_until_the_stop_event(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from splitrt.edge_runtime.experiment.recorder import read_recorded

    root = Path(__file__).resolve().parents[1]
    with start_broker("amqtt") as broker:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "splitrt.tools.cli.main",
                "record",
                "--broker",
                broker.url,
                "--experiment",
                "exp",
                "--out",
                str(tmp_path),
                "--duration-s",
                "60",
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().startswith("recording exp")  # printed once subscribed
            pub = Publisher(broker.url, "exp", "pub")
            for t in range(3):
                pub.publish("vehicle_state", {"slot": t, "q_loc_flops": 1e9 * t}, "cv0")
            pub.publish("event", {"event": "stop"})
            out, err = proc.communicate(timeout=30)
            pub.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "vehicle_state 3" in out and "event 1" in out
    assert [m["slot"] for m in read_recorded(tmp_path / "vehicle_state.jsonl")] == [0, 1, 2]
