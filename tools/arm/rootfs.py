"""The emulated system of `make arm-check`: binfmt, the cached arm64 rootfs and its mounts, the install.

Stages ``binfmt`` (qemu-aarch64 registered with the F flag), ``rootfs`` (a minimal arm64 Debian
built once with debootstrap, its venv with pyproject.toml's device dependencies from PyPI, and
proc with a Cortex-A72 /proc/cpuinfo bound over it, sys and dev mounted) and ``install`` (this
checkout copied in and pip-installed without extras). Every mount and binfmt change is pushed
on the run's undo stack.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from splitrt.tools.arm.context import (
    BASE_MARKER,
    DEPS_MARKER,
    ROOTFS_CA,
    ROOTFS_ENV,
    SRC,
    VENV,
    Context,
    chroot_env,
    mount,
    remove_tree,
    run_inside,
)
from splitrt.tools.arm.host import CommandFailed, under

log = logging.getLogger("arm-check")

SUITE = "bookworm"
#: Debian packages of the base rootfs (python3-venv brings ensurepip; ca-certificates for TLS).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def cortex_a72_cpuinfo(n_cpus: int) -> str:
    """/proc/cpuinfo of a Raspberry Pi 4 (BCM2711, Cortex-A72 cores) with ``n_cpus`` processors.

    qemu 7.2 user mode hands the guest the host's x86 /proc/cpuinfo; onnxruntime's aarch64 build
    parses it for ARM fields, finds none and segfaults on import (ANCHORS.md). The fields it needs
    per processor are the implementer (0x41, Arm) and the part (0xd08, Cortex-A72). Use the host's
    CPU count so the file agrees with the host's /sys/devices/system/cpu, which the guest also sees.
    """
    if n_cpus < 1:
        raise ValueError(f"n_cpus must be >= 1, got {n_cpus}")
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n"
        for i in range(n_cpus)
    ]
    return "\n".join(blocks) + "\nHardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"


def device_requirements(pyproject_text: str) -> list[str]:
    """What the rootfs venv gets from PyPI: build-system requires + the base (device) dependencies.

    Raises ValueError if the base dependencies name torch: the device install must not carry it.
    """
    import tomllib

    data = tomllib.loads(pyproject_text)
    build = list(data.get("build-system", {}).get("requires", []))
    deps = list(data.get("project", {}).get("dependencies", []))
    heavy = [d for d in deps if d.replace("-", "_").lower().startswith(("torch", "torchvision"))]
    if heavy:
        raise ValueError(f"pyproject.toml's base dependencies name {heavy}: the device set must not include torch")
    return build + deps


def stage_binfmt(ctx: Context) -> str:
    """Make the kernel run aarch64 ELF files with qemu-aarch64-static (undone at the end)."""
    done = []
    if str(BINFMT_DIR) not in ctx.host.mountpoints():
        mount(ctx, ["-t", "binfmt_misc", "binfmt_misc"], BINFMT_DIR)
        done.append("mounted binfmt_misc")
    entry = BINFMT_DIR / BINFMT_ENTRY
    if not (entry.exists() and entry.read_text().startswith("enabled")):
        ctx.host.run(["update-binfmts", "--enable", BINFMT_ENTRY], timeout_s=60, echo=False)
        ctx.undo.push(
            f"update-binfmts --disable {BINFMT_ENTRY}",
            lambda: ctx.host.run(["update-binfmts", "--disable", BINFMT_ENTRY], timeout_s=60, echo=False),
        )
        done.append(f"enabled {BINFMT_ENTRY}")
    text = entry.read_text()
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        # Without the fix-binary flag the kernel looks the interpreter up inside the chroot.
        raise CommandFailed(f"{entry} lacks the F (fix-binary) flag ({flags!r}): reinstall qemu-user-static")
    qemu = ctx.host.run(["qemu-aarch64-static", "--version"], timeout_s=30, echo=False).splitlines()[0]
    ctx.facts["qemu"] = qemu
    return f"{', '.join(done) or 'already enabled'}; {qemu}; flags {flags}"


def build_base_rootfs(ctx: Context) -> None:
    """debootstrap a minimal arm64 bookworm into ROOTFS.partial, then rename it to ROOTFS."""
    partial = ctx.rootfs.with_name(ctx.rootfs.name + ".partial")
    remove_tree(ctx.host, partial)  # a failed earlier attempt
    partial.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the arm64 rootfs in %s (first run only; ~10 min under emulation)", partial)
    ctx.host.run(
        [
            "debootstrap",
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            partial,
            ctx.mirror,
        ],
        timeout_s=1800,
    )
    # The second stage runs arm64 binaries (dpkg, maintainer scripts) under qemu; it mounts proc
    # and sys itself and unmounts them on exit; the final sweep catches them if it is killed.
    ctx.host.run(["chroot", partial, "/debootstrap/debootstrap", "--second-stage"], env=chroot_env(), timeout_s=3600)
    marker = partial / BASE_MARKER.lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"suite": SUITE, "mirror": ctx.mirror, "packages": list(BASE_PACKAGES)}) + "\n")
    leftover = [m for m in ctx.host.mountpoints() if under(m, partial)]
    if leftover:
        raise CommandFailed(f"debootstrap left mounts under {partial}: {leftover}")
    partial.rename(ctx.rootfs)


def mount_rootfs(ctx: Context) -> None:
    """proc (with the Cortex-A72 cpuinfo bound over /proc/cpuinfo), sys (read-only) and dev."""
    cpuinfo = ctx.workdir / "cpuinfo"
    cpuinfo.write_text(cortex_a72_cpuinfo(ctx.n_cpus))
    mount(ctx, ["-t", "proc", "-o", "nosuid,nodev,noexec", "proc"], ctx.inside("/proc"))
    mount(ctx, ["--bind", cpuinfo], ctx.inside("/proc/cpuinfo"))
    mount(ctx, ["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs"], ctx.inside("/sys"))
    mount(ctx, ["--bind", "/dev"], ctx.inside("/dev"))


def ensure_device_deps(ctx: Context) -> str:
    """The rootfs venv with pyproject.toml's device set from PyPI; redone when that set changes."""
    requirements = device_requirements((ctx.repo / "pyproject.toml").read_text())
    marker = ctx.inside(DEPS_MARKER)
    if marker.exists() and json.loads(marker.read_text()).get("requirements") == requirements:
        return "device dependencies cached"
    # The host may reach PyPI through a TLS-inspecting proxy whose CA only the host's bundle has.
    if HOST_CA.exists():
        shutil.copyfile(HOST_CA, ctx.inside(ROOTFS_CA))
    resolv = ctx.inside("/etc/resolv.conf")
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    if not ctx.inside(f"{VENV}/bin/python").exists():
        run_inside(ctx, ["python3", "-m", "venv", VENV], timeout_s=900)
    run_inside(ctx, [f"{VENV}/bin/python", "-m", "pip", "install", *requirements], timeout_s=3600)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"requirements": requirements}) + "\n")
    return f"installed {len(requirements)} requirements from PyPI"


def stage_rootfs(ctx: Context) -> str:
    if ctx.rootfs.exists() and not ctx.inside(BASE_MARKER).exists():
        raise CommandFailed(f"{ctx.rootfs} exists but is no finished splitrt rootfs: remove it or set ${ROOTFS_ENV}")
    start = time.monotonic()
    built = not ctx.rootfs.exists()
    if built:
        build_base_rootfs(ctx)
    mount_rootfs(ctx)
    deps = ensure_device_deps(ctx)
    debian = ctx.inside("/etc/debian_version").read_text().strip()
    ctx.facts["debian"] = f"{debian} ({SUITE}, arm64)"
    how = f"built in {time.monotonic() - start:.0f} s" if built else "reused"
    return f"{ctx.rootfs} {how}; Debian {debian}; {deps}"


def project_files(repo: Path) -> list[str]:
    """Files of the checkout: tracked plus untracked-but-not-ignored (never venvs or exports)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def stage_install(ctx: Context) -> str:
    """Copy the checkout into the rootfs and pip-install it without extras (base deps only)."""
    src = ctx.inside(SRC)
    remove_tree(ctx.host, src)
    files = project_files(ctx.repo)
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ctx.repo / name, src / name)
    pip = [f"{VENV}/bin/python", "-m", "pip"]
    # No build isolation: setuptools came with the cached requirements, so nothing is downloaded
    # unless the base dependencies changed, which is exactly what should then be fetched.
    run_inside(ctx, [*pip, "install", "--no-build-isolation", SRC], timeout_s=1800)
    run_inside(ctx, [*pip, "check"], timeout_s=600)
    return f"{len(files)} files copied; `pip install {SRC}` (no extras) and `pip check` passed"
