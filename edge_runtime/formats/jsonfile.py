"""Reading the runtime's small versioned JSON files (profiles, policy metadata, work tables, link
traces) with one clear error for every way they can be wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError


def read_versioned(
    path: str | Path,
    what: str,
    version: int,
    *,
    required: Sequence[str] = (),
    error: type[SplitrtError] = SplitrtError,
    if_missing: str = "",
) -> dict[str, Any]:
    """The JSON object in ``path``. Raises ``error`` naming ``what`` and the path if the file is
    missing (the message ends with ``if_missing``), unreadable, not an object, not of
    ``format_version`` ``version``, or lacks one of the ``required`` keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist{if_missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format_version") != version:
        raise error(f"{what} {path}: format_version must be {version}")
    missing = [k for k in required if k not in data]
    if missing:
        raise error(f"{what} {path}: missing field(s) {', '.join(missing)}")
    return data
