"""`make arm-check`: the device side on 64-bit ARM, in an emulated Raspberry Pi (issue 8).

Run as root, on demand (not part of `make test`): ``tools/arm/check.sh`` or
``python -m splitrt.tools.arm.check [--model resnet18] [--fail-at STAGE]``. Stages, in order:

  host_export     (host) export the model's segments and compute the whole model's output on
                  this x86 host: the reference the ARM side must reproduce.
  binfmt          (host) mount binfmt_misc if absent and enable qemu-aarch64 (qemu-user-static).
  rootfs          build ONCE a minimal arm64 Debian bookworm (debootstrap) with python3 and a
                  venv holding pyproject.toml's base dependencies (the device set, no torch) from
                  PyPI, cached outside the repo at $SPLITRT_ARM_ROOTFS (default
                  /var/cache/splitrt/arm64-rootfs); later runs reuse it. Then mount proc (with a
                  Cortex-A72 /proc/cpuinfo bound over it: onnxruntime segfaults on qemu 7.2's
                  passed-through x86 one), sys and dev into it.
  install         copy this checkout in and `pip install` it WITHOUT extras; `pip check`.
  machine         (emulated) platform.machine() == aarch64, ARM cpuinfo, versions.
  torch_free      (emulated) every edge_runtime module imports; torch neither loaded nor installed.
  segments        (emulated) splitrt.edge_runtime.compute.segments.SegmentRunner on the host's export matches the
                  host's whole-model output (tools/arm/device.py DEFAULT_RTOL).
  policy_decision (host + emulated) the first on-device policy under policy/trained/ (default/
                  if present; FAILS if there is none) decides on seeded eq (53) observations on
                  the host and, with the installed package, inside: identical actions, q within
                  tools/arm/device.py DECISION_ATOL, torch not loaded.
  live_vehicle    `splitrt serve` (RSU, host Python, host export) on tcp://127.0.0.1:*, and
                  `splitrt vehicle --verify` of the rootfs venv inside (the chroot shares the
                  host's loopback) for VEHICLE_SLOTS slots, once with ``fixed:K`` (middle cut:
                  head on aarch64, tail on the x86 RSU) and once ``local``: every task recorded
                  once, all remote (remote compute > 0) resp. all local, every output verified
                  against the whole model. The RSU is stopped at the end, also on failure.

A stage whose prerequisite did not pass is "skipped". The exit status is 1 if any stage that
ran failed (or clean-up failed), 130 on Ctrl-C, else 0. Everything this run mounts or enables is
undone in reverse order at the end, also on failure, Ctrl-C or SIGTERM, and any process still
running inside the rootfs is ended; the last summary line says so.
Emulated compute is ~100x slower than a real Cortex-A72: this proves function, never timing.

Module level uses only the stdlib, so the orchestration runs with any Python 3.11+; the host
sides of host_export, policy_decision and live_vehicle run ``--host-python`` (default: this
interpreter), which needs torch for the export.

This module is the entry point: the clean-up, signal handling, the CLI and `main`. The rest of
the host side is split by role: tools/arm/host.py (running commands, mount and process tables,
the undo stack), tools/arm/context.py (the run's `Context`, paths, and the helpers the stages
share), tools/arm/rootfs.py (binfmt, the rootfs build and mounts, the install),
tools/arm/stages.py (the other stages, `STAGES`, `run_stages`), tools/arm/verdicts.py (the pure
policy and vehicle verdicts) and tools/arm/report.py (stage results and the summary).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from splitrt.tools.arm.context import DEFAULT_MIRROR, DEFAULT_ROOTFS, MIRROR_ENV, ROOTFS_ENV, Context, unmount
from splitrt.tools.arm.device import DEFAULT_RTOL
from splitrt.tools.arm.host import Host, Undo, under
from splitrt.tools.arm.report import FAILED, PASSED, StageResult, summarize
from splitrt.tools.arm.stages import STAGES, Stage, run_stages

log = logging.getLogger("arm-check")

HOST_TOOLS = ("debootstrap", "chroot", "mount", "umount", "update-binfmts", "qemu-aarch64-static")
APT_PACKAGES = "qemu-user-static binfmt-support debootstrap"


def clean_up(ctx: Context, extra_roots: Sequence[Path] = ()) -> StageResult:
    """End our processes, undo every mount/binfmt change, sweep what remains under the rootfs."""
    start = time.monotonic()
    errors: list[str] = []
    roots = [ctx.rootfs, ctx.rootfs.with_name(ctx.rootfs.name + ".partial"), *extra_roots]
    ended = ctx.host.end_all()
    stray = [pid for root in roots for pid in ctx.host.processes_rooted_in(root)]
    for pid in stray:
        ctx.host.kill_pid(pid)
    n_undo = len(ctx.undo)
    errors += ctx.undo.run_all()
    # Mounts nobody registered: debootstrap's own proc/sys when it was killed mid-way.
    for point in reversed(ctx.host.mountpoints()):
        if any(under(point, root) for root in roots):
            try:
                unmount(ctx.host, Path(point))
                log.info("swept mount %s", point)
            except Exception as exc:
                errors.append(f"umount {point}: {exc}")
    left_mounts = [m for m in ctx.host.mountpoints() if any(under(m, root) for root in roots)]
    left_procs = [pid for root in roots for pid in ctx.host.processes_rooted_in(root)]
    if left_mounts:
        errors.append(f"still mounted: {', '.join(left_mounts)}")
    if left_procs:
        errors.append(f"still running in the rootfs: pids {left_procs}")
    detail = (
        f"{n_undo} step(s) undone, {ended} process group(s) and {len(stray)} stray process(es) ended; "
        f"nothing left mounted under {ctx.rootfs} or running in it"
    )
    if errors:
        return StageResult("clean-up", FAILED, "; ".join(errors), time.monotonic() - start)
    return StageResult("clean-up", PASSED, detail, time.monotonic() - start)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C, so the clean-up in `finally` runs."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig in old:
        signal.signal(sig, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def check(
    ctx: Context, stages: Sequence[Stage] = STAGES, *, fail_at: str | None = None
) -> tuple[list[StageResult], bool]:
    """Run the stages, then always the clean-up; the results (clean-up last) and whether interrupted."""
    results: list[StageResult] = []
    interrupted = False
    try:
        with interrupts_as_keyboard_interrupt():
            run_stages(stages, ctx, results, fail_at=fail_at)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: cleaning up")
    finally:
        with interrupts_ignored():
            cleanup = clean_up(ctx)
    results.append(cleanup)
    return results, interrupted


def rootfs_path(value: str | None) -> Path:
    path = Path(value) if value else DEFAULT_ROOTFS
    if not path.is_absolute() or path.resolve() == Path("/") or len(path.resolve().parts) < 3:
        raise SystemExit(f"arm-check: ${ROOTFS_ENV}={value!r} must be an absolute path at least two levels deep")
    return path.resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/arm/check.sh",
        description=__doc__.split("\n\n")[0],
        epilog="Stages: " + ", ".join(s.name for s in STAGES),
    )
    parser.add_argument("--model", default="resnet18", help="torchvision model to export and run (default resnet18)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="cross-architecture parity tolerance")
    parser.add_argument(
        "--host-python", default=sys.executable, help="Python with the project's export extra (torch) for host_export"
    )
    parser.add_argument(
        "--fail-at",
        choices=[s.name for s in STAGES],
        help="mark this stage failed after it ran, to check that clean-up happens on failure",
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo the commands' output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="arm-check %(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"
    )
    if os.geteuid() != 0:
        print("arm-check: must run as root (debootstrap, chroot, mount, binfmt_misc)", file=sys.stderr)
        return 1
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"arm-check: missing {', '.join(missing)}: apt-get install -y {APT_PACKAGES}", file=sys.stderr)
        return 1
    rootfs = rootfs_path(os.environ.get(ROOTFS_ENV))
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    lock_file = open(rootfs.with_name(rootfs.name + ".lock"), "w")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"arm-check: another arm-check is using {rootfs}", file=sys.stderr)
        return 1
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="splitrt-arm-check-", dir=rootfs.parent))
    undo = Undo()
    undo.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir))
    ctx = Context(
        repo=Path(__file__).resolve().parents[2],
        rootfs=rootfs,
        workdir=workdir,
        host=Host(echo=not args.quiet),
        undo=undo,
        mirror=os.environ.get(MIRROR_ENV, DEFAULT_MIRROR),
        host_python=args.host_python,
        model=args.model,
        rtol=args.rtol,
        n_cpus=os.cpu_count() or 1,
    )
    results, interrupted = check(ctx, fail_at=args.fail_at)
    ctx.facts["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    ctx.facts["total"] = f"{time.monotonic() - started:.0f} s"
    text, code = summarize(results, ctx.facts)
    print(text, flush=True)
    if interrupted:
        print("arm-check: interrupted (Ctrl-C / SIGTERM)", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
