"""Telemetry schema: topics round trip, payload checks (no broker needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.experiment.telemetry import (
    KINDS,
    MAX_LIST_ITEMS,
    MAX_PAYLOAD_BYTES,
    BrokerAddress,
    decode,
    encode,
    parse_topic,
    topic,
)


@pytest.mark.parametrize("kind", KINDS)
def test_topic_round_trip(kind):
    ident = None if kind in ("controller", "slot", "event") else "veh-3"
    name = topic("exp1", kind, ident)
    assert parse_topic(name) == ("exp1", kind, ident)


def test_payload_round_trip_and_schema():
    msg = decode(encode("task", {"task_id": "v1-7", "total_s": 0.25}))
    assert msg["schema"] == 1 and msg["kind"] == "task" and msg["task_id"] == "v1-7"
    assert msg["sent_at"] > 0


def test_bad_payloads_are_refused():
    with pytest.raises(SplitrtError, match="never carries tensors"):
        encode("task", {"blob": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(SplitrtError, match="not plain JSON"):
        encode("task", {"x": float("nan")})
    with pytest.raises(SplitrtError, match="not JSON"):
        decode(b"\xff\x00")
    with pytest.raises(SplitrtError, match="expected 1"):
        decode(json.dumps({"schema": 2, "kind": "task"}).encode())
    with pytest.raises(SplitrtError, match="not a splitrt topic"):
        parse_topic("other/exp/node/x/state")
    with pytest.raises(SplitrtError, match="unknown telemetry kind"):
        topic("e", "tensor")


def test_broker_urls():
    a = BrokerAddress.parse("mqtt://user:pw@10.0.0.2:1884")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("10.0.0.2", 1884, False, "user", "pw")
    assert BrokerAddress.parse("mqtts://broker").port == 8883
    with pytest.raises(SplitrtError, match="must look like"):
        BrokerAddress.parse("http://x:1")


def test_telemetry_never_carries_tensors(tiny):
    """A vehicle's task record goes out as telemetry; a tensor, in any form, does not."""
    from splitrt.edge_runtime.compute.segments import SegmentRunner
    from splitrt.edge_runtime.vehicle.client import Vehicle, VehicleConfig
    from splitrt.models.segmenter import sample_input

    config = VehicleConfig(edges=("tcp://127.0.0.1:9",), decider="fixed:2", slots=2, slot_s=0.01, connect_s=0.05)
    records = Vehicle(config, tiny["res"]).run()
    for record in records:  # the records the `task` topic carries pass every check
        assert decode(encode("task", record))["task_id"] == record["task_id"]
    m = tiny["res"]
    tensor = SegmentRunner(m).run(sample_input(m.input), 0, 2)  # a real cut tensor
    with pytest.raises(SplitrtError, match="not plain JSON"):
        encode("task", {**records[0], "head": tensor})
    with pytest.raises(SplitrtError, match="not plain JSON"):
        encode("task", {"payload": tensor.tobytes()})
    flat = np.zeros(MAX_LIST_ITEMS + 1).tolist()  # a small tensor flattened into a list
    with pytest.raises(SplitrtError, match="never carries tensors"):
        encode("node_state", {"queues": {"res": {"output": flat}}})
    with pytest.raises(SplitrtError, match="never carries tensors"):
        encode("task", {"nested": [[0.0] * 8] * (MAX_LIST_ITEMS + 1)})
    assert decode(encode("vehicle_state", {"observation": [0.0] * 13}))["observation"] == [0.0] * 13
