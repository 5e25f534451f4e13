"""Output paths of the CLI verbs, checked before any work is done: a user who points ``--out`` at
a place that cannot be written gets a one-line error naming the flag, not a traceback after a
long run."""

from __future__ import annotations

from pathlib import Path

from splitrt.edge_runtime.errors import SplitrtError


def output_dir(path: Path, flag: str = "--out") -> Path:
    """Create directory ``path`` (and its parents) or raise a `SplitrtError` naming ``flag``."""
    if path.exists() and not path.is_dir():
        raise SplitrtError(f"{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SplitrtError(f"{flag} {path}: cannot create the directory ({exc.strerror or exc})") from None
    return path


def output_file(path: Path, flag: str = "--out") -> Path:
    """Make sure file ``path`` can be written (its directory exists, it is not a directory)."""
    if path.is_dir():
        raise SplitrtError(f"{flag} {path}: is a directory; give a file name")
    output_dir(path.parent, flag)
    return path


def write_text(path: Path, text: str, flag: str = "--out") -> None:
    try:
        output_file(path, flag).write_text(text)
    except OSError as exc:
        raise SplitrtError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None
