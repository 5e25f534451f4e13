"""The field machinery (splitrt.edge_runtime.configfields) on a small config: flags, defaults,
help with units, parsing back, the argv round trip, and what a command line cannot carry."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import pytest

from splitrt.edge_runtime.configfields import add_flags, flags, from_args, helps, setting, to_argv
from splitrt.edge_runtime.errors import SplitrtError


@dataclass(frozen=True)
class Toy:
    targets: tuple[str, ...] = setting(flag="--target", repeat=True, metavar="URL", help="a target (repeat)")
    label: str = setting("a", flag="--id", help="the label")
    count: int = setting(3, help="how many")
    period_s: float = setting(1.0, unit="s", help="the period")
    limit_s: float | None = setting(None, unit="s", help="an optional limit")
    mode: str = setting("x", choices=("x", "y"), help="the mode")
    backends: tuple[str, ...] = setting(("cpu",), flag="--backend", help="one backend")
    loud: bool = setting(False, help="a switch")
    lead_s: float = setting(0.5, cli=False, unit="s", help="set in code only")


def parser_for(cls=Toy, **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    add_flags(p, cls, **kw)
    return p


def parse(argv: list[str], cls=Toy, **kw):
    return from_args(cls, parser_for(cls, **kw).parse_args(argv))


def test_flags_names_types_and_defaults_come_from_the_fields():
    assert [f.flag for f in flags(Toy)] == [
        "--target", "--id", "--count", "--period-s", "--limit-s", "--mode", "--backend", "--loud",
    ]  # fmt: skip
    assert [f.dest for f in flags(Toy)][:2] == ["target", "id"]  # argparse's dest, derived from the flag
    args = parser_for().parse_args(["--target", "t1"])
    assert (args.id, args.count, args.period_s, args.limit_s, args.mode, args.backend, args.loud) == (
        "a", 3, 1.0, None, "x", "cpu", False,
    )  # fmt: skip
    assert parse(["--target", "t1"]) == Toy(targets=("t1",))


def test_help_shows_the_help_and_the_unit(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = parser_for().format_help()
    assert "the period [s]" in text and "an optional limit [s]" in text and "--target URL" in text
    assert "{x,y}" in text  # choices, as argparse shows them
    assert "set in code only" not in text and "--lead-s" not in text
    assert helps(Toy)["lead_s"] == "set in code only [s]"
    shown = parser_for(show_defaults=True, unset={"count": "the preset's"}).format_help()
    assert "how many (default: the preset's)" in shown and "the period [s] (default: 1.0)" in shown


def test_parsed_values_are_checked_and_converted():
    cfg = parse(["--target", "a", "--target", "b", "--id", "z", "--count", "7", "--backend", "cuda", "--loud"])
    assert cfg.targets == ("a", "b") and cfg.label == "z" and cfg.count == 7
    assert cfg.backends == ("cuda",) and cfg.loud is True
    with pytest.raises(argparse.ArgumentError):
        parse(["--target", "a", "--mode", "q"])
    with pytest.raises(argparse.ArgumentError):
        parse(["--target", "a", "--count", "many"])
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parse([])  # --target is required


def test_overrides_fill_in_what_the_command_decides():
    args = parser_for().parse_args(["--target", "a", "--id", "z"])
    assert from_args(Toy, args, label="named", lead_s=0.1) == Toy(targets=("a",), label="named", lead_s=0.1)
    with pytest.raises(TypeError, match="no field"):
        from_args(Toy, args, nosuch=1)
    unset = parser_for(unset={"count": "later"}).parse_args(["--target", "a"])
    assert unset.count is None
    with pytest.raises(TypeError, match="--count was not given"):
        from_args(Toy, unset)
    assert from_args(Toy, unset, count=9).count == 9


def test_to_argv_round_trips_every_field():
    cfg = Toy(
        targets=("tcp://h:1", "-odd"),
        label="-dash",
        count=-4,
        period_s=0.1 + 0.2,
        limit_s=1e-9,
        mode="y",
        backends=("tensorrt",),
        loud=True,
    )
    for f in flags(Toy):  # the test covers every flag field
        assert getattr(cfg, f.name) != getattr(Toy(targets=("t",)), f.name), f.name
    argv = to_argv(cfg)
    assert "--id=-dash" in argv and "--count=-4" in argv  # a value that looks like an option
    assert "--loud" in argv and argv.count("--target") + argv.count("--target=-odd") == 2
    assert parse(argv) == cfg
    plain = Toy(targets=("t",))
    assert parse(to_argv(plain)) == plain
    assert "--limit-s" not in to_argv(plain) and "--loud" not in to_argv(plain)  # None and False: left out
    assert to_argv(cfg, only=["count", "mode"]) == ["--count=-4", "--mode", "y"]
    assert "--target" not in to_argv(cfg, exclude=["targets"])


def test_to_argv_refuses_what_no_command_line_can_carry():
    with pytest.raises(SplitrtError, match="lead_s = 0.1 has no flag"):
        to_argv(Toy(targets=("t",), lead_s=0.1))
    assert to_argv(Toy(targets=("t",), lead_s=0.1), only=["count"]) == ["--count", "3"]
    with pytest.raises(SplitrtError, match="--backend takes one value"):
        to_argv(Toy(targets=("t",), backends=("cpu", "cuda")))
    with pytest.raises(SplitrtError, match="--target"):
        to_argv(Toy(targets=()))
    with pytest.raises(SplitrtError, match="--period-s"):
        to_argv(replace(Toy(targets=("t",)), period_s=None))


def test_a_config_field_without_setting_or_with_an_unsupported_type_is_refused():
    @dataclass(frozen=True)
    class Bare:
        x: int = 1

    @dataclass(frozen=True)
    class Odd:
        x: complex = setting(1j, help="not a flag type")

    @dataclass(frozen=True)
    class OnSwitch:
        x: bool = setting(True, help="a switch that is on")

    for cls in (Bare, Odd, OnSwitch):
        with pytest.raises(TypeError):
            flags(cls)
    with pytest.raises(TypeError, match="mutable"):
        setting([1], help="a list")
