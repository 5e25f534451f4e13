"""PettingZoo ParallelEnv of the simulator: one environment, one agent per client vehicle.

A thin wrapper of a one-environment `splitrt.policy.sim.env.VecEnv` (its docstring is the full spec of the
observation, action encoding, reward and episode); this module only maps arrays to dicts.

| item | form |
|---|---|
| agents | ``"cv_0" .. "cv_{N-1}"`` (CV i runs DNN ``agent_model[i]``) |
| observation | ``{"observation": float32 (2J + 1,) eq 53, "action_mask": int8 (n_actions_i,)}`` (the PettingZoo convention for masks, which `parallel_api_test` samples with) |
| action | Discrete(n_actions_i) = (L_k + 1) * J; cut = a // J, node = a % J (eq 55) |
| state() | float32 (N * (2J + 1),) the concatenated observations (eq 54) |
| reward | the common reward -P2(t) (eq 57), the same for every agent |
| episode end | after T slots every agent is *truncated* (a time limit; nothing terminates) |
| infos | per agent: ``completion_s``, ``local_s``, ``tx_s``, ``rsu_s``, ``sv_s``, ``tasks``, ``invalid_action``; plus the slot's ``p2``, ``lyapunov``, ``drift``, ``penalty`` |

A masked action (PettingZoo's seed test samples without masks) runs fully local and sets
``infos[agent]["invalid_action"] = True`` rather than raising.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from splitrt.policy.sim.env import VecEnv
from splitrt.policy.sim.scenario import Scenario


class SplitrtParallelEnv(ParallelEnv):
    """The paper's vehicular network as a PettingZoo ParallelEnv (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"name": "splitrt_vec_v0", "render_modes": []}

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.vec = VecEnv(scenario, n_envs=1, seed=seed, invalid_action="local")
        self.scenario = scenario
        self.possible_agents = [f"cv_{i}" for i in range(self.vec.n_agents)]
        self.agents: list[str] = []
        self.render_mode = None
        j = self.vec.n_nodes
        low = np.full(self.vec.obs_dim, -np.inf, dtype=np.float32)
        low[: j + 1] = 0.0  # queues are non-negative
        self._obs_box = spaces.Box(low=low, high=np.inf, dtype=np.float32)
        self.state_space = spaces.Box(
            low=np.tile(low, self.vec.n_agents), high=np.inf, shape=(self.vec.state_dim,), dtype=np.float32
        )
        self._state = np.zeros(self.vec.state_dim, dtype=np.float32)

    @functools.cache  # noqa: B019 (PettingZoo wants the same object every call)
    def observation_space(self, agent: str) -> spaces.Dict:
        i = self.possible_agents.index(agent)
        n = int(self.vec.n_actions[i])
        return spaces.Dict({"observation": self._obs_box, "action_mask": spaces.Box(0, 1, (n,), dtype=np.int8)})

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(int(self.vec.n_actions[self.possible_agents.index(agent)]))

    def _dicts(self, obs: np.ndarray, mask: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        return {
            a: {"observation": obs[0, i], "action_mask": mask[0, i, : self.vec.n_actions[i]].astype(np.int8)}
            for i, a in enumerate(self.possible_agents)
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        obs, state, mask = self.vec.reset(seed=seed)
        self.agents = list(self.possible_agents)
        self._state = state[0]
        return self._dicts(obs, mask), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        # An agent without an action this slot runs fully local (action = the local cut, node 0).
        local = (self.vec.tables.n_cuts - 1) * self.vec.n_nodes
        joint = np.array([[int(actions.get(a, local[i])) for i, a in enumerate(self.possible_agents)]], dtype=np.int64)
        mask_now = self.vec.view().mask[0]
        invalid = ~mask_now[np.arange(len(self.possible_agents)), np.clip(joint[0], 0, self.vec.max_actions - 1)]
        invalid |= (joint[0] < 0) | (joint[0] >= self.vec.n_actions)
        obs, state, mask, reward, done, info = self.vec.step(joint)
        self._state = state[0]
        agents = self.possible_agents
        rewards = {a: float(reward[0]) for a in agents}
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, bool(done[0]))
        common = {k: float(info[k][0]) for k in ("p2", "lyapunov", "drift", "penalty")}
        infos = {
            a: {
                **{k: float(info[k][0, i]) for k in ("completion_s", "local_s", "tx_s", "rsu_s", "sv_s")},
                "tasks": int(info["tasks"][0, i]),
                "invalid_action": bool(invalid[i]),
                **common,
            }
            for i, a in enumerate(agents)
        }
        observations = self._dicts(obs, mask)
        if done[0]:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The global state of eq (54) (float32, N * (2J + 1))."""
        return self._state.copy()

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None
