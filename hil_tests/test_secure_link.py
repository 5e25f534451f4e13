"""The CURVE link end to end with the CLI: `splitrt keys`, `serve --curve-secret --allow`,
`vehicle --curve-secret --server-key`; an allowed vehicle is served, others fall back, nothing lost."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest

from hil_tests.conftest import ROOT
from hil_tests.test_faults import check_accounting, check_records


def keys(directory, name: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", "keys", "--out", str(directory), "--name", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"public key {directory / name}.key" in r.stdout


@pytest.mark.timeout(600)
def test_curve_node_serves_allowed_keys_only(procs, small_models, tmp_path):
    model = small_models["resnet18"]
    for name in ("rsu", "v0", "stranger"):
        keys(tmp_path / "keys", name)
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(tmp_path / "keys" / "v0.key", allow)
    server, endpoint = procs.server(
        "rsu", [model], "--role", "rsu", "--curve-secret", tmp_path / "keys" / "rsu.key_secret", "--allow", allow
    )
    assert "link: CURVE (encrypted, 1 allowed vehicle key(s))" in server.stdout()
    slots = ["--decider", "fixed:6", "--slots", "10", "--slot-s", "0.1", "--connect-s", "2"]
    runs = {
        "v0": ["--curve-secret", tmp_path / "keys" / "v0.key_secret", "--server-key", tmp_path / "keys" / "rsu.key"],
        "stranger": [
            "--curve-secret", tmp_path / "keys" / "stranger.key_secret", "--server-key", tmp_path / "keys" / "rsu.key",
        ],
        "plain": [],
    }  # fmt: skip
    procs_ = {name: procs.vehicle(name, model, [endpoint], *slots, *extra) for name, extra in runs.items()}
    records = {}
    for name, (proc, out) in procs_.items():
        assert proc.wait(300) == 0, proc.stderr()[-3000:]
        records[name], acc = check_accounting(out)
        check_records(records[name], 10)
        assert acc["failed"] == 0  # refused offloads ran locally: nothing lost
    assert {(r["outcome"], r["link_security"]) for r in records["v0"]} == {("remote", "curve")}
    assert {(r["outcome"], r["link_security"]) for r in records["stranger"]} == {("fallback", "curve")}
    assert all("rejected this vehicle's CURVE key" in r["reason"] for r in records["stranger"])
    assert {(r["outcome"], r["link_security"]) for r in records["plain"]} == {("fallback", "plain")}
    assert all(r["reason"].startswith("refused:") for r in records["plain"])
    assert "plain link: UNAUTHENTICATED" in procs_["plain"][0].stderr()
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0
    assert "'completed': 10" in server.stderr()  # the node's final counters: only v0's tasks
