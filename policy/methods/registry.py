"""The one interface every decision method implements, and the registry `splitrt evaluate` reads.

A method decides the joint action of all CVs of E environments for one slot:

    method.reset(env, seed)                       once per run (sizes, its own rng)
    actions = method.act(obs, state, mask, view)  every slot -> int64 (E, N), valid under mask

``obs`` (E, N, 2J + 1), ``state`` (E, N (2J + 1)) and ``mask`` (E, N, max_actions) are what the
env returns (policy/sim/env.py documents them); ``view`` (`splitrt.policy.sim.env.SlotView`) lets planning
baselines read this slot's links and device speeds and score candidate joint actions with
``view.evaluate`` (P2(t), without stepping). Learned policies (MAD2RL, P-QMIX) use only obs,
state and mask, as on a real vehicle.

`METHODS` is the one registry of decision methods: each entry (`MethodSpec`) names the method's
live form: the ``splitrt vehicle --decider`` spec a vehicle runs it with (a built-in rule such as
``greedy``, or ``module:factory`` of a `Decider` of your own, splitrt.edge_runtime.decide.deciders),
``"policy"`` for a trained ONNX policy, or none with the reason it runs in the simulator only; and
its simulator form: ``"module:factory"`` of a `Method` (the factory takes keyword options, the
CLI's ``--method-opt NAME.KEY=VALUE``, coerced to its annotated types), or none, and then the
simulator runs the live form itself, one decider per CV (splitrt.policy.methods.live_rules).
`splitrt evaluate`, `splitrt hil` and `--report-only` all read it. Adding a baseline is one file
(its `Decider`, or its `Method` if it needs more than one vehicle sees) plus one registry line: a line in
`METHODS` for a method of the project, or a `register(...)` call in a plug-in module outside it,
loaded from the environment variable ``SPLITRT_PLUGINS`` (comma-separated module names) or from
the ``splitrt.methods`` entry-point group of an installed distribution. A plug-in's live form
must be importable on the vehicle (``--decider module:factory``), torch-free like the runtime.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import typing
from dataclasses import dataclass
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


#: `MethodSpec.live` of the trained policies: the vehicle runs the shipped (or --policy) ONNX policy.
TRAINED_POLICY = "policy"


@dataclass(frozen=True)
class MethodSpec:
    """One method: its simulator form and its live form (module docstring)."""

    sim: str | None = None  # "module:factory" of the `Method`; None: the live form, per CV
    live: str | None = None  # vehicle --decider spec, TRAINED_POLICY, or None (simulator only)
    sim_only: str = ""  # why it cannot run on a vehicle (required when live is None)

    def __post_init__(self) -> None:
        if (self.live is None) == (not self.sim_only):
            raise ValueError("a method has a live form or a reason why not, exactly one of them")
        if self.sim is None and self.live in (None, TRAINED_POLICY):
            raise ValueError("a method without a simulator form needs a vehicle decider as its live form")

    @property
    def learned(self) -> bool:
        return self.live == TRAINED_POLICY


_BASE = "splitrt.policy.methods.baselines"
#: The registry, in the order `splitrt evaluate` lists methods.
METHODS: dict[str, MethodSpec] = {
    "local": MethodSpec(live="local"),
    "offload": MethodSpec(live="offload"),
    "random": MethodSpec(live="random"),
    "greedy": MethodSpec(f"{_BASE}:Greedy", live="greedy"),
    "ga": MethodSpec(f"{_BASE}:Genetic", sim_only="a centralised per-slot planner (needs every CV's links and queues at once)"),
    "neurosurgeon": MethodSpec(f"{_BASE}:Neurosurgeon", sim_only="needs every node's speed and the RSU's share on the vehicle (for now)"),
    "p2-optimal": MethodSpec(f"{_BASE}:P2Optimal", sim_only="a centralised exhaustive planner"),
    "best-known": MethodSpec(f"{_BASE}:BestKnown", sim_only="a centralised exhaustive/GA planner of the completion-time reference"),
    "lower-bound": MethodSpec("splitrt.policy.methods.bounds:LowerBound", sim_only="a floor on completion time, not a policy"),
    "mad2rl": MethodSpec("splitrt.policy.methods.learned:mad2rl", live=TRAINED_POLICY),
    "pqmix": MethodSpec("splitrt.policy.methods.learned:pqmix", live=TRAINED_POLICY),
}  # fmt: skip


def register(name: str, spec: MethodSpec) -> None:
    """Add a method at run time (a plug-in, or a test's toy method); refuses a taken name."""
    if name in METHODS or name in RENAMED:
        raise SplitrtError(f"method {name!r} is already registered")
    METHODS[name] = spec


PLUGINS_ENV = "SPLITRT_PLUGINS"


def load_plugins() -> list[str]:
    """Import the plug-in modules (``SPLITRT_PLUGINS``, then the ``splitrt.methods`` entry points);
    each registers its methods. The names of the modules loaded."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SplitrtError(f"${PLUGINS_ENV}: cannot import plug-in {name!r} ({exc})") from None
        loaded.append(name)
    for entry in importlib.metadata.entry_points(group="splitrt.methods"):
        entry.load()
        loaded.append(entry.value)
    return loaded


def live_methods() -> list[str]:
    return [m for m, spec in METHODS.items() if spec.live is not None]


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
    if type(None) in typing.get_args(kind):  # X | None: coerce to X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
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
    spec = METHODS[name]
    if spec.sim is None:
        from splitrt.policy.methods.live_rules import LiveRule

        kwargs = {k: _coerce(LiveRule.options, name, k, v) for k, v in (options or {}).items()}
        return LiveRule(spec.live, name=name, **kwargs)
    module, attr = spec.sim.split(":")
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


load_plugins()
