"""The one interface every decision method implements, and the registry `splitrt evaluate` reads.

A method decides the joint action of all CVs of E environments for one slot:

    method.reset(env, seed)                       once per run (sizes, its own rng)
    actions = method.act(obs, state, mask, view)  every slot -> int64 (E, N), valid under mask

``obs`` (E, N, 2J + 1), ``state`` (E, N (2J + 1)) and ``mask`` (E, N, max_actions) are what the
env returns (policy/sim/env.py documents them); ``view`` (`splitrt.policy.sim.env.SlotView`) lets planning
baselines read this slot's links and device speeds and score candidate joint actions with
``view.evaluate`` (P2(t), without stepping). Learned policies (MAD2RL, P-QMIX) use only obs,
state and mask, as on a real vehicle. Adding a method touches no simulator code and no evaluate
code: register it here as ``name -> "module:factory"``; the factory takes keyword options (the
CLI's ``--method-opt NAME.KEY=VALUE``, coerced to the factory's annotated types).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from splitrt.edge_runtime.errors import SplitrtError

if TYPE_CHECKING:
    from splitrt.policy.sim.env import SlotView, VecEnv


class Method(Protocol):
    name: str

    def reset(self, env: VecEnv, seed: int | None) -> None: ...

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray: ...


class MethodNotApplicable(SplitrtError):
    """A method cannot run this scenario (e.g. p2-optimal's joint action space is too large)."""


#: name -> "module:factory". Learned methods register here too (e.g. "mad2rl").
METHODS: dict[str, str] = {
    "local": "splitrt.policy.methods.baselines:LocalOnly",
    "offload": "splitrt.policy.methods.baselines:FullOffload",
    "random": "splitrt.policy.methods.baselines:RandomChoice",
    "greedy": "splitrt.policy.methods.baselines:Greedy",
    "ga": "splitrt.policy.methods.baselines:Genetic",
    "neurosurgeon": "splitrt.policy.methods.baselines:Neurosurgeon",
    "p2-optimal": "splitrt.policy.methods.baselines:P2Optimal",
    "best-known": "splitrt.policy.methods.baselines:BestKnown",
    "lower-bound": "splitrt.policy.methods.bounds:LowerBound",
    "mad2rl": "splitrt.policy.methods.learned:mad2rl",
    "pqmix": "splitrt.policy.methods.learned:pqmix",
}


#: old name -> new name, refused with the reason
RENAMED = {"oracle": "p2-optimal"}
RENAMED_WHY = {"oracle": "it minimises P2(t) each slot, which is not an optimum of completion time"}


def _coerce(factory: Any, name: str, key: str, text: str) -> Any:
    params = inspect.signature(factory).parameters
    if key not in params:
        known = ", ".join(p for p in params if p != "self") or "none"
        raise SplitrtError(f"--method-opt {name}.{key}: {name} has no option {key!r} (options: {known})")
    hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    kind = hints.get(key, str)
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        if kind is int:
            value = float(text)  # accepts 1e6
            if value != int(value):
                raise ValueError(text)
            return int(value)
        if kind in (float, str):
            return kind(text)
    except ValueError:
        raise SplitrtError(f"--method-opt {name}.{key}={text!r} is not a valid {kind.__name__}") from None
    return text


def make_method(name: str, options: dict[str, str] | None = None) -> Method:
    """Build a registered method; ``options`` are string values from the CLI."""
    if name in RENAMED:
        raise SplitrtError(f"method {name!r} is now called {RENAMED[name]!r} ({RENAMED_WHY[name]})")
    if name not in METHODS:
        raise SplitrtError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module, attr = METHODS[name].split(":")
    factory = getattr(importlib.import_module(module), attr)
    kwargs = {k: _coerce(factory, name, k, v) for k, v in (options or {}).items()}
    return factory(**kwargs)


def parse_method_options(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["ga.population=80", "p2-optimal.max_joint=1e6"]`` -> {"ga": {"population": "80"}, ...}."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        name, dot, key = head.partition(".")
        if not (sep and dot and name and key):
            raise SplitrtError(f"--method-opt {pair!r} must look like METHOD.KEY=VALUE")
        out.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return out


def parse_variants(pairs: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """``["ga-250=ga:budget=250;seed=1"]`` -> {"ga-250": ("ga", {"budget": "250", "seed": "1"})}: a
    registered method under a label of its own, with its options (``--variant``)."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for pair in pairs:
        label, sep, rest = pair.partition("=")
        name, _, opts = rest.partition(":")
        label, name = label.strip(), name.strip()
        if not (sep and label and name):
            raise SplitrtError(f"--variant {pair!r} must look like LABEL=METHOD[:KEY=VALUE[;KEY=VALUE]]")
        if label in METHODS or label in out:
            raise SplitrtError(f"--variant {pair!r}: the label {label!r} is already a method or another variant")
        if name not in METHODS:
            raise SplitrtError(f"--variant {pair!r}: unknown method {name!r}; known: {', '.join(METHODS)}")
        options: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in opts.split(";"))):
            key, eq, value = item.partition("=")
            if not (eq and key.strip()):
                raise SplitrtError(f"--variant {pair!r}: option {item!r} must look like KEY=VALUE")
            options[key.strip()] = value.strip()
        make_method(name, options)  # refuses unknown keys and bad values now
        out[label] = (name, options)
    return out
