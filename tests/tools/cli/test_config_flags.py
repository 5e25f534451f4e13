"""`splitrt serve`, `splitrt vehicle` and `splitrt train` take their config flags from the config
classes' field metadata (splitrt.edge_runtime.configfields): the flags stay the ones users and
harnesses call, the CLI defaults are the dataclass defaults, --help shows every field's help and
unit, and `to_argv` of any config parses back, through the real CLI, to an equal config."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from splitrt.edge_runtime.configfields import flags, from_args, helps, to_argv
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.node.config import ServerConfig
from splitrt.edge_runtime.vehicle.config import VehicleConfig
from splitrt.policy.learn.config import TrainConfig, train_command
from splitrt.tools.cli.main import build_parser
from splitrt.tools.cli.train import PRESET_FIELDS, resolve_preset_fields

#: every flag of each verb as it was before the flags came from the configs (plus -h)
SERVE_FLAGS = {
    "--segments", "--bind", "--role", "--name", "--threads", "--workers", "--slot-s", "--v", "--capacity-flops",
    "--discipline", "--queue-limit", "--resolve-s", "--grace-s", "--calibration-runs", "--provider",
    "--speed-factor", "--speed-mode", "--max-message-bytes", "--curve-secret", "--allow", "--speed-profile-dir",
    "--telemetry", "--experiment", "--start-at", "--work", "--stats", "--status-file",
}  # fmt: skip
VEHICLE_FLAGS = {
    "--segments", "--edge", "--decider", "--slots", "--slot-s", "--arrivals", "--timeout-s", "--out", "--encoding",
    "--threads", "--provider", "--speed-factor", "--speed-mode", "--speed-profile", "--verify", "--id", "--seed",
    "--connect-s", "--journal", "--no-journal", "--curve-secret", "--server-key", "--warmup-runs", "--telemetry",
    "--experiment", "--node-names", "--start-at", "--trace", "--work", "--late-tolerance-s", "--stats",
    "--status-file",
}  # fmt: skip
TRAIN_FLAGS = {
    "--method", "--preset", "--cvs", "--svs", "--v", "--steps", "--temperature", "--episodes", "--seed", "--n-envs",
    "--lr", "--gamma", "--tau-soft", "--buffer-size", "--batch-size", "--updates-per-step", "--eps-start",
    "--eps-end", "--eps-fraction", "--hidden", "--checkpoint-every", "--validate-every", "--threads", "--device",
    "--out", "--resume", "--no-progress",
    # the imitation phase and the reward's V' (policy/learn/demonstrate.py)
    "--objective-v", "--expert", "--dagger-rounds", "--dagger-slots", "--dagger-envs", "--bc-steps", "--demo-cvs", "--demo-weight",
    "--decision-noise",
    # the slot model the episodes run in (policy/sim/asrun.py)
    "--sim-model", "--calibration",
}  # fmt: skip
#: the flags that are no config field, each defined once in its command module
NON_CONFIG = {
    "serve": {"--segments", "--curve-secret", "--allow", "--telemetry", "--experiment", "--start-at", "--work",
              "--stats", "--status-file"},
    "vehicle": {"--segments", "--out", "--speed-profile", "--journal", "--no-journal", "--curve-secret",
                "--server-key", "--telemetry", "--experiment", "--node-names", "--start-at", "--trace", "--work",
                "--stats", "--status-file"},
    "train": {"--out", "--resume", "--no-progress"},
}  # fmt: skip
#: config fields set in code, not by a flag
NO_FLAG = {ServerConfig: {"start_unix_s"}, VehicleConfig: {"state_lead_s"}, TrainConfig: set()}
#: what each verb needs besides the config flags
REQUIRED = {"serve": ["--segments", "d"], "vehicle": ["--segments", "d"], "train": ["--out", "o"]}
CONFIGS = {"serve": ServerConfig, "vehicle": VehicleConfig, "train": TrainConfig}

#: a value different from the default for every field
SERVER = ServerConfig(
    bind="tcp://127.0.0.1:7001",
    role="sv",
    name="sv3",
    threads=3,
    workers=2,
    slot_s=0.25,
    v=0.1 + 0.2,
    capacity_flops_per_s=3.5e10,
    queue_limit=100000,
    resolve_s=0.0,
    grace_s=5.0,
    calibration_runs=1,
    providers=("cuda",),
    speed_factor=2.5,
    speed_mode="pace",
    max_message_bytes=1 << 20,
    start_unix_s=None,  # no flag (filled in from --start-at): stays at its default here
    speed_profile_dir="/profiles",
    discipline="containers",
)
VEHICLE = VehicleConfig(
    edges=("tcp://127.0.0.1:7001", "tcp://10.0.0.2:5555"),
    vehicle_id="cv-7",
    decider="policy:/trained/mad2rl",
    slots=12,
    slot_s=0.1,
    arrivals="poisson:1.5",
    timeout_s=12.5,
    encoding="int8",
    threads=2,
    providers=("tensorrt",),
    speed_factor=4.0,
    speed_mode="stretch",
    verify=True,
    seed=-3,
    connect_s=60.0,
    warmup_runs=2,
    state_lead_s=0.02,  # no flag: stays at its default here
    late_tolerance_s=0.05,
)
TRAIN = TrainConfig(
    method="pqmix",
    preset="demo",
    cvs=4,
    svs=1,
    v=50.0,
    objective_v=20.0,
    expert="ga:budget=40",
    dagger_rounds=2,
    dagger_slots=7,
    dagger_envs=3,
    bc_steps=9,
    demo_cvs="2,4",
    demo_weight=0.5,
    decision_noise="sampled",
    sim_model="as-run",
    calibration="runs/cal/calibration.json",
    steps=3,
    temperature=0.5,
    episodes=40,
    seed=9,
    n_envs=4,
    lr=1e-3,
    gamma=0.9,
    tau_soft=0.01,
    buffer_size=1000,
    batch_size=32,
    updates_per_step=1,
    eps_start=0.9,
    eps_end=0.1,
    eps_fraction=0.5,
    hidden=64,
    checkpoint_every=5,
    validate_every=0,
    threads=2,
    device="cuda:1",
)
FULL = {"serve": SERVER, "vehicle": VEHICLE, "train": TRAIN}


def verb_parser(verb: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


def parse(verb: str, argv: list[str]):
    """The config the CLI builds from ``argv`` (as the verb's main does)."""
    args = build_parser().parse_args([verb, *argv])
    if verb == "train":
        values = resolve_preset_fields(vars(args))
        return from_args(TrainConfig, args, **{k: values[k] for k in PRESET_FIELDS})
    return from_args(CONFIGS[verb], args)


def test_the_flags_are_the_ones_the_cli_always_had():
    for verb, expected in (("serve", SERVE_FLAGS), ("vehicle", VEHICLE_FLAGS), ("train", TRAIN_FLAGS)):
        got = {s for a in verb_parser(verb)._actions for s in a.option_strings} - {"-h", "--help"}
        assert got == expected, (verb, got ^ expected)
        generated = {f.flag for f in flags(CONFIGS[verb])}
        assert generated == expected - NON_CONFIG[verb], verb
        cls = CONFIGS[verb]
        assert {f.name for f in dataclasses.fields(cls)} - {f.name for f in flags(cls)} == NO_FLAG[cls]


def test_the_flags_keep_their_names_and_types():
    named = {f.name: f.flag for f in flags(ServerConfig)}
    assert (named["capacity_flops_per_s"], named["providers"], named["slot_s"]) == (
        "--capacity-flops", "--provider", "--slot-s",
    )  # fmt: skip
    named = {f.name: f.flag for f in flags(VehicleConfig)}
    assert (named["edges"], named["vehicle_id"], named["providers"]) == ("--edge", "--id", "--provider")
    actions = {a.option_strings[0]: a for a in verb_parser("serve")._actions}
    assert actions["--queue-limit"].type is int and actions["--v"].type is float
    assert actions["--role"].choices == ["rsu", "sv"] and actions["--discipline"].choices == ["sfq", "containers"]
    assert actions["--speed-mode"].choices == ["auto", "cgroup", "stretch", "pace"]
    assert actions["--capacity-flops"].metavar == "FLOP/S" and actions["--capacity-flops"].dest == "capacity_flops"
    actions = {a.option_strings[0]: a for a in verb_parser("vehicle")._actions}
    assert isinstance(actions["--edge"], argparse._AppendAction) and actions["--edge"].required
    assert isinstance(actions["--verify"], argparse._StoreTrueAction)
    assert actions["--encoding"].choices == ["fp32", "fp16", "int8"] and actions["--id"].dest == "id"
    actions = {a.option_strings[0]: a for a in verb_parser("train")._actions}
    assert actions["--cvs"].type is int and actions["--lr"].type is float and actions["--cvs"].default is None


def test_the_cli_defaults_are_the_dataclass_defaults():
    assert parse("serve", REQUIRED["serve"]) == ServerConfig()
    assert parse("vehicle", [*REQUIRED["vehicle"], "--edge", "tcp://h:1"]) == VehicleConfig(edges=("tcp://h:1",))
    paper = parse("train", REQUIRED["train"])
    assert paper == TrainConfig()  # the paper preset's 5 CVs, 5 SVs, V = 10 are the fields' defaults
    demo = parse("train", [*REQUIRED["train"], "--preset", "demo"])
    assert (demo.cvs, demo.svs, demo.v) == (3, 2, 10.0)  # the unset preset fields follow --preset


@pytest.mark.parametrize("verb", ["serve", "vehicle", "train"])
def test_to_argv_round_trips_every_field_through_the_cli(verb):
    cfg = FULL[verb]
    has_default = [f for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING]
    default = dataclasses.replace(cfg, **{f.name: f.default for f in has_default})  # edges stay given
    for f in flags(type(cfg)):  # non-default values: the round trip sees every flag field
        assert f.required or getattr(cfg, f.name) != getattr(default, f.name), f.name
    argv = to_argv(cfg)
    assert parse(verb, [*REQUIRED[verb], *argv]) == cfg
    assert parse(verb, [*REQUIRED[verb], *to_argv(default)]) == default


def test_fields_without_a_flag_cannot_be_carried():
    with pytest.raises(SplitrtError, match="start_unix_s"):
        to_argv(dataclasses.replace(SERVER, start_unix_s=1.7e9))
    with pytest.raises(SplitrtError, match="state_lead_s"):
        to_argv(dataclasses.replace(VEHICLE, state_lead_s=0.1))
    with pytest.raises(SplitrtError, match="--provider takes one value"):
        to_argv(dataclasses.replace(SERVER, providers=("cuda", "cpu")))


@pytest.mark.parametrize("verb", ["serve", "vehicle", "train"])
def test_help_shows_every_fields_help_and_unit(verb, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each help text is on one line
    text = verb_parser(verb).format_help()
    cls = CONFIGS[verb]
    for f in flags(cls):
        assert helps(cls)[f.name] in text, f.name
        if f.setting.unit:
            assert f"{f.setting.help} [{f.setting.unit}]" in text, f.name
    assert any(f.setting.unit for f in flags(cls)) or verb == "train"


def test_the_recorded_train_command_is_complete():
    cmd = train_command(TRAIN, "runs/my run")
    assert cmd.startswith("splitrt train --method pqmix")
    for flag in ("--lr 0.001", "--gamma 0.9", "--n-envs 4", "--hidden 64", "--validate-every 0", "--device cuda:1"):
        assert flag in cmd, flag
    words = shlex.split(cmd)
    assert words[:2] == ["splitrt", "train"] and words[-2:] == ["--out", "runs/my run"]
    assert parse("train", words[2:]) == TRAIN
    assert TrainConfig.help()["lr"] == "Adam learning rate (paper)"
