"""Stop a long-running process (edge node, vehicle) cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

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
