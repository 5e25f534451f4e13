"""The pure logic of `make arm-check` and its clean-up on failure, with a fake host (no mounts, no root)."""

from __future__ import annotations

import json
import platform
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from splitrt.edge_runtime.formats.manifest import sha256_file
from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.tools.arm import device as dev
from splitrt.tools.arm.check import check, clean_up
from splitrt.tools.arm.context import (
    RECORDS_DIR,
    SRC,
    Context,
    mount,
    remove_tree,
    result_from_output,
    start_host_process,
    wait_ready,
)
from splitrt.tools.arm.host import CommandFailed, Host, Undo, parse_mountinfo, under
from splitrt.tools.arm.report import FAILED, PASSED, SKIPPED, StageResult, summarize
from splitrt.tools.arm.rootfs import cortex_a72_cpuinfo, device_requirements, mount_rootfs, stage_install
from splitrt.tools.arm.stages import (
    Stage,
    run_emulated_vehicle,
    run_stages,
    stage_live_vehicle,
    stage_machine,
    stage_policy_decision,
)
from splitrt.tools.arm.verdicts import check_vehicle_records, compare_decisions, find_policy
from tests.onnx_graphs import policy_model

ROOT = Path(__file__).resolve().parents[3]


# ---- cpuinfo, hwcap, requirements, results --------------------------------------------------------


@pytest.mark.parametrize("n_cpus", [1, 2, 4])
def test_cpuinfo_is_cortex_a72_per_processor(n_cpus):
    processors = dev.parse_cpuinfo(cortex_a72_cpuinfo(n_cpus))
    assert [p["processor"] for p in processors] == [str(i) for i in range(n_cpus)]
    for p in processors:
        assert p["CPU implementer"] == "0x41"  # Arm
        assert p["CPU part"] == "0xd08"  # Cortex-A72
        assert p["CPU architecture"] == "8"
        assert "asimd" in p["Features"].split()


def test_cpuinfo_refuses_no_processors():
    with pytest.raises(ValueError, match="n_cpus"):
        cortex_a72_cpuinfo(0)


def test_parse_cpuinfo_of_the_x86_host_has_no_arm_fields():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n"
    processors = dev.parse_cpuinfo(text)
    assert len(processors) == 2
    assert all("CPU part" not in p for p in processors)


def test_hwcap_decoding_and_auxv_parsing():
    bits = (1 << 0) | (1 << 1) | (1 << 7) | (1 << 8) | (1 << 40)
    assert dev.decode_hwcap(bits) == ["fp", "asimd", "crc32", "atomics", "bit40"]
    auxv = struct.pack("<QQQQQQ", 6, 4096, dev.AT_HWCAP, bits, 0, 0)  # AT_PAGESZ, AT_HWCAP, AT_NULL
    assert dev.read_hwcap(auxv) == bits
    assert dev.read_hwcap(struct.pack("<QQ", 0, 0)) is None


def test_device_requirements_are_the_base_set_without_torch():
    reqs = device_requirements((ROOT / "pyproject.toml").read_text())
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in reqs}
    assert {"setuptools", "numpy", "onnxruntime", "onnx", "pyzmq", "psutil", "paho-mqtt"} <= names
    assert not any(n.startswith("torch") for n in names)


def test_device_requirements_refuse_torch_in_the_base_set():
    text = '[build-system]\nrequires = ["setuptools"]\n[project]\ndependencies = ["numpy", "torch>=2"]\n'
    with pytest.raises(ValueError, match="torch"):
        device_requirements(text)


def test_result_line_is_found_after_other_output():
    out = f"some output\n{dev.RESULT_PREFIX}" + '{"check": "machine", "ok": true}\ntrailing noise\n'
    assert result_from_output(out) == {"check": "machine", "ok": True}
    assert result_from_output("no result here\n") is None


def test_mountinfo_parsing_and_prefixes():
    text = (
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        "90 22 0:40 / /var/cache/splitrt/arm64-rootfs/proc rw - proc proc rw\n"
        "91 90 0:5 /cpuinfo /var/cache/splitrt/arm64-rootfs/proc/cpuinfo rw - tmpfs x rw\n"
        "92 22 0:41 / /mnt/with\\040space rw - tmpfs x rw\n"
    )
    points = parse_mountinfo(text)
    assert points[-1] == "/mnt/with space"
    root = "/var/cache/splitrt/arm64-rootfs"
    assert [p for p in points if under(p, root)] == [f"{root}/proc", f"{root}/proc/cpuinfo"]
    assert not under("/var/cache/splitrt/arm64-rootfs.partial", root)


def test_summary_fails_only_on_a_failed_stage():
    ok = [
        StageResult("machine", PASSED, "aarch64", 1.0),
        StageResult("policy_decision", PASSED, "pqmix: 8 decisions"),
        StageResult("clean-up", PASSED),
    ]
    text, code = summarize(ok, {"qemu": "7.2"})
    assert code == 0
    assert "result: PASS; 3 passed" in text
    assert "qemu: 7.2" in text
    text, code = summarize([*ok, StageResult("segments", FAILED, "rel err 1")])
    assert code == 1
    assert "result: FAIL (segments)" in text


# ---- stage running --------------------------------------------------------------------------------


class FakeHost:
    """Records the commands and keeps a fake mount table; no process, mount or privilege needed."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[list[str]] = []
        self.mounts: list[str] = ["/", "/proc"]
        self.fail_on = fail_on
        self.ended_all = 0

    def run(self, argv, **kwargs) -> str:
        argv = [str(a) for a in argv]
        self.commands.append(argv)
        if self.fail_on and self.fail_on in argv:
            raise CommandFailed(f"{self.fail_on} failed")
        if argv[0] == "mount":
            self.mounts.append(argv[-1])
        elif argv[0] == "umount":
            self.mounts.remove(argv[-1])
        return ""

    def mountpoints(self) -> list[str]:
        return list(self.mounts)

    def processes_rooted_in(self, root) -> list[int]:
        return []

    def kill_pid(self, pid: int) -> None:
        raise AssertionError("no stray processes in these tests")

    def end_all(self) -> int:
        self.ended_all += 1
        return 0


def make_ctx(tmp_path: Path, host) -> Context:
    rootfs = tmp_path / "cache" / "arm64-rootfs"
    rootfs.mkdir(parents=True)
    return Context(repo=ROOT, rootfs=rootfs, workdir=tmp_path / "work", host=host, undo=Undo())


def test_stage_statuses_and_prerequisites(tmp_path):
    def boom(ctx):
        raise CommandFailed("pip exited 1")

    stages = [
        Stage("a", lambda ctx: "fine"),
        Stage("b", boom, ("a",)),
        Stage("c", lambda ctx: "never runs", ("b",)),
        Stage("d", lambda ctx: "also fine", ("a",)),
    ]
    results: list[StageResult] = []
    run_stages(stages, make_ctx(tmp_path, FakeHost()), results, fail_at="d")
    assert [(r.name, r.status) for r in results] == [
        ("a", PASSED),
        ("b", FAILED),
        ("c", SKIPPED),
        ("d", FAILED),
    ]
    assert "pip exited 1" in results[1].detail
    assert results[2].detail == "needs b"
    assert "--fail-at d" in results[3].detail


# ---- policy_decision ------------------------------------------------------------------------------

TYPES = (("alexnet", 3), ("resnet18", 4))  # (model, n_cuts)
N_NODES, STEPS = 3, 2


def write_policy(directory: Path) -> Path:
    """A policy directory in splitrt.edge_runtime.decide.onnx_policy's format around tests/onnx_graphs.policy_model."""
    max_actions = max(n for _, n in TYPES) * N_NODES
    directory.mkdir(parents=True)
    onnx.save(policy_model(N_NODES, len(TYPES), max_actions, STEPS), directory / "policy.onnx")
    meta = {
        "format_version": 1,
        "method": "mad2rl",
        "steps": STEPS,
        "n_nodes": N_NODES,
        "obs_dim": obs_layout.obs_size(N_NODES),
        "max_actions": max_actions,
        "types": [{"model": m, "n_cuts": n, "manifest_sha256": None} for m, n in TYPES],
        "onnx": "policy.onnx",
        "onnx_sha256": sha256_file(directory / "policy.onnx"),
    }
    (directory / "policy.json").write_text(json.dumps(meta))
    return directory


def oracle_decisions(directory: Path, inputs: Path) -> tuple[np.ndarray, np.ndarray]:
    """(q with NaN on invalid actions, action): the graph's formula in numpy, float64."""
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(directory / "policy.onnx").graph.initializer}
    data = np.load(inputs)
    models = [str(m) for m in data["models"]]
    onehot = np.array([[m == t for t, _ in TYPES] for m in models], dtype=np.float64)
    h = (data["obs"] * weights["scale"]).astype(np.float64) @ weights["w_obs"] + onehot @ weights["w_type"]
    h += 0.1 * data["noise"].astype(np.float64).sum(axis=1)
    mask = np.zeros(h.shape, dtype=bool)
    for b, m in enumerate(models):
        own = obs_layout.action_mask(dict(TYPES)[m], data["node_ok"][b])
        mask[b, : own.size] = own
    q = np.where(mask, h, np.nan)
    return q, np.nanargmax(q, axis=1)


def test_decision_check_reports_the_policy_graphs_decisions(tmp_path, capsys):
    policy = write_policy(tmp_path / "policy")
    inputs = tmp_path / "inputs.npz"
    assert dev.main(["decision-inputs", "--policy", str(policy), "--out", str(inputs), "--n", "6"]) == 0
    assert dev.main(["decision", "--policy", str(policy), "--inputs", str(inputs)]) == 0
    result = result_from_output(capsys.readouterr().out)
    assert result["check"] == "decision" and result["ok"] is True
    data = np.load(inputs)
    assert data["obs"].shape == (6, obs_layout.obs_size(N_NODES)) and data["noise"].shape[1] == STEPS
    assert data["node_ok"][:, 0].all() and not data["node_ok"][-1, 1:].any()  # the last reaches only the RSU
    q, action = oracle_decisions(policy, inputs)
    assert result["actions"] == action.tolist()
    assert [[v is None for v in row] for row in result["q"]] == np.isnan(q).tolist()
    got = np.array([[np.nan if v is None else v for v in row] for row in result["q"]])
    np.testing.assert_allclose(got, q, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert [(c, j) for c, j in zip(result["cuts"], result["nodes"], strict=True)] == [
        obs_layout.decode_action(a, N_NODES) for a in action.tolist()
    ]


def test_decision_comparison_demands_identical_actions_and_close_q():
    host = {
        "machine": "x86_64",
        "method": "mad2rl",
        "models": ["alexnet", "resnet18"],
        "actions": [1, 5],
        "cuts": [0, 1],
        "nodes": [1, 2],
        "q": [[0.2, 0.7, None], [0.4, None, 0.1, 0.3, 0.2, 0.9]],
    }
    device = {**host, "machine": "aarch64", "q": [[0.2, 0.7 + 1e-7, None], [0.4, None, 0.1, 0.3, 0.2, 0.9]]}
    detail = compare_decisions(host, device)
    assert "2 decisions on aarch64 == x86_64 host" in detail and "cut@node 0@1, 1@2" in detail
    with pytest.raises(CommandFailed, match="actions differ on 1 of 2 samples; sample 1"):
        compare_decisions(host, {**device, "actions": [1, 3]})
    with pytest.raises(CommandFailed, match="q differs by 1.000e-03"):
        compare_decisions(host, {**device, "q": [[0.2, 0.701, None], host["q"][1]]})
    with pytest.raises(CommandFailed, match="sample 0: the valid actions differ"):
        compare_decisions(host, {**device, "q": [[0.2, 0.7, 0.0], host["q"][1]]})
    with pytest.raises(CommandFailed, match="other samples"):
        compare_decisions(host, {**device, "models": ["alexnet", "vgg16"]})


def test_policy_search_prefers_default_and_fails_without_one(tmp_path):
    with pytest.raises(CommandFailed, match="no on-device policy under .*policy/trained"):
        find_policy(tmp_path)
    for name in ("zeta", "alpha", "default"):
        (tmp_path / "policy" / "trained" / name).mkdir(parents=True)
        (tmp_path / "policy" / "trained" / name / "policy.json").write_text("{}")
    assert find_policy(tmp_path) == tmp_path / "policy" / "trained" / "default"
    (tmp_path / "policy" / "trained" / "default" / "policy.json").unlink()
    assert find_policy(tmp_path) == tmp_path / "policy" / "trained" / "alpha"


def test_policy_decision_stage_fails_when_no_policy_is_shipped(tmp_path):
    ctx = make_ctx(tmp_path, FakeHost())
    ctx.repo = tmp_path / "repo"
    results: list[StageResult] = []
    run_stages([Stage("policy_decision", stage_policy_decision)], ctx, results)
    assert results[0].status == FAILED  # not silently unavailable
    assert "no on-device policy under" in results[0].detail and "export-policy" in results[0].detail


# ---- live_vehicle ---------------------------------------------------------------------------------


def vehicle_records(kind: str = "remote", n: int = 3, **changes) -> list[dict]:
    """``n`` good records of a ``kind`` (remote or local) run; ``changes`` apply to the last one."""
    remote = kind == "remote"
    records = [
        {
            "task_id": f"arm-{i}",
            "index": i,
            "outcome": kind,
            "reason": "",
            "cut": 4 if remote else 8,
            "node": 0 if remote else None,
            "node_name": "rsu-7" if remote else None,
            "verified": True,
            "max_abs_err": 1e-6 * (i + 1),
            "local_compute_s": 0.5,
            "remote_compute_s": 0.01 if remote else 0.0,
        }
        for i in range(n)
    ]
    records[-1].update(changes)
    return records


def test_vehicle_records_must_all_complete_as_decided_and_verified():
    detail = check_vehicle_records(vehicle_records(), n_tasks=3, outcome="remote", cut=4, node=0)
    assert detail == "3/3 remote at cut 4 by rsu-7, all verified (max abs err 3.0e-06)"
    local = check_vehicle_records(vehicle_records("local"), n_tasks=3, outcome="local", cut=8, node=None)
    assert local.startswith("3/3 local at cut 8 on the vehicle")
    bad = [
        (vehicle_records()[:2], "expected tasks 0..2 once each"),
        (vehicle_records(index=1), "expected tasks 0..2 once each"),
        (vehicle_records(outcome="fallback", reason="timeout"), "1 of 3 tasks not outcome remote: arm-2 .*timeout"),
        (vehicle_records(remote_compute_s=0.0), "not remote compute > 0"),
        (vehicle_records(verified=None), "not verified against the whole model"),
        (vehicle_records(cut=5), "not cut 4, node 0"),
    ]
    for records, message in bad:
        with pytest.raises(CommandFailed, match=message):
            check_vehicle_records(records, n_tasks=3, outcome="remote", cut=4, node=0)
    with pytest.raises(CommandFailed, match="local compute > 0, none remote"):
        check_vehicle_records(
            vehicle_records("local", remote_compute_s=0.1), n_tasks=3, outcome="local", cut=8, node=None
        )


class VehicleFailsHost(Host):
    """Real host processes (the fake RSU), fake mounts, and a vehicle (chroot) that fails."""

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.started: list[subprocess.Popen] = []

    def run(self, argv, **kwargs) -> str:
        if str(argv[0]) == "chroot":
            raise CommandFailed("`splitrt vehicle` exited 1: connection refused")
        return ""  # mount

    def start(self, argv, **kwargs) -> subprocess.Popen:
        proc = super().start(argv, **kwargs)
        self.started.append(proc)
        return proc

    def mountpoints(self) -> list[str]:
        return []


def test_live_vehicle_stops_the_rsu_when_the_vehicle_fails(tmp_path):
    host = VehicleFailsHost()
    ctx = make_ctx(tmp_path, host)
    (ctx.workdir / "exports" / ctx.model).mkdir(parents=True)
    (ctx.workdir / "exports" / ctx.model / "manifest.json").write_text(json.dumps({"segments": [{}] * 8}))
    rsu = tmp_path / "fake-python"  # stands in for `python -m splitrt.tools.cli.main serve ...`
    rsu.write_text(
        "#!/bin/sh\necho 'rsu-1: rsu serving resnet18'\necho 'listening tcp://127.0.0.1:5999'\n"
        'while [ $# -gt 0 ]; do [ "$1" = --status-file ] && s="$2"; shift; done\n'
        """echo '{"format": 1, "event": "ready", "pid": 1, "endpoint": "tcp://127.0.0.1:5999"}' > "$s"\n"""
        "exec sleep 60\n"
    )
    rsu.chmod(0o755)
    ctx.host_python = str(rsu)
    results: list[StageResult] = []
    run_stages([Stage("live_vehicle", stage_live_vehicle)], ctx, results)
    assert results[0].status == FAILED
    assert "`splitrt vehicle` exited 1" in results[0].detail
    assert "RSU log: rsu-1: rsu serving resnet18 | listening tcp://127.0.0.1:5999" in results[0].detail
    assert len(host.started) == 1 and host.started[0].poll() is not None  # stopped by the stage itself


def test_emulated_vehicle_starts_without_a_previous_checks_records_or_journal(tmp_path):
    class VehicleHost:
        def run(self, argv, **kwargs):
            out = ctx.inside(argv[list(argv).index("--out") + 1])
            assert not out.exists() and not Path(f"{out}.journal").exists(), "stale files reached the vehicle"
            out.write_text(json.dumps({"index": 0}) + "\n")
            return ""

    ctx = make_ctx(tmp_path, VehicleHost())
    stale = ctx.inside(f"{RECORDS_DIR}/fixed.jsonl")
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"index": 7}) + "\n")
    Path(f"{stale}.journal").write_text("{}\n")
    assert run_emulated_vehicle(ctx, "tcp://127.0.0.1:1", "fixed", "fixed:6") == [{"index": 0}]


def test_wait_ready_returns_the_endpoint_or_names_the_failure(tmp_path):
    host = Host(echo=False)
    ctx = Context(repo=ROOT, rootfs=tmp_path / "rootfs", workdir=tmp_path, host=host, undo=Undo())

    def child(body: str, name: str):
        code = f"import sys, time; from splitrt.edge_runtime.lifecycle import StatusFile; s = StatusFile(sys.argv[1]); {body}"
        return start_host_process(ctx, [sys.executable, "-c", code, str(tmp_path / f"{name}.status")], f"{name}.log")

    proc = child("print('listening soon'); s.ready(endpoint='tcp://127.0.0.1:4242'); time.sleep(60)", "rsu")
    assert wait_ready(proc, tmp_path / "rsu.status", tmp_path / "rsu.log", 60)["endpoint"] == "tcp://127.0.0.1:4242"
    reported = child("s.error('no manifest at x'); raise SystemExit(1)", "bad")
    with pytest.raises(CommandFailed, match="failed to start: no manifest at x"):
        wait_ready(reported, tmp_path / "bad.status", tmp_path / "bad.log", 60)
    quits = child("print('bad --segments'); raise SystemExit(1)", "quits")
    with pytest.raises(CommandFailed, match="exited with 1 before it was ready: bad --segments"):
        wait_ready(quits, tmp_path / "quits.status", tmp_path / "quits.log", 60)
    assert clean_up(ctx).status == PASSED
    assert proc.poll() is not None


# ---- clean-up ---------------------------------------------------------------------------------------


def test_mounts_are_undone_in_reverse_when_a_later_stage_fails(tmp_path):
    host = FakeHost(fail_on="--no-build-isolation")
    ctx = make_ctx(tmp_path, host)
    ctx.workdir.mkdir()
    mount_rootfs(ctx)
    ctx.undo.push("rm workdir", lambda: __import__("shutil").rmtree(ctx.workdir))
    (ctx.inside(SRC)).mkdir(parents=True)
    stages = [Stage("install", stage_install), Stage("machine", stage_machine, ("install",))]
    results, interrupted = check(ctx, stages)
    assert not interrupted
    assert [(r.name, r.status) for r in results] == [
        ("install", FAILED),
        ("machine", SKIPPED),
        ("clean-up", PASSED),
    ]
    mounted = [c[-1] for c in host.commands if c[0] == "mount"]
    unmounted = [c[-1] for c in host.commands if c[0] == "umount"]
    assert len(mounted) == 4  # proc, cpuinfo over it, sys, dev
    assert unmounted == mounted[::-1]  # cpuinfo before the proc under it
    assert host.mounts == ["/", "/proc"]
    assert host.ended_all == 1
    assert not ctx.workdir.exists()


def test_clean_up_runs_on_ctrl_c_and_sweeps_foreign_mounts(tmp_path):
    host = FakeHost()
    ctx = make_ctx(tmp_path, host)
    partial = ctx.rootfs.with_name(ctx.rootfs.name + ".partial")

    def interrupted_debootstrap(ctx):
        # As if debootstrap's second stage had mounted proc and sys itself and then Ctrl-C came.
        host.mounts += [str(partial / "proc"), str(partial / "sys")]
        mount(ctx, ["--bind", "/dev"], ctx.inside("/dev"))
        raise KeyboardInterrupt

    results, interrupted = check(ctx, [Stage("rootfs", interrupted_debootstrap)])
    assert interrupted
    assert [(r.name, r.status) for r in results] == [("rootfs", FAILED), ("clean-up", PASSED)]
    assert results[0].detail == "interrupted"
    assert host.mounts == ["/", "/proc"]
    unmounted = [c[-1] for c in host.commands if c[0] == "umount"]
    assert unmounted == [str(ctx.inside("/dev")), str(partial / "sys"), str(partial / "proc")]


def test_clean_up_reports_what_it_could_not_undo(tmp_path):
    host = FakeHost()
    ctx = make_ctx(tmp_path, host)
    calls = []

    def failing():
        calls.append("failing")
        raise OSError("device busy")

    ctx.undo.push("first pushed", lambda: calls.append("first"))
    ctx.undo.push("fails", failing)
    ctx.undo.push("last pushed", lambda: calls.append("last"))
    result = clean_up(ctx)
    assert calls == ["last", "failing", "first"]  # every step tried, last in first out
    assert result.status == FAILED
    assert "fails: device busy" in result.detail


def test_remove_tree_refuses_a_tree_with_mounts(tmp_path):
    host = FakeHost()
    tree = tmp_path / "arm64-rootfs.partial"
    (tree / "dev").mkdir(parents=True)
    host.mounts.append(str(tree / "dev"))
    with pytest.raises(CommandFailed, match="refusing to delete"):
        remove_tree(host, tree)
    assert tree.exists()
    host.mounts.remove(str(tree / "dev"))
    remove_tree(host, tree)
    assert not tree.exists()


def test_real_host_ends_the_processes_it_started(tmp_path):
    host = Host(echo=False)
    ctx = Context(repo=ROOT, rootfs=tmp_path / "rootfs", workdir=tmp_path, host=host, undo=Undo())
    proc = start_host_process(
        ctx, [sys.executable, "-c", "import time; print('rsu up', flush=True); time.sleep(60)"], "rsu.log"
    )
    assert proc.poll() is None
    deadline = time.monotonic() + 30
    while "rsu up" not in (tmp_path / "rsu.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "rsu.log").read_text() == "rsu up\n"
    result = clean_up(ctx)
    assert result.status == PASSED, result.detail
    assert proc.poll() is not None  # ended by clean-up, not left behind
    assert host.run([sys.executable, "-c", "print('hi')"]) == "hi\n"
    with pytest.raises(CommandFailed, match="exited 3") as info:
        host.run([sys.executable, "-c", "print('out'); raise SystemExit(3)"])
    assert info.value.output == "out\n"
    with pytest.raises(CommandFailed, match="ran past"):
        host.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert host.end_all() == 0


@pytest.mark.skipif(platform.machine() == "aarch64", reason="on an aarch64 host the outcome depends on the board's CPU")
def test_device_machine_check_refuses_a_non_arm_host():
    # The device side on this x86 host: `machine` must refuse it (not aarch64), naming why.
    r = subprocess.run(
        [sys.executable, "-m", "splitrt.tools.arm.device", "machine"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    result = result_from_output(r.stdout)
    assert result is not None and result["ok"] is False
    assert "aarch64" in result["error"]
