"""`make arm-check`: the device side on 64-bit ARM, in an emulated Raspberry Pi (issue 8).

Run as root, on demand (not part of `make test`): ``tools/arm/check.sh`` or
``python -m splitrt.tools.arm.check [--model resnet18] [--fail-at STAGE]``. Stages, in order:

  host_export     (host) export the model's segments and compute the whole model's output on
                  this x86 host: the reference the ARM side must reproduce.
  binfmt          (host) mount binfmt_misc if absent and enable qemu-aarch64 (qemu-user-static).
  rootfs          build ONCE a minimal arm64 Debian bookworm (debootstrap) with python3 and a
                  venv holding pyproject.toml's base dependencies (the device set, no torch) from
                  PyPI, cached outside the repo at $SPLITRT_ARM_ROOTFS (default
                  /var/cache/splitrt/arm64-rootfs); later runs reuse it. Then mount proc (with a
                  Cortex-A72 /proc/cpuinfo bound over it: onnxruntime segfaults on qemu 7.2's
                  passed-through x86 one), sys and dev into it.
  install         copy this checkout in and `pip install` it WITHOUT extras; `pip check`.
  machine         (emulated) platform.machine() == aarch64, ARM cpuinfo, versions.
  torch_free      (emulated) every edge_runtime module imports; torch neither loaded nor installed.
  segments        (emulated) splitrt.edge_runtime.compute.segments.SegmentRunner on the host's export matches the
                  host's whole-model output (tools/arm/device.py DEFAULT_RTOL).
  policy_decision (host + emulated) the first on-device policy under policy/trained/ (default/
                  if present; FAILS if there is none) decides on seeded eq (53) observations on
                  the host and, with the installed package, inside: identical actions, q within
                  tools/arm/device.py DECISION_ATOL, torch not loaded.
  live_vehicle    `splitrt serve` (RSU, host Python, host export) on tcp://127.0.0.1:*, and
                  `splitrt vehicle --verify` of the rootfs venv inside (the chroot shares the
                  host's loopback) for VEHICLE_SLOTS slots, once with ``fixed:K`` (middle cut:
                  head on aarch64, tail on the x86 RSU) and once ``local``: every task recorded
                  once, all remote (remote compute > 0) resp. all local, every output verified
                  against the whole model. The RSU is stopped at the end, also on failure.

A stage whose prerequisite did not pass is "skipped". The exit status is 1 if any stage that
ran failed (or clean-up failed), 130 on Ctrl-C, else 0. Everything this run mounts or enables is
undone in reverse order at the end, also on failure, Ctrl-C or SIGTERM, and any process still
running inside the rootfs is ended; the last summary line says so.
Emulated compute is ~100x slower than a real Cortex-A72: this proves function, never timing.

Module level uses only the stdlib, so the orchestration runs with any Python 3.11+; the host
sides of host_export, policy_decision and live_vehicle run ``--host-python`` (default: this
interpreter), which needs torch for the export.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.lifecycle import read_status
from splitrt.edge_runtime.vehicle.journal import discard_run
from splitrt.tools.arm.device import DECISION_ATOL, DEFAULT_RTOL, RESULT_PREFIX

log = logging.getLogger("arm-check")

ROOTFS_ENV = "SPLITRT_ARM_ROOTFS"
DEFAULT_ROOTFS = Path("/var/cache/splitrt/arm64-rootfs")
MIRROR_ENV = "SPLITRT_ARM_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
#: Debian packages of the base rootfs (python3-venv brings ensurepip; ca-certificates for TLS).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
#: The Raspberry Pi 4's core; qemu reads QEMU_CPU from the environment of every emulated process.
QEMU_CPU = "cortex-a72"
HOST_TOOLS = ("debootstrap", "chroot", "mount", "umount", "update-binfmts", "qemu-aarch64-static")
APT_PACKAGES = "qemu-user-static binfmt-support debootstrap"

# Paths inside the rootfs (absolute as the emulated system sees them).
VENV = "/opt/splitrt-venv"
SRC = "/opt/splitrt-src"
CHECK_DIR = "/mnt/splitrt-check"  # the host's export + reference, bound read-only
BASE_MARKER = "/var/lib/splitrt-arm-check/base.json"
DEPS_MARKER = "/var/lib/splitrt-arm-check/deps.json"
ROOTFS_CA = "/etc/ssl/certs/splitrt-host-ca.crt"
RECORDS_DIR = "/tmp/splitrt-arm-check"  # the emulated vehicles' records

#: Where the repo ships on-device policies (splitrt.edge_runtime.decide.onnx_policy: POLICY_META + policy.onnx per dir).
POLICY_ROOT = "policy/trained"
POLICY_META = "policy.json"
#: live_vehicle: slots per vehicle run and their length. The emulated ResNet18 chain takes ~18 s,
#: so tasks queue on the vehicle whatever the slot; 5 s keeps the run short and the RSU's
#: allocation period sane. Only completion and correctness are checked, never a timing.
VEHICLE_SLOTS = 6
VEHICLE_SLOT_S = 5.0
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class CommandFailed(Exception):
    """A command exited non-zero or ran past its timeout (the message has its output's tail)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


# ---- pure parts --------------------------------------------------------------------------------


def cortex_a72_cpuinfo(n_cpus: int) -> str:
    """/proc/cpuinfo of a Raspberry Pi 4 (BCM2711, Cortex-A72 cores) with ``n_cpus`` processors.

    qemu 7.2 user mode hands the guest the host's x86 /proc/cpuinfo; onnxruntime's aarch64 build
    parses it for ARM fields, finds none and segfaults on import (ANCHORS.md). The fields it needs
    per processor are the implementer (0x41, Arm) and the part (0xd08, Cortex-A72). Use the host's
    CPU count so the file agrees with the host's /sys/devices/system/cpu, which the guest also sees.
    """
    if n_cpus < 1:
        raise ValueError(f"n_cpus must be >= 1, got {n_cpus}")
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n"
        for i in range(n_cpus)
    ]
    return "\n".join(blocks) + "\nHardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"


def device_requirements(pyproject_text: str) -> list[str]:
    """What the rootfs venv gets from PyPI: build-system requires + the base (device) dependencies.

    Raises ValueError if the base dependencies name torch: the device install must not carry it.
    """
    import tomllib

    data = tomllib.loads(pyproject_text)
    build = list(data.get("build-system", {}).get("requires", []))
    deps = list(data.get("project", {}).get("dependencies", []))
    heavy = [d for d in deps if d.replace("-", "_").lower().startswith(("torch", "torchvision"))]
    if heavy:
        raise ValueError(f"pyproject.toml's base dependencies name {heavy}: the device set must not include torch")
    return build + deps


def result_from_output(output: str) -> dict[str, Any] | None:
    """The JSON of the last ``ARM_CHECK_RESULT`` line a device check printed, or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def under(path: str, prefix: str | Path) -> bool:
    """Whether ``path`` is ``prefix`` or inside it (string paths, no symlink resolution)."""
    prefix = str(prefix).rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def parse_mountinfo(text: str) -> list[str]:
    """Mount points of /proc/self/mountinfo text, in mount order (octal escapes like \\040 decoded)."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(fields[4].encode().decode("unicode_escape"))
    return points


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def summarize(results: Sequence[StageResult], facts: dict[str, str] | None = None) -> tuple[str, int]:
    """The summary table and the exit status: 1 if any stage failed, else 0.

    A stage skipped because a prerequisite did not pass does not fail it by itself: the failed
    prerequisite already did.
    """
    lines = ["", "arm-check summary"]
    for r in results:
        lines.append(f"  {r.name:<16} {r.status.upper():<12} {r.seconds:7.1f} s  {r.detail}")
    for key, value in (facts or {}).items():
        lines.append(f"  {key}: {value}")
    failed = [r.name for r in results if r.status == FAILED]
    counts = {s: sum(r.status == s for r in results) for s in (PASSED, FAILED, SKIPPED)}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"result: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}; {tally}")
    return "\n".join(lines), 1 if failed else 0


def find_policy(repo: Path) -> Path:
    """The on-device policy the repo ships: POLICY_ROOT/default if it has one, else the first
    directory under POLICY_ROOT (sorted) holding a POLICY_META. CommandFailed if there is none."""
    root = repo / POLICY_ROOT
    found = sorted(p.parent for p in root.rglob(POLICY_META)) if root.is_dir() else []
    if not found:
        raise CommandFailed(
            f"no on-device policy under {root} (a directory with {POLICY_META} + policy.onnx): ship one, e.g. "
            f"`splitrt export-policy --run RUN --out {POLICY_ROOT}/default`"
        )
    default = root / "default"
    return default if default in found else found[0]


def compare_decisions(host: dict[str, Any], device: dict[str, Any], atol: float = DECISION_ATOL) -> str:
    """Check that the device made the host's decisions: the same action for every sample, the same
    valid-action set and q within ``atol`` * max(1, max |q_host|); a one-line detail, else CommandFailed.

    ``host`` and ``device`` are the results of tools/arm/device.py ``decision`` on one inputs file.
    """
    n = len(host["actions"])
    if device["models"] != host["models"] or len(device["actions"]) != n:
        raise CommandFailed(f"the device decided on other samples: {device['models']} vs the host's {host['models']}")
    differ = [b for b in range(n) if device["actions"][b] != host["actions"][b]]
    if differ:
        b = differ[0]
        ha, da = host["actions"][b], device["actions"][b]
        raise CommandFailed(
            f"actions differ on {len(differ)} of {n} samples; sample {b} ({host['models'][b]}): host "
            f"{host['machine']} chose {ha} (q {host['q'][b][ha]}), {device['machine']} chose {da} "
            f"(q {device['q'][b][da]}; its q of {ha}: {device['q'][b][ha]})"
        )
    worst, scale = 0.0, 1.0
    for b, (hq, dq) in enumerate(zip(host["q"], device["q"], strict=True)):
        if [v is None for v in hq] != [v is None for v in dq]:
            raise CommandFailed(f"sample {b}: the valid actions differ between host and device")
        for h, d in zip(hq, dq, strict=True):
            if h is not None:
                worst, scale = max(worst, abs(h - d)), max(scale, abs(h))
    if not worst <= atol * scale:
        raise CommandFailed(f"q differs by {worst:.3e} between host and device (> {atol:g} x {scale:.3g})")
    pairs = ", ".join(f"{c}@{j}" for c, j in zip(device["cuts"], device["nodes"], strict=True))
    return (
        f"{device['method']}: {n} decisions on {device['machine']} == {host['machine']} host: identical "
        f"actions (cut@node {pairs}); max |q diff| {worst:.1e} <= {atol * scale:.0e}; torch not loaded"
    )


def check_vehicle_records(
    records: Sequence[dict[str, Any]], *, n_tasks: int, outcome: str, cut: int, node: int | None
) -> str:
    """Check one vehicle run's records: every task exactly once, all with ``outcome`` at (cut,
    node), each output verified against the whole model, and, when remote, computed by the node
    (remote compute > 0). A one-line detail, else CommandFailed naming the first bad tasks."""
    ids = [r["task_id"] for r in records]
    if sorted(r["index"] for r in records) != list(range(n_tasks)) or len(set(ids)) != len(ids):
        raise CommandFailed(f"expected tasks 0..{n_tasks - 1} once each, got indices {[r['index'] for r in records]}")
    checks: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        (f"outcome {outcome}", lambda r: r["outcome"] == outcome),
        (f"cut {cut}, node {node}", lambda r: r["cut"] == cut and r["node"] == node),
        ("verified against the whole model", lambda r: r["verified"] is True),
    ]
    if outcome == "remote":
        checks.append(("remote compute > 0", lambda r: r["remote_compute_s"] > 0 and r["node_name"] is not None))
    else:
        checks.append(
            ("local compute > 0, none remote", lambda r: r["local_compute_s"] > 0 and r["remote_compute_s"] == 0)
        )
    for what, ok in checks:
        bad = [r for r in records if not ok(r)]
        if bad:
            shown = ", ".join(
                f"{r['task_id']} ({r['outcome']}, cut {r['cut']}, {r['reason'] or 'no reason'})" for r in bad[:3]
            )
            raise CommandFailed(f"{len(bad)} of {n_tasks} tasks not {what}: {shown}")
    max_err = max(r["max_abs_err"] for r in records)
    where = f"by {records[0]['node_name']}" if outcome == "remote" else "on the vehicle"
    return f"{n_tasks}/{n_tasks} {outcome} at cut {cut} {where}, all verified (max abs err {max_err:.1e})"


# ---- the host: commands, mounts, processes (one object so tests can fake it) -----------------------


class Host:
    """Runs commands in their own process groups and reads the mount and process tables.

    Every process it starts is tracked until it exits, so `end_all()` can end whatever is
    still running after a failure or Ctrl-C.
    """

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        timeout_s: float = 600,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        echo: bool | None = None,
    ) -> str:
        """Run ``argv`` to completion, streaming its output; its output, or CommandFailed."""
        argv = [str(a) for a in argv]
        echo = self.echo if echo is None else echo
        proc = self.start(argv, env=env, cwd=cwd)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            self.end(proc)

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    sys.stdout.write("    | " + line)
                    sys.stdout.flush()
            rc = proc.wait()
        except BaseException:
            self.end(proc)
            raise
        finally:
            timer.cancel()
            with self._lock:
                self._live.discard(proc)
        output = "".join(lines)
        if timed_out.is_set():
            raise CommandFailed(f"`{' '.join(argv)}` ran past {timeout_s:.0f} s and was ended", output)
        if rc != 0:
            tail = " | ".join(line.strip() for line in lines[-6:])
            raise CommandFailed(f"`{' '.join(argv)}` exited {rc}: {tail}", output)
        return output

    def start(
        self,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: Any = subprocess.PIPE,
    ) -> subprocess.Popen:
        """Start ``argv`` in its own session (so Ctrl-C reaches us, and we end its whole group)."""
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        with self._lock:
            self._live.add(proc)
        return proc

    def end(self, proc: subprocess.Popen, grace_s: float = 5.0) -> None:
        """End a process we started and its process group: SIGTERM, then SIGKILL after ``grace_s``."""
        if proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with self._lock:
            self._live.discard(proc)

    def end_all(self) -> int:
        """End every process started by this object that is still tracked; how many there were."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            self.end(proc)
        return len(live)

    def mountpoints(self) -> list[str]:
        return parse_mountinfo(Path("/proc/self/mountinfo").read_text())

    def processes_rooted_in(self, root: Path) -> list[int]:
        """Pids whose root directory is ``root`` or below it: processes started in our chroot."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                proc_root = os.readlink(entry / "root")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if under(proc_root, root):
                pids.append(int(entry.name))
        return pids

    def kill_pid(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Undo:
    """Clean-up actions, run last-in first-out, each once; every one is tried even if one fails."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def __len__(self) -> int:
        return len(self._actions)

    def run_all(self) -> list[str]:
        """Run every action; the errors, one line each."""
        errors = []
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
                log.info("undone: %s", what)
            except Exception as exc:
                errors.append(f"{what}: {exc}")
                log.error("clean-up step failed: %s: %s", what, exc)
        return errors


# ---- the run's context and the helpers stages share ------------------------------------------------


@dataclass
class Context:
    repo: Path
    rootfs: Path
    workdir: Path
    host: Host
    undo: Undo
    mirror: str = DEFAULT_MIRROR
    host_python: str = sys.executable
    model: str = "resnet18"
    rtol: float = DEFAULT_RTOL
    n_cpus: int = 2
    facts: dict[str, str] = field(default_factory=dict)

    def inside(self, path: str) -> Path:
        """Host path of ``path`` inside the rootfs."""
        return self.rootfs / path.lstrip("/")


def chroot_env() -> dict[str, str]:
    """The environment of every emulated process: explicit, not the host's (no host pip config)."""
    env = {
        "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "QEMU_CPU": QEMU_CPU,
        "PIP_CERT": ROOTFS_CA,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_INDEX_URL"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def mount(ctx: Context, options: Sequence[str], target: Path) -> None:
    """``mount OPTIONS TARGET``, with its unmount pushed on the undo stack."""
    if not target.exists():
        target.mkdir(parents=True)
    ctx.host.run(["mount", *options, target], timeout_s=60, echo=False)
    ctx.undo.push(f"umount {target}", lambda: unmount(ctx.host, target))


def unmount(host: Host, target: Path) -> None:
    """Unmount ``target`` if it is still mounted; lazily (and reported) if it stays busy."""
    if str(target) not in host.mountpoints():
        return
    try:
        host.run(["umount", target], timeout_s=60, echo=False)
    except CommandFailed as exc:
        host.run(["umount", "--lazy", target], timeout_s=60, echo=False)
        raise CommandFailed(f"{target} was busy and was detached lazily ({exc})") from None


def run_inside(ctx: Context, argv: Sequence[str | Path], *, timeout_s: float) -> str:
    """Run ``argv`` in the emulated system (chroot + qemu-aarch64 via binfmt), cwd /."""
    return ctx.host.run(["chroot", ctx.rootfs, *argv], env=chroot_env(), timeout_s=timeout_s)


def device_check(ctx: Context, *args: str, timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``python -m splitrt.tools.arm.device ARGS`` with the rootfs venv; its result JSON."""
    argv = [f"{VENV}/bin/python", "-m", "splitrt.tools.arm.device", *args]
    return check_result(lambda: run_inside(ctx, argv, timeout_s=timeout_s), args[0])


def host_check(ctx: Context, *args: str | Path, timeout_s: float = 600) -> dict[str, Any]:
    """Run ``python -m splitrt.tools.arm.device ARGS`` on the host (``ctx.host_python``); its result JSON."""
    argv = [ctx.host_python, "-m", "splitrt.tools.arm.device", *args]
    return check_result(lambda: ctx.host.run(argv, cwd=ctx.repo, timeout_s=timeout_s), str(args[0]))


def check_result(run: Callable[[], str], name: str) -> dict[str, Any]:
    """The passing result JSON of a check ``run`` prints, else CommandFailed with the check's error."""
    try:
        output = run()
    except CommandFailed as exc:
        result = result_from_output(exc.output)
        raise CommandFailed(result["error"] if result and "error" in result else str(exc)) from None
    result = result_from_output(output)
    if result is None or not result.get("ok"):
        raise CommandFailed(f"check {name} printed no passing result")
    return result


def start_host_process(ctx: Context, argv: Sequence[str | Path], log_name: str) -> subprocess.Popen:
    """Start a long-running host process (e.g. the RSU) that clean-up ends if it is still running.

    Its output goes to ``ctx.workdir / log_name`` (a pipe nobody reads would block it when full),
    unbuffered so its tail is current when an error quotes it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(ctx.workdir / log_name, "w") as log_file:
        proc = ctx.host.start(argv, cwd=ctx.repo, stdout=log_file, env=env)
    ctx.undo.push(f"end {' '.join(str(a) for a in argv[:4])} (pid {proc.pid})", lambda: ctx.host.end(proc))
    return proc


def log_tail(path: Path, n: int = 6) -> str:
    """The last ``n`` lines of a log file on one line ("" if it does not exist)."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return " | ".join(line.strip() for line in lines[-n:])


def wait_ready(proc: subprocess.Popen, status: Path, log_path: Path, timeout_s: float) -> dict:
    """The ``ready`` event ``proc`` wrote to its ``--status-file`` (splitrt.edge_runtime.lifecycle).

    CommandFailed (with the error it reported, or the log's tail) if it reports an error, exits
    first, or nothing comes in ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        events = read_status(status)
        if events:
            if events[0]["event"] == "ready":
                return events[0]
            raise CommandFailed(f"{log_path.name}: the process failed to start: {events[0]['message']}")
        tail = log_tail(log_path)
        if proc.poll() is not None:
            raise CommandFailed(f"{log_path.name}: the process exited {proc.returncode} before it was ready: {tail}")
        if time.monotonic() > deadline:
            raise CommandFailed(f"{log_path.name}: not ready within {timeout_s:.0f} s: {tail}")
        time.sleep(0.2)


def remove_tree(host: Host, path: Path) -> None:
    """``rm -rf path``, refused while anything is mounted at or below it (a bound /dev, say)."""
    mounted = [m for m in host.mountpoints() if under(m, path)]
    if mounted:
        raise CommandFailed(f"refusing to delete {path}: still mounted there: {', '.join(mounted)}")
    if path.exists():
        shutil.rmtree(path)


# ---- stages --------------------------------------------------------------------------------------


def stage_host_export(ctx: Context) -> str:
    """Export ``ctx.model`` on the host and compute the host's whole-model output (the reference)."""
    exports = ctx.workdir / "exports"
    ctx.host.run(
        [ctx.host_python, "-m", "splitrt.tools.cli.main", "export", "--model", ctx.model, "--out", exports],
        cwd=ctx.repo,
        timeout_s=900,
    )
    ctx.host.run(
        [
            ctx.host_python,
            "-m",
            "splitrt.tools.arm.device",
            "reference",
            "--segments",
            exports / ctx.model,
            "--out",
            ctx.workdir / "reference.npz",
        ],
        cwd=ctx.repo,
        timeout_s=600,
    )
    manifest = json.loads((exports / ctx.model / "manifest.json").read_text())
    return f"{ctx.model}: {len(manifest['segments'])} segments exported, host whole-model output saved"


def stage_binfmt(ctx: Context) -> str:
    """Make the kernel run aarch64 ELF files with qemu-aarch64-static (undone at the end)."""
    done = []
    if str(BINFMT_DIR) not in ctx.host.mountpoints():
        mount(ctx, ["-t", "binfmt_misc", "binfmt_misc"], BINFMT_DIR)
        done.append("mounted binfmt_misc")
    entry = BINFMT_DIR / BINFMT_ENTRY
    if not (entry.exists() and entry.read_text().startswith("enabled")):
        ctx.host.run(["update-binfmts", "--enable", BINFMT_ENTRY], timeout_s=60, echo=False)
        ctx.undo.push(
            f"update-binfmts --disable {BINFMT_ENTRY}",
            lambda: ctx.host.run(["update-binfmts", "--disable", BINFMT_ENTRY], timeout_s=60, echo=False),
        )
        done.append(f"enabled {BINFMT_ENTRY}")
    text = entry.read_text()
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        # Without the fix-binary flag the kernel looks the interpreter up inside the chroot.
        raise CommandFailed(f"{entry} lacks the F (fix-binary) flag ({flags!r}): reinstall qemu-user-static")
    qemu = ctx.host.run(["qemu-aarch64-static", "--version"], timeout_s=30, echo=False).splitlines()[0]
    ctx.facts["qemu"] = qemu
    return f"{', '.join(done) or 'already enabled'}; {qemu}; flags {flags}"


def build_base_rootfs(ctx: Context) -> None:
    """debootstrap a minimal arm64 bookworm into ROOTFS.partial, then rename it to ROOTFS."""
    partial = ctx.rootfs.with_name(ctx.rootfs.name + ".partial")
    remove_tree(ctx.host, partial)  # a failed earlier attempt
    partial.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the arm64 rootfs in %s (first run only; ~10 min under emulation)", partial)
    ctx.host.run(
        [
            "debootstrap",
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            partial,
            ctx.mirror,
        ],
        timeout_s=1800,
    )
    # The second stage runs arm64 binaries (dpkg, maintainer scripts) under qemu; it mounts proc
    # and sys itself and unmounts them on exit; the final sweep catches them if it is killed.
    ctx.host.run(["chroot", partial, "/debootstrap/debootstrap", "--second-stage"], env=chroot_env(), timeout_s=3600)
    marker = partial / BASE_MARKER.lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"suite": SUITE, "mirror": ctx.mirror, "packages": list(BASE_PACKAGES)}) + "\n")
    leftover = [m for m in ctx.host.mountpoints() if under(m, partial)]
    if leftover:
        raise CommandFailed(f"debootstrap left mounts under {partial}: {leftover}")
    partial.rename(ctx.rootfs)


def mount_rootfs(ctx: Context) -> None:
    """proc (with the Cortex-A72 cpuinfo bound over /proc/cpuinfo), sys (read-only) and dev."""
    cpuinfo = ctx.workdir / "cpuinfo"
    cpuinfo.write_text(cortex_a72_cpuinfo(ctx.n_cpus))
    mount(ctx, ["-t", "proc", "-o", "nosuid,nodev,noexec", "proc"], ctx.inside("/proc"))
    mount(ctx, ["--bind", cpuinfo], ctx.inside("/proc/cpuinfo"))
    mount(ctx, ["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs"], ctx.inside("/sys"))
    mount(ctx, ["--bind", "/dev"], ctx.inside("/dev"))


def ensure_device_deps(ctx: Context) -> str:
    """The rootfs venv with pyproject.toml's device set from PyPI; redone when that set changes."""
    requirements = device_requirements((ctx.repo / "pyproject.toml").read_text())
    marker = ctx.inside(DEPS_MARKER)
    if marker.exists() and json.loads(marker.read_text()).get("requirements") == requirements:
        return "device dependencies cached"
    # The host may reach PyPI through a TLS-inspecting proxy whose CA only the host's bundle has.
    if HOST_CA.exists():
        shutil.copyfile(HOST_CA, ctx.inside(ROOTFS_CA))
    resolv = ctx.inside("/etc/resolv.conf")
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    if not ctx.inside(f"{VENV}/bin/python").exists():
        run_inside(ctx, ["python3", "-m", "venv", VENV], timeout_s=900)
    run_inside(ctx, [f"{VENV}/bin/python", "-m", "pip", "install", *requirements], timeout_s=3600)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"requirements": requirements}) + "\n")
    return f"installed {len(requirements)} requirements from PyPI"


def stage_rootfs(ctx: Context) -> str:
    if ctx.rootfs.exists() and not ctx.inside(BASE_MARKER).exists():
        raise CommandFailed(f"{ctx.rootfs} exists but is no finished splitrt rootfs: remove it or set ${ROOTFS_ENV}")
    start = time.monotonic()
    built = not ctx.rootfs.exists()
    if built:
        build_base_rootfs(ctx)
    mount_rootfs(ctx)
    deps = ensure_device_deps(ctx)
    debian = ctx.inside("/etc/debian_version").read_text().strip()
    ctx.facts["debian"] = f"{debian} ({SUITE}, arm64)"
    how = f"built in {time.monotonic() - start:.0f} s" if built else "reused"
    return f"{ctx.rootfs} {how}; Debian {debian}; {deps}"


def project_files(repo: Path) -> list[str]:
    """Files of the checkout: tracked plus untracked-but-not-ignored (never venvs or exports)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def stage_install(ctx: Context) -> str:
    """Copy the checkout into the rootfs and pip-install it without extras (base deps only)."""
    src = ctx.inside(SRC)
    remove_tree(ctx.host, src)
    files = project_files(ctx.repo)
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ctx.repo / name, src / name)
    pip = [f"{VENV}/bin/python", "-m", "pip"]
    # No build isolation: setuptools came with the cached requirements, so nothing is downloaded
    # unless the base dependencies changed, which is exactly what should then be fetched.
    run_inside(ctx, [*pip, "install", "--no-build-isolation", SRC], timeout_s=1800)
    run_inside(ctx, [*pip, "check"], timeout_s=600)
    return f"{len(files)} files copied; `pip install {SRC}` (no extras) and `pip check` passed"


def stage_machine(ctx: Context) -> str:
    result = device_check(ctx, "machine", timeout_s=900)
    versions = result["versions"]
    ctx.facts["python"] = versions["python"]
    ctx.facts["device packages"] = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "python")
    return f"platform.machine() = {result['machine']}; QEMU_CPU={result['qemu_cpu']}; HWCAP {' '.join(result['hwcap'])}"


def stage_torch_free(ctx: Context) -> str:
    result = device_check(ctx, "torch-free", timeout_s=900)
    return f"{len(result['modules'])} edge_runtime modules + CLI verbs import without torch; torch not installed"


def bind_check_dir(ctx: Context) -> None:
    """Bind the run's work directory (host export + reference) read-only at CHECK_DIR, once."""
    if str(ctx.inside(CHECK_DIR)) not in ctx.host.mountpoints():
        mount(ctx, ["--bind", "-o", "ro", ctx.workdir], ctx.inside(CHECK_DIR))


def stage_segments(ctx: Context) -> str:
    """The host's export, bound read-only into the rootfs, run there and compared with the host."""
    bind_check_dir(ctx)
    result = device_check(
        ctx,
        "segments",
        "--segments",
        f"{CHECK_DIR}/exports/{ctx.model}",
        "--reference",
        f"{CHECK_DIR}/reference.npz",
        "--rtol",
        repr(ctx.rtol),
    )
    return (
        f"{result['model']}: {result['segments']} segments on aarch64 vs host whole model: rel err "
        f"{result['rel_err']:.1e} <= {result['rtol']:g}; top-1 equal {result['top1_same']}; "
        f"split at cut {result['split_cut']} == chain"
    )


def stage_policy_decision(ctx: Context) -> str:
    """The shipped on-device policy decides on aarch64 exactly as on the x86 host.

    The policy directory is copied into the bound work directory (not taken from SRC, where
    only git-visible files arrive); the host writes seeded observations, decides on them with its
    own onnxruntime, the emulated system decides on the same file with the installed package,
    and `compare_decisions` asserts identical actions and q within DECISION_ATOL.
    """
    policy = find_policy(ctx.repo)
    copy = ctx.workdir / "policy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(policy, copy)
    bind_check_dir(ctx)
    inputs = ctx.workdir / "decision-inputs.npz"
    host_check(ctx, "decision-inputs", "--policy", copy, "--out", inputs)
    host = host_check(ctx, "decision", "--policy", copy, "--inputs", inputs)
    device = device_check(
        ctx, "decision", "--policy", f"{CHECK_DIR}/policy", "--inputs", f"{CHECK_DIR}/decision-inputs.npz"
    )
    return f"{policy.relative_to(ctx.repo)} ({compare_decisions(host, device)})"


def run_emulated_vehicle(ctx: Context, endpoint: str, label: str, decider: str) -> list[dict[str, Any]]:
    """`splitrt vehicle` of the rootfs venv on the bound export against ``endpoint``; its records."""
    out = f"{RECORDS_DIR}/{label}.jsonl"
    discard_run(ctx.inside(out))  # a previous check's records and journal would be continued
    run_inside(
        ctx,
        [
            f"{VENV}/bin/splitrt", "vehicle", "--segments", f"{CHECK_DIR}/exports/{ctx.model}",
            "--edge", endpoint, "--slots", str(VEHICLE_SLOTS), "--slot-s", repr(VEHICLE_SLOT_S),
            "--decider", decider, "--timeout-s", "120", "--connect-s", "120", "--verify",
            "--id", f"arm-{label}", "--out", out,
        ],
        timeout_s=2400,
    )  # fmt: skip
    lines = ctx.inside(out).read_text().splitlines() if ctx.inside(out).exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def stage_live_vehicle(ctx: Context) -> str:
    """`splitrt vehicle` in the emulated system against `splitrt serve` (RSU) on the host.

    The RSU serves the host's export on 127.0.0.1 (the chroot shares the host's network
    namespace); the aarch64 vehicle runs the same export bound read-only, twice: ``fixed:K`` at
    the middle cut (head on aarch64, tail on the x86 RSU) and ``local``, both with ``--verify``
    (every output against the whole model on the vehicle). `check_vehicle_records` asserts the
    records. The RSU is stopped at the end, also on failure (and clean-up ends it regardless).
    """
    bind_check_dir(ctx)
    export = ctx.workdir / "exports" / ctx.model
    n_segments = len(json.loads((export / "manifest.json").read_text())["segments"])
    middle = n_segments // 2
    rsu_log = ctx.workdir / "rsu.log"
    rsu_status = ctx.workdir / "rsu.status"
    rsu_status.unlink(missing_ok=True)
    rsu = start_host_process(
        ctx,
        [
            ctx.host_python, "-m", "splitrt.tools.cli.main", "serve", "--segments", export, "--role", "rsu",
            "--bind", "tcp://127.0.0.1:*", "--slot-s", repr(VEHICLE_SLOT_S), "--status-file", rsu_status,
        ],
        rsu_log.name,
    )  # fmt: skip
    details = []
    try:
        endpoint = wait_ready(rsu, rsu_status, rsu_log, timeout_s=600)["endpoint"]
        try:
            for label, decider, outcome, cut, node in (
                ("fixed", f"fixed:{middle}", "remote", middle, 0),
                ("local", "local", "local", n_segments, None),
            ):
                records = run_emulated_vehicle(ctx, endpoint, label, decider)
                check = check_vehicle_records(records, n_tasks=VEHICLE_SLOTS, outcome=outcome, cut=cut, node=node)
                details.append(f"{decider}: {check}")
            if rsu.poll() is not None:
                raise CommandFailed(f"the RSU exited {rsu.returncode} during the run")
        except CommandFailed as exc:
            raise CommandFailed(f"{exc}; RSU log: {log_tail(rsu_log)}", exc.output) from None
    finally:
        ctx.host.end(rsu)
    return f"aarch64 vehicle -> x86 RSU {endpoint}: " + "; ".join(details) + f"; RSU stopped (exit {rsu.returncode})"


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]
    requires: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("host_export", stage_host_export),
    Stage("binfmt", stage_binfmt),
    Stage("rootfs", stage_rootfs, ("binfmt",)),
    Stage("install", stage_install, ("rootfs",)),
    Stage("machine", stage_machine, ("install",)),
    Stage("torch_free", stage_torch_free, ("install",)),
    Stage("segments", stage_segments, ("install", "host_export")),
    Stage("policy_decision", stage_policy_decision, ("install",)),
    Stage("live_vehicle", stage_live_vehicle, ("install", "host_export")),
)


def run_stages(
    stages: Sequence[Stage], ctx: Context, results: list[StageResult], *, fail_at: str | None = None
) -> None:
    """Run ``stages`` in order, appending one result each to ``results`` (KeyboardInterrupt passes)."""
    for stage in stages:
        status = {r.name: r.status for r in results}
        missing = [r for r in stage.requires if status.get(r) != PASSED]
        if missing:
            results.append(StageResult(stage.name, SKIPPED, f"needs {', '.join(missing)}"))
            continue
        log.info("stage %s", stage.name)
        start = time.monotonic()
        try:
            try:
                detail, state = stage.run(ctx), PASSED
            except KeyboardInterrupt:
                results.append(StageResult(stage.name, FAILED, "interrupted", time.monotonic() - start))
                raise
            if stage.name == fail_at:
                detail, state = f"deliberate failure after the stage ran (--fail-at {fail_at})", FAILED
        except Exception as exc:
            detail, state = f"{type(exc).__name__}: {exc}", FAILED
            log.debug("stage %s failed", stage.name, exc_info=True)
        results.append(StageResult(stage.name, state, detail, time.monotonic() - start))
        log.info("stage %s: %s", stage.name, state)


def clean_up(ctx: Context, extra_roots: Sequence[Path] = ()) -> StageResult:
    """End our processes, undo every mount/binfmt change, sweep what remains under the rootfs."""
    start = time.monotonic()
    errors: list[str] = []
    roots = [ctx.rootfs, ctx.rootfs.with_name(ctx.rootfs.name + ".partial"), *extra_roots]
    ended = ctx.host.end_all()
    stray = [pid for root in roots for pid in ctx.host.processes_rooted_in(root)]
    for pid in stray:
        ctx.host.kill_pid(pid)
    n_undo = len(ctx.undo)
    errors += ctx.undo.run_all()
    # Mounts nobody registered: debootstrap's own proc/sys when it was killed mid-way.
    for point in reversed(ctx.host.mountpoints()):
        if any(under(point, root) for root in roots):
            try:
                unmount(ctx.host, Path(point))
                log.info("swept mount %s", point)
            except Exception as exc:
                errors.append(f"umount {point}: {exc}")
    left_mounts = [m for m in ctx.host.mountpoints() if any(under(m, root) for root in roots)]
    left_procs = [pid for root in roots for pid in ctx.host.processes_rooted_in(root)]
    if left_mounts:
        errors.append(f"still mounted: {', '.join(left_mounts)}")
    if left_procs:
        errors.append(f"still running in the rootfs: pids {left_procs}")
    detail = (
        f"{n_undo} step(s) undone, {ended} process group(s) and {len(stray)} stray process(es) ended; "
        f"nothing left mounted under {ctx.rootfs} or running in it"
    )
    if errors:
        return StageResult("clean-up", FAILED, "; ".join(errors), time.monotonic() - start)
    return StageResult("clean-up", PASSED, detail, time.monotonic() - start)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C, so the clean-up in `finally` runs."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig in old:
        signal.signal(sig, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def check(
    ctx: Context, stages: Sequence[Stage] = STAGES, *, fail_at: str | None = None
) -> tuple[list[StageResult], bool]:
    """Run the stages, then always the clean-up; the results (clean-up last) and whether interrupted."""
    results: list[StageResult] = []
    interrupted = False
    try:
        with interrupts_as_keyboard_interrupt():
            run_stages(stages, ctx, results, fail_at=fail_at)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: cleaning up")
    finally:
        with interrupts_ignored():
            cleanup = clean_up(ctx)
    results.append(cleanup)
    return results, interrupted


def rootfs_path(value: str | None) -> Path:
    path = Path(value) if value else DEFAULT_ROOTFS
    if not path.is_absolute() or path.resolve() == Path("/") or len(path.resolve().parts) < 3:
        raise SystemExit(f"arm-check: ${ROOTFS_ENV}={value!r} must be an absolute path at least two levels deep")
    return path.resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/arm/check.sh",
        description=__doc__.split("\n\n")[0],
        epilog="Stages: " + ", ".join(s.name for s in STAGES),
    )
    parser.add_argument("--model", default="resnet18", help="torchvision model to export and run (default resnet18)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="cross-architecture parity tolerance")
    parser.add_argument(
        "--host-python", default=sys.executable, help="Python with the project's export extra (torch) for host_export"
    )
    parser.add_argument(
        "--fail-at",
        choices=[s.name for s in STAGES],
        help="mark this stage failed after it ran, to check that clean-up happens on failure",
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo the commands' output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="arm-check %(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"
    )
    if os.geteuid() != 0:
        print("arm-check: must run as root (debootstrap, chroot, mount, binfmt_misc)", file=sys.stderr)
        return 1
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"arm-check: missing {', '.join(missing)}: apt-get install -y {APT_PACKAGES}", file=sys.stderr)
        return 1
    rootfs = rootfs_path(os.environ.get(ROOTFS_ENV))
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    lock_file = open(rootfs.with_name(rootfs.name + ".lock"), "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"arm-check: another arm-check is using {rootfs}", file=sys.stderr)
        return 1
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="splitrt-arm-check-", dir=rootfs.parent))
    undo = Undo()
    undo.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir))
    ctx = Context(
        repo=Path(__file__).resolve().parents[2],
        rootfs=rootfs,
        workdir=workdir,
        host=Host(echo=not args.quiet),
        undo=undo,
        mirror=os.environ.get(MIRROR_ENV, DEFAULT_MIRROR),
        host_python=args.host_python,
        model=args.model,
        rtol=args.rtol,
        n_cpus=os.cpu_count() or 1,
    )
    results, interrupted = check(ctx, fail_at=args.fail_at)
    ctx.facts["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    ctx.facts["total"] = f"{time.monotonic() - started:.0f} s"
    text, code = summarize(results, ctx.facts)
    print(text, flush=True)
    if interrupted:
        print("arm-check: interrupted (Ctrl-C / SIGTERM)", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
