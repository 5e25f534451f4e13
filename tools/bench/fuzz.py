"""Protocol fuzzing of a live edge node: generated hostile frames, each with the reply it must get.

`frame_cases(target)` is a hypothesis strategy of `Case`s, one per kind of mistake or attack on
the wire format (splitrt.edge_runtime.link.wire), each built around a model the node really serves so that
everything but the one broken property is valid:

| category | what is sent | the node must |
|---|---|---|
| ``random_bytes`` | 1-2 frames of random bytes | answer an error (any code: random bytes can be any kind of bad header) |
| ``extra_frames`` | 3-5 frames | answer ``bad_frames`` |
| ``truncated`` | a task header without its payload frame, a state request with one | answer ``bad_frames`` |
| ``bad_json`` | a header that is not a JSON object / not UTF-8 | answer ``bad_header`` |
| ``wrong_version`` | a valid task with another protocol version | answer ``bad_version`` |
| ``unknown_kind`` | an invented kind, or a reply kind (result, busy, error, state) sent to the node | answer ``unknown_kind`` |
| ``bad_field`` | an unknown header field, a wrong field type, an over-long id | answer ``bad_header`` |
| ``absurd_shape`` | shapes of >= 10^12 elements | answer ``too_large`` |
| ``bad_shape`` | zero/negative/non-integer dims, another shape or dtype than the cut's | answer ``shape_mismatch`` |
| ``size_mismatch`` | the cut's shape with a payload a few bytes off | answer ``size_mismatch`` |
| ``unknown_model`` / ``digest_mismatch`` / ``bad_cut`` | a model not served, another export's digest, a cut outside 0..n-1 | answer that code |
| ``bad_encoding`` | an unknown encoding, int8 with a bad scale or zero point | answer ``bad_encoding`` |
| ``big_header`` | a header over 16 KiB (under the socket limit) | answer ``too_large`` |
| ``oversized`` (`oversized_case`) | a frame over the node's ``MAXMSGSIZE`` | not be reached at all: libzmq drops the frame and disconnects the sender (counted in the node's ``link.disconnects``) |
| raw TCP (`raw_tcp`) | a TCP connection carrying random bytes, not ZeroMQ | survive (libzmq drops the connection) |

`Fuzzer` sends every case over one DEALER (an ``oversized`` one over a throw-away socket: its
connection is cut) and checks the reply; `run` drives it with hypothesis for a number of frames,
interleaving the oversized frames and raw connections, and returns the counts. A ``crash`` is
the node process exiting.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from splitrt.edge_runtime.formats.manifest import DTYPES, Manifest
from splitrt.edge_runtime.link.wire import ERROR_CODES, KINDS, MAX_HEADER_BYTES, PROTOCOL_VERSION, WireError, unpack

ANY_ERROR = frozenset(ERROR_CODES)
DISCONNECT = "disconnect"


@dataclass(frozen=True)
class Target:
    """What the fuzzer knows of the node: one served model and the node's frame size limit."""

    model: str
    digest: str
    cuts: tuple[tuple[tuple[int, ...], str], ...]  # (shape, dtype) of cuts 0..n-1
    max_message_bytes: int

    @classmethod
    def of(cls, manifest: Manifest, max_message_bytes: int) -> Target:
        cuts = tuple((tuple(c.shape), c.dtype) for c in manifest.cuts[:-1])
        return cls(manifest.model, manifest.digest, cuts, max_message_bytes)


@dataclass(frozen=True)
class Case:
    category: str
    frames: tuple[bytes, ...]
    expect: frozenset[str] | str  # error codes the reply may carry, or DISCONNECT


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


@st.composite
def _task(draw, target: Target) -> tuple[dict[str, Any], bytes]:
    """A valid task header and payload for a random cut of the target (fp32 encoding)."""
    cut = draw(st.integers(0, len(target.cuts) - 1))
    shape, dtype = target.cuts[cut]
    header = {
        "v": PROTOCOL_VERSION,
        "kind": "task",
        "id": draw(st.text(min_size=1, max_size=12, alphabet="abcdef0123456789-")),
        "vehicle": "fuzz",
        "model": target.model,
        "digest": target.digest,
        "cut": cut,
        "dtype": dtype,
        "shape": list(shape),
    }
    return header, bytes(_nbytes(shape, dtype))


def frame_cases(target: Target) -> st.SearchStrategy[Case]:
    """Every category of the module table, weighted so each shows up often (oversized rarely)."""
    task = _task(target)

    def case(category: str, expect) -> Any:
        codes = frozenset(expect) if not isinstance(expect, str) else frozenset((expect,))
        return lambda frames: Case(category, tuple(frames), codes)

    def mutate(fn, category: str, expect):
        return task.flatmap(lambda hp: fn(*hp)).map(case(category, expect))

    random_bytes = st.lists(st.binary(max_size=512), min_size=1, max_size=2).map(case("random_bytes", ANY_ERROR))
    extra_frames = st.lists(st.binary(max_size=64), min_size=3, max_size=5).map(case("extra_frames", "bad_frames"))
    truncated = st.one_of(
        task.map(lambda hp: [_json(hp[0])]),
        st.just([_json({"v": PROTOCOL_VERSION, "kind": "state_request"}), b"payload"]),
    ).map(case("truncated", "bad_frames"))
    bad_json = (
        st.one_of(
            st.sampled_from([b"", b"[]", b"null", b"42", b'"task"', b"{", b"\xff\xfe\x00"]),
            st.lists(st.integers(), max_size=4).map(_json),
        )
        .map(lambda f: [f])
        .map(case("bad_json", "bad_header"))
    )
    wrong_version = mutate(
        lambda h, p: st.one_of(st.integers().filter(lambda v: v != PROTOCOL_VERSION), st.text(max_size=8)).map(
            lambda v: [_json({**h, "v": v}), p]
        ),
        "wrong_version",
        "bad_version",
    )
    reply_kinds = st.sampled_from(
        [
            ({"kind": "result", "id": "x", "dtype": "float32", "shape": [1]}, [bytes(4)]),
            ({"kind": "busy", "id": "x", "code": "queue_full"}, []),
            ({"kind": "error", "code": "bad_cut", "message": "m"}, []),
            ({"kind": "state", "state": {}}, []),
        ]
    ).map(lambda kp: [_json({"v": PROTOCOL_VERSION, **kp[0]}), *kp[1]])
    invented_kinds = mutate(
        lambda h, p: (
            st.text(min_size=1, max_size=12)
            .filter(lambda k: k not in KINDS)
            .map(lambda k: [_json({**h, "kind": k}), p])
        ),
        "unknown_kind",
        "unknown_kind",
    )
    unknown_kind = st.one_of(reply_kinds.map(case("unknown_kind", "unknown_kind")), invented_kinds)
    bad_field = mutate(
        lambda h, p: st.one_of(
            st.text(min_size=1, max_size=10)
            .filter(lambda k: k not in h and k not in _KNOWN)
            .map(lambda k: {**h, k: 1}),
            st.sampled_from(["cut", "id", "model", "digest", "shape", "dtype", "sent", "encoding"]).flatmap(
                lambda k: st.one_of(st.booleans(), st.none(), st.dictionaries(st.text(max_size=3), st.integers())).map(
                    lambda v, k=k: {**h, k: v}
                )
            ),
            st.integers(129, 400).map(lambda n: {**h, "id": "i" * n}),
        ).map(lambda hh: [_json(hh), p]),
        "bad_field",
        "bad_header",
    )
    absurd_shape = mutate(
        lambda h, p: (
            st.lists(st.integers(10**4, 10**7), min_size=3, max_size=5)
            .filter(lambda s: math.prod(s) >= 10**12)
            .map(lambda s: [_json({**h, "shape": s}), p])
        ),
        "absurd_shape",
        "too_large",
    )
    bad_shape = mutate(
        lambda h, p: st.one_of(
            st.lists(st.integers(-5, 0), min_size=1, max_size=4).map(lambda s: {**h, "shape": s}),
            st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4)
            .filter(lambda s: any(not float(d).is_integer() for d in s))
            .map(lambda s: {**h, "shape": s}),
            st.lists(st.integers(1, 64), min_size=1, max_size=4)
            .filter(lambda s: s != h["shape"])
            .map(lambda s: {**h, "shape": s}),
            st.sampled_from([d for d in DTYPES]).filter(lambda d: d != h["dtype"]).map(lambda d: {**h, "dtype": d}),
        ).map(lambda hh: [_json(hh), p]),
        "bad_shape",
        "shape_mismatch",
    )
    size_mismatch = mutate(
        lambda h, p: (
            st.integers(-min(len(p), 64), 64)
            .filter(lambda d: d != 0)
            .map(lambda d: [_json(h), p[:d] if d < 0 else p + bytes(d)])
        ),
        "size_mismatch",
        "size_mismatch",
    )
    unknown_model = mutate(
        lambda h, p: (
            st.text(min_size=1, max_size=32)
            .filter(lambda m: m != target.model)
            .map(lambda m: [_json({**h, "model": m}), p])
        ),
        "unknown_model",
        "unknown_model",
    )
    digest_mismatch = mutate(
        lambda h, p: (
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
            .filter(lambda d: d != target.digest)
            .map(lambda d: [_json({**h, "digest": d}), p])
        ),
        "digest_mismatch",
        "digest_mismatch",
    )
    bad_cut = mutate(
        lambda h, p: st.one_of(st.integers(max_value=-1), st.integers(min_value=len(target.cuts))).map(
            lambda c: [_json({**h, "cut": c}), p]
        ),
        "bad_cut",
        "bad_cut",
    )
    bad_encoding = mutate(
        lambda h, p: st.one_of(
            st.text(max_size=8).filter(lambda e: e not in ("fp32", "fp16", "int8")).map(lambda e: {**h, "encoding": e}),
            st.floats(max_value=0.0).map(lambda s: {**h, "encoding": "int8", "scale": s}),
            st.one_of(st.integers(max_value=-129), st.integers(min_value=128)).map(
                lambda z: {**h, "encoding": "int8", "scale": 1.0, "zero_point": z}
            ),
        ).map(lambda hh: [_json(hh), p if hh.get("encoding") != "int8" else p[: len(p) // 4]]),
        "bad_encoding",
        "bad_encoding",
    )
    # A header over its 16 KiB limit that still fits the socket's frame limit (a bigger one is
    # `oversized_case`): only where the node accepts frames larger than 16 KiB.
    big_header = (
        mutate(
            lambda h, p: st.integers(MAX_HEADER_BYTES + 1, min(2 * MAX_HEADER_BYTES, target.max_message_bytes)).map(
                lambda n: [_json({**h, "message": "m" * n}), p]
            ),
            "big_header",
            "too_large",
        )
        if target.max_message_bytes > MAX_HEADER_BYTES + 64
        else st.nothing()
    )

    def limited(c: Case) -> Case:
        """A frame over the node's limit never reaches it, whatever else is wrong with the message."""
        too_big = max(len(f) for f in c.frames) > target.max_message_bytes
        return Case(c.category, c.frames, DISCONNECT) if too_big else c

    return st.one_of(
        random_bytes,
        extra_frames,
        truncated,
        bad_json,
        wrong_version,
        unknown_kind,
        bad_field,
        absurd_shape,
        bad_shape,
        size_mismatch,
        unknown_model,
        digest_mismatch,
        bad_cut,
        bad_encoding,
        big_header,
    ).map(limited)


def oversized_case(target: Target) -> Case:
    """A valid task whose payload frame is one byte over the node's frame limit."""
    shape, dtype = target.cuts[0]
    header = {"v": PROTOCOL_VERSION, "kind": "task", "id": "big", "vehicle": "fuzz", "model": target.model}
    header |= {"digest": target.digest, "cut": 0, "dtype": dtype, "shape": list(shape)}
    return Case("oversized", (_json(header), bytes(target.max_message_bytes + 1)), DISCONNECT)


_KNOWN = {
    "v",
    "kind",
    "id",
    "vehicle",
    "model",
    "digest",
    "cut",
    "dtype",
    "shape",
    "encoding",
    "scale",
    "zero_point",
    "sent",
    "node",
    "code",
    "message",
    "server",
    "state",
}


@dataclass
class FuzzStats:
    """Counts of one fuzzing run (``frames`` = messages sent)."""

    frames: int = 0
    errors_answered: int = 0
    disconnects_expected: int = 0
    unanswered: int = 0
    unexpected: int = 0
    crashes: int = 0
    raw_connections: int = 0
    by_category: Counter = field(default_factory=Counter)
    by_code: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first unexpected outcomes, for the report

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


class Fuzzer:
    """Sends `Case`s to ``endpoint`` and checks each reply. ``alive()`` says whether the node lives."""

    def __init__(self, endpoint: str, alive=lambda: True, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.alive = alive
        self.timeout_ms = int(timeout_s * 1000)
        self.ctx = zmq.Context.instance()
        self.sock = self._socket()
        self.stats = FuzzStats()

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def send(self, case: Case) -> None:
        s = self.stats
        if s.crashes:
            return
        s.frames += 1
        s.by_category[case.category] += 1
        if case.expect == DISCONNECT:
            s.disconnects_expected += 1
            throwaway = self._socket()
            try:
                throwaway.send_multipart(list(case.frames))
                time.sleep(0.05)  # let libzmq push it out before the socket goes
            finally:
                throwaway.close(0)
            return
        self.sock.send_multipart(list(case.frames))
        if not self.sock.poll(self.timeout_ms):
            s.unanswered += 1
            if not self.alive():
                s.crashes += 1
            s.note(f"{case.category}: no reply to {[f[:80] for f in case.frames]}")
            self.sock.close(0)
            self.sock = self._socket()
            return
        try:
            header, _ = unpack(self.sock.recv_multipart())
        except WireError as exc:
            s.unexpected += 1
            s.note(f"{case.category}: unparseable reply: {exc}")
            return
        s.by_code[header.code or header.kind] += 1
        if header.kind == "error" and header.code in case.expect and header.message:
            s.errors_answered += 1
        else:
            s.unexpected += 1
            s.note(
                f"{case.category}: got {header.kind}/{header.code} ({header.message}), expected {sorted(case.expect)}"
            )

    def close(self) -> None:
        self.sock.close(0)


def raw_tcp(endpoint: str, rng: np.random.Generator) -> None:
    """One TCP connection that sends bytes that are not ZeroMQ at all, then hangs up."""
    import socket

    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(rng.bytes(int(rng.integers(1, 4096))))


def run(
    endpoint: str,
    target: Target,
    frames: int,
    *,
    seed: int = 0,
    alive=lambda: True,
    oversized: int = 0,
    raw_connections: int = 0,
) -> FuzzStats:
    """Send ``frames`` generated cases (hypothesis, seeded), interleaved with ``oversized`` frames
    over the limit and ``raw_connections`` non-ZeroMQ TCP connections; return the counts."""
    fuzzer = Fuzzer(endpoint, alive)
    rng = np.random.default_rng(seed)
    every = max(frames // max(oversized + raw_connections, 1), 1)
    extras = ["oversized"] * oversized + ["raw"] * raw_connections

    def send_extra(kind: str) -> None:
        if kind == "oversized":
            fuzzer.send(oversized_case(target))
        else:
            raw_tcp(endpoint, rng)
            fuzzer.stats.raw_connections += 1

    @hypothesis_seed(seed)
    @settings(
        max_examples=frames,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(frame_cases(target))
    def one(case: Case) -> None:
        fuzzer.send(case)
        if extras and fuzzer.stats.frames % every == 0:
            send_extra(extras.pop())

    try:
        one()
        while extras:  # hypothesis generated fewer cases than asked: send the rest now
            send_extra(extras.pop())
    finally:
        fuzzer.close()
    return fuzzer.stats
