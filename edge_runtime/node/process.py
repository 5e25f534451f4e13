"""An edge node as a process: apply the node's speed emulation, load its models (paced, profiled
or calibrated, splitrt.edge_runtime.node.models), bind the ROUTER socket, serve until stopped."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.compute.speed import SpeedEmulation
from splitrt.edge_runtime.formats.work import WorkTable
from splitrt.edge_runtime.link.security import ServerSecurity
from splitrt.edge_runtime.node.config import ServerConfig
from splitrt.edge_runtime.node.models import load_models, reference_pace
from splitrt.edge_runtime.node.server import EdgeServer


def serve(
    config: ServerConfig,
    dirs: Sequence[str | Path],
    *,
    on_ready=None,
    security: ServerSecurity | None = None,
    work: WorkTable | None = None,
    on_slot: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    before_run: Callable[[EdgeServer], ServerConfig | None] | None = None,
) -> int:
    """Load the models (under the node's speed emulation), bind, serve until stopped.

    ``before_run(server)`` runs after the socket is bound and ``on_ready`` was called; it may
    return a new config (e.g. with the epoch a slot beacon brought, splitrt.edge_runtime.experiment.clock)."""
    cpus = min(config.threads * config.workers, os.cpu_count() or 1)
    emulation = SpeedEmulation(config.speed_factor, config.speed_mode, cpus=cpus)
    runner_factor = emulation.apply()
    try:
        pace = None
        if emulation.applied_mode == "pace":
            pace = reference_pace(dirs, config.speed_profile_dir, config.speed_factor)
        models = load_models(
            dirs,
            threads=config.threads,
            providers=config.providers,
            speed_factor=runner_factor,
            emulation=emulation.describe(),
            calibration_runs=config.calibration_runs,
            pace=pace,
        )
        server = EdgeServer(config, models, speed=emulation.describe(), security=security, work=work, on_slot=on_slot)
        endpoint = server.bind()
        if on_ready is not None:
            on_ready(server, endpoint)
        if before_run is not None:
            server.config = before_run(server) or server.config
        return server.run()
    finally:
        emulation.close()
