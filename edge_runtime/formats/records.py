"""Task records: the stream every vehicle writes, one JSON object per task, and its summary.

A record sink is any callable taking one record dict (`RecordSink`). The vehicle calls every
sink once per task, in completion order, from a single lock; `JsonlSink` appends JSON lines
(flushed per record, so a crash loses nothing already finished) and `ListSink` keeps them in
memory. The MQTT telemetry (a later issue) is one more sink.

Record keys (durations in seconds on the vehicle's clock unless said otherwise):

| key | meaning |
|---|---|
| ``task_id``, ``vehicle_id``, ``slot``, ``index`` | ids; ``index`` counts the vehicle's tasks from 0 |
| ``model``, ``digest`` | DNN type and manifest digest |
| ``decider``, ``cut``, ``node`` | the decision; ``node`` is the edge index (0 = first --edge) or null when the task was decided fully local |
| ``edge``, ``node_name`` | the node's endpoint and the name it reports (null when local) |
| ``encoding``, ``bytes`` | payload encoding and payload bytes (sent, or that would have been sent when the node was unreachable; 0 when decided local) |
| ``outcome`` | ``remote`` (edge node returned the result), ``local`` (decided fully local), ``fallback`` (offload failed, finished on the vehicle from the cut it had reached), ``failed`` (could not be computed at all) |
| ``reason`` | why a fallback or failure happened: ``timeout``, ``busy``, ``unreachable`` (no connection to the node when sending), ``refused: ...`` (the node rejected this vehicle's CURVE key, or the link's security modes differ), ``error:<code>: <message>`` (the node's error reply), ``shutdown`` (the vehicle was stopping), ``decider: <error>`` (the decider failed or returned an action out of range: the task ran fully local), ``vehicle restarted`` (failed: in flight when the vehicle process died; written by the next start from the journal, splitrt.edge_runtime.vehicle.journal), or the local exception; empty otherwise |
| ``arrival_unix_s``, ``completion_unix_s`` | wall-clock stamps of arrival and completion |
| ``total_s`` | completion - arrival |
| ``decide_s`` | arrival -> decision made: building the `DecisionContext` and the decider's own time (the paper's per-step decision time, Table II), plus any lateness of the vehicle's loop in noticing the arrival |
| ``local_wait_s`` | time in the local FIFO after the decision (before the head, and before a fallback tail) |
| ``local_compute_s`` | head segments [0, cut), plus the tail [cut, n) on a fallback |
| ``encode_s`` | encoding the cut tensor for the wire |
| ``transfer_s`` | round trip minus the node's own time (``server_s``): both link directions plus hand-offs; on a fallback, the time lost between sending and giving up |
| ``remote_wait_s``, ``remote_compute_s`` | the node's queue wait and tail compute (durations on the node's clock) |
| ``remote_other_s`` | the node's remaining handling time (``server_s`` - wait - compute) |
| ``decode_s`` | decoding and checking the result |
| ``remote_backlog_tasks``, ``remote_backlog_flops``, ``remote_backlog_s`` | the node's queue when the task arrived there (null unless remote) |
| ``q_loc_flops``, ``observation`` | the local backlog and the eq (53) observation the decider saw |
| ``verified``, ``max_abs_err`` | with ``--verify``: max abs difference to the whole model's output, and whether it is within 1e-4 of the output scale (null for the lossy encodings or without ``--verify``) |
| ``link_security`` | ``plain`` (unauthenticated, unencrypted link) or ``curve`` (splitrt.edge_runtime.link.security) |

The nine duration components sum to ``total_s`` (the timestamps they come from are contiguous),
except in a ``vehicle restarted`` record: the process that timed the task is gone, its components
are 0 and ``total_s`` runs from arrival to the restart that recorded it. Its ``cut``/``node`` are
null when the task died before its decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RecordSink = Callable[[dict[str, Any]], None]

DURATION_KEYS = (
    "decide_s",
    "local_wait_s",
    "local_compute_s",
    "encode_s",
    "transfer_s",
    "remote_wait_s",
    "remote_compute_s",
    "remote_other_s",
    "decode_s",
)
OUTCOMES = ("remote", "local", "fallback", "failed")


class JsonlSink:
    """Append each record to ``path`` as one JSON line, flushed at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def __call__(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ListSink(list):
    """Keep records in memory (tests, summaries)."""

    def __call__(self, record: dict[str, Any]) -> None:
        self.append(record)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completion-time statistics per (cut, node) group: n, outcomes, mean/p50/p95 of total_s.

    Fully local tasks form the group with node ``None``; fallbacks stay in the group of the
    node they were sent to. Groups are sorted by cut, then node.
    """
    groups: dict[tuple[int, int | None], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["cut"], r["node"]), []).append(r)
    out = []

    def order(kv):  # undecided (cut None, a vehicle restarted) first, fully local before node 0
        (cut, node), _ = kv
        return (-1 if cut is None else cut, -1 if node is None else node)

    for (cut, node), rs in sorted(groups.items(), key=order):
        total = np.array([r["total_s"] for r in rs])
        out.append(
            {
                "cut": cut,
                "node": node,
                "n": len(rs),
                **{o: sum(r["outcome"] == o for r in rs) for o in OUTCOMES},
                "mean_s": float(total.mean()),
                "p50_s": float(np.percentile(total, 50)),
                "p95_s": float(np.percentile(total, 95)),
            }
        )
    return out


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The table `splitrt vehicle` prints at the end."""
    head = f"{'cut':>4} {'node':>5} {'tasks':>6} {'remote':>7} {'local':>6} {'fallbk':>7} {'failed':>7} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9}"
    lines = [head]
    for r in rows:
        node = "-" if r["node"] is None else str(r["node"])
        cut = "-" if r["cut"] is None else str(r["cut"])
        lines.append(
            f"{cut:>4} {node:>5} {r['n']:>6} {r['remote']:>7} {r['local']:>6} {r['fallback']:>7} "
            f"{r['failed']:>7} {r['mean_s'] * 1e3:>9.2f} {r['p50_s'] * 1e3:>9.2f} {r['p95_s'] * 1e3:>9.2f}"
        )
    return "\n".join(lines)
