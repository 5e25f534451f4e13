"""Shipping by digest, measured link rates and the host checks, without SSH: a host stand-in that
runs the same host-side Python on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.tools.hosts import checks, probe
from splitrt.tools.hosts.inventory import Host
from splitrt.tools.hosts.links import measured_plan, measured_rates
from splitrt.tools.hosts.ship import manifest, ship


@dataclass
class LocalHost:
    """`Connection`'s file and Python calls, run here (the host's side is this machine)."""

    host: Host

    def python(self, source, args=None, *, what, timeout_s=120.0):
        done = subprocess.run(
            [sys.executable, "-", json.dumps(args or {})], input=source, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)


def host(**kw) -> Host:
    return Host(name="pi1", address="10.0.0.2", roles=("cv0",), key=Path("/k"), **kw)


def test_ship_sends_what_is_missing_or_different_and_refuses_a_damaged_arrival(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.onnx").write_bytes(b"\x00" * 5000)
    (src / "sub" / "b.json").write_text("{}\n")
    dst = tmp_path / "host" / "cache"
    entries = manifest([(src, str(dst / "model"))])
    assert sorted(Path(e.remote).name for e in entries) == ["a.onnx", "b.json"]
    conn = LocalHost(host())
    first = ship(conn, entries)
    assert (first.files, first.sent, first.skipped, first.bytes_sent) == (2, 2, 0, 5003)
    assert (dst / "model" / "sub" / "b.json").read_text() == "{}\n"
    warm = ship(conn, entries)
    assert (warm.sent, warm.skipped, warm.bytes_sent) == (0, 2, 0)
    (dst / "model" / "a.onnx").write_bytes(b"\x01" * 5000)  # changed on the host: sent again
    assert ship(conn, entries).sent == 1 and (dst / "model" / "a.onnx").read_bytes() == b"\x00" * 5000

    def damaging_put(local: Path, remote: str) -> None:
        Path(remote).write_bytes(local.read_bytes()[:-1])

    (dst / "model" / "a.onnx").unlink()
    with pytest.raises(SplitrtError, match=r"host pi1: .*a\.onnx arrived with sha256 \w+, sent \w+ .*refusing"):
        ship(conn, entries, put=damaging_put)
    with pytest.raises(SplitrtError, match="cannot ship .*nothing: no such file"):
        manifest([(tmp_path / "nothing", "/x")])


@dataclass
class Cv:
    id: str


@dataclass
class Plan:
    rates_bps: np.ndarray
    cvs: list
    links: str = "model"


def test_measured_rates_are_the_records_own_and_fill_the_gaps():
    model = np.full((4, 2, 2), 1e6)
    plan = Plan(model, [Cv("cv0"), Cv("cv1")])
    rec = [
        {"vehicle_id": "cv0", "slot": 0, "node": 0, "outcome": "remote", "bytes": 1000, "transfer_s": 0.001},
        {"vehicle_id": "cv0", "slot": 0, "node": 0, "outcome": "remote", "bytes": 1000, "transfer_s": 0.004},
        {"vehicle_id": "cv0", "slot": 2, "node": 0, "outcome": "remote", "bytes": 500, "transfer_s": 0.001},
        {"vehicle_id": "cv1", "slot": 1, "node": 1, "outcome": "fallback", "bytes": 1000, "transfer_s": 0.5},
        {"vehicle_id": "cv1", "slot": 1, "node": 1, "outcome": "local", "bytes": 0, "transfer_s": 0.0},
    ]
    rates, info = measured_rates(plan, rec)
    assert rates[0, 0, 0] == pytest.approx((8e6 + 2e6) / 2)  # mean of the two tasks of slot 0
    assert rates[2, 0, 0] == pytest.approx(4e6)
    assert rates[1, 0, 0] == rates[3, 0, 0] == pytest.approx(np.median([5e6, 4e6]))  # the link's median
    assert (rates[:, 1, :] == 1e6).all() and (rates[:, 0, 1] == 1e6).all()  # never measured: the model's
    assert info == {"measured": 2, "filled": 2, "model": 12}
    simulated = measured_plan(plan, rec)
    assert simulated.links == "measured" and np.array_equal(simulated.rates_bps, rates)
    assert plan.links == "model" and plan.rates_bps[0, 0, 0] == 1e6  # the plan itself is not changed


def test_checks_name_every_problem():
    local = probe.splitrt_identity()
    facts = probe.facts(str(Path.cwd()), ())
    assert checks.judge(host(), facts, local).ok
    bad = {**facts, "version": "0.0.1", "providers": ["CPUExecutionProvider"], "ports_busy": [5555], "tc": False}
    bad["device_import"] = "ModuleNotFoundError: No module named 'torch'"
    bad["disk_free_bytes"] = 10
    problems = checks.judge(host(provider="cuda"), bad, local, need_tc=True).problems
    assert len(problems) == 6
    assert problems[0].startswith("splitrt 0.0.1") and "differs" in problems[0]
    assert "without torch" in problems[1] and "CUDAExecutionProvider" in problems[2]
    assert "5555" in problems[3] and "MB free" in problems[4] and "tc" in problems[5]
    # the probe blocks torch while it imports the device verbs: this install passes
    assert facts["device_import"] == "ok"
