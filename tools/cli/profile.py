"""Measure per-segment latency of an export on this device and write profile.json.

Warm-up then timed runs of every segment on the real tensor that reaches it, of the chain of all
segments and of the whole model. Prints the per-cut table (head = time on the vehicle before the
cut, tail = time on the edge node after it) and the device's effective FLOP/s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segments", type=Path, required=True, metavar="DIR", help="an export directory (manifest.json)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu, cuda or tensorrt")
    p.add_argument("--runs", type=int, default=20, help="timed runs per segment (median and p95 reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--spinning", action="store_true", help="let ORT thread pools spin (slower when chained)")
    p.add_argument(
        "--speed-factor",
        type=float,
        default=1.0,
        help="emulate a device this many times slower (see `splitrt vehicle --speed-factor`)",
    )
    p.add_argument(
        "--speed-mode",
        choices=["auto", "cgroup", "stretch"],
        default="auto",
        help="how --speed-factor slows the device: CPU cgroup quota, or idling after each segment "
        "(auto: cgroup where allowed)",
    )
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="profile JSON (default: DIR/profile.json)")


def main(args: argparse.Namespace) -> int:
    from splitrt.edge_runtime.compute.profile import format_table, measure
    from splitrt.edge_runtime.formats.manifest import Manifest
    from splitrt.tools.cli.paths import output_file, write_text

    manifest = Manifest.load(args.segments)
    out = output_file(args.out or (args.segments / "profile.json"))
    profile = measure(
        manifest,
        threads=args.threads,
        provider=args.provider,
        runs=args.runs,
        warmup=args.warmup,
        spinning=args.spinning,
        speed_factor=args.speed_factor,
        speed_mode=args.speed_mode,
    )
    write_text(out, json.dumps(profile, indent=1) + "\n")
    print(format_table(profile))
    print(f"profile written to {out}")
    return 0
