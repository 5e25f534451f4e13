"""Protocol fuzzing of a real `splitrt serve` while a well-behaved vehicle is being served."""

from __future__ import annotations

import signal

import psutil
import pytest

from hil_tests.conftest import read_records, request_state
from hil_tests.test_faults import check_records, wait_records
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.tools.bench import fuzz

FRAMES = 1000  # the `fuzz` benchmark sends 10,000
RSS_GROWTH_LIMIT_MB = 64


@pytest.mark.timeout(600)
def test_fuzzed_frames_are_each_answered_and_the_node_serves_on(procs, small_models):
    model_dir = small_models["mobilenet_v2"]
    server, endpoint = procs.server("rsu", [model_dir], "--role", "rsu")
    state = request_state(endpoint)
    rss_before = psutil.Process(server.popen.pid).memory_info().rss
    slots = 80
    vehicle, out = procs.vehicle(
        "va", model_dir, [endpoint], "--decider", "fixed:10", "--slots", str(slots), "--slot-s", "0.1"
    )
    wait_records(out, 1)
    target = fuzz.Target.of(Manifest.load(model_dir), state["max_message_bytes"])
    stats = fuzz.run(
        endpoint, target, FRAMES, seed=7, alive=lambda: server.popen.poll() is None, oversized=3, raw_connections=3
    )
    assert stats.crashes == 0 and server.popen.poll() is None
    assert (stats.unanswered, stats.unexpected) == (0, 0), stats.examples
    # Every frame that reached the node got the error its flaw calls for; the oversized ones were
    # cut off by libzmq before the node buffered them.
    assert stats.errors_answered + stats.disconnects_expected == stats.frames == FRAMES + 3
    assert stats.disconnects_expected >= 3 and stats.raw_connections == 3
    assert len(stats.by_category) >= 14  # every category of tools/bench/fuzz.py was exercised
    after = request_state(endpoint)
    assert after["link"]["disconnects"] >= stats.disconnects_expected
    assert sum(after["counters"]["errors_by_code"].values()) >= stats.errors_answered
    growth_mb = (psutil.Process(server.popen.pid).memory_info().rss - rss_before) / 2**20
    assert growth_mb < RSS_GROWTH_LIMIT_MB, growth_mb
    # The vehicle served at the same time never noticed.
    assert vehicle.wait(300) == 0, vehicle.stderr()[-3000:]
    records = read_records(out)
    check_records(records, slots)
    assert {r["outcome"] for r in records} == {"remote"}
    final = request_state(endpoint)
    assert final["counters"]["completed"] == slots
    # Checked once the vehicle is done (its own task may be queued while the fuzzer finishes):
    # nothing half-accepted lingers.
    assert all(q["tasks"] == 0 for q in final["queues"].values())
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0
