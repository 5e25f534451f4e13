"""The batched simulator of the paper's system model: E independent environments stepped at once.

``VecEnv(scenario, n_envs, seed)`` is what training (MAD2RL, P-QMIX) and evaluation use; the
PettingZoo form (policy/sim/pz_env.py) wraps a one-environment VecEnv. All state is numpy arrays
shaped (n_envs, n_vehicles, ...); a step is a handful of array expressions plus the RSU's KKT
allocation (policy/sim/slot.py has the equations). The `VecEnv` docstring is the specification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from splitrt.edge_runtime.sysmodel import observation as obs_layout
from splitrt.policy.sim.mobility import Mobility, make_mobility
from splitrt.policy.sim.scenario import Scenario
from splitrt.policy.sim.slot import Links, SlotOutcome, SlotState, Tables, evaluate_slot, sv_in_range
from splitrt.policy.sim.workloads import Workload, load_workloads

INVALID_ACTION = ("raise", "local")


@dataclass(frozen=True, eq=False)
class SlotView:
    """Read-only view of the current slot for methods that plan (baselines, p2-optimal, best-known).

    Learned policies use only (obs, state, mask); a planner may also read the links and device
    speeds of this slot and score candidate joint actions with `evaluate`, which never changes
    the environment.
    """

    scenario: Scenario
    tables: Tables
    workloads: dict[str, Workload]
    state: SlotState
    node_ok: np.ndarray  # (E, N, J) bool
    mask: np.ndarray  # (E, N, max_actions) bool
    slot: int

    def evaluate(self, actions: np.ndarray) -> SlotOutcome:
        """Outcome of joint ``actions`` (..., E, N) from this slot's state (eqs 7-17, 29-33, 43-52)."""
        return evaluate_slot(self.tables, self.state, actions)

    @property
    def n_envs(self) -> int:
        return self.mask.shape[0]

    def select(self, env: int) -> SlotView:
        """The view of environment ``env`` alone (leading axis kept, of length 1)."""
        sl = slice(env, env + 1)
        return SlotView(
            self.scenario,
            self.tables,
            self.workloads,
            self.state.select(env),
            self.node_ok[sl],
            self.mask[sl],
            self.slot,
        )

    def local_actions(self) -> np.ndarray:
        """(N,) the fully local action of every CV (cut L_k, node 0)."""
        return (self.tables.n_cuts - 1) * self.tables.n_nodes


@dataclass(frozen=True, eq=False)
class EpisodeDraw:
    """One environment's episode as drawn at reset (T = scenario.slots; V = N CVs then S SVs)."""

    positions_m: np.ndarray  # (T + 1, V, 2) at every slot start
    fading: np.ndarray  # (T + 1, N, J) Rayleigh |u|^2 per link and slot (eq 2)
    tasks: np.ndarray  # (T + 1, N) tasks generated per CV and slot
    node_ok: np.ndarray  # (T + 1, N, J) node reachable (RSU always; an SV within the V2V radius, eq 25)
    cv_flops_per_s: np.ndarray  # (N,) f_loc of every CV
    sv_flops_per_s: np.ndarray  # (S,) f_veh of every SV


class VecEnv:
    """E parallel environments of one scenario, stepped in lockstep.

    Attributes: ``n_envs`` (E), ``n_agents`` (N CVs), ``n_svs`` (S), ``n_nodes`` (J = 1 + S),
    ``n_types`` (K), ``obs_dim`` (2J + 1), ``state_dim`` (N (2J + 1)), ``n_actions`` (N,) int,
    ``max_actions``, ``agent_model`` (DNN per CV), ``scenario``, ``workloads``, ``tables``.

    Agents are the N client vehicles (CVs); nodes are J = 1 + S: node 0 the RSU, nodes 1..S the
    service vehicles (SVs). CV i runs DNN ``agent_model[i]`` (round-robin over the scenario's models).

    Observation of CV i, float32 (E, N, 2J + 1), raw units (the policy normalises) (eq 53):

    | index | quantity | unit |
    |---|---|---|
    | 0 | own local queue Q_loc_i | FLOPs |
    | 1 | RSU queue of the CV's DNN type, Q_k | FLOPs |
    | 2 .. J | queue of SV 1 .. S | FLOPs |
    | J + 1 | own position along the road (RSU at 0, traffic towards +x, in [-R, R)) | m |
    | J + 2 .. 2J | position of SV 1 .. S along the road | m |

    State (eq 54): float32 (E, N * (2J + 1)), the concatenation of the CVs' observations in CV order.

    Action of CV i (eq 55): an integer a in [0, n_actions[i]), n_actions[i] = (L_k + 1) * J; cut =
    a // J (segments [0, cut) run on the CV; the paper's phi = cut + 1), node = a % J. The fully local
    cut (cut = L_k) ignores the node, so all its J encodings are valid and equivalent. Masks are
    bool (E, N, max_actions), padded with False beyond n_actions[i]; offloading to an SV farther
    than the V2V radius is masked (eq 25). The RSU is always reachable (vehicles stay in coverage).
    A masked action raises ValueError, or with ``invalid_action="local"`` runs fully local and is
    counted in ``info["invalid_actions"]``.

    Reward (eq 57): the common reward r(t) = -P2(t) (eq 33) per environment, float64 (E,).

    Episode: T = scenario.slots slots. ``step`` returns done = True (for every environment at once:
    they run in lockstep) after slot T; the observation returned with it is the state after the last
    slot. The caller then calls ``reset()``; calling ``step`` on a finished episode raises
    RuntimeError (no auto-reset). ``reset(seed)`` reseeds; ``reset()`` continues each environment's
    random stream.

    Randomness: environment e draws from its own np.random.Generator, spawned from
    SeedSequence(seed) as child e, so environment e's episodes are the same whatever n_envs is.
    Everything random is drawn at reset for the whole episode and never depends on the actions
    (device speeds per vehicle, Rayleigh fading per link and slot, task arrivals, mobility), so two
    methods run on the same seed face exactly the same episodes.

    ``info`` (numpy arrays): "completion_s", "local_s", "tx_s", "rsu_s", "sv_s" (E, N) the per-task
    delay of eq 17 and its parts (0 for a CV without a task); "tasks" (E, N); "q_loc_flops" (E, N),
    "q_rsu_flops" (E, K), "q_sv_flops" (E, S) after the slot; "lyapunov" (E,) L(Q(t+1)) in GFLOP^2;
    "drift", "pressure", "penalty", "p2" (E,); "rsu_alloc_flops_per_s" (E, K); "invalid_actions" (E,).
    """

    def __init__(
        self,
        scenario: Scenario,
        n_envs: int = 1,
        seed: int | None = None,
        *,
        invalid_action: str = "raise",
        mobility: Mobility | None = None,
        link_rates_bps: np.ndarray | None = None,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if invalid_action not in INVALID_ACTION:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTION}, got {invalid_action!r}")
        self.scenario = scenario
        self.n_envs = n_envs
        self.invalid_action = invalid_action
        #: (T, N, J) given link rates (bit/s) in place of the channel model's, the same in every
        #: environment (measured links of a multi-host run); the last row holds for later slots
        self.link_rates_bps = None if link_rates_bps is None else np.asarray(link_rates_bps, dtype=np.float64)
        if self.link_rates_bps is not None and self.link_rates_bps.shape[1:] != (scenario.n_cvs, scenario.n_nodes):
            raise ValueError(
                f"link_rates_bps must be (T, {scenario.n_cvs}, {scenario.n_nodes}), got {self.link_rates_bps.shape}"
            )
        self.workloads = load_workloads(scenario)
        self.tables = Tables.build(scenario, self.workloads)
        self.mobility = mobility if mobility is not None else make_mobility(scenario)
        self.n_agents = scenario.n_cvs
        self.n_svs = scenario.n_svs
        self.n_nodes = scenario.n_nodes
        self.n_types = self.tables.n_types
        self.obs_dim = obs_layout.obs_size(self.n_nodes)
        self.state_dim = self.n_agents * self.obs_dim
        self.agent_model = scenario.cv_models()
        self.n_actions = self.tables.n_cuts * self.n_nodes
        self.max_actions = int(self.n_actions.max())
        # max_actions = C * J, so a mask is a (C, J) grid per CV: cut c valid if c < n_cuts, and
        # the fully local cut valid whatever the node.
        cuts = np.arange(self.tables.max_cuts)[None, :, None]
        n_cuts = self.tables.n_cuts[:, None, None]
        grid = (self.n_agents, self.tables.max_cuts, self.n_nodes)
        self._in_range_cj = np.broadcast_to(cuts < n_cuts, grid).astype(np.uint8)  # (N, C, J)
        self._local_cj = np.broadcast_to(cuts == n_cuts - 1, grid).astype(np.uint8)  # (N, C, J)
        self._seed = seed
        self._rngs: list[np.random.Generator] | None = None
        self._t = 0
        self._done = True

    # ---- episode generation -------------------------------------------------------------
    def _generators(self, seed: int | None) -> list[np.random.Generator]:
        children = np.random.SeedSequence(seed).spawn(self.n_envs)
        return [np.random.default_rng(c) for c in children]

    def _draw_episode(self) -> None:
        sc = self.scenario
        e, n, s, j, t1 = self.n_envs, self.n_agents, self.n_svs, self.n_nodes, sc.slots + 1
        assert self._rngs is not None
        # One call per kind of draw and environment (generator calls dominate at small sizes).
        uniforms = np.empty((e, n + s))
        fading = np.empty((e, t1, n, j))
        tasks = np.ones((e, t1, n), dtype=np.int64)
        for k, rng in enumerate(self._rngs):
            uniforms[k] = rng.random(n + s)
            fading[k] = rng.standard_exponential((t1, n, j))  # Rayleigh |u|^2 (eq 2)
            if sc.arrivals == "bernoulli":
                tasks[k] = rng.random((t1, n)) < sc.arrival_rate_per_slot
            elif sc.arrivals == "poisson":
                tasks[k] = rng.poisson(sc.arrival_rate_per_slot, (t1, n))
        (cv_lo, cv_hi), (sv_lo, sv_hi) = sc.cv_flops_per_s, sc.sv_flops_per_s
        self._f_cv = cv_lo + (cv_hi - cv_lo) * uniforms[:, :n]
        self._f_sv = sv_lo + (sv_hi - sv_lo) * uniforms[:, n:]
        positions = self.mobility.trajectories(self._rngs, n + s)  # (E, T+1, V, 2)
        self._fading = fading
        self._node_ok = np.concatenate([np.ones((e, t1, n, 1), dtype=bool), sv_in_range(sc, positions)], axis=-1)
        self._tasks = tasks
        self._positions = positions
        self._mask_cache: tuple[int, np.ndarray] | None = None

    def _mask(self, node_ok: np.ndarray) -> np.ndarray:
        """Valid actions from node availability (..., N, J) -> (..., N, max_actions) (eq 25)."""
        # Tiling contiguous bytes and combining with full (N, C, J) templates in place is ~5x
        # faster than broadcasting over the short node axis.
        c = self.tables.max_cuts
        grid = np.tile(np.ascontiguousarray(node_ok).view(np.uint8), c).reshape(*node_ok.shape[:-1], c, self.n_nodes)
        grid |= self._local_cj
        grid &= self._in_range_cj
        return grid.view(bool).reshape(*node_ok.shape[:-1], self.max_actions)

    def _mask_now(self) -> np.ndarray:
        if self._mask_cache is None or self._mask_cache[0] != self._t:
            self._mask_cache = (self._t, self._mask(self._node_ok[:, self._t]))
        return self._mask_cache[1]

    # ---- API ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start new episodes: (obs (E, N, obs_dim) float32, state (E, state_dim) float32, mask (E, N, A) bool)."""
        if seed is not None or self._rngs is None:
            self._rngs = self._generators(self._seed if seed is None else seed)
        self._draw_episode()
        e = self.n_envs
        self._q_loc = np.zeros((e, self.n_agents))
        self._q_rsu = np.zeros((e, self.n_types))
        self._q_sv = np.zeros((e, self.n_svs))
        self._t = 0
        self._done = False
        return self._observe()

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one slot: (obs, state, mask, reward (E,), done (E,), info) for the next slot."""
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.n_envs, self.n_agents) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers of shape {(self.n_envs, self.n_agents)}, got {actions.shape}")
        mask = self._mask_now()
        in_bounds = (actions >= 0) & (actions < self.max_actions)
        ok = in_bounds & np.take_along_axis(mask, np.clip(actions, 0, self.max_actions - 1)[..., None], -1)[..., 0]
        invalid = ~ok
        if invalid.any():
            if self.invalid_action == "raise":
                e, i = np.argwhere(invalid)[0]
                raise ValueError(
                    f"invalid action {actions[e, i]} for CV {i} in env {e} at slot {self._t} "
                    f"(n_actions {self.n_actions[i]}, masked out or out of range)"
                )
            actions = np.where(invalid, (self.tables.n_cuts - 1) * self.n_nodes, actions)
        reward, info = self._play(actions)
        info["invalid_actions"] = invalid.sum(axis=-1)
        obs, state, next_mask = self._observe()
        done = np.full(self.n_envs, self._done)
        return obs, state, next_mask, reward, done, info

    def _play(self, actions: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Play the slot's valid ``actions`` through eqs 3-17 and move to the next slot: (reward, info)."""
        out = evaluate_slot(self.tables, self._slot_state(), actions)
        tasks = self._tasks[:, self._t]
        self._q_loc = out.q_loc_next_flops
        self._q_rsu = out.q_rsu_next_flops
        self._q_sv = out.q_sv_next_flops
        self._t += 1
        self._done = self._t >= self.scenario.slots
        info = {
            "completion_s": out.completion_s,
            "local_s": out.local_s,
            "tx_s": out.tx_s,
            "rsu_s": out.rsu_s,
            "sv_s": out.sv_s,
            "tasks": tasks,
            "q_loc_flops": self._q_loc,
            "q_rsu_flops": self._q_rsu,
            "q_sv_flops": self._q_sv,
            "lyapunov": out.lyapunov,
            "drift": out.drift,
            "penalty": out.penalty,
            "pressure": out.pressure,
            "p2": out.p2,
            "rsu_alloc_flops_per_s": out.rsu_alloc_flops_per_s,
        }
        return out.reward, info

    def view(self) -> SlotView:
        """The current slot for planning methods (see `SlotView`)."""
        if self._done:
            raise RuntimeError("no current slot: call reset()")
        return SlotView(
            scenario=self.scenario,
            tables=self.tables,
            workloads=self.workloads,
            state=self._slot_state(),
            node_ok=self._node_ok[:, self._t],
            mask=self._mask_now(),
            slot=self._t,
        )

    @property
    def slot(self) -> int:
        return self._t

    @property
    def done(self) -> bool:
        return self._done

    def episode(self, env: int = 0) -> EpisodeDraw:
        """Everything drawn at reset for environment ``env`` (copies): what a live experiment of
        the same scenario and seed replays (tools/hil)."""
        if self._rngs is None:
            raise RuntimeError("no episode drawn yet: call reset()")
        return EpisodeDraw(
            positions_m=self._positions[env].copy(),
            fading=self._fading[env].copy(),
            tasks=self._tasks[env].copy(),
            node_ok=self._node_ok[env].copy(),
            cv_flops_per_s=self._f_cv[env].copy(),
            sv_flops_per_s=self._f_sv[env].copy(),
        )

    def positions_m(self) -> np.ndarray:
        """(E, V, 2) positions at the current slot (CVs then SVs), for logging and plots."""
        return self._positions[:, min(self._t, self.scenario.slots)]

    # ---- internals ----------------------------------------------------------------------
    def _slot_state(self) -> SlotState:
        t = self._t
        return SlotState(
            q_loc_flops=self._q_loc,
            q_rsu_flops=self._q_rsu,
            q_sv_flops=self._q_sv,
            cv_flops_per_s=self._f_cv,
            sv_flops_per_s=self._f_sv,
            links=self._links(t),
            tasks=self._tasks[:, t],
        )

    def _links(self, t: int) -> Links:
        if self.link_rates_bps is None:
            return Links(self._positions[:, t], self._fading[:, t], self.scenario)
        given = self.link_rates_bps[min(t, len(self.link_rates_bps) - 1)]
        return Links.fixed(np.broadcast_to(given, (self.n_envs, *given.shape)))

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self._t
        pos = self._positions[:, t, :, 0]  # (E, V) along the road
        n = self.n_agents
        obs = obs_layout.build_observation(
            self._q_loc,
            self._q_rsu[:, self.tables.agent_type],
            self._q_sv[:, None, :],
            pos[:, :n],
            pos[:, None, n:],
        )
        return obs, obs.reshape(self.n_envs, self.state_dim), self._mask_now().copy()
