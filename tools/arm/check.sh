#!/usr/bin/env bash
# `make arm-check`: prove the device side on 64-bit ARM in an emulated Raspberry Pi (issue 8).
#
# Run as root, on demand (it is not part of `make test`; `make arm-check` also installs the apt
# packages below when a tool is missing):
#   tools/arm/check.sh [--model resnet18] [--fail-at STAGE] [--quiet]
# The first run builds an arm64 Debian rootfs (~10 min, cached in $SPLITRT_ARM_ROOTFS,
# default /var/cache/splitrt/arm64-rootfs); later runs reuse it. Needs:
#   apt-get install -y qemu-user-static binfmt-support debootstrap
# $PYTHON (default: the repo's .venv, else python3) runs the orchestration and the host-side
# export, so it needs the project's export extra (torch). See tools/arm/check.py for the stages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "arm-check: run as root (debootstrap, chroot, mount, binfmt_misc)" >&2
    exit 1
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# exec: Ctrl-C and SIGTERM reach the Python process, whose clean-up undoes every mount.
exec "$PYTHON" -m splitrt.tools.arm.check "$@"
