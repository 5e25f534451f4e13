"""Real-process fixtures: `splitrt serve` / `splitrt vehicle` as subprocesses on loopback ports.

Every process is started in its own session and killed (with its group) when the test ends,
whatever happened; every wait has a hard timeout, so a hang is a failure, never a stuck suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from splitrt.edge_runtime.compute.profile import measure
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.lifecycle import wait_ready
from splitrt.edge_runtime.link.wire import Header, pack, unpack

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it; tiny race until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One `python -m splitrt.tools.cli.main ...` subprocess with its output in files."""

    def __init__(self, name: str, args: list[str], workdir: Path, prefix: list[str] | tuple = ()) -> None:
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        self.status = workdir / f"{name}.status"
        self.status.unlink(missing_ok=True)
        if args and args[0] in ("serve", "vehicle"):
            args = [*args, "--status-file", str(self.status)]
        # Appended, so a process restarted under the same name keeps its earlier output.
        with self.out.open("a") as out, self.err.open("a") as err:
            self.popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "splitrt.tools.cli.main", "--log-level", "INFO", *args],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, needle: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.stdout():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {needle!r} after {timeout_s} s:\n{self.stderr()[-3000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict:
        """The process's ``ready`` status event (`splitrt serve` / `vehicle` ``--status-file``)."""
        return wait_ready(self.status, self.popen.poll, timeout_s, self.name, lambda: self.stderr()[-3000:])

    def wait(self, timeout_s: float) -> int:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout_s} s:\n{self.stderr()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)


class Procs:
    """Starts servers and vehicles; `stop_all` kills whatever is still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.items: list[Proc] = []

    def start(self, name: str, *args: str, prefix: list[str] | tuple = ()) -> Proc:
        proc = Proc(name, [str(a) for a in args], self.workdir, prefix)
        self.items.append(proc)
        return proc

    def server(
        self,
        name: str,
        segments: list[Path],
        *extra: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        prefix: list[str] | tuple = (),
    ) -> tuple[Proc, str]:
        """`splitrt serve` on ``host:port`` (``prefix``: e.g. ``ip netns exec NS`` to run it there)."""
        endpoint = f"tcp://{host}:{port or free_port()}"
        proc = self.start(
            name, "serve", "--segments", *segments, "--bind", endpoint, "--name", name, *extra, prefix=prefix
        )
        proc.wait_ready()
        return proc, endpoint

    def vehicle(
        self, name: str, segments: Path, edges: list[str], *extra: str, prefix: list[str] | tuple = ()
    ) -> tuple[Proc, Path]:
        """`splitrt vehicle` writing ``WORKDIR/NAME.jsonl`` (and its journal ``NAME.jsonl.journal``)."""
        out = self.workdir / f"{name}.jsonl"
        edge_args = [a for e in edges for a in ("--edge", e)]
        proc = self.start(
            name,
            "vehicle",
            "--segments",
            segments,
            *edge_args,
            "--id",
            name,
            "--out",
            out,
            "--verify",
            *extra,
            prefix=prefix,
        )
        return proc, out

    def stop_all(self) -> None:
        for proc in self.items:
            proc.kill()


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def procs(tmp_path):
    manager = Procs(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def request_state(endpoint: str, timeout_ms: int = 10_000) -> dict:
    """A state request over the wire, as a controller or telemetry process would send it."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(pack(Header(kind="state_request")))
        assert sock.poll(timeout_ms), f"no state reply from {endpoint}"
        header, _ = unpack(sock.recv_multipart())
        assert header.kind == "state", header
        return header.state
    finally:
        sock.close(0)


@pytest.fixture(scope="session")
def small_models(exports) -> dict[str, Path]:
    """Three small DNN types for real-process runs (exports shared with tests/)."""
    return {name: exports.get(name).directory for name in ("resnet18", "alexnet", "mobilenet_v2")}


#: The two models of the small live runs (`splitrt hil` tests).
HIL_MODELS = ("resnet18", "mobilenet_v2")


@pytest.fixture(scope="session")
def hil_exports(exports, tmp_path_factory) -> Path:
    """The session's exports of the two models, linked into a directory of their own with a quick
    profile (runs with --keep-profiles; the demo profiles properly)."""
    root = tmp_path_factory.mktemp("hil_exports")
    for model in HIL_MODELS:
        src = exports.get(model).directory
        dst = root / model
        dst.mkdir()
        for f in src.iterdir():
            if f.suffix == ".onnx":
                (dst / f.name).symlink_to(f)
        (dst / "manifest.json").write_text((src / "manifest.json").read_text())
        prof = measure(Manifest.load(dst), threads=1, runs=3, warmup=1)
        (dst / "profile.json").write_text(json.dumps(prof))
    return root


def finish(proc: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"splitrt hil still running after {timeout_s} s:\n{err[-3000:]}") from None
    return proc.returncode, out, err
