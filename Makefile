# splitrt: `make demo` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# This machine ships these wheels on local disk (a CUDA build that runs on the CPU).
TORCH  := torch==2.14.1 torchvision==0.29.1
EXPORTS := exports

.PHONY: setup sysdeps demo test lint bench arm-deps arm-check clean

setup: $(STAMP) sysdeps

# System packages the real-process tests use (MQTT broker; nftables/iptables for loss emulation;
# openssl for the broker's test CA; openssh-server for the multi-host tests' SSH servers).
# Installed with apt when running as root; otherwise the tests that need them say so and skip.
SYSPKGS := mosquitto nftables iptables iproute2 openssl openssh-server
sysdeps:
	@missing=""; for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; tests needing them will skip with the reason"; \
	  else echo "note: not root or no apt-get; missing$$missing (tests needing them will skip with the reason)"; fi; \
	fi

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[all]'
	@touch $(STAMP)

# The live demo: RSU, SVs and CVs as processes over emulated links (as root), MAD2RL and baselines,
# then the same scenario in both simulator models; exports and profiles what it needs; prints the
# table. The overload preset: tasks come 2.5x as often as the CVs can run them, so queues matter.
demo: setup
	$(BIN)/splitrt hil --preset overload --exports $(EXPORTS) --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/splitrt bench --out bench/results.json

# On demand, as root, not part of `test`: the device side in an emulated arm64 Raspberry Pi
# (first run builds a cached rootfs, ~10 min; see tools/arm/check.py and the README).
# arm-deps installs the emulation tools with apt when one of them is missing (root only: the
# check itself needs root for debootstrap, chroot, mount and binfmt_misc).
ARMTOOLS := qemu-aarch64-static update-binfmts debootstrap
ARMPKGS  := qemu-user-static binfmt-support debootstrap
arm-deps:
	@if [ "$$(id -u)" != 0 ]; then echo "arm-check: run as root (sudo make arm-check)" >&2; exit 1; fi; \
	missing=""; for t in $(ARMTOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "missing$$missing: installing $(ARMPKGS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ARMPKGS) >/dev/null; \
	fi

arm-check: $(STAMP) arm-deps
	PYTHON=$(BIN)/python tools/arm/check.sh

clean:
	rm -rf $(EXPORTS) bench runs .pytest_cache
