"""Train MAD2RL (diffusion actors + QMIX) or P-QMIX in the simulator; export the on-device policy.

Writes OUT/config.json (the resolved configuration and scenario), metrics.csv, learning_curve.png,
checkpoint.pt (resume with --resume) and OUT/policy/ (policy.onnx + policy.json).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    from policy.train_config import TrainConfig

    helps = TrainConfig.help()
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        kind = type(default)
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            default=default,
            help=f"{helps.get(f.name, '')} (default: {default})",
        )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    import time

    from policy.train import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    cfg = TrainConfig(**values)
    start = time.perf_counter()
    out = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"trained {cfg.method} in {time.perf_counter() - start:.0f} s -> {out} (policy in {out / 'policy'})")
    return 0
