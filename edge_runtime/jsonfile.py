"""Reading the runtime's small versioned JSON files (work tables, link traces) with one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_runtime.errors import SplitrtError


def read_versioned(path: str | Path, what: str, version: int) -> dict[str, Any]:
    """The JSON object in ``path``; a `SplitrtError` naming ``what`` and the path if it is missing,
    unreadable, not an object, or not of ``format_version`` ``version``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitrtError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitrtError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format_version") != version:
        raise SplitrtError(f"{what} {path}: format_version must be {version}")
    return data
