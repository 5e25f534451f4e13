"""The stages of `make arm-check`, their order and prerequisites (`STAGES`), and `run_stages`.

The checks here run on the host (``host_export``) or in the emulated system (``machine``,
``torch_free``, ``segments``, ``policy_decision``, ``live_vehicle``); ``binfmt``, ``rootfs`` and
``install``, which set the emulated system up, are in tools/arm/rootfs.py. A stage returns a
one-line detail or raises; `run_stages` records each as a `StageResult`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from splitrt.edge_runtime.vehicle.journal import discard_run
from splitrt.tools.arm.context import (
    CHECK_DIR,
    RECORDS_DIR,
    VENV,
    Context,
    device_check,
    host_check,
    log_tail,
    mount,
    run_inside,
    start_host_process,
    wait_ready,
)
from splitrt.tools.arm.host import CommandFailed
from splitrt.tools.arm.report import FAILED, PASSED, SKIPPED, StageResult
from splitrt.tools.arm.rootfs import stage_binfmt, stage_install, stage_rootfs
from splitrt.tools.arm.verdicts import check_vehicle_records, compare_decisions, find_policy

log = logging.getLogger("arm-check")

#: live_vehicle: slots per vehicle run and their length. The emulated ResNet18 chain takes ~18 s,
#: so tasks queue on the vehicle whatever the slot; 5 s keeps the run short and the RSU's
#: allocation period sane. Only completion and correctness are checked, never a timing.
VEHICLE_SLOTS = 6
VEHICLE_SLOT_S = 5.0


def stage_host_export(ctx: Context) -> str:
    """Export ``ctx.model`` on the host and compute the host's whole-model output (the reference)."""
    exports = ctx.workdir / "exports"
    ctx.host.run(
        [ctx.host_python, "-m", "splitrt.tools.cli.main", "export", "--model", ctx.model, "--out", exports],
        cwd=ctx.repo,
        timeout_s=900,
    )
    ctx.host.run(
        [
            ctx.host_python,
            "-m",
            "splitrt.tools.arm.device",
            "reference",
            "--segments",
            exports / ctx.model,
            "--out",
            ctx.workdir / "reference.npz",
        ],
        cwd=ctx.repo,
        timeout_s=600,
    )
    manifest = json.loads((exports / ctx.model / "manifest.json").read_text())
    return f"{ctx.model}: {len(manifest['segments'])} segments exported, host whole-model output saved"


def stage_machine(ctx: Context) -> str:
    result = device_check(ctx, "machine", timeout_s=900)
    versions = result["versions"]
    ctx.facts["python"] = versions["python"]
    ctx.facts["device packages"] = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "python")
    return f"platform.machine() = {result['machine']}; QEMU_CPU={result['qemu_cpu']}; HWCAP {' '.join(result['hwcap'])}"


def stage_torch_free(ctx: Context) -> str:
    result = device_check(ctx, "torch-free", timeout_s=900)
    return f"{len(result['modules'])} edge_runtime modules + CLI verbs import without torch; torch not installed"


def bind_check_dir(ctx: Context) -> None:
    """Bind the run's work directory (host export + reference) read-only at CHECK_DIR, once."""
    if str(ctx.inside(CHECK_DIR)) not in ctx.host.mountpoints():
        mount(ctx, ["--bind", "-o", "ro", ctx.workdir], ctx.inside(CHECK_DIR))


def stage_segments(ctx: Context) -> str:
    """The host's export, bound read-only into the rootfs, run there and compared with the host."""
    bind_check_dir(ctx)
    result = device_check(
        ctx,
        "segments",
        "--segments",
        f"{CHECK_DIR}/exports/{ctx.model}",
        "--reference",
        f"{CHECK_DIR}/reference.npz",
        "--rtol",
        repr(ctx.rtol),
    )
    return (
        f"{result['model']}: {result['segments']} segments on aarch64 vs host whole model: rel err "
        f"{result['rel_err']:.1e} <= {result['rtol']:g}; top-1 equal {result['top1_same']}; "
        f"split at cut {result['split_cut']} == chain"
    )


def stage_policy_decision(ctx: Context) -> str:
    """The shipped on-device policy decides on aarch64 exactly as on the x86 host.

    The policy directory is copied into the bound work directory (not taken from SRC, where
    only git-visible files arrive); the host writes seeded observations, decides on them with its
    own onnxruntime, the emulated system decides on the same file with the installed package,
    and `compare_decisions` asserts identical actions and q within DECISION_ATOL.
    """
    policy = find_policy(ctx.repo)
    copy = ctx.workdir / "policy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(policy, copy)
    bind_check_dir(ctx)
    inputs = ctx.workdir / "decision-inputs.npz"
    host_check(ctx, "decision-inputs", "--policy", copy, "--out", inputs)
    host = host_check(ctx, "decision", "--policy", copy, "--inputs", inputs)
    device = device_check(
        ctx, "decision", "--policy", f"{CHECK_DIR}/policy", "--inputs", f"{CHECK_DIR}/decision-inputs.npz"
    )
    return f"{policy.relative_to(ctx.repo)} ({compare_decisions(host, device)})"


def run_emulated_vehicle(ctx: Context, endpoint: str, label: str, decider: str) -> list[dict[str, Any]]:
    """`splitrt vehicle` of the rootfs venv on the bound export against ``endpoint``; its records."""
    out = f"{RECORDS_DIR}/{label}.jsonl"
    discard_run(ctx.inside(out))  # a previous check's records and journal would be continued
    run_inside(
        ctx,
        [
            f"{VENV}/bin/splitrt", "vehicle", "--segments", f"{CHECK_DIR}/exports/{ctx.model}",
            "--edge", endpoint, "--slots", str(VEHICLE_SLOTS), "--slot-s", repr(VEHICLE_SLOT_S),
            "--decider", decider, "--timeout-s", "120", "--connect-s", "120", "--verify",
            "--id", f"arm-{label}", "--out", out,
        ],
        timeout_s=2400,
    )  # fmt: skip
    lines = ctx.inside(out).read_text().splitlines() if ctx.inside(out).exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def stage_live_vehicle(ctx: Context) -> str:
    """`splitrt vehicle` in the emulated system against `splitrt serve` (RSU) on the host.

    The RSU serves the host's export on 127.0.0.1 (the chroot shares the host's network
    namespace); the aarch64 vehicle runs the same export bound read-only, twice: ``fixed:K`` at
    the middle cut (head on aarch64, tail on the x86 RSU) and ``local``, both with ``--verify``
    (every output against the whole model on the vehicle). `check_vehicle_records` asserts the
    records. The RSU is stopped at the end, also on failure (and clean-up ends it regardless).
    """
    bind_check_dir(ctx)
    export = ctx.workdir / "exports" / ctx.model
    n_segments = len(json.loads((export / "manifest.json").read_text())["segments"])
    middle = n_segments // 2
    rsu_log = ctx.workdir / "rsu.log"
    rsu_status = ctx.workdir / "rsu.status"
    rsu_status.unlink(missing_ok=True)
    rsu = start_host_process(
        ctx,
        [
            ctx.host_python, "-m", "splitrt.tools.cli.main", "serve", "--segments", export, "--role", "rsu",
            "--bind", "tcp://127.0.0.1:*", "--slot-s", repr(VEHICLE_SLOT_S), "--status-file", rsu_status,
        ],
        rsu_log.name,
    )  # fmt: skip
    details = []
    try:
        endpoint = wait_ready(rsu, rsu_status, rsu_log, timeout_s=600)["endpoint"]
        try:
            for label, decider, outcome, cut, node in (
                ("fixed", f"fixed:{middle}", "remote", middle, 0),
                ("local", "local", "local", n_segments, None),
            ):
                records = run_emulated_vehicle(ctx, endpoint, label, decider)
                check = check_vehicle_records(records, n_tasks=VEHICLE_SLOTS, outcome=outcome, cut=cut, node=node)
                details.append(f"{decider}: {check}")
            if rsu.poll() is not None:
                raise CommandFailed(f"the RSU exited {rsu.returncode} during the run")
        except CommandFailed as exc:
            raise CommandFailed(f"{exc}; RSU log: {log_tail(rsu_log)}", exc.output) from None
    finally:
        ctx.host.end(rsu)
    return f"aarch64 vehicle -> x86 RSU {endpoint}: " + "; ".join(details) + f"; RSU stopped (exit {rsu.returncode})"


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]
    requires: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("host_export", stage_host_export),
    Stage("binfmt", stage_binfmt),
    Stage("rootfs", stage_rootfs, ("binfmt",)),
    Stage("install", stage_install, ("rootfs",)),
    Stage("machine", stage_machine, ("install",)),
    Stage("torch_free", stage_torch_free, ("install",)),
    Stage("segments", stage_segments, ("install", "host_export")),
    Stage("policy_decision", stage_policy_decision, ("install",)),
    Stage("live_vehicle", stage_live_vehicle, ("install", "host_export")),
)


def run_stages(
    stages: Sequence[Stage], ctx: Context, results: list[StageResult], *, fail_at: str | None = None
) -> None:
    """Run ``stages`` in order, appending one result each to ``results`` (KeyboardInterrupt passes)."""
    for stage in stages:
        status = {r.name: r.status for r in results}
        missing = [r for r in stage.requires if status.get(r) != PASSED]
        if missing:
            results.append(StageResult(stage.name, SKIPPED, f"needs {', '.join(missing)}"))
            continue
        log.info("stage %s", stage.name)
        start = time.monotonic()
        try:
            try:
                detail, state = stage.run(ctx), PASSED
            except KeyboardInterrupt:
                results.append(StageResult(stage.name, FAILED, "interrupted", time.monotonic() - start))
                raise
            if stage.name == fail_at:
                detail, state = f"deliberate failure after the stage ran (--fail-at {fail_at})", FAILED
        except Exception as exc:
            detail, state = f"{type(exc).__name__}: {exc}", FAILED
            log.debug("stage %s failed", stage.name, exc_info=True)
        results.append(StageResult(stage.name, state, detail, time.monotonic() - start))
        log.info("stage %s: %s", stage.name, state)
