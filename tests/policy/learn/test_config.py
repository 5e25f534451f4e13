"""TrainConfig's help comes from its fields' metadata (no source parsing), and the command a run
records names every field."""

from __future__ import annotations

import shlex
from dataclasses import fields

from splitrt.edge_runtime.configfields import flags, helps
from splitrt.policy.learn.config import TrainConfig, train_command


def test_every_field_has_its_help_in_the_metadata():
    assert TrainConfig.help() == helps(TrainConfig)
    assert all(TrainConfig.help()[f.name] for f in fields(TrainConfig))
    assert TrainConfig.help()["gamma"].startswith("discount; the paper's 0.99")
    assert [f.name for f in flags(TrainConfig)] == [f.name for f in fields(TrainConfig)]  # every field a flag


def test_the_command_names_every_field():
    words = shlex.split(train_command(TrainConfig(), "runs/x"))
    for f in flags(TrainConfig):
        assert f.flag in words, f.flag
    assert words[-2:] == ["--out", "runs/x"]
