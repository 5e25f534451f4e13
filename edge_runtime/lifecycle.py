"""A long-running process (edge node, vehicle): stopping cleanly on SIGINT / SIGTERM, and telling
whoever started it that it is ready (or why it failed to start) in a machine-readable status file."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError

log = logging.getLogger(__name__)


def stop_on_signals(stop: Callable[[], None], message: str) -> Callable[[], None]:
    """Call ``stop()`` on SIGINT/SIGTERM (logging ``message`` with the signal number) while the
    returned ``restore()`` has not run; a no-op outside the main thread, where Python cannot
    install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        log.info("%s (signal %d)", message, signum)
        stop()

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


# ---- start-up status -------------------------------------------------------------------------
#: Version of the status file's lines.
STATUS_FORMAT = 1


class StatusFile:
    """Where a process tells whoever started it how its start-up went, in JSON lines, not prose.

    ``splitrt serve`` and ``splitrt vehicle`` take ``--status-file PATH``: once the process is ready
    to work (a node bound and calibrated, a vehicle warmed up and connected) it appends
    ``{"format": 1, "event": "ready", "pid": ..., ...}`` (a node adds its ``endpoint``); if the
    start fails it appends ``{"format": 1, "event": "error", "message": ...}`` instead (the same
    one-line message the CLI prints). Each line is written with one ``write`` and flushed, so a
    reader polling the file never sees half a line. ``read_status`` is the reader's side.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None

    def ready(self, **info: Any) -> None:
        self._write({"event": "ready", **info})

    def error(self, message: str) -> None:
        self._write({"event": "error", "message": message})

    def _write(self, event: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({"format": STATUS_FORMAT, "pid": os.getpid(), **event}) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()


def read_status(path: str | Path) -> list[dict[str, Any]]:
    """The complete events of a status file so far (none if it does not exist yet).

    A line that is not a status event of this format is an error naming the file and line: the
    harness must not mistake a broken child for a slow one."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break  # being written
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise SplitrtError(f"{path}:{n}: not a JSON status line: {line.strip()[:80]!r}") from None
        if (
            not isinstance(event, dict)
            or event.get("format") != STATUS_FORMAT
            or event.get("event")
            not in (
                "ready",
                "error",
            )
        ):
            raise SplitrtError(f"{path}:{n}: not a format-{STATUS_FORMAT} status event: {line.strip()[:80]!r}")
        events.append(event)
    return events


def wait_ready(
    path: str | Path,
    exit_code: Callable[[], int | None],
    timeout_s: float,
    name: str,
    detail: Callable[[], str] = lambda: "",
    poll_s: float = 0.02,
) -> dict[str, Any]:
    """Poll the status file ``path`` of process ``name`` until its first event: the ``ready``
    event, or SplitrtError with the error it reported, its exit code (``exit_code()`` not None)
    or the timeout; ``detail()`` (e.g. its log's tail) ends the message. The one reader loop of
    every harness (tools.processes, the arm check, the real-process tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = read_status(path)
        if events:
            if events[0]["event"] == "ready":
                return events[0]
            raise SplitrtError(f"{name} failed to start: {events[0]['message']}")
        code = exit_code()
        if code is not None:
            raise SplitrtError(f"{name} exited with {code} before it was ready: {detail()}")
        if time.monotonic() > deadline:
            raise SplitrtError(f"{name}: not ready within {timeout_s:g} s: {detail()}")
        time.sleep(poll_s)
