"""The run's context of `make arm-check` and the helpers the stages share.

`Context` carries the paths, the `Host` and the undo stack of one run. The helpers mount into the
rootfs (each mount's unmount pushed on the undo stack), run commands in the emulated system
(chroot + qemu-aarch64 via binfmt) and on the host, read the result line of a
tools/arm/device.py check, and start and wait for long-running host processes (the RSU).
Also here: where things live, on the host (the cached rootfs, the Debian mirror) and inside
the rootfs (the venv, the copied checkout, the bound work directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.lifecycle import wait_ready as lifecycle_wait_ready
from splitrt.tools.arm.device import DEFAULT_RTOL, RESULT_PREFIX
from splitrt.tools.arm.host import CommandFailed, Host, Undo, under

ROOTFS_ENV = "SPLITRT_ARM_ROOTFS"
DEFAULT_ROOTFS = Path("/var/cache/splitrt/arm64-rootfs")
MIRROR_ENV = "SPLITRT_ARM_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: The Raspberry Pi 4's core; qemu reads QEMU_CPU from the environment of every emulated process.
QEMU_CPU = "cortex-a72"

# Paths inside the rootfs (absolute as the emulated system sees them).
VENV = "/opt/splitrt-venv"
SRC = "/opt/splitrt-src"
CHECK_DIR = "/mnt/splitrt-check"  # the host's export + reference, bound read-only
BASE_MARKER = "/var/lib/splitrt-arm-check/base.json"
DEPS_MARKER = "/var/lib/splitrt-arm-check/deps.json"
ROOTFS_CA = "/etc/ssl/certs/splitrt-host-ca.crt"
RECORDS_DIR = "/tmp/splitrt-arm-check"  # the emulated vehicles' records


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


def result_from_output(output: str) -> dict[str, Any] | None:
    """The JSON of the last ``ARM_CHECK_RESULT`` line a device check printed, or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


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
    try:
        return lifecycle_wait_ready(status, proc.poll, timeout_s, log_path.name, lambda: log_tail(log_path), 0.2)
    except SplitrtError as exc:
        raise CommandFailed(str(exc)) from None


def remove_tree(host: Host, path: Path) -> None:
    """``rm -rf path``, refused while anything is mounted at or below it (a bound /dev, say)."""
    mounted = [m for m in host.mountpoints() if under(m, path)]
    if mounted:
        raise CommandFailed(f"refusing to delete {path}: still mounted there: {', '.join(mounted)}")
    if path.exists():
        shutil.rmtree(path)
