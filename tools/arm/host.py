"""The host side of `make arm-check`: running commands, the mount and process tables, the undo stack.

`Host` starts every command in its own process group and tracks it until it exits, so a failed
or interrupted run can end whatever is still running; the tests replace it with a fake (no
mounts, no root). `Undo` holds the clean-up actions, run last-in first-out at the end of a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("arm-check")


class CommandFailed(Exception):
    """A command exited non-zero or ran past its timeout (the message has its output's tail)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


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
