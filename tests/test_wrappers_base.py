"""The wrapper contract (drl.wrappers.base): config and CLI selection, the env's own reward in the logs,
evaluation envs, learner state in checkpoints, env state for bitwise resume, and the update() record.

Two test-only wrappers stand in for the real ones: ``t_bonus`` (adds a learned constant to the reward, per
episode counts its steps, trains on the transitions it recorded) and ``t_obs`` (appends the episode step
to the observation: an observation-changing wrapper).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl import api
from drl.checkpoint import load_checkpoint
from drl.cli import main as cli_main
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.wrappers import WRAPPERS, TorchVectorWrapper, WrapperStack, make_run_env, parse_wrapper_flag, register_wrapper


class BonusWrapper(TorchVectorWrapper):
    """Test wrapper: reward + bonus; the bonus grows by 1 per update() call that saw transitions."""

    records_transitions = True

    def __init__(self, env: gym.vector.VectorEnv, bonus: float = 0.5, gamma: float = 0.0):
        super().__init__(env)
        self.bonus = torch.tensor(float(bonus))
        self.gamma = gamma
        self.steps = torch.zeros(env.num_envs, dtype=torch.int64, device=self.device)
        self.seen_rows = 0

    def step(self, actions: torch.Tensor):
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        self.steps = torch.where(terminated | truncated, 0, self.steps + 1)
        bonus = torch.full_like(reward, float(self.bonus))
        self._log_mean("bonus", bonus)
        return obs, self._replace_reward(info, reward, reward + bonus), terminated, truncated, info

    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        batch = self.recorded_batch() if batch is None else batch
        if batch is None:
            return {}
        self.seen_rows += batch["actions"].shape[0] * batch["actions"].shape[1]
        self.bonus += 1.0
        return {"seen_rows": float(self.seen_rows)}

    def learner_state_dict(self) -> dict[str, Any]:
        return {"bonus": self.bonus.clone(), "seen_rows": self.seen_rows}

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        self.bonus, self.seen_rows = state["bonus"].clone(), state["seen_rows"]

    def _episode_state(self) -> dict[str, Any]:
        return {"steps": self.steps.clone()}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"].clone()


class StepObsWrapper(TorchVectorWrapper):
    """Test wrapper: the obs with the episode step appended (scaled by ``scale``)."""

    applies_to_eval = True

    def __init__(self, env: gym.vector.VectorEnv, scale: float = 0.01):
        super().__init__(env)
        self.scale = scale
        low = np.append(env.single_observation_space.low, 0.0).astype(np.float32)
        high = np.append(env.single_observation_space.high, np.inf).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self.steps = torch.zeros(env.num_envs, device=self.device)

    def _augment(self, obs: torch.Tensor) -> torch.Tensor:
        return self._out(torch.cat([obs, (self.steps * self.scale)[:, None]], dim=1))

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.steps.zero_()
        return self._augment(obs), info

    def step(self, actions: torch.Tensor):
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        done = terminated | truncated
        final = torch.cat([info["final_obs"], ((self.steps + 1) * self.scale)[:, None]], dim=1)
        self.steps = torch.where(done, 0.0, self.steps + 1)
        info = dict(info, final_obs=final)
        return self._augment(obs), reward, terminated, truncated, info

    def _episode_state(self) -> dict[str, Any]:
        return {"steps": self.steps.clone()}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"].clone()


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_wrapper("t_bonus")(BonusWrapper)
    register_wrapper("t_obs")(StepObsWrapper)
    yield
    WRAPPERS.pop("t_bonus", None)
    WRAPPERS.pop("t_obs", None)


def _cfg(wrappers: list[dict[str, Any]], total_steps: int = 256, **extra: Any):
    return api.load_config("ppo", "drl/CartPole-v0", overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 1, "eval_interval": 128,
        "eval_episodes": 2, "checkpoint_interval": 0, "wrappers": wrappers,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1, "compile": False, "anneal_lr": False},
        **extra})


# --- selection --------------------------------------------------------------------------------
@pytest.mark.parametrize("wrappers, message", [
    ({"name": "t_bonus"}, "must be a list"),
    ([{"bonus": 1.0}], "wrappers[0]': must be a mapping with a 'name'"),
    ([{"name": "nope"}], "wrappers[0].name': unknown wrapper 'nope'; valid wrappers: ["),
    ([{"name": "t_bonus", "bonsu": 1.0}], "wrappers[0].bonsu': wrapper 't_bonus' has no such option; valid: "
                                          "['bonus', 'gamma']"),
    ([{"name": "t_obs"}, {"name": "t_bonus", "bonus": "x"}], "wrappers[1].bonus': must be a number, got 'x'"),
    ([{"name": "t_bonus", "bonus": float("inf")}], "wrappers[0].bonus': must be a finite number"),
    ([{"name": "t_obs", "scale": True}], "wrappers[0].scale': must be a number"),
])
def test_bad_wrapper_config_is_one_error_naming_the_entry(wrappers, message):
    with pytest.raises(ConfigError) as err:
        cfg = _cfg(wrappers)
        make_run_env(cfg, 2, torch.device("cpu"))
    assert message in str(err.value)


def test_wrapper_flag_parsing():
    assert parse_wrapper_flag("t_bonus") == {"name": "t_bonus"}
    assert parse_wrapper_flag("t_bonus:bonus=2,gamma=0.9") == {"name": "t_bonus", "bonus": 2, "gamma": 0.9}
    assert parse_wrapper_flag("w:a=[1,2],b={c: 3, d: 4},e=x") == {"name": "w", "a": [1, 2], "b": {"c": 3, "d": 4},
                                                                   "e": "x"}  # commas inside brackets stay
    for bad in (":bonus=1", "t_bonus:bonus", "t_bonus:a.b=1", "t_bonus:bonus=1,bonus=2"):
        with pytest.raises(ConfigError, match="--wrapper"):
            parse_wrapper_flag(bad)


def test_order_eval_filter_and_defaults():
    cfg = _cfg([{"name": "t_obs"}, {"name": "t_bonus"}])
    env = make_run_env(cfg, 3, torch.device("cpu"))
    assert isinstance(env, BonusWrapper) and isinstance(env.env, StepObsWrapper)  # first entry innermost
    assert env.gamma == cfg.algo.gamma  # the agent's discount fills an omitted gamma
    assert env.single_observation_space.shape == (5,)
    assert env.max_episode_steps == env.unwrapped.max_episode_steps  # attributes forwarded
    assert [w.name for w in WrapperStack(env).wrappers] == ["t_obs", "t_bonus"]
    eval_env = make_run_env(cfg, 2, torch.device("cpu"), for_eval=True)
    assert isinstance(eval_env, StepObsWrapper) and not isinstance(eval_env.env, TorchVectorWrapper)


def test_env_reward_kept_and_update_gets_recorded_transitions():
    cfg = _cfg([{"name": "t_bonus", "bonus": 0.25}, {"name": "t_bonus", "bonus": 1.0}])
    env = make_run_env(cfg, 3, torch.device("cpu"))
    obs, _ = env.reset(seed=0)
    actions = torch.ones(3, dtype=torch.int64)
    _, reward, *_, info = env.step(actions)
    torch.testing.assert_close(reward, info["env_reward"] + 1.25)  # innermost wrapper kept the env's own
    env.step(actions)
    inner = env.env
    batch = inner.recorded_batch()
    assert batch["obs"].shape == (2, 3, 4) and batch["actions"].shape == (2, 3)
    torch.testing.assert_close(batch["obs"][0], obs)
    torch.testing.assert_close(batch["next_obs"][0], batch["obs"][1])  # nothing finished in 2 steps
    assert inner.recorded_batch() is None  # cleared
    metrics = WrapperStack(env).update()
    assert metrics["t_bonus/bonus"] == 1.0 and metrics["t_bonus/seen_rows"] == 6.0


# --- runs -------------------------------------------------------------------------------------
def test_run_logs_env_return_trains_wrappers_and_checkpoints_them(tmp_path):
    cfg = _cfg([{"name": "t_obs"}, {"name": "t_bonus", "bonus": 100.0}])
    run_dir, summary = api.train(cfg, tmp_path / "run")
    rows = read_metrics(run_dir / "metrics.csv")
    returns = [float(r["episode_return"]) for r in rows if r["episode_return"] not in ("", "nan")]
    assert returns and max(returns) <= 500  # CartPole's own return, not the bonus-inflated one
    assert [float(r["t_bonus/seen_rows"]) for r in rows] == [64.0 * (i + 1) for i in range(len(rows))]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert [s["name"] for s in ckpt["wrappers"]] == ["t_obs", "t_bonus"]
    assert float(ckpt["wrappers"][1]["state"]["bonus"]) == 100.0 + len(rows)
    agent, _ = api.load_agent(run_dir)  # built on the wrapped obs space (5 = 4 + the step), so it loads
    action, _ = agent.act(torch.zeros(1, 5), deterministic=True)
    assert action.shape == (1,)
    result = api.evaluate(run_dir, episodes=2)
    assert result["mean_return"] <= 500


def test_resume_is_bitwise_with_wrapper_state(tmp_path):
    """Interrupted after 2 of 4 iterations and resumed = the uninterrupted run (weights, wrapper state)."""
    wrappers = [{"name": "t_obs"}, {"name": "t_bonus"}]
    full_dir, _ = api.train(_cfg(wrappers, checkpoint_interval=64), tmp_path / "full")
    half_dir, _ = api.train(_cfg(wrappers, total_steps=128, checkpoint_interval=64), tmp_path / "half")
    api.resume(half_dir, total_steps=256)
    full = load_checkpoint(full_dir / "checkpoints" / "latest.pt")
    half = load_checkpoint(half_dir / "checkpoints" / "latest.pt")
    assert full["wrappers"][1]["state"]["seen_rows"] == half["wrappers"][1]["state"]["seen_rows"] == 256
    assert full["agent_state"]["model"].keys() == half["agent_state"]["model"].keys()
    for key, value in full["agent_state"]["model"].items():
        torch.testing.assert_close(value, half["agent_state"]["model"][key], rtol=0, atol=0)
    torch.testing.assert_close(full["env_state"]["wrapper/t_bonus"]["episode"]["steps"],
                               half["env_state"]["wrapper/t_bonus"]["episode"]["steps"], rtol=0, atol=0)
    torch.testing.assert_close(full["env_state"]["obs"], half["env_state"]["obs"], rtol=0, atol=0)
    assert full["env_state"]["obs"].shape == (4, 5)  # the wrapped obs the agent acts on next
    full_rows = read_metrics(full_dir / "metrics.csv")
    half_rows = read_metrics(half_dir / "metrics.csv")
    for key in ("episode_return", "t_bonus/bonus", "t_bonus/seen_rows"):
        assert [r[key] for r in full_rows] == [r[key] for r in half_rows]


def test_resume_with_edited_wrapper_options_is_one_error(tmp_path):
    cfg = _cfg([{"name": "t_bonus"}], total_steps=64)
    run_dir, _ = api.train(cfg, tmp_path / "run")
    stack = WrapperStack(make_run_env(cfg, 4, torch.device("cpu")))
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["wrappers"]
    state[0]["state"].pop("bonus")  # what a wrapper built with other options would not find
    with pytest.raises(ValueError, match="the checkpoint's state of wrapper 't_bonus' does not fit its options"):
        stack.load_state_dict(state)


def test_cli_wrapper_flag_appends_and_bad_flag_is_one_line(tmp_path, capsys):
    code = cli_main(["train", "ppo", "--env", "drl/CartPole-v0", "--steps", "64", "--num-envs", "4",
                     "--set", "algo.num_steps=16", "--set", "algo.minibatch_size=32", "--no-progress",
                     "--run-dir", str(tmp_path / "r"),
                     "--wrapper", "t_bonus:bonus=3"])
    assert code == 0
    saved = api.load_config(config_file=tmp_path / "r" / "config.yaml")
    assert saved.wrappers == [{"name": "t_bonus", "bonus": 3}]
    code = cli_main(["train", "ppo", "--steps", "64", "--no-progress", "--run-dir", str(tmp_path / "s"),
                     "--wrapper", "t_bonus:bonsu=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "bonsu" in err[0] and not (tmp_path / "s").exists()
