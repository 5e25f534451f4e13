"""The experiment's shared slot clock.

Slot t of an experiment is the wall-clock interval [E + t tau, E + (t + 1) tau), E = the epoch
(seconds since 1970). Every process of an experiment (RSU, SVs, vehicles, the controller) must
agree on E; two ways to give it (``--start-at``):

- ``--start-at UNIX_S`` (or ``now+S``): given explicitly. On one machine every process reads the
  same CLOCK_REALTIME. On real boards this assumes synchronised clocks: NTP (chrony) keeps a LAN
  within ~1 ms, PTP (linuxptp, hardware timestamps) within microseconds; a board whose clock is
  off by d starts every slot d early or late.
- ``--start-at beacon``: wait for the experiment's retained slot beacon on MQTT
  (``splitrt/<exp>/slot``, splitrt.edge_runtime.experiment.telemetry) and take E from it. Whoever starts the
  experiment publishes the first beacon; the RSU republishes it at every slot boundary, so a
  board that joins late aligns too. The epoch is still wall-clock time (the same clock
  assumption), but nobody has to hand E to every board. Every beacon a process receives after
  the start yields ``beacon_lag_s`` = receive time - the slot start it announces, i.e. clock
  offset + broker latency, recorded so a skewed board shows.

Inside a process everything runs on ``time.perf_counter``: `SlotClock.perf_epoch()` converts the
epoch once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError

BEACON = "beacon"


@dataclass(frozen=True)
class SlotClock:
    """Epoch E (unix seconds) and slot length tau (seconds)."""

    epoch_unix_s: float
    slot_s: float

    def __post_init__(self) -> None:
        if not self.slot_s > 0:
            raise SplitrtError(f"slot length must be positive seconds, got {self.slot_s}")

    def perf_epoch(self) -> float:
        """The epoch on this process's perf_counter clock."""
        return time.perf_counter() + (self.epoch_unix_s - time.time())

    def slot_start_unix_s(self, slot: int) -> float:
        return self.epoch_unix_s + slot * self.slot_s

    def slot_at(self, unix_s: float) -> int:
        return int((unix_s - self.epoch_unix_s) // self.slot_s)

    def beacon(self, slot: int) -> dict[str, Any]:
        """The slot beacon's payload (telemetry kind ``slot``)."""
        return {
            "slot": int(slot),
            "epoch_unix_s": self.epoch_unix_s,
            "slot_s": self.slot_s,
            "slot_start_unix_s": self.slot_start_unix_s(slot),
        }


def parse_start_at(text: str | None) -> float | str | None:
    """``None`` (start now), ``beacon``, ``now+S`` or an absolute unix time in seconds."""
    if text is None or text == "":
        return None
    if text == BEACON:
        return BEACON
    try:
        if text.startswith("now+"):
            return time.time() + float(text[4:])
        return float(text)
    except ValueError:
        raise SplitrtError(f"--start-at must be UNIX_SECONDS, now+SECONDS or beacon, got {text!r}") from None


class BeaconWaiter:
    """Collects slot beacons (feed `on_beacon` from a telemetry subscriber) and hands out the
    epoch once one arrived; keeps the lag of every beacon seen after the epoch."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._clock: SlotClock | None = None
        self.lags_s: list[float] = []

    def on_beacon(self, msg: dict[str, Any]) -> None:
        try:
            clock = SlotClock(float(msg["epoch_unix_s"]), float(msg["slot_s"]))
        except (KeyError, TypeError, ValueError, SplitrtError):
            return
        now = time.time()
        if self._clock is None:
            self._clock = clock
            self._event.set()
        if "slot_start_unix_s" in msg and now >= clock.epoch_unix_s:
            lag = now - float(msg["slot_start_unix_s"])
            if lag < clock.slot_s:  # a retained beacon from long ago says nothing about the clock
                self.lags_s.append(lag)

    @property
    def clock(self) -> SlotClock | None:
        """The clock of the first beacon, or None before one arrived."""
        return self._clock

    def wait(self, timeout_s: float) -> SlotClock:
        if not self._event.wait(timeout_s):
            raise SplitrtError(f"no slot beacon within {timeout_s:g} s (is the experiment started and the broker up?)")
        assert self._clock is not None
        return self._clock
