"""Child processes of an experiment that never outlive it.

Each child runs in its own session (a terminal's Ctrl-C reaches only the orchestrator, which
stops the children in order) with ``PR_SET_PDEATHSIG = SIGKILL`` (Linux): if the orchestrator
dies, even by SIGKILL, the kernel kills its children too. ``ip netns exec`` execs the program in
place, so the flag carries over to the process inside the namespace. Output goes to
``<name>.out`` / ``<name>.err`` files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from edge_runtime.errors import SplitrtError

PR_SET_PDEATHSIG = 1
try:  # resolved here, not in the forked child (which must not take the loader's locks)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when its parent thread dies (Linux; no-op elsewhere)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Child:
    """One child process (see the module docstring)."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, *, cwd: Path | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        log_dir.mkdir(parents=True, exist_ok=True)
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
