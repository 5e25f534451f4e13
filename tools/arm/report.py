"""The results of `make arm-check`: one `StageResult` per stage and the summary table with the exit status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def summarize(results: Sequence[StageResult], facts: dict[str, str] | None = None) -> tuple[str, int]:
    """The summary table and the exit status: 1 if any stage failed, else 0.

    A stage skipped because a prerequisite did not pass does not fail it by itself: the failed
    prerequisite already did.
    """
    lines = ["", "arm-check summary"]
    for r in results:
        lines.append(f"  {r.name:<16} {r.status.upper():<12} {r.seconds:7.1f} s  {r.detail}")
    for key, value in (facts or {}).items():
        lines.append(f"  {key}: {value}")
    failed = [r.name for r in results if r.status == FAILED]
    counts = {s: sum(r.status == s for r in results) for s in (PASSED, FAILED, SKIPPED)}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"result: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}; {tally}")
    return "\n".join(lines), 1 if failed else 0
