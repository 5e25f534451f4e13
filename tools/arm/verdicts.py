"""The pure verdicts of `make arm-check`'s policy_decision and live_vehicle stages.

`find_policy` picks the on-device policy the repo ships, `compare_decisions` checks that the
emulated system decided as the host did, and `check_vehicle_records` checks one emulated
vehicle run's records. Each returns a one-line detail or raises CommandFailed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from splitrt.tools.arm.device import DECISION_ATOL
from splitrt.tools.arm.host import CommandFailed

#: Where the repo ships on-device policies (splitrt.edge_runtime.decide.onnx_policy: POLICY_META + policy.onnx per dir).
POLICY_ROOT = "policy/trained"
POLICY_META = "policy.json"


def find_policy(repo: Path) -> Path:
    """The on-device policy the repo ships: POLICY_ROOT/default if it has one, else the first
    directory under POLICY_ROOT (sorted) holding a POLICY_META. CommandFailed if there is none."""
    root = repo / POLICY_ROOT
    found = sorted(p.parent for p in root.rglob(POLICY_META)) if root.is_dir() else []
    if not found:
        raise CommandFailed(
            f"no on-device policy under {root} (a directory with {POLICY_META} + policy.onnx): ship one, e.g. "
            f"`splitrt export-policy --run RUN --out {POLICY_ROOT}/default`"
        )
    default = root / "default"
    return default if default in found else found[0]


def compare_decisions(host: dict[str, Any], device: dict[str, Any], atol: float = DECISION_ATOL) -> str:
    """Check that the device made the host's decisions: the same action for every sample, the same
    valid-action set and q within ``atol`` * max(1, max |q_host|); a one-line detail, else CommandFailed.

    ``host`` and ``device`` are the results of tools/arm/device.py ``decision`` on one inputs file.
    """
    n = len(host["actions"])
    if device["models"] != host["models"] or len(device["actions"]) != n:
        raise CommandFailed(f"the device decided on other samples: {device['models']} vs the host's {host['models']}")
    differ = [b for b in range(n) if device["actions"][b] != host["actions"][b]]
    if differ:
        b = differ[0]
        ha, da = host["actions"][b], device["actions"][b]
        raise CommandFailed(
            f"actions differ on {len(differ)} of {n} samples; sample {b} ({host['models'][b]}): host "
            f"{host['machine']} chose {ha} (q {host['q'][b][ha]}), {device['machine']} chose {da} "
            f"(q {device['q'][b][da]}; its q of {ha}: {device['q'][b][ha]})"
        )
    worst, scale = 0.0, 1.0
    for b, (hq, dq) in enumerate(zip(host["q"], device["q"], strict=True)):
        if [v is None for v in hq] != [v is None for v in dq]:
            raise CommandFailed(f"sample {b}: the valid actions differ between host and device")
        for h, d in zip(hq, dq, strict=True):
            if h is not None:
                worst, scale = max(worst, abs(h - d)), max(scale, abs(h))
    if not worst <= atol * scale:
        raise CommandFailed(f"q differs by {worst:.3e} between host and device (> {atol:g} x {scale:.3g})")
    pairs = ", ".join(f"{c}@{j}" for c, j in zip(device["cuts"], device["nodes"], strict=True))
    return (
        f"{device['method']}: {n} decisions on {device['machine']} == {host['machine']} host: identical "
        f"actions (cut@node {pairs}); max |q diff| {worst:.1e} <= {atol * scale:.0e}; torch not loaded"
    )


def check_vehicle_records(
    records: Sequence[dict[str, Any]], *, n_tasks: int, outcome: str, cut: int, node: int | None
) -> str:
    """Check one vehicle run's records: every task exactly once, all with ``outcome`` at (cut,
    node), each output verified against the whole model, and, when remote, computed by the node
    (remote compute > 0). A one-line detail, else CommandFailed naming the first bad tasks."""
    ids = [r["task_id"] for r in records]
    if sorted(r["index"] for r in records) != list(range(n_tasks)) or len(set(ids)) != len(ids):
        raise CommandFailed(f"expected tasks 0..{n_tasks - 1} once each, got indices {[r['index'] for r in records]}")
    checks: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        (f"outcome {outcome}", lambda r: r["outcome"] == outcome),
        (f"cut {cut}, node {node}", lambda r: r["cut"] == cut and r["node"] == node),
        ("verified against the whole model", lambda r: r["verified"] is True),
    ]
    if outcome == "remote":
        checks.append(("remote compute > 0", lambda r: r["remote_compute_s"] > 0 and r["node_name"] is not None))
    else:
        checks.append(
            ("local compute > 0, none remote", lambda r: r["local_compute_s"] > 0 and r["remote_compute_s"] == 0)
        )
    for what, ok in checks:
        bad = [r for r in records if not ok(r)]
        if bad:
            shown = ", ".join(
                f"{r['task_id']} ({r['outcome']}, cut {r['cut']}, {r['reason'] or 'no reason'})" for r in bad[:3]
            )
            raise CommandFailed(f"{len(bad)} of {n_tasks} tasks not {what}: {shown}")
    max_err = max(r["max_abs_err"] for r in records)
    where = f"by {records[0]['node_name']}" if outcome == "remote" else "on the vehicle"
    return f"{n_tasks}/{n_tasks} {outcome} at cut {cut} {where}, all verified (max abs err {max_err:.1e})"
