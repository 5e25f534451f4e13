"""Command-line flags that more than one verb takes, each defined once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_live_flags(group: argparse._ArgumentGroup, *, stats: str) -> None:
    """The flags a node or a vehicle takes part in a live experiment with (``splitrt serve``,
    ``splitrt vehicle``); ``stats`` is the help of ``--stats``."""
    group.add_argument("--telemetry", default=None, metavar="mqtt://HOST:PORT", help="MQTT broker for telemetry")
    group.add_argument("--experiment", default="default", help="experiment id (the topics' <exp>)")
    group.add_argument(
        "--start-at",
        default=None,
        metavar="UNIX_S|now+S|beacon",
        help="slot 0 starts at this wall-clock time, or at the epoch of the experiment's slot beacon (MQTT)",
    )
    group.add_argument("--work", type=Path, default=None, help="work table: per-cut FLOPs in the simulator's unit")
    group.add_argument("--stats", type=Path, default=None, metavar="FILE", help=stats)
    group.add_argument(
        "--status-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="append JSON status lines here: {event: ready, ...} once ready, {event: error, message} if the "
        "start fails (splitrt.edge_runtime.lifecycle.StatusFile)",
    )
