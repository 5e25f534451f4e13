"""The vehicle's task journal: a write-ahead log, so that a killed vehicle loses no task.

Without it, a task generated just before a vehicle process dies (SIGKILL, power cut, crash of
onnxruntime) leaves no trace: its record was never written. With ``--journal FILE`` (by
default ``OUT.journal`` next to ``--out``) the vehicle appends, flushed at once:

| line | written | fields |
|---|---|---|
| ``{"j": "start", ...}`` | at every start | ``vehicle_id, pid, started_unix_s, model, digest, recovered`` |
| ``{"j": "generated", ...}`` | when a task arrives, before anything else is done with it | ``task_id, index, slot, arrival_unix_s, model, digest, decider`` |
| ``{"j": "decided", ...}`` | once its (cut, node) is chosen | ``task_id, cut, node, edge, encoding`` |
| ``{"j": "record", "record": {...}}`` | when it ends, *before* the record goes to any sink | the task record (splitrt.edge_runtime.formats.records) |

Recovery (`TaskJournal.open`, at the next start with the same journal):

1. A torn last line (the process died inside a write) is cut off; it can only be the last line,
   since each line is written and flushed before the next one starts.
2. A task generated but without a record was in flight when the vehicle died. It is finished now,
   exactly once, as ``outcome: failed, reason: vehicle restarted`` (its tensors and its deadline
   died with the process; re-running it later would report a completion time that means
   nothing). Its duration components are 0 and ``total_s`` runs from arrival to the recovery:
   the only record whose components do not sum to its total. These records are journaled and
   handed to every sink of the new run (`recovered`).
3. With the records file (``records_path``, the ``--out`` JSON lines), a record that reached the
   journal but not the file (a kill between the two writes) is appended to the file, and a torn
   last line of the file is cut off as in 1 (that task's record is then re-appended from the
   journal). Other sinks (MQTT) do not get such a repaired record.
4. Task indices continue after the largest one journaled, so task ids stay unique across restarts.

So after any number of kills and restarts: every journaled ``generated`` task has exactly one
record in the journal and in the records file (`account` checks it). The journal is flushed, not
fsynced: a process kill loses nothing; a power cut can lose what the OS had not yet written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.records import DURATION_KEYS

log = logging.getLogger(__name__)

RESTART_REASON = "vehicle restarted"


def _read_lines(path: Path, what: str) -> list[dict[str, Any]]:
    """Parse a JSON-lines file, cutting off a torn last line (a write the process did not finish)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SplitrtError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning(
            "%s %s: cutting off a torn last line (%d bytes) left by a killed process", what, path, len(data) - keep
        )
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    out = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise SplitrtError(f"{what} {path}: line {n} is not JSON (the file is corrupt; move it away)") from None
        if not isinstance(item, dict):
            raise SplitrtError(f"{what} {path}: line {n} is not a JSON object")
        out.append(item)
    return out


def restart_record(entry: dict[str, Any], vehicle_id: str, now_unix_s: float) -> dict[str, Any]:
    """The record of a task that was in flight when its vehicle died (keys as splitrt.edge_runtime.vehicle.records')."""
    arrival = float(entry.get("arrival_unix_s", now_unix_s))
    return {
        "task_id": entry["task_id"],
        "vehicle_id": vehicle_id,
        "index": entry.get("index"),
        "slot": entry.get("slot"),
        "model": entry.get("model"),
        "digest": entry.get("digest"),
        "decider": entry.get("decider"),
        "cut": entry.get("cut"),
        "node": entry.get("node"),
        "edge": entry.get("edge"),
        "node_name": None,
        "encoding": entry.get("encoding"),
        "bytes": 0,
        "outcome": "failed",
        "reason": RESTART_REASON,
        "arrival_unix_s": arrival,
        "completion_unix_s": now_unix_s,
        "total_s": now_unix_s - arrival,
        **dict.fromkeys(DURATION_KEYS, 0.0),
        "remote_backlog_tasks": None,
        "remote_backlog_flops": None,
        "remote_backlog_s": None,
        "q_loc_flops": None,
        "observation": None,
        "backlog_age_s": None,
        "verified": None,
        "max_abs_err": None,
        "link_security": entry.get("link_security"),
    }


class TaskJournal:
    """A vehicle's journal (module docstring). Open with `TaskJournal.open`; thread-safe."""

    def __init__(self, path: Path, vehicle_id: str, handle, next_index: int, recovered: list[dict[str, Any]]):
        self.path = path
        self.vehicle_id = vehicle_id
        self.next_index = next_index
        self.recovered = recovered
        self.repaired = 0
        self._file = handle
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | Path,
        vehicle_id: str,
        *,
        records_path: str | Path | None = None,
        start: dict[str, Any] | None = None,
    ) -> TaskJournal:
        """Recover what a previous run left (module docstring), then open for appending."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SplitrtError(f"--journal {path}: cannot create its directory ({exc.strerror or exc})") from None
        lines = _read_lines(path, "journal") if path.exists() else []
        owners = {x.get("vehicle_id") for x in lines if x.get("j") == "start"}
        if owners - {vehicle_id}:
            raise SplitrtError(
                f"journal {path} belongs to vehicle {', '.join(sorted(map(str, owners)))}, not {vehicle_id!r} "
                "(give each vehicle its own --journal)"
            )
        pending: dict[str, dict[str, Any]] = {}
        journaled: dict[str, dict[str, Any]] = {}
        next_index = 0
        for x in lines:
            kind = x.get("j")
            if kind == "generated":
                pending[x["task_id"]] = dict(x)
                next_index = max(next_index, int(x.get("index", -1)) + 1)
            elif kind == "decided" and x.get("task_id") in pending:
                pending[x["task_id"]].update({k: v for k, v in x.items() if k not in ("j", "task_id")})
            elif kind == "record":
                record = x["record"]
                journaled[record["task_id"]] = record
                pending.pop(record["task_id"], None)
        try:
            handle = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise SplitrtError(f"--journal {path}: cannot open for writing ({exc.strerror or exc})") from None
        journal = cls(path, vehicle_id, handle, next_index, [])
        if records_path is not None:
            journal.repaired = _repair_records(Path(records_path), journaled.values())
        now = time.time()
        for entry in pending.values():
            record = restart_record(entry, vehicle_id, now)
            journal.record(record)
            journal.recovered.append(record)
        if journal.recovered or journal.repaired:
            log.warning(
                "journal %s: %d task(s) in flight when the vehicle stopped are recorded as failed (%s); "
                "%d record(s) restored to %s",
                path,
                len(journal.recovered),
                RESTART_REASON,
                journal.repaired,
                records_path,
            )
        journal._write(
            {
                "j": "start",
                "vehicle_id": vehicle_id,
                "pid": os.getpid(),
                "started_unix_s": now,
                "recovered": len(journal.recovered),
                **(start or {}),
            }
        )
        return journal

    # ---- writing ---------------------------------------------------------------------------
    def _write(self, item: dict[str, Any]) -> None:
        line = json.dumps(item, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def generated(self, **fields: Any) -> None:
        """A task arrived (``task_id, index, slot, arrival_unix_s, model, digest, decider``)."""
        self._write({"j": "generated", **fields})

    def decided(self, **fields: Any) -> None:
        """Its decision (``task_id, cut, node, edge, encoding``)."""
        self._write({"j": "decided", **fields})

    def record(self, record: dict[str, Any]) -> None:
        """Its end: call before the record goes to any sink."""
        self._write({"j": "record", "record": record})

    def close(self) -> None:
        with self._lock:
            self._file.close()


def default_journal_path(records_path: str | Path) -> Path:
    """``OUT.journal``: where a vehicle with ``--out OUT`` keeps its journal unless told otherwise."""
    return Path(f"{records_path}.journal")


def discard_run(records_path: str | Path) -> None:
    """Remove a vehicle's records file and its default journal, so that the next vehicle started
    with ``--out records_path`` begins a new run: with either left, it would append to the old
    records and continue the old run's task numbering (what a restart after a crash must do, and
    what a harness re-running into the same directory must not)."""
    for path in (Path(records_path), default_journal_path(records_path)):
        path.unlink(missing_ok=True)


def _repair_records(path: Path, journaled: Iterable[dict[str, Any]]) -> int:
    """Append to the records file every journaled record it lacks; returns how many."""
    present = {r.get("task_id") for r in _read_lines(path, "records file")} if path.exists() else set()
    missing = [r for r in journaled if r["task_id"] not in present]
    if missing:
        try:
            with path.open("a", encoding="utf-8") as f:
                for r in missing:
                    f.write(json.dumps(r, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise SplitrtError(f"--out {path}: cannot append restored records ({exc.strerror or exc})") from None
    return len(missing)


def account(journal_path: str | Path, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-experiment accounting of one vehicle: every task the journal says was generated against
    the records. ``generated == completed + failed`` and ``duplicates == missing == unknown == 0``
    when nothing was lost or counted twice.

    Returns ``{generated, completed, failed, by_outcome, failed_by_reason, duplicates, missing,
    unknown}``: ``completed`` = records with outcome remote, local or fallback; ``missing`` =
    generated tasks without a record; ``unknown`` = records of tasks never journaled.
    """
    generated = [x["task_id"] for x in _read_lines(Path(journal_path), "journal") if x.get("j") == "generated"]
    records = list(records)
    ids = [r["task_id"] for r in records]
    by_outcome: dict[str, int] = {}
    failed_by_reason: dict[str, int] = {}
    for r in records:
        by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + 1
        if r["outcome"] == "failed":
            failed_by_reason[r["reason"]] = failed_by_reason.get(r["reason"], 0) + 1
    return {
        "generated": len(generated),
        "completed": sum(by_outcome.get(o, 0) for o in ("remote", "local", "fallback")),
        "failed": by_outcome.get("failed", 0),
        "by_outcome": by_outcome,
        "failed_by_reason": failed_by_reason,
        "duplicates": len(ids) - len(set(ids)) + (len(generated) - len(set(generated))),
        "missing": len(set(generated) - set(ids)),
        "unknown": len(set(ids) - set(generated)),
    }
