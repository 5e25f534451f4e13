"""`splitrt hil --hosts` and `splitrt doctor --hosts` against real OpenSSH servers: four hosts (RSU,
SV, two CVs), each a network namespace with its own address, sshd, host key and authorized key
(hil_tests/sshhosts.py). The orchestrator (this process's `splitrt hil`) reaches them over a
bridge, ships their files, and starts their processes over SSH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil_tests import sshhosts
from hil_tests.conftest import finish
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.tools.hil.report import measured_components

ROOT = Path(__file__).resolve().parents[1]
OK, WHY = sshhosts.available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY)
HOSTS = ["h-rsu", "h-sv", "h-cv0", "h-cv1"]
ROLES = {"h-rsu": ["rsu"], "h-sv": ["sv1"], "h-cv0": ["cv0"], "h-cv1": ["cv1"]}
SCENARIO = ["--preset", "demo", "--set", "models=resnet18,mobilenet_v2", "--set", "n_cvs=2", "--set", "n_svs=1"]


@pytest.fixture(scope="module")
def hosts():
    with sshhosts.SshHosts(HOSTS) as h:
        yield h


@pytest.fixture
def inventory(hosts, tmp_path) -> Path:
    return hosts.inventory(tmp_path / "hosts.toml", ROLES, python=sys.executable)


def splitrt(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def hil(out: Path, exports: Path, inventory: Path, *extra: str) -> subprocess.Popen:
    args = [*SCENARIO, "--out", str(out), "--exports", str(exports), "--keep-profiles", "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "splitrt.tools.cli.main", "hil", *args, "--hosts", str(inventory), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_dirs(hosts) -> dict[str, list[str]]:
    """The run directories left in each host's work directory."""
    out = {}
    for name in HOSTS:
        runs = hosts.root / name / "work" / "runs"
        if runs.is_dir() and list(runs.iterdir()):
            out[name] = [p.name for p in runs.iterdir()]
    return out


def assert_clean(hosts, *, runs: bool = True) -> None:
    """No process of the run on any host (within 20 s) and, with ``runs``, no run directory."""
    deadline = time.monotonic() + 20
    while hosts.leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hosts.leftovers() == {}
    if runs:
        assert run_dirs(hosts) == {}


def wait_tasks(out: Path, method: str, n: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Until the run's telemetry has ``n`` task records of ``method``."""
    path = out / method / "telemetry" / "task.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {n} tasks of {method} within {timeout_s} s")


def test_doctor_has_a_row_per_host_and_fails_for_one_that_cannot_run(hosts, inventory, tmp_path):
    rows_file = tmp_path / "doctor.json"
    done = splitrt("doctor", "--hosts", str(inventory), "--json", str(rows_file))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(rows_file.read_text())["rows"]
    assert [r["host"] for r in rows] == HOSTS
    for r in rows:
        assert r["reachable"] and r["problems"] == [] and r["splitrt"] and "CPUExecutionProvider" in r["providers"]
        # the namespaces share this machine's clock: the true offset is 0, so the estimate is within
        # half its round trip
        assert abs(r["clock_offset_s"]) <= r["clock_rtt_s"] / 2 + 1e-3
        assert r["tc"]  # root with tc
        assert r["host"] in done.stdout
    # one host with another splitrt install, one unreachable: exit 1, each row says why
    other = _other_version_python(tmp_path)
    bad = hosts.inventory(tmp_path / "bad.toml", ROLES, python=sys.executable)
    text = (
        bad.read_text()
        .replace(f'address = "{hosts.addresses["h-cv1"]}"', f'address = "10.79.{hosts.block}.250"')
        .replace('roles = ["sv1"]', f'roles = ["sv1"]\npython = "{other}"')
    )
    bad.write_text(text)
    done = splitrt("doctor", "--hosts", str(bad), "--json", str(rows_file), timeout_s=120)
    assert done.returncode == 1
    rows = {r["host"]: r for r in json.loads(rows_file.read_text())["rows"]}
    assert not rows["h-cv1"]["reachable"] and "unreachable" in rows["h-cv1"]["problems"][0]
    assert "0.0.1" in rows["h-sv"]["problems"][0] and "differs" in rows["h-sv"]["problems"][0]
    assert rows["h-rsu"]["problems"] == [] and rows["h-cv0"]["problems"] == []


def _other_version_python(tmp_path: Path) -> Path:
    """A Python whose `splitrt` distribution says version 0.0.1 (a host with another install)."""
    site = tmp_path / "other-site"
    dist = site / "splitrt-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: splitrt\nVersion: 0.0.1\n")
    wrapper = tmp_path / "other-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.timeout(900)
def test_a_four_host_run_completes_with_exact_accounting_and_the_one_machine_decisions(
    hosts, inventory, hil_exports, tmp_path
):
    out = tmp_path / "run"
    slots = 6
    code, _, stderr = finish(hil(out, hil_exports, inventory, "--methods", "offload,local", "--slots", str(slots)), 600)
    assert code == 0, stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    hosts_file = json.loads((out / "hosts.json").read_text())
    report = (out / "report.md").read_text()
    assert "## Hosts" in report and all(h in report for h in HOSTS)
    rows = {h["host"]: h for h in hosts_file["hosts"]}
    for name in HOSTS:
        ship = rows[name]["shipping"]
        assert ship["files"] > 0 and ship["sent"] + ship["skipped"] == ship["files"]
        assert abs(rows[name]["clock_offset_s"]) <= rows[name]["clock_rtt_s"] / 2 + 1e-3
    for s in summary:
        m = s["method"]
        records = read_jsonl(out / m / "records.jsonl")
        assert s["link_emulation"] == "measured"
        assert s["tasks_generated"] == s["tasks_completed"] == len(records) == 2 * slots and s["tasks_failed"] == 0
        assert sorted(r["task_id"] for r in records) == sorted(f"cv{i}-{k}" for i in (0, 1) for k in range(slots))
        for r in records:
            assert sum(measured_components(r).values()) == pytest.approx(r["total_s"])
            if r["outcome"] == "remote":
                assert r["link_security"] == "curve"  # keys made on the hosts, only public ones shipped
                assert r["edge"].startswith(f"tcp://{hosts.addresses['h-rsu' if r['node'] == 0 else 'h-sv']}:")
        # every host's own files came back: the vehicles' stats and journals, the nodes' stats
        for name in ("cv0", "cv1", "rsu", "sv1"):
            assert (out / m / f"{name}.stats.json").is_file()
        for cv in ("cv0", "cv1"):
            assert (out / m / f"{cv}.jsonl.journal").is_file()
        # measured links: the simulator's transfer of each offloaded task is the measured one
        if m == "offload":
            sim = {(t["vehicle_id"], t["slot"]): t for t in read_jsonl(out / m / "replay_tasks.jsonl")}
            for r in records:
                got = sim[(r["vehicle_id"], r["slot"])]["transfer_s"]
                assert got == pytest.approx(r["transfer_s"], rel=1e-6)
    # the secret keys never left their hosts, and everything the run installed in its run
    # directories is gone; the exports stay cached
    assert not list(out.rglob("*.key_secret"))
    assert_clean(hosts)
    assert (hosts.root / "h-cv0" / "work" / "cache" / "exports" / "resnet18" / "manifest.json").is_file()

    # the same scenario on this machine alone (unshaped loopback, as the hosts' bridge): the
    # deterministic methods decide exactly the same
    one = tmp_path / "one"
    local = subprocess.run(
        [sys.executable, "-m", "splitrt.tools.cli.main", "hil", *SCENARIO, "--out", str(one), "--exports",
         str(hil_exports), "--keep-profiles", "--no-progress", "--no-netns", "--methods", "offload,local",
         "--slots", str(slots)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    for m in ("offload", "local"):
        a = sorted((r["task_id"], r["cut"], r["node"]) for r in read_jsonl(out / m / "records.jsonl"))
        b = sorted((r["task_id"], r["cut"], r["node"]) for r in read_jsonl(one / m / "records.jsonl"))
        assert a == b

    # a second run into the same output starts clean and ships nothing it already shipped
    code, _, stderr = finish(hil(out, hil_exports, inventory, "--methods", "local", "--slots", "2"), 600)
    assert code == 0, stderr[-3000:]
    again = json.loads((out / "hosts.json").read_text())
    for h in again["hosts"]:
        assert h["shipping"]["bytes_sent"] < 1e6  # profiles, work table, traces: not the exports
    assert [s["method"] for s in json.loads((out / "summary.json").read_text())] == ["local"]
    assert_clean(hosts)


def run_and_kill(hosts, out: Path, exports: Path, inventory: Path, host: str, slots: int) -> tuple[int, str]:
    """An offload run of ``slots`` slots whose ``host`` is killed (sshd and processes) after 4
    tasks; the host is restarted afterwards. Returns (exit status, stderr)."""
    proc = hil(out, exports, inventory, "--methods", "offload", "--slots", str(slots))
    try:
        wait_tasks(out, "offload", 4, proc)
        hosts.kill(host)
        code, _, stderr = finish(proc, 600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        hosts.restart(host)
    return code, stderr


@pytest.mark.timeout(900)
def test_a_host_killed_mid_run_has_every_task_accounted_and_the_others_go_on(hosts, inventory, hil_exports, tmp_path):
    out = tmp_path / "run"
    slots = 12
    code, stderr = run_and_kill(hosts, out, hil_exports, inventory, "h-cv1", slots)
    assert code == 0, stderr[-4000:]
    [s] = json.loads((out / "summary.json").read_text())
    records = read_jsonl(out / "offload" / "records.jsonl")
    assert sorted(r["task_id"] for r in records) == sorted(f"cv{i}-{k}" for i in (0, 1) for k in range(slots))
    cv1 = [r for r in records if r["vehicle_id"] == "cv1"]
    lost = [r for r in cv1 if r["outcome"] == "failed"]
    assert lost and all(r["reason"].startswith("host lost: h-cv1") for r in lost)
    assert all(r["outcome"] == "remote" for r in records if r["vehicle_id"] == "cv0")  # cv0 went on
    assert s["tasks_generated"] == s["tasks_completed"] + s["tasks_failed"] == 2 * slots
    faults = [json.loads(x) for x in (out / "offload" / "faults.jsonl").read_text().splitlines()]
    assert any(f["kind"] == "host_lost" and f["target"] == "h-cv1" for f in faults)
    assert "host h-cv1 lost" in stderr
    hosts_file = json.loads((out / "hosts.json").read_text())
    assert [h["host"] for h in hosts_file["hosts"] if h["lost_unix_s"] is not None] == ["h-cv1"]
    # the survivors' run directories are removed; the lost host's is left for the next run
    assert hosts.leftovers() == {}
    assert set(run_dirs(hosts)) <= {"h-cv1"}
    code, _, stderr = finish(hil(tmp_path / "next", hil_exports, inventory, "--methods", "local", "--slots", "1"), 600)
    assert code == 0, stderr[-3000:]
    assert "h-cv1: removed 1 run directory" in stderr
    assert_clean(hosts)


@pytest.mark.timeout(900)
def test_a_node_host_killed_mid_run_makes_its_tasks_fall_back_and_the_run_goes_on(
    hosts, inventory, hil_exports, tmp_path
):
    out = tmp_path / "run"
    slots = 12
    code, stderr = run_and_kill(hosts, out, hil_exports, inventory, "h-rsu", slots)
    assert code == 0, stderr[-4000:]
    [s] = json.loads((out / "summary.json").read_text())
    records = read_jsonl(out / "offload" / "records.jsonl")
    # every task of both vehicles has exactly one record; those the RSU did not answer ran the
    # tail on the vehicle (fallback, with the reason) instead of being lost
    assert sorted(r["task_id"] for r in records) == sorted(f"cv{i}-{k}" for i in (0, 1) for k in range(slots))
    outcomes = {r["outcome"] for r in records}
    assert outcomes <= {"remote", "fallback"} and "fallback" in outcomes, outcomes
    assert all(r["reason"] for r in records if r["outcome"] == "fallback")
    assert s["tasks_generated"] == s["tasks_completed"] == 2 * slots and s["tasks_failed"] == 0
    faults = [json.loads(x) for x in (out / "offload" / "faults.jsonl").read_text().splitlines()]
    assert any(f["kind"] == "host_lost" and f["target"] == "h-rsu" for f in faults)
    hosts_file = json.loads((out / "hosts.json").read_text())
    assert [h["host"] for h in hosts_file["hosts"] if h["lost_unix_s"] is not None] == ["h-rsu"]
    assert hosts.leftovers() == {}
    assert set(run_dirs(hosts)) <= {"h-rsu"}
    code, _, stderr = finish(hil(tmp_path / "next", hil_exports, inventory, "--methods", "local", "--slots", "1"), 600)
    assert code == 0, stderr[-3000:]
    assert_clean(hosts)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_stopping_the_orchestrator_stops_every_remote_process(hosts, inventory, hil_exports, tmp_path, sig):
    out = tmp_path / "run"
    proc = hil(out, hil_exports, inventory, "--methods", "offload", "--slots", "30")
    try:
        wait_tasks(out, "offload", 2, proc)
        os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    # every remote process ends with its SSH session; Ctrl-C also removes the run directories
    # (after SIGKILL nobody can: the next run from this machine does)
    assert_clean(hosts, runs=sig == signal.SIGINT)
    if sig == signal.SIGKILL:
        assert set(run_dirs(hosts)) == set(HOSTS)
        code, _, stderr = finish(hil(out, hil_exports, inventory, "--methods", "local", "--slots", "1"), 600)
        assert code == 0, stderr[-3000:]
        assert_clean(hosts)


def test_inventory_and_host_mistakes_are_refused_before_anything_runs(hosts, inventory, hil_exports, tmp_path):
    text = inventory.read_text()
    cv1_block = text[text.index("[hosts.h-cv1]") :]
    cases = {
        "unknown role": (text.replace('roles = ["sv1"]', 'roles = ["sv7"]'), "role sv7, which this scenario does not have"),
        "role twice": (text.replace('roles = ["cv1"]', 'roles = ["cv0"]'), "role cv0 is given twice"),
        "role missing": (text.replace(cv1_block, ""), "no host has role(s) cv1"),
        "no key": (text.replace(f'key = "{hosts.client_key}"', ""), "host h-rsu: no key"),
        "unreachable": (text.replace(hosts.addresses["h-cv1"], f"10.79.{hosts.block}.251"), "host h-cv1 (root@"),
        "another splitrt": (
            text.replace('roles = ["cv0"]', f'roles = ["cv0"]\npython = "{_other_version_python(tmp_path)}"'),
            "host h-cv0: splitrt 0.0.1",
        ),
    }  # fmt: skip
    for what, (body, needle) in cases.items():
        bad = tmp_path / f"{what.replace(' ', '-')}.toml"
        bad.write_text(body)
        started = time.monotonic()
        code, _, stderr = finish(hil(tmp_path / "out", hil_exports, bad, "--methods", "local", "--slots", "2"), 300)
        assert code == 1, (what, stderr[-2000:])
        line = stderr.strip().splitlines()[-1]
        assert line.startswith("splitrt hil: error:") and needle in line, (what, line)
        assert time.monotonic() - started < 120
        assert_clean(hosts)


def test_a_file_that_does_not_arrive_as_sent_is_refused(hosts, inventory, tmp_path):
    from splitrt.tools.hosts.inventory import load_inventory
    from splitrt.tools.hosts.ship import manifest, ship
    from splitrt.tools.hosts.ssh import Connection

    inv = load_inventory(inventory)
    host = inv.host_of("cv0")
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "a.bin").write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    (payload / "b.json").write_text('{"x": 1}\n')
    remote = f"{host.workdir}/cache/test-payload"
    entries = manifest([(payload, remote)])
    conn = Connection(host)
    try:

        def tampering_put(local: Path, target: str) -> None:
            conn.put(local, target)
            if target.endswith("a.bin"):  # one byte changed on the way
                with conn.sftp.open(target, "r+b") as f:
                    f.seek(10)
                    f.write(b"\xff")

        with pytest.raises(SplitrtError, match=r"host h-cv0: .*a\.bin arrived with sha256 .* refusing"):
            ship(conn, entries, put=tampering_put)
        stats = ship(conn, entries)  # the damaged copy is sent again, the good one is kept
        assert (stats.sent, stats.skipped) == (1, 1)
        (hosts.root / "h-cv0" / "work" / "cache" / "test-payload" / "b.json").write_text("tampered on the host\n")
        stats = ship(conn, entries)
        assert (stats.sent, stats.skipped) == (1, 1)
        assert (hosts.root / "h-cv0" / "work" / "cache" / "test-payload" / "b.json").read_text() == '{"x": 1}\n'
    finally:
        conn.close()


@pytest.mark.timeout(600)
def test_links_tc_shapes_every_slot_on_the_hosts_and_removes_the_qdiscs(hosts, inventory, hil_exports, tmp_path):
    out = tmp_path / "run"
    slots = 5
    code, _, stderr = finish(
        hil(out, hil_exports, inventory, "--methods", "offload", "--slots", str(slots), "--links", "tc"), 600
    )
    assert code == 0, stderr[-4000:]
    [s] = json.loads((out / "summary.json").read_text())
    assert s["link_emulation"] == "tc"
    applied = read_jsonl(out / "offload" / "tc_rates.jsonl")
    assert [a["slot"] for a in applied] == list(range(slots))
    for r in read_jsonl(out / "offload" / "records.jsonl"):
        assert r["outcome"] == "remote"
        # the tensor crossed a link shaped at that slot's rate: no faster than the wire rate allows
        # (the bridge unshaped carries it in a few ms)
        rate = applied[r["slot"]]["wire_bps"][f"{r['vehicle_id']}-{r['node_name']}"]
        assert r["transfer_s"] >= 0.9 * 8 * r["bytes"] * 1514 / 1448 / rate
    for name in HOSTS:  # no htb left on any host
        qdiscs = subprocess.run(["ip", "netns", "exec", hosts.ns(name), "tc", "qdisc", "show", "dev", "eth0"],
                                capture_output=True, text=True).stdout  # fmt: skip
        assert "htb" not in qdiscs, (name, qdiscs)
    assert_clean(hosts)
    # the report rebuilt from these files still says the links were shaped (its simulated side on
    # the shaped channel model's rates, not on the measured ones)
    again = splitrt("hil", "--report-only", str(out), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    [s2] = json.loads((out / "summary.json").read_text())
    assert s2["link_emulation"] == "tc"
    assert s2["simulated"]["mean_s"] == pytest.approx(s["simulated"]["mean_s"], rel=1e-9)
    # two CVs on one host cannot be told apart by tc: refused before anything runs
    crowded = hosts.inventory(
        tmp_path / "crowded.toml", {"h-rsu": ["rsu"], "h-sv": ["sv1"], "h-cv0": ["cv0", "cv1"]}, python=sys.executable
    )
    code, _, stderr = finish(hil(out, hil_exports, crowded, "--methods", "local", "--slots", "1", "--links", "tc"), 300)
    assert code == 1 and "host h-cv0 runs several CVs" in stderr.strip().splitlines()[-1]
