"""Helpers for in-process edge-server tests: tiny exports, a gated runner, a server thread, a client."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import zmq

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.link.wire import unpack
from splitrt.edge_runtime.node.server import EdgeServer, ServedModel, ServerConfig
from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model, residual_model

TIMEOUT_MS = 20_000


def tiny_exports(root: Path) -> dict[str, Manifest]:
    """The tiny test graphs exported with op granularity; ``chain_other_export`` is the same model
    id with other weights (another digest)."""
    chain, _ = segment_model(chain_model(), root / "chain", name="chain", source={}, granularity="op")
    res, _ = segment_model(residual_model(), root / "res", name="res", source={}, granularity="op")
    other, _ = segment_model(chain_model(seed=1), root / "chain_b", name="chain", source={}, granularity="op")
    return {"chain": chain, "res": res, "chain_other_export": other}


class GatedRunner:
    """A SegmentRunner whose runs wait for ``gate`` (deterministic queue build-up), or raise."""

    def __init__(self, manifest, fail: bool = False) -> None:
        self.inner = SegmentRunner(manifest)
        self.manifest = manifest
        self.n_segments = manifest.n_segments
        self.gate = threading.Event()
        self.entered = threading.Event()  # set once a worker is inside run(): the task is "running"
        self.fail = fail

    def run(self, x, start=0, stop=None):
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.fail:
            raise RuntimeError("injected failure")
        return self.inner.run(x, start, stop)


def served(manifest, runner=None, tail_s=0.01) -> ServedModel:
    tail = np.linspace(tail_s, 0.0, manifest.n_cuts)
    return ServedModel(manifest, runner or SegmentRunner(manifest), tail, manifest.total_flops / tail_s, "test")


class Node:
    """An EdgeServer running in a thread of this process."""

    def __init__(self, models, security=None, **config) -> None:
        config.setdefault("bind", "tcp://127.0.0.1:*")
        self.server = EdgeServer(ServerConfig(**config), models, security=security)
        self.endpoint = self.server.bind()
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert self.server.wait_ready(10)

    def close(self) -> None:
        self.server.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


class Client:
    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames) -> None:
        self.sock.send_multipart(frames, copy=False)

    def recv(self):
        assert self.sock.poll(TIMEOUT_MS), "no reply from the server"
        return unpack(self.sock.recv_multipart(copy=False))

    def request(self, frames):
        self.send(frames)
        return self.recv()

    def close(self) -> None:
        self.sock.close(0)


def wait_until(condition, timeout_s: float = 20.0) -> None:
    """Poll ``condition`` until true; a hang becomes a failure."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)
