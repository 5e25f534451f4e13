"""Configuration fields defined once: a config dataclass's field metadata makes its command line.

A field made with `setting` carries its help, unit, flag name (default: ``--field-name``),
choices and metavar; its type comes from the annotation (``int``, ``float``, ``str``, ``bool``,
``X | None``, ``tuple[X, ...]``) and its default from the field. From that one definition:

- `add_flags` adds the class's flags to an argparse parser or group (the ``--help`` text is the
  field's help, its unit in brackets);
- `from_args` builds the config from the parsed flags (``**overrides`` fill in what the command
  decides itself, such as a node's name);
- `to_argv` writes the flags that parse back to an equal config: what a harness passes to the
  process it starts, and a run's exact command.

Flag forms: a ``bool`` field is a switch (``store_true``, default False); ``X | None`` with
default None leaves the flag out while None; ``tuple[X, ...]`` is one flag per item with
``repeat=True`` (``--edge A --edge B``), else one value stored as a 1-tuple (``--provider cuda``).
A field with ``cli=False`` has no flag (set in code only, e.g. filled in at run time); `to_argv`
refuses a config whose such field is not its default, since no command line could carry it.
Torch-free and numpy-free: the device runtime's configs use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any

from splitrt.edge_runtime.errors import SplitrtError

#: the field-metadata key under which `setting` stores its `Setting`
METADATA_KEY = "splitrt.setting"
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Setting:
    """What a config field's flag needs beyond its type and default (see `setting`)."""

    help: str
    unit: str = ""
    flag: str = ""
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeat: bool = False
    cli: bool = True


def setting(
    default: Any = MISSING,
    *,
    help: str,
    unit: str = "",
    flag: str = "",
    choices: Iterable[str] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    cli: bool = True,
) -> Any:
    """A dataclass field with its flag's metadata; without ``default`` the flag is required.

    ``help``: the --help text; ``unit``: shown after it in brackets (``s``, ``FLOP/s``);
    ``flag``: the option string when not ``--`` + the field name with dashes; ``choices``: the
    values argparse accepts; ``repeat``: a tuple field's flag is given once per item;
    ``cli=False``: no flag (the value is set in code).
    """
    meta = Setting(
        help=help,
        unit=unit,
        flag=flag,
        choices=tuple(choices) if choices is not None else None,
        metavar=metavar,
        repeat=repeat,
        cli=cli,
    )
    if isinstance(default, (list, dict, set)):
        raise TypeError(f"setting(): a mutable default {default!r}; use a tuple")
    if default is MISSING:
        return dataclasses.field(metadata={METADATA_KEY: meta})
    return dataclasses.field(default=default, metadata={METADATA_KEY: meta})


@dataclass(frozen=True)
class Flag:
    """One config field as a command-line flag (`flags` lists a class's)."""

    name: str
    """the field's name"""
    flag: str
    """the option string, e.g. ``--slot-s``"""
    dest: str
    """the argparse attribute it parses into (argparse's own, derived from ``flag``)"""
    kind: type
    """the value's type: bool, int, float or str (a tuple's item type)"""
    optional: bool
    """``X | None``"""
    many: bool
    """``tuple[X, ...]``"""
    default: Any
    """the field's default (MISSING: required)"""
    setting: Setting

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def text(self) -> str:
        """The help text: the field's help and, in brackets, its unit."""
        return f"{self.setting.help} [{self.setting.unit}]" if self.setting.unit else self.setting.help


def _kind(cls: type, name: str, hint: Any) -> tuple[type, bool, bool]:
    """(item type, optional, tuple) of a field's annotation."""
    optional = many = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"{cls.__name__}.{name}: only `X | None` unions are flags, got {hint}")
        optional, hint = True, rest[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{cls.__name__}.{name}: a tuple field must be tuple[X, ...], got {hint}")
        many, hint = True, args[0]
    if hint not in _SCALARS:
        raise TypeError(f"{cls.__name__}.{name}: a flag's type is bool, int, float or str, got {hint}")
    return hint, optional, many


@cache
def _all_flags(cls: type) -> tuple[Flag, ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(METADATA_KEY)
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not a setting(): every config field needs its help")
        kind, optional, many = _kind(cls, f.name, hints[f.name])
        if kind is bool and (many or optional or f.default is not False):
            raise TypeError(f"{cls.__name__}.{f.name}: a bool flag is a switch that defaults to False")
        if many and not meta.repeat and f.default is not MISSING and len(f.default) != 1:
            raise TypeError(f"{cls.__name__}.{f.name}: a one-value tuple flag needs a 1-tuple default")
        flag = meta.flag or "--" + f.name.replace("_", "-")
        dest = flag.lstrip("-").replace("-", "_")
        out.append(Flag(f.name, flag, dest, kind, optional, many, f.default, meta))
    return tuple(out)


def flags(cls: type, *, only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[Flag]:
    """The command-line flags of config class ``cls`` (fields with ``cli=False`` have none), in
    field order; ``only`` / ``exclude``: these field names only / all but these."""
    known = {f.name for f in dataclasses.fields(cls)}
    picked = set(known if only is None else only) - set(exclude)
    unknown = picked - known | set(exclude) - known
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return [f for f in _all_flags(cls) if f.setting.cli and f.name in picked]


def helps(cls: type) -> dict[str, str]:
    """field name -> its help text (with the unit), every `setting` field of ``cls`` (also those
    without a flag, whatever their type: the scenario's settings are set with ``--set``)."""
    out = {}
    for f in dataclasses.fields(cls):
        s = f.metadata.get(METADATA_KEY)
        if s is not None:
            out[f.name] = f"{s.help} [{s.unit}]" if s.unit else s.help
    return out


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    unset: Mapping[str, str] | None = None,
    show_defaults: bool = False,
) -> None:
    """Add config class ``cls``'s flags to ``parser`` (a parser or an argument group).

    ``unset``: field name -> the text shown as its default; such a flag defaults to None (not
    given) and the command fills the value in (`from_args`'s overrides). ``show_defaults``:
    end every help text with ``(default: VALUE)``.
    """
    unset = dict(unset or {})
    for f in flags(cls, only=only, exclude=exclude):
        one = f.many and not f.setting.repeat  # a one-value tuple flag: its argparse default is the item
        default = None if f.required or f.name in unset or (f.many and not one) else f.default
        if one and default is not None:
            default = default[0]
        kwargs: dict[str, Any] = {"dest": f.dest}
        if f.kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(default=default, required=f.required and f.name not in unset)
            if f.kind is not str:
                kwargs["type"] = f.kind
            if f.setting.metavar is not None:  # else argparse's: DEST, or {a,b} with choices
                kwargs["metavar"] = f.setting.metavar
            if f.setting.choices is not None:
                kwargs["choices"] = list(f.setting.choices)
            if f.many and not one:
                kwargs["action"] = "append"  # default None: argparse would append to a default list
        text = f.text
        if show_defaults and not (f.required and f.name not in unset):
            text = f"{text} (default: {unset.get(f.name, default)})"
        parser.add_argument(f.flag, help=text.replace("%", "%%"), **kwargs)


def from_args(cls: type, args: argparse.Namespace | Mapping[str, Any], **overrides: Any) -> Any:
    """``cls`` built from parsed flags: every flag `add_flags` added, ``overrides`` on top.

    A field whose flag is absent from ``args`` (not added, or ``cli=False``) keeps its default
    unless overridden; a repeated flag never given keeps the field's default.
    """
    values = args if isinstance(args, Mapping) else vars(args)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for f in flags(cls):
        if f.name in overrides or f.dest not in values:
            continue
        value = values[f.dest]
        if value is None and not f.optional:
            if f.many and f.setting.repeat and not f.required:
                continue  # never given: the default
            raise TypeError(f"{cls.__name__}.{f.name}: {f.flag} was not given and is not overridden")
        if f.many and value is not None:
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        kwargs[f.name] = value
    return cls(**kwargs, **overrides)


def _text(f: Flag, value: Any) -> str:
    if f.kind is float:
        return repr(float(value))  # repr round-trips every float exactly
    if f.kind is int:
        return str(int(value))
    return str(value)


def _pair(f: Flag, value: Any) -> list[str]:
    text = _text(f, value)
    return [f"{f.flag}={text}"] if text.startswith("-") else [f.flag, text]  # "-1", "-x": not an option


def to_argv(config: Any, *, only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[str]:
    """The flags that parse (`add_flags` + `from_args`) back to a config equal to ``config``.

    Every flag field is written, default or not, so the command line is the complete setting
    (a None value of an ``X | None`` field and a False switch are left out: that is their
    unset form). ``only`` / ``exclude`` as in `flags`. A value no command line can carry (a
    ``cli=False`` field off its default, several values of a one-value tuple flag) raises
    `SplitrtError`.
    """
    cls = type(config)
    picked = {f.name for f in dataclasses.fields(cls)} if only is None else set(only)
    picked -= set(exclude)
    chosen = {f.name for f in flags(cls, only=only, exclude=exclude)}  # also rejects unknown names
    out: list[str] = []
    for f in _all_flags(cls):
        if f.name not in picked:
            continue
        value = getattr(config, f.name)
        if f.name not in chosen:  # cli=False
            if value != f.default:
                raise SplitrtError(f"{cls.__name__}.{f.name} = {value!r} has no flag: a command line cannot carry it")
            continue
        if f.kind is bool:
            out += [f.flag] if value else []
        elif value is None:
            if f.default is not None:
                raise SplitrtError(f"{f.flag}: {cls.__name__}.{f.name} is None, which only its default can be")
        elif f.many and f.setting.repeat:
            if not value and f.default != ():
                raise SplitrtError(f"{f.flag}: {cls.__name__}.{f.name} is empty; give it at least once")
            for item in value:
                out += _pair(f, item)
        elif f.many:
            if len(value) != 1:
                raise SplitrtError(f"{f.flag} takes one value; {cls.__name__}.{f.name} has {len(value)}: {value!r}")
            out += _pair(f, value[0])
        else:
            out += _pair(f, value)
    return out
