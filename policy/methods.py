"""The one interface every decision method implements, and the registry `splitrt evaluate` reads.

A method decides the joint action of all CVs of E environments for one slot:

    method.reset(env, seed)                       once per run (sizes, its own rng)
    actions = method.act(obs, state, mask, view)  every slot -> int64 (E, N), valid under mask

``obs`` (E, N, 2J + 1), ``state`` (E, N (2J + 1)) and ``mask`` (E, N, max_actions) are what the
env returns (policy/env.py documents them); ``view`` (`policy.env.SlotView`) lets planning
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

from edge_runtime.errors import SplitrtError

if TYPE_CHECKING:
    from policy.env import SlotView, VecEnv


class Method(Protocol):
    name: str

    def reset(self, env: VecEnv, seed: int | None) -> None: ...

    def act(self, obs: np.ndarray, state: np.ndarray, mask: np.ndarray, view: SlotView) -> np.ndarray: ...


class MethodNotApplicable(SplitrtError):
    """A method cannot run this scenario (e.g. the oracle's joint action space is too large)."""


#: name -> "module:factory". Learned methods register here too (e.g. "mad2rl").
METHODS: dict[str, str] = {
    "local": "policy.baselines:LocalOnly",
    "offload": "policy.baselines:FullOffload",
    "random": "policy.baselines:RandomChoice",
    "greedy": "policy.baselines:Greedy",
    "ga": "policy.baselines:Genetic",
    "neurosurgeon": "policy.baselines:Neurosurgeon",
    "oracle": "policy.baselines:Oracle",
    "mad2rl": "policy.learned:mad2rl",
    "pqmix": "policy.learned:pqmix",
}


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
    if name not in METHODS:
        raise SplitrtError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module, attr = METHODS[name].split(":")
    factory = getattr(importlib.import_module(module), attr)
    kwargs = {k: _coerce(factory, name, k, v) for k, v in (options or {}).items()}
    return factory(**kwargs)


def parse_method_options(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["ga.population=80", "oracle.max_joint=1e6"]`` -> {"ga": {"population": "80"}, ...}."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        name, dot, key = head.partition(".")
        if not (sep and dot and name and key):
            raise SplitrtError(f"--method-opt {pair!r} must look like METHOD.KEY=VALUE")
        out.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return out
