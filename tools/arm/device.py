"""The half of `make arm-check` that runs inside the emulated arm64 system (plus the host's reference).

`tools/arm/check.py` runs ``python -m splitrt.tools.arm.device CHECK ...`` with the rootfs's own
Python after installing the project there without extras, so what is checked is the installed
copy, as a Raspberry Pi would have it. Each check prints what it found and, as its last line,
``ARM_CHECK_RESULT {json}``; exit status 0 means it passed, 1 that an assertion failed (the JSON
then carries ``error``). Module level imports only the stdlib: the checks import numpy and
edge_runtime lazily, never torch.

Checks (``CHECKS``):
  machine     platform.machine() must be aarch64; reports the ARM /proc/cpuinfo the host bound
              in, the emulated CPU's HWCAPs and the versions of the device packages.
  torch-free  imports every edge_runtime module and the CLI's verb table; torch must be neither
              imported nor installed, and edge_runtime must come from the installed package.
  segments    runs an export made on the host with splitrt.edge_runtime.compute.segments.SegmentRunner and
              compares it with the host's whole-model output (cross-architecture parity).
  decision    loads an on-device policy directory (splitrt.edge_runtime.decide.onnx_policy.OnDevicePolicy: policy.onnx
              + policy.json) and decides on the observations of a ``decision-inputs`` file; prints
              every action and the q values of the valid ones. Run on the host AND in the emulated
              system, tools/arm/check.py compares the two (same actions, q within DECISION_ATOL).
  reference   (host side) writes that input and whole-model output with the host's onnxruntime.
  decision-inputs  (host side) writes seeded eq (53) observations, DNN types, node availability
              and diffusion noise for ``decision``, so both architectures decide on the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError

#: Prefix of the one machine-readable line every check prints last (parsed by tools/arm/check.py).
RESULT_PREFIX = "ARM_CHECK_RESULT "

#: Cross-architecture tolerance: max |device - host| <= rtol * max |host|, the export's own parity
#: bound (models/segmenter.py PARITY_RTOL). x86 AVX and ARM NEON kernels sum in different orders,
#: so bitwise equality is not expected; a wrong layer or weight is off by O(1) of the scale.
DEFAULT_RTOL = 1e-4

#: Decision parity: max |q_device - q_host| over the valid actions <= DECISION_ATOL * max(1,
#: max |q_host|). q is the graph's float32 output (softmax of x0 for MAD2RL, Q values for P-QMIX);
#: a different summation order moves it by ~1e-7 of its scale, a wrong weight by far more.
DECISION_ATOL = 1e-5

#: Linux arm64 AT_HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h), bit i -> name.
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
    "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
    "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
)  # fmt: skip
AT_HWCAP = 16

#: Distributions whose versions the machine check reports (the device set of pyproject.toml).
DEVICE_DISTRIBUTIONS = ("numpy", "onnxruntime", "onnx", "pyzmq", "psutil", "paho-mqtt", "tqdm", "splitrt")


class CheckFailed(Exception):
    """A property the emulated device must have does not hold (the message says which)."""


def decode_hwcap(bits: int) -> list[str]:
    """Names of the set AT_HWCAP bits, in bit order (unknown high bits as ``bitN``)."""
    names = []
    for i in range(64):
        if bits >> i & 1:
            names.append(HWCAP_NAMES[i] if i < len(HWCAP_NAMES) else f"bit{i}")
    return names


def read_hwcap(auxv: bytes) -> int | None:
    """AT_HWCAP from the bytes of /proc/self/auxv of a 64-bit little-endian process, or None."""
    for i in range(0, len(auxv) - 15, 16):
        key, value = struct.unpack_from("<QQ", auxv, i)
        if key == AT_HWCAP:
            return value
        if key == 0:
            break
    return None


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """One dict per ``processor`` block of /proc/cpuinfo text (keys and values stripped)."""
    processors: list[dict[str, str]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors.append({})
        if processors:
            processors[-1][key] = value
    return processors


def check_machine(args: argparse.Namespace) -> dict[str, Any]:
    machine = platform.machine()
    print(f"platform.machine() = {machine}")
    if machine != "aarch64":
        raise CheckFailed(f"platform.machine() is {machine!r}, expected 'aarch64' (is qemu-aarch64 binfmt active?)")
    processors = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    parts = sorted({(p.get("CPU implementer", "?"), p.get("CPU part", "?")) for p in processors})
    print(f"/proc/cpuinfo: {len(processors)} processor(s), (implementer, part) {parts}")
    if not processors or parts != [("0x41", "0xd08")]:
        raise CheckFailed(f"/proc/cpuinfo is not the Cortex-A72 one (implementer, part = {parts})")
    try:
        hwcap = read_hwcap(Path("/proc/self/auxv").read_bytes())
    except OSError:
        hwcap = None
    caps = decode_hwcap(hwcap) if hwcap is not None else []
    qemu_cpu = os.environ.get("QEMU_CPU", "")
    print(f"QEMU_CPU={qemu_cpu or '(unset)'}, HWCAP: {' '.join(caps) or '(unreadable)'}")
    # Cortex-A72 is Armv8.0: no LSE atomics and no SVE, which qemu's default 'max' CPU has. Their
    # absence shows the Pi-4-like CPU model is the one really emulated.
    if qemu_cpu == "cortex-a72" and caps and ({"atomics", "sve"} & set(caps)):
        raise CheckFailed(f"QEMU_CPU=cortex-a72 but the CPU reports Armv8.1+ features: {caps}")
    from importlib import metadata

    import onnxruntime  # the import that segfaults under qemu 7.2 without an ARM /proc/cpuinfo

    versions = {"python": platform.python_version()}
    for dist in DEVICE_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"onnxruntime providers: {onnxruntime.get_available_providers()}")
    return {"machine": machine, "cpu_parts": parts, "hwcap": caps, "qemu_cpu": qemu_cpu, "versions": versions}


def check_torch_free(args: argparse.Namespace) -> dict[str, Any]:
    import importlib
    import importlib.util
    import pkgutil

    import splitrt.edge_runtime as edge_runtime

    names = sorted(m.name for m in pkgutil.walk_packages(edge_runtime.__path__, "splitrt.edge_runtime."))
    for name in names:
        importlib.import_module(name)
    # The CLI's verb table imports every verb module: device verbs must stay torch-free too.
    from splitrt.tools.cli.main import VERBS, build_parser

    build_parser()
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
    location = Path(edge_runtime.__file__).resolve()
    print(f"imported edge_runtime + {len(names)} modules from {location.parent}; verbs: {', '.join(VERBS)}")
    print(f"torch modules loaded: {loaded}")
    if loaded:
        raise CheckFailed(f"torch was imported by the device code: {loaded[:5]}")
    if importlib.util.find_spec("torch") is not None:
        raise CheckFailed("torch is installed in the device environment (the base install must not pull it in)")
    if "site-packages" not in location.parts:
        raise CheckFailed(f"edge_runtime came from {location}, not from the installed package")
    return {"modules": ["edge_runtime", *names], "verbs": list(VERBS), "location": str(location.parent)}


def check_segments(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from splitrt.edge_runtime.compute.segments import SegmentRunner

    ref = np.load(args.reference)
    x, expected = ref["input"], ref["output"]
    start = time.perf_counter()
    runner = SegmentRunner(args.segments, threads=1)  # checks every segment's sha256
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    out = runner.run(x, 0)
    run_s = time.perf_counter() - start
    scale = float(np.max(np.abs(expected)))
    rel_err = float(np.max(np.abs(out.astype(np.float64) - expected))) / max(scale, np.finfo(np.float32).tiny)
    # A split at the middle cut, as a vehicle and an edge node would run it, on this device alone:
    # the same kernels on the same inputs, so it must equal the chain bit for bit.
    cut = runner.n_segments // 2
    split = runner.run(runner.run(x, 0, cut), cut)
    top1_same = bool(np.argmax(out) == np.argmax(expected))
    name = runner.manifest.model
    print(
        f"{name}: {runner.n_segments} segments loaded in {load_s:.1f} s, chain ran in {run_s:.1f} s (emulated: "
        f"no meaning as a device timing); max|device - host| / max|host| = {rel_err:.2e} (rtol {args.rtol:g}); "
        f"top-1 {'equal' if top1_same else 'DIFFERENT'}; split at cut {cut} equals the chain: {np.array_equal(split, out)}"
    )
    if out.shape != expected.shape or not rel_err <= args.rtol:
        raise CheckFailed(f"{name}: device output differs from the host's: rel err {rel_err:.3e} > rtol {args.rtol:g}")
    if not np.array_equal(split, out):
        raise CheckFailed(f"{name}: running cuts [0,{cut}) then [{cut},n) differs from the whole chain")
    return {
        "model": name,
        "segments": runner.n_segments,
        "rel_err": rel_err,
        "rtol": args.rtol,
        "top1_same": top1_same,
        "split_cut": cut,
    }


def make_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Host side: a seeded input and the whole model's output on this (host) machine."""
    import numpy as np

    from splitrt.edge_runtime.compute.segments import open_session
    from splitrt.edge_runtime.formats.manifest import Manifest

    manifest = Manifest.load(args.segments)
    whole = manifest.whole_path()
    if whole is None:
        raise SplitrtError(f"{args.segments}: the export kept no whole model to compute the reference with")
    spec = manifest.input
    x = np.random.default_rng(args.seed).standard_normal(spec.shape).astype(spec.dtype)
    y = open_session(whole, threads=1).run(None, {spec.name: x})[0]
    np.savez(args.out, input=x, output=y)
    print(f"reference: {manifest.model} whole model on {platform.machine()}, output {y.dtype}{list(y.shape)}")
    return {"model": manifest.model, "machine": platform.machine(), "out": str(args.out)}


def make_decision_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Host side: ``args.n`` seeded observations in eq (53)'s units, one DNN type each (the policy's
    types in turn), node availability and the diffusion noise (unused by a P-QMIX actor).

    Written to a file rather than re-drawn on the device: both architectures must decide on the
    same bytes, and numpy's normal sampler uses libm, whose last bits may differ between them.
    Sample 0 is an idle vehicle at the RSU; the last one reaches only the RSU (every SV masked).
    """
    import numpy as np

    from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
    from splitrt.edge_runtime.sysmodel import observation as obs_layout

    if args.n < 1:
        raise SplitrtError(f"--n must be >= 1 observation, got {args.n}")
    policy = OnDevicePolicy(args.policy)
    rng = np.random.default_rng(args.seed)
    n, n_sv = args.n, policy.n_nodes - 1
    q_loc = rng.uniform(0.0, 5e9, n)  # FLOPs: up to a few ResNet18/VGG16 tasks queued
    q_rsu = rng.uniform(0.0, 5e9, n)
    q_sv = rng.uniform(0.0, 3e9, (n, n_sv))
    pos = rng.uniform(-500.0, 500.0, n)  # m along the road, RSU at 0
    sv_pos = rng.uniform(-500.0, 500.0, (n, n_sv))
    q_loc[0] = q_rsu[0] = pos[0] = 0.0
    q_sv[0] = sv_pos[0] = 0.0
    obs = obs_layout.build_observation(q_loc, q_rsu, q_sv, pos, sv_pos)
    node_ok = rng.random((n, policy.n_nodes)) < 0.75
    node_ok[:, 0] = True
    node_ok[-1, 1:] = False
    models = np.array([policy.types[b % len(policy.types)] for b in range(n)])
    noise = rng.standard_normal((n, max(policy.steps, 1), policy.max_actions)).astype(np.float32)
    np.savez(args.out, obs=obs, models=models, node_ok=node_ok, noise=noise)
    print(f"decision inputs: {n} observations of {obs.shape[1]} values for {policy.name} ({policy.directory})")
    return {"n": n, "out": str(args.out)}


def _torch_modules() -> set[str]:
    return {m for m in sys.modules if m == "torch" or m.startswith("torch.")}


def check_decision(args: argparse.Namespace) -> dict[str, Any]:
    """Decide on every observation of ``args.inputs`` with the policy; each action must be valid."""
    import numpy as np

    from splitrt.edge_runtime.decide.onnx_policy import OnDevicePolicy
    from splitrt.edge_runtime.sysmodel import observation as obs_layout

    if not args.inputs.is_file():
        raise SplitrtError(f"no decision inputs at {args.inputs} (write them with decision-inputs)")
    data = np.load(args.inputs)
    models = [str(m) for m in data["models"]]
    before = _torch_modules()  # empty on a device; a test process may have torch loaded already
    start = time.perf_counter()
    policy = OnDevicePolicy(args.policy)  # checks policy.onnx against the sha256 in policy.json
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    q, action = policy.q_values(data["obs"], models, data["node_ok"], data["noise"])
    run_s = time.perf_counter() - start
    mask = policy.masks(models, data["node_ok"])
    actions = [int(a) for a in action]
    cuts, nodes = [], []
    for b, (model, a) in enumerate(zip(models, actions, strict=True)):
        cut, node = obs_layout.decode_action(a, policy.n_nodes)
        print(f"  sample {b}: {model:<10} action {a:3d} -> cut {cut:2d}, node {node}; q[a] = {q[b, a]:.6f}")
        if not (0 <= a < policy.max_actions and mask[b, a]):
            raise CheckFailed(f"sample {b} ({model}): action {a} is not a valid action of the mask")
        cuts.append(int(cut))
        nodes.append(int(node))
    loaded = sorted(_torch_modules() - before)
    print(
        f"{policy.name} policy from {policy.directory}: loaded in {load_s:.2f} s, {len(models)} decisions in "
        f"{run_s:.3f} s on {platform.machine()} (under qemu no timing means anything); torch loaded: {loaded}"
    )
    if loaded:
        raise CheckFailed(f"deciding imported torch: {loaded[:5]}")
    return {
        "machine": platform.machine(),
        "method": policy.name,
        "models": models,
        "actions": actions,
        "cuts": cuts,
        "nodes": nodes,
        # Valid actions only (None elsewhere): the masked ones are a constant, not a computation.
        "q": [
            [float(v) if ok else None for v, ok in zip(row, row_ok, strict=True)]
            for row, row_ok in zip(q, mask, strict=True)
        ],
    }


CHECKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "machine": check_machine,
    "torch-free": check_torch_free,
    "segments": check_segments,
    "reference": make_reference,
    "decision": check_decision,
    "decision-inputs": make_decision_inputs,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m splitrt.tools.arm.device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    sub.add_parser("machine")
    sub.add_parser("torch-free")
    seg = sub.add_parser("segments")
    seg.add_argument("--segments", type=Path, required=True, help="export directory (manifest.json)")
    seg.add_argument("--reference", type=Path, required=True, help=".npz with the host's input and output")
    seg.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="tolerance relative to max |host output|")
    ref = sub.add_parser("reference")
    ref.add_argument("--segments", type=Path, required=True, help="export directory (manifest.json)")
    ref.add_argument("--seed", type=int, default=0, help="seed of the standard-normal input")
    ref.add_argument("--out", type=Path, required=True, help=".npz to write (input, output)")
    dec = sub.add_parser("decision")
    dec.add_argument("--policy", type=Path, required=True, help="policy directory (policy.onnx + policy.json)")
    dec.add_argument("--inputs", type=Path, required=True, help=".npz written by decision-inputs")
    inp = sub.add_parser("decision-inputs")
    inp.add_argument("--policy", type=Path, required=True, help="policy directory (policy.onnx + policy.json)")
    inp.add_argument("--n", type=int, default=8, help="observations to write")
    inp.add_argument("--seed", type=int, default=0, help="seed of the observations and noise")
    inp.add_argument("--out", type=Path, required=True, help=".npz to write (obs, models, node_ok, noise)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result, ok = CHECKS[args.check](args), True
    except (CheckFailed, SplitrtError) as exc:
        result, ok = {"error": str(exc)}, False
        print(f"CHECK FAILED: {exc}")
    print(RESULT_PREFIX + json.dumps({"check": args.check, "ok": ok, **result}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
