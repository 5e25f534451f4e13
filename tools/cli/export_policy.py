"""Export a training run's actor as the on-device policy (ONNX + policy.json), torch-free to run."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, metavar="DIR", help="a `splitrt train` run directory")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="policy directory (default RUN/policy); a path ending in .onnx names the directory it is in",
    )
    p.add_argument(
        "--snapshot",
        choices=("best", "last"),
        default="best",
        help="best: the actor with the shortest validation completion time (what train exports; the last one if the run did "
        "not validate); last: the actor of the last checkpoint",
    )


def main(args: argparse.Namespace) -> int:
    from splitrt.policy.learn.train import export_run

    out = args.out
    if out is not None and out.suffix == ".onnx":
        out = out.parent
    path = export_run(args.run, out, snapshot=args.snapshot)
    print(f"policy written to {path} (policy.onnx, policy.json)")
    return 0
