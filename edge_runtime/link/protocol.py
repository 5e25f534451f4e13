"""The tensor link's constants and its error: protocol version, size limits, message kinds,
payload encodings, the node's timing keys and the error codes a node answers with
(the message format itself: splitrt.edge_runtime.link.wire)."""

from __future__ import annotations

from splitrt.edge_runtime.errors import SplitrtError

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 16 * 1024
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
MAX_ID_CHARS = 128

KINDS = ("task", "result", "busy", "error", "state_request", "state")
ENCODINGS = ("fp32", "fp16", "int8")

#: Keys of a reply's ``server`` object (all seconds on the node's own clock, FLOPs, counts).
SERVER_TIMING_KEYS = (
    "wait_s",  # queue wait: arrival at the node -> a worker starts the task
    "compute_s",  # the tail segments (including payload decode into the input tensor)
    "server_s",  # arrival at the node -> reply handed to the socket (wait + compute + handling)
    "backlog_tasks",  # tasks queued or running in the task's queue when it arrived (itself excluded)
    "backlog_flops",  # their edge FLOPs
    "backlog_s",  # their estimated compute seconds on this node
)

#: Codes of ``error`` replies (and the one of ``busy``).
ERROR_CODES = (
    "bad_frames",  # not 1 or 2 frames, or a payload where none belongs
    "bad_header",  # not UTF-8 JSON, too large, wrong field types, unknown fields
    "bad_version",  # protocol version differs
    "unknown_kind",  # kind not in KINDS or not accepted by this peer
    "unknown_model",  # model id not served here
    "digest_mismatch",  # same model id, another export
    "bad_cut",  # cut outside 0..n-1 (cut n is fully local: nothing to send)
    "shape_mismatch",  # dtype/shape differ from the manifest's cut spec
    "bad_encoding",  # unknown encoding or bad int8 parameters
    "size_mismatch",  # payload bytes != prod(shape) * itemsize
    "too_large",  # header or payload over the limits
    "queue_full",  # busy: the queue is at its limit
    "shutdown",  # the node is stopping: the task was not (or will not be) computed
    "compute_failed",  # onnxruntime raised on the task
)


class WireError(SplitrtError):
    """A message that breaks the protocol; ``code`` is one of `ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
