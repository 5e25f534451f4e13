"""Edge-runtime benchmarks: the tensor link, the runtime's own overhead, the edge server's
throughput, the payload encodings and the device speed emulation.

Figures (benchmark / figure / params):
- ``link`` / ``goodput_over_raw`` / bytes: tensor bytes per second of splitrt's link (DEALER ->
  ROUTER, JSON header + zero-copy payload, validated and decoded with ``np.frombuffer``, a small
  result reply) over raw pyzmq zero-copy REQ/REP with the same payload and a same-size reply, on
  loopback; both echo servers live in one child process, round trips of the two interleaved
  (goal >= 0.9). Also ``goodput_mb_s`` and ``rtt_ms`` (median) for each side, and
  ``bare_over_raw``: a DEALER -> ROUTER echo with splitrt's frame layout (a header frame of the same size +
  the payload, identity frames) and no Python work at all, over the same raw REQ/REP: the ceiling
  any DEALER/ROUTER multipart protocol reaches in pyzmq on this host, measured in the same run;
  ``bare1_over_raw`` the same with one frame (payload only): the ceiling of a single-frame one.
- ``runtime_overhead`` / ``median_ms``, ``p95_ms`` / model, cut: per task, completion -
  (local compute + remote compute + wire time), from the records of a real ``splitrt vehicle``
  against a real ``splitrt serve`` with no queueing (one vehicle, slots longer than a task); wire
  time = the median raw pyzmq REQ/REP round trip for the cut's bytes, measured just before and
  after the run with the round trips ``WIRE_GAP_S`` apart, as isolated as the vehicle's tasks
  (goal <= 1 ms median). On a VM an idle core takes time to wake: back-to-back round trips are
  up to 2x faster than isolated ones, so ``wire_back_to_back_ms`` is reported beside ``wire_ms``.
- ``server_throughput`` / ``over_raw_ort`` / vehicles, model, cut: tasks per second a real
  ``splitrt serve`` (one worker, one thread) completes for 1, 4 and 16 closed-loop clients (each
  keeps one task in flight, like a vehicle offloading every task) over ONNX Runtime running the
  same tail segments back to back in one process; windows of the two alternate (goal >= 0.9 at
  saturation). Also ``tasks_per_s``.
- ``encoding`` / ``bytes_saved``, ``max_abs_err``, ``max_rel_err``, ``top1_agreement`` / model, cut,
  encoding: fp16 and int8 payloads against fp32 over random inputs at three cuts (a quarter, half
  and three quarters of the way through the model): the fraction of payload bytes saved, the
  largest absolute error of the final output (and relative to the output's scale), and how often
  the arg-max class is the same.
- ``speed_emulation`` / ``slowdown`` / mode, factor: the chain of ResNet18 segments timed in a
  child process under ``SpeedEmulation`` over the same in a native child (exact would be the
  factor).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from splitrt.edge_runtime.compute.segments import SegmentRunner
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.edge_runtime.formats.records import read_jsonl
from splitrt.edge_runtime.link.wire import decode_payload, encode_tensor, pack, tensor_header, unpack
from splitrt.tools.bench.run import BenchContext, record
from splitrt.tools.processes import Child, cli_command, die_with_parent
from splitrt.tools.processes import run as run_child

LINK_BYTES = (4 * 1024, 100 * 1024, 800 * 1024, 3 * 1024 * 1024)
REPLY_BYTES = 4096  # a classifier's output: 1000 floats
WIRE_GAP_S = 0.02  # pause between the raw round trips that stand for one task's wire time


# ---- link -----------------------------------------------------------------------------------


def _task_header(enc: Any, i: int = 0) -> Any:
    """The header of the link side's task ``i`` (the bare echo sends filler of the same size)."""
    return tensor_header("task", enc, id=f"b-{i}", vehicle="bench", model="m", digest="0" * 64, cut=1)


def _result_header(reply: Any, task_id: str = "b-0", cut: int = 2) -> Any:
    """The header of the link echo's result (the bare echo answers filler of the same size)."""
    return tensor_header("result", reply, id=task_id, cut=cut, server={"server_s": 0.0})


def _echo_servers(raw_endpoint: str, link_endpoint: str, bare_endpoint: str, bare1_endpoint: str, stop: Any) -> None:
    """Child process: raw REP echo, splitrt ROUTER echo and the bare ROUTER echoes (header + payload
    frames; payload only), all answering a 4 KB reply."""
    die_with_parent()  # a spawned process: the bench's death takes it down too
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(raw_endpoint)
    router = ctx.socket(zmq.ROUTER)
    router.bind(link_endpoint)
    bare = ctx.socket(zmq.ROUTER)
    bare.bind(bare_endpoint)
    bare1 = ctx.socket(zmq.ROUTER)
    bare1.bind(bare1_endpoint)
    reply_raw = np.zeros(REPLY_BYTES // 4, np.float32)
    reply = encode_tensor(np.zeros((1, REPLY_BYTES // 4), np.float32))
    bare_reply_header = b"x" * len(_result_header(reply).to_bytes())
    poller = zmq.Poller()
    for sock in (rep, router, bare, bare1):
        poller.register(sock, zmq.POLLIN)
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            if sock is rep:
                frame = rep.recv(copy=False)
                np.frombuffer(frame.buffer, np.float32)
                rep.send(reply_raw, copy=False)
            elif sock is bare:
                frames = bare.recv_multipart(copy=False)
                np.frombuffer(frames[-1].buffer, np.float32)
                bare.send_multipart([frames[0], bare_reply_header, reply_raw], copy=False)
            elif sock is bare1:
                frames = bare1.recv_multipart(copy=False)
                np.frombuffer(frames[-1].buffer, np.float32)
                bare1.send_multipart([frames[0], reply_raw], copy=False)
            else:
                frames = router.recv_multipart(copy=False)
                header, payload = unpack(frames[1:])
                decode_payload(header, payload)
                head = _result_header(reply, header.id, header.cut + 1)
                router.send_multipart([frames[0], *pack(head, reply.payload)], copy=False)
    for sock in (rep, router, bare, bare1):
        sock.close(0)
    ctx.term()


class _EchoPair:
    """Start `_echo_servers` in a spawned child; ``raw``, ``link``, ``bare`` and ``bare1`` client sockets."""

    def __init__(self) -> None:
        endpoints = [f"tcp://127.0.0.1:{port}" for port in _free_ports(4)]
        spawn = mp.get_context("spawn")
        self.stop = spawn.Event()
        self.proc = spawn.Process(target=_echo_servers, args=(*endpoints, self.stop), daemon=True)
        self.proc.start()
        ctx = zmq.Context.instance()
        self.raw = ctx.socket(zmq.REQ)
        self.link = ctx.socket(zmq.DEALER)
        self.bare = ctx.socket(zmq.DEALER)
        self.bare1 = ctx.socket(zmq.DEALER)
        for sock, endpoint in zip((self.raw, self.link, self.bare, self.bare1), endpoints, strict=True):
            sock.connect(endpoint)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 30_000)

    def bare_rtt(self, x: np.ndarray, header: bytes) -> float:
        return self._bare_rtt(self.bare, [header, x])

    def bare1_rtt(self, x: np.ndarray) -> float:
        return self._bare_rtt(self.bare1, [x])

    @staticmethod
    def _bare_rtt(sock: zmq.Socket, frames: list[Any]) -> float:
        start = time.perf_counter()
        sock.send_multipart(frames, copy=False)
        np.frombuffer(sock.recv_multipart(copy=False)[-1].buffer, np.float32)
        return time.perf_counter() - start

    def raw_rtt(self, x: np.ndarray) -> float:
        start = time.perf_counter()
        self.raw.send(x, copy=False)
        frame = self.raw.recv(copy=False)
        np.frombuffer(frame.buffer, np.float32)
        return time.perf_counter() - start

    def link_rtt(self, x: np.ndarray, i: int) -> float:
        start = time.perf_counter()
        enc = encode_tensor(x, "fp32")
        head = _task_header(enc, i)
        self.link.send_multipart(pack(head, enc.payload), copy=False)
        header, payload = unpack(self.link.recv_multipart(copy=False))
        decode_payload(header, payload)
        return time.perf_counter() - start

    def close(self) -> None:
        for sock in (self.raw, self.link, self.bare, self.bare1):
            sock.close(0)
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _interleaved_rtts(pair: _EchoPair, x: np.ndarray, rounds: int, per_round: int) -> dict[str, np.ndarray]:
    """Round trips of each side (raw, link, bare, bare1), in blocks whose order rotates every round."""
    filler = b"x" * len(_task_header(encode_tensor(x)).to_bytes())  # the bare echo's header frame
    sides = {
        "raw": lambda i: pair.raw_rtt(x),
        "link": lambda i: pair.link_rtt(x, i),
        "bare": lambda i: pair.bare_rtt(x, filler),
        "bare1": lambda i: pair.bare1_rtt(x),
    }
    for i in range(5):  # warm-up: connections, allocator
        for rtt in sides.values():
            rtt(i)
    out: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name] += [sides[name](i) for i in range(per_round)]
    return {name: np.array(v) for name, v in out.items()}


def link(ctx: BenchContext) -> list[dict[str, Any]]:
    rounds, per_round = (3, 5) if ctx.quick else (30, 20)
    pair = _EchoPair()
    out = []
    try:
        for nbytes in LINK_BYTES:
            x = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32).reshape(1, -1)
            rtts = _interleaved_rtts(pair, x, rounds, per_round)
            raw_s, link_s, bare_s, bare1_s = (float(np.median(rtts[k])) for k in ("raw", "link", "bare", "bare1"))
            out += [
                record("link", "goodput_over_raw", raw_s / link_s, "ratio", bytes=nbytes),
                record("link", "bare_over_raw", raw_s / bare_s, "ratio", bytes=nbytes),
                record("link", "bare1_over_raw", raw_s / bare1_s, "ratio", bytes=nbytes),
                record("link", "goodput_mb_s", nbytes / link_s / 1e6, "MB/s", bytes=nbytes, side="splitrt"),
                record("link", "goodput_mb_s", nbytes / raw_s / 1e6, "MB/s", bytes=nbytes, side="raw"),
                record("link", "rtt_ms", link_s * 1e3, "ms", bytes=nbytes, side="splitrt"),
                record("link", "rtt_ms", raw_s * 1e3, "ms", bytes=nbytes, side="raw"),
                record("link", "rtt_ms", bare_s * 1e3, "ms", bytes=nbytes, side="bare"),
                record("link", "rtt_ms", bare1_s * 1e3, "ms", bytes=nbytes, side="bare1"),
            ]
    finally:
        pair.close()
    return out


# ---- real processes -------------------------------------------------------------------------


class _Serve:
    """`splitrt serve` in a child process on a free loopback port (dies with the bench)."""

    def __init__(self, dirs: list[Path], *args: str) -> None:
        self.endpoint = f"tcp://127.0.0.1:{_free_ports(1)[0]}"
        self._logs = tempfile.TemporaryDirectory()
        argv = cli_command("serve", "--segments", *map(str, dirs), "--bind", self.endpoint, *args)
        self.child = Child("serve", argv, Path(self._logs.name), status=True)
        try:
            self.child.wait_ready(120.0)
        except SplitrtError:
            self.close()
            raise

    def close(self) -> None:
        self.child.terminate(grace_s=30.0)
        self._logs.cleanup()


def _raw_wire_s(nbytes: int, rounds: int) -> tuple[float, float]:
    """(isolated, back-to-back) median raw REQ/REP round trip for ``nbytes``: the first with
    ``WIRE_GAP_S`` between round trips, like a vehicle's tasks."""
    pair = _EchoPair()
    try:
        x = np.zeros((1, max(nbytes // 4, 1)), np.float32)
        back_to_back = _interleaved_rtts(pair, x, rounds, 10)["raw"]
        isolated = []
        for _ in range(rounds * 10):
            time.sleep(WIRE_GAP_S)
            isolated.append(pair.raw_rtt(x))
        return float(np.median(isolated)), float(np.median(back_to_back))
    finally:
        pair.close()


def runtime_overhead(ctx: BenchContext) -> list[dict[str, Any]]:
    slots = 10 if ctx.quick else 150
    out = []
    for model, cut in (("resnet18", 5),):
        manifest = ctx.export(model)
        wire_before = _raw_wire_s(manifest.cuts[cut].bytes, 3 if ctx.quick else 10)
        server = _Serve([manifest.directory], "--role", "sv")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                recs = Path(tmp) / "records.jsonl"
                run_child(
                    cli_command(
                        "vehicle", "--segments", str(manifest.directory),
                        "--edge", server.endpoint, "--decider", f"fixed:{cut}", "--slots", str(slots),
                        "--slot-s", "0.15", "--out", str(recs), "--timeout-s", "30",
                    ),
                    check=True, capture_output=True, timeout=slots * 0.15 + 120,
                )  # fmt: skip
                records = read_jsonl(recs)
        finally:
            server.close()
        wire_after = _raw_wire_s(manifest.cuts[cut].bytes, 3 if ctx.quick else 10)
        wire = 0.5 * (wire_before[0] + wire_after[0])
        wire_b2b = 0.5 * (wire_before[1] + wire_after[1])
        remote = [r for r in records if r["outcome"] == "remote"][2:]  # the first tasks warm up
        overhead = np.array([r["total_s"] - r["local_compute_s"] - r["remote_compute_s"] - wire for r in remote])
        params = {"model": model, "cut": cut, "bytes": manifest.cuts[cut].bytes}
        out += [
            record("runtime_overhead", "median_ms", float(np.median(overhead)) * 1e3, "ms", **params),
            record("runtime_overhead", "p95_ms", float(np.percentile(overhead, 95)) * 1e3, "ms", **params),
            record("runtime_overhead", "wire_ms", wire * 1e3, "ms", **params),
            record("runtime_overhead", "wire_back_to_back_ms", wire_b2b * 1e3, "ms", **params),
            record(
                "runtime_overhead",
                "median_with_back_to_back_wire_ms",
                float(np.median(overhead + wire - wire_b2b)) * 1e3,
                "ms",
                **params,
            ),
            record("runtime_overhead", "tasks", len(remote), "count", **params),
        ]
        for key in (
            "decide_s",
            "local_wait_s",
            "encode_s",
            "transfer_s",
            "remote_wait_s",
            "remote_other_s",
            "decode_s",
        ):
            value = float(np.median([r[key] for r in remote])) * 1e3
            out.append(record("runtime_overhead", f"{key[:-2]}_median_ms", value, "ms", **params))
    return out


def _closed_loop(endpoint: str, manifest: Manifest, cut: int, x: np.ndarray, clients: int, window_s: float) -> float:
    """Tasks per second completed by the node for ``clients`` DEALERs, each with one task in flight."""
    zctx = zmq.Context.instance()
    socks = []
    enc = encode_tensor(x, "fp32")
    try:
        for _ in range(clients):
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            socks.append(s)
        poller = zmq.Poller()
        counter = [0]

        def send(s: zmq.Socket) -> None:
            counter[0] += 1
            head = tensor_header(
                "task", enc, id=f"c{counter[0]}", vehicle="bench", model=manifest.model, digest=manifest.digest, cut=cut
            )
            s.send_multipart(pack(head, enc.payload), copy=False)

        for s in socks:
            poller.register(s, zmq.POLLIN)
            send(s)
        done, start, measuring = 0, time.perf_counter(), False
        warm_until = start + min(1.0, window_s / 3)
        while True:
            now = time.perf_counter()
            if not measuring and now >= warm_until:
                measuring, done, start = True, 0, now
            if measuring and now - start >= window_s:
                break
            for s, _ in poller.poll(1000):
                header, _payload = unpack(s.recv_multipart(copy=False))
                if header.kind != "result":
                    raise RuntimeError(f"server answered {header.kind}: {header.code} {header.message}")
                done += 1
                send(s)
        rate = done / (time.perf_counter() - start)
        # Drain the tasks still in flight so the next window starts with an idle node.
        pending = len(socks)
        deadline = time.perf_counter() + 30
        while pending and time.perf_counter() < deadline:
            for s, _ in poller.poll(1000):
                s.recv_multipart()
                pending -= 1
        return rate
    finally:
        for s in socks:
            s.close(0)


def server_throughput(ctx: BenchContext) -> list[dict[str, Any]]:
    model, cut = "resnet18", 5
    manifest = ctx.export(model)
    runner = SegmentRunner(manifest, threads=1)
    x = runner.run(np.random.default_rng(0).standard_normal(manifest.input.shape).astype(np.float32), 0, cut)
    window_s, rounds = (1.0, 1) if ctx.quick else (4.0, 3)
    server = _Serve([manifest.directory], "--role", "rsu", "--workers", "1", "--threads", "1", "--queue-limit", "64")
    rates: dict[Any, list[float]] = {"raw": []}
    try:
        for _ in range(rounds):
            for clients in (1, 4, 16):
                # raw ORT on the same tail, then the node: alternating windows
                runner.run(x, cut)
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < window_s:
                    runner.run(x, cut)
                    n += 1
                rates["raw"].append(n / (time.perf_counter() - start))
                rates.setdefault(clients, []).append(_closed_loop(server.endpoint, manifest, cut, x, clients, window_s))
    finally:
        server.close()
    raw = float(np.median(rates["raw"]))
    params = {"model": model, "cut": cut}
    out = [record("server_throughput", "tasks_per_s", raw, "1/s", vehicles=0, side="raw_ort", **params)]
    for clients in (1, 4, 16):
        rate = float(np.median(rates[clients]))
        out += [
            record("server_throughput", "over_raw_ort", rate / raw, "ratio", vehicles=clients, **params),
            record("server_throughput", "tasks_per_s", rate, "1/s", vehicles=clients, side="splitrt", **params),
        ]
    return out


# ---- encodings ------------------------------------------------------------------------------


def encoding(ctx: BenchContext) -> list[dict[str, Any]]:
    n_inputs = 4 if ctx.quick else 200
    models = ("resnet18",) if ctx.quick else ctx.models
    out = []
    for model in models:
        manifest = ctx.export(model)
        runner = SegmentRunner(manifest, threads=2)
        n = manifest.n_segments
        cuts = sorted({max(1, min(n - 1, round(n * f))) for f in (0.25, 0.5, 0.75)})
        rng = np.random.default_rng(0)
        errors = {(c, e): [] for c in cuts for e in ("fp16", "int8")}
        agree = {(c, e): 0 for c in cuts for e in ("fp16", "int8")}
        scales = []
        for _ in range(n_inputs):
            x = rng.standard_normal(manifest.input.shape).astype(np.float32)
            tensors = {0: x}
            for i in range(n):
                tensors[i + 1] = runner.run_segment(tensors[i], i)
            ref = tensors[n]
            scales.append(float(np.max(np.abs(ref))))
            for c in cuts:
                for e in ("fp16", "int8"):
                    enc = encode_tensor(tensors[c], e)
                    y = runner.run(decode_payload_from(enc), c, n)
                    errors[(c, e)].append(float(np.max(np.abs(y - ref))))
                    agree[(c, e)] += int(np.argmax(y) == np.argmax(ref))
        scale = float(np.median(scales))
        for (c, e), errs in errors.items():
            full = manifest.cuts[c].bytes
            sent = encode_tensor(np.zeros(manifest.cuts[c].shape, manifest.cuts[c].dtype), e).nbytes
            params = {"model": model, "cut": c, "encoding": e, "inputs": n_inputs}
            out += [
                record("encoding", "bytes_saved", 1.0 - sent / full, "fraction", **params),
                record("encoding", "max_abs_err", max(errs), "abs", **params),
                record("encoding", "max_rel_err", max(errs) / scale, "of output scale", **params),
                record("encoding", "top1_agreement", agree[(c, e)] / n_inputs, "fraction", **params),
            ]
    return out


def decode_payload_from(enc) -> np.ndarray:
    """What the receiver decodes from an `Encoded` (through the bytes, as on the wire)."""
    from splitrt.edge_runtime.link.wire import decode_tensor

    return decode_tensor(
        bytes(enc.payload.data),
        dtype=enc.dtype,
        shape=enc.shape,
        encoding=enc.encoding,
        scale=enc.scale,
        zero_point=enc.zero_point,
    )


# ---- speed emulation ------------------------------------------------------------------------

_SPEED_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from splitrt.edge_runtime.compute.segments import SegmentRunner
    from splitrt.edge_runtime.compute.speed import SpeedEmulation
    directory, factor, mode, runs = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    emu = SpeedEmulation(factor, mode, cpus=1)
    runner_factor = emu.apply()
    try:
        r = SegmentRunner(directory, threads=1, speed_factor=runner_factor)
        x = np.random.default_rng(0).standard_normal(r.manifest.input.shape).astype(np.float32)
        r.run(x)
        t = []
        for _ in range(runs):
            s = time.perf_counter(); r.run(x); t.append(time.perf_counter() - s)
        print(json.dumps({"median_s": float(np.median(t)), "mode": emu.applied_mode}))
    finally:
        emu.close()
    """
)


def speed_emulation(ctx: BenchContext) -> list[dict[str, Any]]:
    import json

    from splitrt.edge_runtime.compute.speed import cgroup_root

    manifest = ctx.export("resnet18")
    runs, rounds = (3, 1) if ctx.quick else (15, 3)
    modes = ["stretch"] + (["cgroup"] if cgroup_root() is not None else [])
    configs = [(1.0, "stretch")] + [(f, m) for f in (2.0, 4.0) for m in modes]
    times: dict[tuple[float, str], list[float]] = {c: [] for c in configs}

    def child(factor: float, mode: str) -> float:
        r = run_child(
            [sys.executable, "-c", _SPEED_CHILD, str(manifest.directory), str(factor), mode, str(runs)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return json.loads(r.stdout.strip().splitlines()[-1])["median_s"]

    for _ in range(rounds):
        for c in configs:
            times[c].append(child(*c))
    native = float(np.median(times[(1.0, "stretch")]))
    out = [record("speed_emulation", "native_ms", native * 1e3, "ms", model="resnet18")]
    for factor, mode in configs[1:]:
        slowdown = float(np.median(times[(factor, mode)])) / native
        out.append(record("speed_emulation", "slowdown", slowdown, "ratio", mode=mode, factor=factor))
    return out
