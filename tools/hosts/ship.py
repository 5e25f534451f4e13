"""Ship files to a host and prove they arrived: sha256 on both sides, skipping what is already there.

`manifest` lists the files (a directory expands to every file under it) with their local digest
and their path on the host. `ship`: (1) the host hashes the files it already has at those paths
(one Python process, `_REMOTE_HASH`); (2) every file missing or with another digest is sent over
SFTP; (3) the host hashes every file of the manifest again, and any file whose digest is not the
one sent stops the run with an error naming the host and the file. A file the host had with the
right digest is not sent again (a warm run ships nothing but the run's own small files).
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from splitrt.edge_runtime.errors import SplitrtError

_DIGESTS: dict[tuple[str, int, int], str] = {}

#: Run on the host: {path: sha256 or null} of args["paths"]; makes the parent folders of the missing
#: ones when args["mkdirs"].
_REMOTE_HASH = """
import hashlib, json, os, sys
args = json.loads(sys.argv[1])
out = {}
for p in args["paths"]:
    try:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p] = h.hexdigest()
    except OSError:
        out[p] = None
        if args.get("mkdirs"):
            os.makedirs(os.path.dirname(p), exist_ok=True)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Entry:
    local: Path
    remote: str
    sha256: str
    size: int


@dataclass
class ShipStats:
    host: str
    files: int = 0
    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def add(self, other: ShipStats) -> None:
        self.files += other.files
        self.sent += other.sent
        self.skipped += other.skipped
        self.bytes_sent += other.bytes_sent
        self.seconds += other.seconds

    def as_dict(self) -> dict:
        return {
            "host": self.host,
            "files": self.files,
            "sent": self.sent,
            "skipped": self.skipped,
            "bytes_sent": self.bytes_sent,
            "seconds": self.seconds,
        }


def sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def manifest(items: list[tuple[Path, str]]) -> list[Entry]:
    """``[(local file or folder, remote path)]`` -> one Entry per file (folders expanded)."""
    out: dict[str, Entry] = {}
    for local, remote in items:
        local = Path(local)
        if local.is_dir():
            files = [(p, posixpath.join(remote, *p.relative_to(local).parts)) for p in sorted(local.rglob("*"))]
        elif local.is_file():
            files = [(local, remote)]
        else:
            raise SplitrtError(f"cannot ship {local}: no such file or folder")
        for p, r in files:
            if p.is_file() and "__pycache__" not in p.parts:
                out[r] = Entry(p, r, sha256_file(p), p.stat().st_size)
    return list(out.values())


def remote_digests(conn, paths: list[str], *, mkdirs: bool = False) -> dict[str, str | None]:
    if not paths:
        return {}
    return conn.python(_REMOTE_HASH, {"paths": paths, "mkdirs": mkdirs}, what="hashing shipped files", timeout_s=600)


def ship(conn, entries: list[Entry], *, put: Callable[[Path, str], None] | None = None) -> ShipStats:
    """Send ``entries`` to ``conn``'s host (module docstring); ``put`` replaces the SFTP upload (tests)."""
    start = time.perf_counter()
    stats = ShipStats(conn.host.name, files=len(entries))
    have = remote_digests(conn, [e.remote for e in entries], mkdirs=True)
    put = put or conn.put
    for e in entries:
        if have.get(e.remote) == e.sha256:
            stats.skipped += 1
            continue
        put(e.local, e.remote)
        stats.sent += 1
        stats.bytes_sent += e.size
    verify(conn, entries)
    stats.seconds = time.perf_counter() - start
    return stats


def verify(conn, entries: list[Entry]) -> None:
    """Every entry on the host has the digest it was sent with; else SplitrtError naming the file."""
    got = remote_digests(conn, [e.remote for e in entries])
    for e in entries:
        if got.get(e.remote) != e.sha256:
            found = got.get(e.remote)
            raise SplitrtError(
                f"host {conn.host.name}: {e.remote} arrived {'with sha256 ' + found[:12] if found else 'missing'}, "
                f"sent {e.sha256[:12]} ({e.local}): refusing to run on a file that is not the one sent"
            )
