"""Wire format: encodings round trip, headers validate strictly, payloads travel without copies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from splitrt.edge_runtime.formats.manifest import DTYPES, TensorSpec
from splitrt.edge_runtime.link.wire import (
    ENCODINGS,
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    Header,
    WireError,
    check_task_tensor,
    decode_header,
    decode_payload,
    decode_tensor,
    encode_tensor,
    int8_params,
    pack,
    tensor_header,
    unpack,
)

ROOT = Path(__file__).resolve().parents[3]


def sample(dtype: str, shape=(2, 3, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, dtype=dtype)
    return (rng.standard_normal(shape) * 3).astype(dtype)


def roundtrip(x: np.ndarray, encoding: str) -> np.ndarray:
    enc = encode_tensor(x, encoding)
    raw = bytes(enc.payload.data)  # what crosses the wire
    return decode_tensor(
        raw, dtype=enc.dtype, shape=enc.shape, encoding=enc.encoding, scale=enc.scale, zero_point=enc.zero_point
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp32_raw_is_exact_for_every_dtype(dtype):
    x = sample(dtype)
    y = roundtrip(x, "fp32")
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_fp16_error_is_half_precision_rounding(dtype):
    x = sample(dtype, (64, 33))
    enc = encode_tensor(x, "fp16")
    assert enc.nbytes == x.size * 2
    y = roundtrip(x, "fp16")
    assert y.dtype == x.dtype
    # fp16 keeps 11 significant bits: relative error <= 2^-11 (normal range).
    np.testing.assert_allclose(y, x, rtol=2.0**-11, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_int8_error_is_within_half_a_step_and_zero_is_exact(dtype):
    x = np.maximum(sample(dtype, (10, 50), seed=3), 0)  # post-ReLU: many exact zeros
    enc = encode_tensor(x, "int8")
    assert enc.payload.dtype == np.int8 and enc.nbytes == x.size
    y = roundtrip(x, "int8")
    scale = enc.scale
    assert float(np.max(np.abs(y.astype(np.float64) - x))) <= scale / 2 * (1 + 1e-3) + 1e-6
    assert np.all(y[x == 0] == 0)


@given(
    lo=st.floats(-1e4, 1e4, allow_nan=False),
    span=st.floats(0, 1e4, allow_nan=False),
    n=st.integers(1, 200),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=200, deadline=None)
def test_int8_error_bound_holds_for_any_range(lo, span, n, seed):
    x = (lo + span * np.random.default_rng(seed).random(n)).astype(np.float32)
    scale, zp = int8_params(x)
    assert -128 <= zp <= 127 and scale > 0
    y = roundtrip(x, "int8")
    err = np.abs(y.astype(np.float64) - x.astype(np.float64))
    # Half a step, plus float32 rounding of values up to |x|.
    assert float(err.max()) <= scale / 2 + 1e-6 * max(abs(lo), abs(lo + span), 1.0) + 1e-9


def test_int8_constant_and_zero_tensors():
    for value in (0.0, 5.0, -2.5):
        x = np.full((3, 4), value, np.float32)
        y = roundtrip(x, "int8")
        np.testing.assert_allclose(y, x, atol=abs(value) / 255 + 1e-7)


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "int8", "bool"])
def test_lossy_encodings_refuse_non_float_tensors(encoding, dtype):
    with pytest.raises(WireError, match=f"encoding '{encoding}' applies to floating tensors") as info:
        encode_tensor(sample(dtype), encoding)
    assert info.value.code == "bad_encoding"


def test_int8_refuses_nan():
    with pytest.raises(WireError, match="finite"):
        encode_tensor(np.array([1.0, np.nan], np.float32), "int8")


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("delta", [-1, 1, -4, 4])
def test_mismatched_byte_counts_are_refused(encoding, delta):
    x = sample("float32")
    enc = encode_tensor(x, encoding)
    raw = bytes(enc.payload.data)
    bad = raw[:delta] if delta < 0 else raw + b"\0" * delta
    with pytest.raises(WireError, match=r"payload has \d+ bytes, but float32\[2, 3, 4\] sent as") as info:
        decode_tensor(
            bad, dtype="float32", shape=(2, 3, 4), encoding=encoding, scale=enc.scale, zero_point=enc.zero_point
        )
    assert info.value.code == "size_mismatch"


def test_bad_int8_parameters_and_encodings_are_refused():
    payload = np.zeros(4, np.int8).tobytes()
    for scale, zp, needle in [
        (0.0, 0, "scale"),
        (float("inf"), 0, "scale"),
        (-1.0, 0, "scale"),
        (1.0, 200, "zero_point"),
    ]:
        with pytest.raises(WireError, match=needle):
            decode_tensor(payload, dtype="float32", shape=(4,), encoding="int8", scale=scale, zero_point=zp)
    with pytest.raises(WireError, match="unknown encoding 'bf16'"):
        decode_tensor(payload, dtype="float32", shape=(1,), encoding="bf16")
    with pytest.raises(WireError, match="unknown encoding"):
        encode_tensor(np.zeros(3, np.float32), "zip")


def test_fp32_decode_is_a_view_of_the_buffer():
    x = sample("float32")
    buf = bytearray(x.tobytes())
    y = decode_tensor(memoryview(buf), dtype="float32", shape=x.shape)
    assert np.shares_memory(y, np.frombuffer(buf, np.uint8))


# ---- headers ---------------------------------------------------------------------------------


def task_header(**over) -> Header:
    fields = dict(
        kind="task",
        id="v-1",
        vehicle="v",
        model="m",
        digest="ab" * 32,
        cut=2,
        dtype="float32",
        shape=(1, 4),
        sent=1.5,
    )
    fields.update(over)
    return Header(**fields)


def raw_header(data: dict) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "header",
    [
        task_header(),
        task_header(encoding="int8", scale=0.25, zero_point=-3),
        Header(kind="result", id="x", dtype="float32", shape=(1, 10), node="n", server={"wait_s": 0.1}),
        Header(kind="busy", id="x", code="queue_full", message="full"),
        Header(kind="error", code="bad_cut", message="cut 9 is outside 0..3"),
        Header(kind="state_request"),
        Header(kind="state", state={"queues": {"a": {"tasks": 1}}}),
    ],
)
def test_header_round_trip(header):
    assert decode_header(header.to_bytes()) == header


@pytest.mark.parametrize(
    ("raw", "code", "needle"),
    [
        (b"\xff\xfe", "bad_header", "not UTF-8 JSON"),
        (b"{not json", "bad_header", "not UTF-8 JSON"),
        (b"[1, 2]", "bad_header", "must be a JSON object"),
        (raw_header({"v": 99, "kind": "task"}), "bad_version", "protocol version 99"),
        (raw_header({"kind": "task"}), "bad_version", "protocol version None"),
        (raw_header({"v": PROTOCOL_VERSION, "kind": "launch"}), "unknown_kind", "'launch' is unknown"),
        (raw_header({"v": PROTOCOL_VERSION, "kind": "state_request", "x": 1}), "bad_header", "unknown header field"),
        (
            raw_header({"v": PROTOCOL_VERSION, "kind": "error", "code": 1, "message": "m"}),
            "bad_header",
            "'code' must be str",
        ),
        (raw_header({"v": True, "kind": "state_request"}), "bad_header", "'v' must be int"),
        (raw_header({"v": PROTOCOL_VERSION, "kind": "task", "id": "a"}), "bad_header", "task header lacks field"),
        (raw_header({**json.loads(task_header().to_bytes()), "cut": True}), "bad_header", "'cut' must be int"),
        (raw_header({**json.loads(task_header().to_bytes()), "shape": [1, -4]}), "shape_mismatch", "positive"),
        (raw_header({**json.loads(task_header().to_bytes()), "shape": [1, "4"]}), "shape_mismatch", "integers"),
        (raw_header({**json.loads(task_header().to_bytes()), "shape": [1 << 40]}), "too_large", "elements"),
        (raw_header({**json.loads(task_header().to_bytes()), "dtype": "complex64"}), "shape_mismatch", "complex64"),
        (raw_header({**json.loads(task_header().to_bytes()), "encoding": "zstd"}), "bad_encoding", "zstd"),
        (raw_header({**json.loads(task_header().to_bytes()), "id": "x" * 200}), "bad_header", "longer than"),
        (b" " * (MAX_HEADER_BYTES + 1), "too_large", "over the"),
    ],
)
def test_bad_headers_are_refused_with_a_named_reason(raw, code, needle):
    with pytest.raises(WireError, match=re.escape(needle)) as info:
        decode_header(raw)
    assert info.value.code == code


def test_unpack_checks_frames_and_payload_presence():
    x = np.ones((1, 4), np.float32)
    header, payload = unpack(pack(task_header(), x))
    assert header == task_header()
    np.testing.assert_array_equal(decode_payload(header, payload), x)
    with pytest.raises(WireError, match="1 or 2 frames") as info:
        unpack([])
    assert info.value.code == "bad_frames"
    with pytest.raises(WireError, match="1 or 2 frames"):
        unpack([task_header().to_bytes(), b"a", b"b"])
    with pytest.raises(WireError, match="no payload frame"):
        unpack([task_header().to_bytes()])
    with pytest.raises(WireError, match="must not carry a payload"):
        unpack([Header(kind="state_request").to_bytes(), b"x"])
    with pytest.raises(WireError, match="needs a payload"):
        pack(task_header())
    with pytest.raises(WireError, match="C-contiguous"):
        pack(task_header(shape=(4, 3)), np.ones((3, 4), np.float32).T)


def test_check_task_tensor_against_the_cut_spec():
    spec = TensorSpec("t", (1, 4), "float32")
    check_task_tensor(task_header(), spec, 16)
    check_task_tensor(task_header(encoding="fp16"), spec, 8)
    check_task_tensor(task_header(encoding="int8", scale=0.1), spec, 4)
    with pytest.raises(WireError, match=r"carries float32\[1, 4\], the task says float32\[1, 5\]") as info:
        check_task_tensor(task_header(shape=(1, 5)), spec, 20)
    assert info.value.code == "shape_mismatch"
    with pytest.raises(WireError, match="the task says float64"):
        check_task_tensor(task_header(dtype="float64"), spec, 32)
    with pytest.raises(WireError, match="payload has 12 bytes") as info:
        check_task_tensor(task_header(), spec, 12)
    assert info.value.code == "size_mismatch"
    with pytest.raises(WireError, match="scale"):
        check_task_tensor(task_header(encoding="int8", scale=0.0), spec, 4)


def test_tensor_travels_over_zmq_without_a_copy():
    """Sent with copy=False, received with copy=False: the decoded array is the frame's memory."""
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        x = sample("float32", (1, 64, 56, 56))  # 800 KB, above pyzmq's copy threshold
        enc = encode_tensor(x, "fp32")
        assert np.shares_memory(enc.payload, x)  # encoding fp32 copies nothing either
        a.send_multipart(
            pack(tensor_header("task", enc, id="t", vehicle="v", model="m", digest="d", cut=1), enc.payload), copy=False
        )
        assert b.poll(5000)
        frames = b.recv_multipart(copy=False)
        header, payload = unpack(frames)
        y = decode_payload(header, payload)
        np.testing.assert_array_equal(y, x)
        assert np.shares_memory(y, np.frombuffer(frames[1].buffer, np.uint8))
    finally:
        a.close(0)
        b.close(0)


def test_no_pickle_or_eval_in_the_runtime():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.|_pyobj\(|\beval\(|\bexec\(|\bmarshal\.")
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sorted((ROOT / "edge_runtime").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
