"""One task of a client vehicle (`Task`): everything it carries from its arrival to its record.

A task is created by the vehicle at its arrival, then passes between the parts: the decision fills
in (cut, node), the local worker (splitrt.edge_runtime.vehicle.local) the head tensor and its
encoding, the link (splitrt.edge_runtime.vehicle.link) the deadline and the reply, and the ledger
(splitrt.edge_runtime.vehicle.records) turns it into its one record. ``d`` collects the duration
components (splitrt.edge_runtime.formats.records.DURATION_KEYS) as they are measured; times are
``time.perf_counter()`` unless named ``_unix``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from splitrt.edge_runtime.link.wire import Encoded, Header


@dataclass
class Task:
    """One task from its arrival to its record; fields are filled in as it goes (module docstring)."""

    index: int
    id: str
    slot: int
    x_index: int
    arrival: float  # perf_counter
    arrival_unix: float
    cut: int = 0
    node: int | None = None
    observation: list[float] = field(default_factory=list)
    q_loc_flops: float = 0.0
    backlog_age_s: list[float | None] = field(default_factory=list)
    encoding: str = "fp32"
    head: np.ndarray | None = None  # the tensor at the cut (kept for a fallback)
    encoded: Encoded | None = None
    bytes: int = 0
    t_encoded: float = 0.0
    t_decided: float = 0.0
    deadline: float = 0.0
    t_fail: float = 0.0
    outcome: str = ""
    reason: str = ""
    reply: Header | None = None
    output: np.ndarray | None = None
    d: dict[str, float] = field(default_factory=dict)  # duration components
