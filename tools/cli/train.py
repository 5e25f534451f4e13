"""Train MAD2RL (diffusion actors + QMIX) or P-QMIX in the simulator; export the on-device policy.

Writes OUT/config.json (the resolved configuration and scenario), metrics.csv, learning_curve.png,
checkpoint.pt (resume with --resume) and OUT/policy/ (policy.onnx + policy.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: TrainConfig fields whose default is the scenario preset's value (demo: 3 CVs, 2 SVs).
PRESET_FIELDS = {"cvs": "n_cvs", "svs": "n_svs", "v": "v"}


def configure(p: argparse.ArgumentParser) -> None:
    from splitrt.edge_runtime.configfields import add_flags
    from splitrt.policy.learn.config import TrainConfig

    # every TrainConfig field; the PRESET_FIELDS follow --preset unless given
    add_flags(p, TrainConfig, unset={k: "the preset's" for k in PRESET_FIELDS}, show_defaults=True)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    import time

    from splitrt.edge_runtime.configfields import from_args
    from splitrt.edge_runtime.errors import SplitrtError
    from splitrt.policy.learn.config import TrainConfig
    from splitrt.policy.learn.train import train
    from splitrt.tools.cli.paths import output_dir

    preset_values = resolve_preset_fields(vars(args))
    cfg = from_args(TrainConfig, args, **{k: preset_values[k] for k in PRESET_FIELDS})
    _check_device(cfg.device)
    if args.resume and not (args.out / "checkpoint.pt").is_file():
        raise SplitrtError(f"--resume: no checkpoint at {args.out / 'checkpoint.pt'} (drop --resume to start afresh)")
    output_dir(args.out)
    start = time.perf_counter()
    out = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"trained {cfg.method} in {time.perf_counter() - start:.0f} s -> {out} (policy in {out / 'policy'})")
    return 0


def resolve_preset_fields(values: dict) -> dict:
    """``values`` with the unset (None) `PRESET_FIELDS` taken from the ``preset``'s scenario."""
    from splitrt.policy.sim.scenario import preset

    if any(values[k] is None for k in PRESET_FIELDS):
        scenario = preset(values["preset"])
        values = {**values, **{k: getattr(scenario, a) for k, a in PRESET_FIELDS.items() if values[k] is None}}
    return values


def _check_device(device: str) -> None:
    import torch

    from splitrt.edge_runtime.errors import SplitrtError

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SplitrtError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SplitrtError(f"--device {device}: torch sees no CUDA device here")
