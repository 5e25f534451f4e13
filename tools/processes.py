"""Child processes of an experiment that never outlive it.

Each child runs in its own session (a terminal's Ctrl-C reaches only the orchestrator, which
stops the children in order) with ``PR_SET_PDEATHSIG = SIGKILL`` (Linux): if the orchestrator
dies, even by SIGKILL, the kernel kills its children too. ``ip netns exec`` execs the program in
place, so the flag carries over to the process inside the namespace. Output goes to
``<name>.out`` / ``<name>.err`` files.

Start-up is read from the child's status file, not from its output: with ``status=True`` the child
gets ``--status-file <name>.status`` (`splitrt serve` / `splitrt vehicle`, splitrt.edge_runtime.lifecycle)
and `Child.wait_ready` returns its ``ready`` event, or raises with the error it reported, its exit
code, or the timeout. Every path in a child's command line is absolute (the harnesses resolve them
before they cross the process boundary), and the child inherits the caller's working directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.lifecycle import wait_ready

PR_SET_PDEATHSIG = 1
try:  # resolved here, not in the forked child (which must not take the loader's locks)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """preexec_fn: the child gets ``sig`` when its parent thread dies (Linux; no-op elsewhere).
    SIGKILL for processes with nothing to clean up; SIGTERM for a child harness (a `splitrt hil`
    under `splitrt bench`) that must take down its own namespaces first."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit(143) in the main thread: a harness's ``finally`` blocks stop its
    children in order (the default action would end it at once, leaving that to PDEATHSIG)."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def cli_command(*args: str) -> list[str]:
    """The argv that runs ``splitrt ARGS`` with this interpreter (any working directory)."""
    return [sys.executable, "-m", "splitrt.tools.cli.main", *args]


def run(cmd: list[str], *, death_signal: int = signal.SIGKILL, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` whose child gets ``death_signal`` if this process dies (``PR_SET_PDEATHSIG``)."""
    return subprocess.run(cmd, preexec_fn=functools.partial(die_with_parent, death_signal), **kwargs)


class Child:
    """One child process (see the module docstring)."""

    def __init__(
        self, name: str, cmd: list[str], log_dir: Path, *, cwd: Path | None = None, status: bool = False
    ) -> None:
        self.name = name
        log_dir = Path(log_dir).resolve()
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        self.status = log_dir / f"{name}.status" if status else None
        log_dir.mkdir(parents=True, exist_ok=True)
        if self.status is not None:
            self.status.unlink(missing_ok=True)
            cmd = [*cmd, "--status-file", str(self.status)]
        self.cmd = cmd
        with self.out.open("w") as out, self.err.open("w") as err:
            self.popen = subprocess.Popen(
                cmd, cwd=cwd, stdout=out, stderr=err, start_new_session=True, preexec_fn=die_with_parent
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr_tail(self, n: int = 2000) -> str:
        return self.err.read_text(errors="replace")[-n:]

    def wait_for(self, needle: str, timeout_s: float) -> None:
        """Until ``needle`` appears in the child's stdout; a child that exits or hangs is an error."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.stdout():
            if not self.alive():
                raise SplitrtError(
                    f"{self.name} exited with {self.popen.returncode} before {needle!r}: {self.stderr_tail(800)}"
                )
            if time.monotonic() > deadline:
                raise SplitrtError(f"{self.name}: no {needle!r} within {timeout_s:g} s: {self.stderr_tail(800)}")
            time.sleep(0.02)

    def wait_ready(self, timeout_s: float) -> dict:
        """The child's ``ready`` status event (splitrt.edge_runtime.lifecycle.wait_ready)."""
        if self.status is None:
            raise SplitrtError(f"{self.name}: started without a status file")
        return wait_ready(self.status, self.popen.poll, timeout_s, self.name, lambda: self.stderr_tail(800))

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, grace_s: float = 10.0) -> int:
        """SIGTERM to the child's process group, SIGKILL after ``grace_s``; the exit code."""
        if self.alive():
            self._signal(signal.SIGTERM)
            if self.wait(grace_s) is None:
                self.kill()
        return self.popen.wait()

    def kill(self) -> None:
        if self.alive():
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
