"""AAWR (asymmetric advantage-weighted regression), symmetric AWR and BC, and the offline-to-online runner.

The math against hand values (expectile loss, AWR weights, TD target with termination, the random-pair
min), the demo/online mix per batch, the actor never reading the "critic" group, demo files (conversion,
mismatches), the runner (offline rows, then online; stop and resume during the offline phase), config and
CLI errors, and learning a small privileged search task (tests/aawr_standin.py, a stand-in for
drl/ActiveSearch-v0).
"""

from __future__ import annotations

import csv
import math
import signal
from pathlib import Path
from typing import Any

import aawr_standin as standin
import gymnasium as gym
import numpy as np
import pytest
import torch

from drl import api
from drl.agents.aawr import AAWR, AAWRConfig, awr_weights, expectile_loss, gaussian_log_prob
from drl.api import CONFIG_DIR
from drl.checkpoint import load_checkpoint
from drl.cli import main
from drl.config import ConfigError, load_yaml
from drl.registry import AGENTS, default_config_dict
from drl.runners.base import evaluate_policy
from drl.runners.offline_to_online import OfflineToOnlineRunner
from drl.storage import ReplayBuffer
from envs import make_vec_env
from envs.tasks.demos import save_demos

POLICY_DIM, CRITIC_DIM, ACTION_DIM = 3, 5, 2


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch) -> None:
    standin.register()
    import drl.plotting

    def no_plot(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError("plotting skipped in this test")

    monkeypatch.setattr(drl.plotting, "plot_runs", no_plot)


def _spaces(critic_dim: int = CRITIC_DIM) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    obs = gym.spaces.Dict({"policy": gym.spaces.Box(-np.inf, np.inf, (POLICY_DIM,), np.float32),
                           "critic": gym.spaces.Box(-np.inf, np.inf, (critic_dim,), np.float32)})
    return obs, gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def _agent(**overrides: Any) -> AAWR:
    cfg = AAWRConfig(**{"actor_hidden": [16], "critic_hidden": [16], "batch_size": 16, "compile": False,
                        **overrides})
    obs, act = _spaces()
    return AAWR(obs, act, cfg, 1, torch.device("cpu"), torch.Generator().manual_seed(0))


def _demo_dict(rows: int = 12, episodes: int = 3, critic_dim: int = CRITIC_DIM, action_dim: int = ACTION_DIM,
               policy_value: float = 0.5, critic_value: float = 1000.0) -> dict[str, Any]:
    """Demos of the `_spaces` env: policy obs in [0, 1) (+ policy_value), critic obs >= critic_value."""
    g = torch.Generator().manual_seed(3)
    index = torch.arange(rows) * episodes // rows
    last = torch.cat([index[1:] != index[:-1], torch.tensor([True])])
    return {"obs/policy": torch.rand(rows, POLICY_DIM, generator=g) + policy_value - 0.5,
            "next_obs/policy": torch.rand(rows, POLICY_DIM, generator=g) + policy_value - 0.5,
            "obs/critic": torch.rand(rows, critic_dim, generator=g) + critic_value,
            "next_obs/critic": torch.rand(rows, critic_dim, generator=g) + critic_value,
            "actions": torch.tensor([[2.0, 1.0], [-2.0, 0.0], [0.0, 0.5]]).repeat(rows // 3 + 1, 1)[:rows, :action_dim],
            "rewards": torch.ones(rows), "terminated": last, "truncated": torch.zeros(rows, dtype=torch.bool),
            "success": last, "episode_index": index,
            "meta": {"format_version": 1, "env_id": "test", "episodes": episodes, "success_rate": 1.0, "seed": 0}}


def _online_replay(agent: AAWR, rows: int = 20, policy_value: float = 0.5, critic_value: float = 1000.0
                   ) -> ReplayBuffer:
    replay = ReplayBuffer(rows, 1, agent.storage_fields(), agent.device)
    g = torch.Generator().manual_seed(4)
    for _ in range(rows):
        replay.add({"obs/policy": torch.rand(1, POLICY_DIM, generator=g) + policy_value - 0.5,
                    "next_obs/policy": torch.rand(1, POLICY_DIM, generator=g) + policy_value - 0.5,
                    "obs/critic": torch.rand(1, CRITIC_DIM, generator=g) + critic_value,
                    "next_obs/critic": torch.rand(1, CRITIC_DIM, generator=g) + critic_value,
                    "actions": torch.rand(1, ACTION_DIM, generator=g) * 2 - 1, "rewards": torch.zeros(1),
                    "terminated": torch.zeros(1, dtype=torch.bool), "truncated": torch.zeros(1, dtype=torch.bool)})
    return replay


# --- the math -----------------------------------------------------------------------------------
def test_expectile_loss_weighs_the_two_sides_asymmetrically() -> None:
    diff = torch.tensor([2.0, -1.0])  # Q above V by 2 (weight 0.7), below by 1 (weight 0.3)
    assert expectile_loss(diff, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 1) / 2)
    assert expectile_loss(-diff, 0.7).item() == pytest.approx((0.3 * 4 + 0.7 * 1) / 2)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1) / 2)
    assert expectile_loss(torch.tensor([0.0]), 0.9).item() == 0.0


def test_awr_weights_exp_with_clip_binary_and_uniform() -> None:
    adv = torch.tensor([0.0, 1.0, -1.0, 10.0, 1e6])
    w = awr_weights(adv, 1.0 / 3.0, 100.0, "exp")
    expected = [1.0, math.exp(3.0), math.exp(-3.0), 100.0, 100.0]  # exp(30) and exp(3e6) clip at 100
    assert w.tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(w).all()
    assert awr_weights(adv, 2.0, 1e9, "exp")[1].item() == pytest.approx(math.exp(0.5))
    assert awr_weights(adv, 1.0 / 3.0, 100.0, "binary").tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert awr_weights(adv, 1.0 / 3.0, 100.0, "uniform").tolist() == [1.0] * 5
    assert not awr_weights(adv.requires_grad_(), 1.0, 10.0, "exp").requires_grad


def test_gaussian_log_prob_is_finite_at_the_action_bounds() -> None:
    mean, log_std = torch.tensor([[0.9, -0.2]]), torch.tensor([[-1.0, 0.0]])
    a = torch.tensor([[1.0, -1.0]])
    expected = sum(-0.5 * ((x - m) / math.exp(s)) ** 2 - s - 0.5 * math.log(2 * math.pi)
                   for x, m, s in ((1.0, 0.9, -1.0), (-1.0, -0.2, 0.0)))
    assert gaussian_log_prob(a, mean, log_std).item() == pytest.approx(expected, rel=1e-6)


def _fixed_batch(agent: AAWR, terminated: torch.Tensor, heads: list[int] | None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    b = terminated.numel()
    batch = {"obs/policy": torch.rand(b, POLICY_DIM, generator=g), "obs/critic": torch.rand(b, CRITIC_DIM, generator=g),
             "next_obs/policy": torch.rand(b, POLICY_DIM, generator=g),
             "next_obs/critic": torch.rand(b, CRITIC_DIM, generator=g),
             "actions": torch.rand(b, ACTION_DIM, generator=g) * 2 - 1, "returns": torch.rand(b, generator=g),
             "discounts": agent.cfg.gamma * (1.0 - terminated.float())}
    if heads is not None:
        batch["heads"] = torch.tensor(heads)
    return batch


def _losses(agent: AAWR, batch: dict[str, torch.Tensor], variant: str = "exp") -> dict[str, torch.Tensor]:
    params = agent.step.split(agent.step.params.data)
    target = agent.step.split(agent.step.target.data, agent.step.target_names)
    return agent._loss(params, params, target, batch, variant)[1]


def test_td_target_bootstraps_from_v_unless_terminated() -> None:
    agent = _agent()
    with torch.no_grad():  # V's output bias large: ignoring termination would be obvious
        agent.value.bias1.fill_(50.0)
    terminated = torch.tensor([True, False, True, False])
    batch = _fixed_batch(agent, terminated, None)
    with torch.no_grad():
        next_v = agent.value(batch["next_obs/critic"]).view(-1)
        y = batch["returns"] + agent.cfg.gamma * (~terminated).float() * next_v
        q = agent.critic.q(agent.critic.own_params(), batch["obs/critic"], batch["actions"]).squeeze(-1)  # [K, B]
    expected = 0.5 * (q - y).square().mean(dim=1).sum()
    assert _losses(agent, batch)["critic_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert y[0].item() == pytest.approx(batch["returns"][0].item()) and y[1].item() > 40.0


def test_value_regresses_toward_the_min_of_the_drawn_target_heads() -> None:
    agent = _agent(expectile=0.8)
    with torch.no_grad():  # make the target heads distinct: head k outputs about 10 k
        agent.target["critic"].bias1.copy_(torch.arange(5.0).view(5, 1, 1) * 10.0)
    batch = _fixed_batch(agent, torch.zeros(6, dtype=torch.bool), [3, 1])
    with torch.no_grad():
        heads = agent.critic.q(list(agent.target["critic"].parameters()), batch["obs/critic"],
                               batch["actions"]).squeeze(-1)  # [5, B]
        v = agent.value(batch["obs/critic"]).view(-1)
    pair_min = torch.minimum(heads[3], heads[1])
    assert not torch.allclose(pair_min, heads.min(dim=0).values)  # the pair's min is not the min of all
    stats = _losses(agent, batch)
    assert stats["value_loss"].item() == pytest.approx(expectile_loss(pair_min - v, 0.8).item(), rel=1e-5)
    assert stats["advantage"].item() == pytest.approx((pair_min - v).mean().item(), rel=1e-5)
    mean_agent = _agent(expectile=0.8, advantage_q="mean")
    mean_agent.load_state_dict(agent.state_dict())
    assert _losses(mean_agent, batch)["advantage"].item() == pytest.approx((heads.mean(0) - v).mean().item(), rel=1e-5)


def test_actor_loss_is_the_weighted_negative_log_likelihood() -> None:
    agent = _agent()
    batch = _fixed_batch(agent, torch.zeros(8, dtype=torch.bool), [0, 2])
    with torch.no_grad():
        heads = agent.critic.q(list(agent.target["critic"].parameters()), batch["obs/critic"],
                               batch["actions"]).squeeze(-1)
        adv = torch.minimum(heads[0], heads[2]) - agent.value(batch["obs/critic"]).view(-1)
        mean, log_std = agent._mean_log_std(agent.actor.own_params(), batch["obs/policy"])
        log_prob = gaussian_log_prob(batch["actions"], mean, log_std)
    expected = -((adv > 0).float() * log_prob).mean()
    assert _losses(agent, batch, "binary")["actor_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    weights = torch.exp(torch.clamp(3.0 * adv, max=math.log(100.0)))
    assert _losses(agent, batch)["actor_loss"].item() == pytest.approx(-(weights * log_prob).mean().item(), rel=1e-5)
    assert _losses(agent, batch, "uniform")["actor_loss"].item() == pytest.approx(-log_prob.mean().item(), rel=1e-5)
    assert set(_losses(agent, batch, "uniform")) == {"actor_loss", "log_prob", "std"}  # no critic loss at all


def test_online_weighting_switches_the_weights_of_mixed_batches_only(tmp_path: Path) -> None:
    agent = _agent(demos=str(save_demos(_demo_dict(), tmp_path / "d.pt")), online_weighting="binary")
    agent.load_demos()
    variants: list[str] = []
    step = agent.step
    agent.step = lambda batch, variant, groups, polyak: variants.append(variant) or step(batch, variant, groups, polyak)
    agent.offline_update(2)
    agent.update(_online_replay(agent), 1)
    agent.offline_update(1)
    assert variants == ["exp", "exp", "binary", "exp"]


def test_bc_steps_only_the_actor_and_aawr_updates_the_targets_every_second_step() -> None:
    bc, aawr = _agent(weighting="uniform", demos="x"), _agent()
    for agent in (bc, aawr):
        agent.demo_buffer = None
    replay = _online_replay(bc)
    before = {name: p.detach().clone() for name, p in bc.nets.named_parameters()}
    bc.update(replay, 2)
    changed = {name.split(".")[0] for name, p in bc.nets.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"actor"}
    target0 = aawr.step.target.data.clone()
    aawr.update(replay, 1)
    assert torch.equal(aawr.step.target.data, target0)  # update 1: no Polyak step
    aawr.update(replay, 1)
    online = aawr.step.params.data[:aawr.step.target_numel]
    assert torch.allclose(aawr.step.target.data, 0.99 * target0 + 0.01 * online)


@pytest.mark.parametrize(("max_grad_norm", "first_moments"), [(10.0, [0.6, 0.8]), (None, [3.0, 4.0])])
def test_the_update_clips_the_global_gradient_norm(max_grad_norm: float | None, first_moments: list[float]) -> None:
    """Loss 30 a + 40 b: gradient (30, 40), norm 50; clipped to norm 10 -> (6, 8); Adam's first moment 0.1 g."""
    from torch import nn

    from drl.agents.off_policy_base import FusedUpdate, scalar_parameter

    nets = nn.ModuleDict({"a": scalar_parameter(1.0), "b": scalar_parameter(2.0)})

    def loss_fn(params: Any, detached: Any, target: Any, batch: Any, variant: str) -> tuple[torch.Tensor, dict]:
        return 30.0 * params["a"][0] + 40.0 * params["b"][0], {}

    step = FusedUpdate(nets, {"a": 0.1, "b": 0.1}, None, 0.01, loss_fn, max_grad_norm=max_grad_norm)
    step({})
    moments = [float(step.adams[name].exp_avg) for name in ("a", "b")]
    assert moments == pytest.approx(first_moments, rel=1e-5)
    assert AAWRConfig().max_grad_norm == 10.0 and _agent().step.max_grad_norm == 10.0


# --- demos and batches --------------------------------------------------------------------------
def test_demo_actions_are_normalised_and_clamped(tmp_path: Path) -> None:
    demos = _demo_dict()
    demos["actions"][0] = torch.tensor([2.5, 1.0])  # beyond the high bound: clamped to 1
    agent = _agent(demos=str(save_demos(demos, tmp_path / "d.pt")))
    assert agent.load_demos() == 12
    stored = agent.demo_buffer.data["actions"][:, 0]
    assert stored[0].tolist() == [1.0, 1.0] and stored[1].tolist() == [-1.0, -1.0] and stored[2].tolist() == [0.0, 0.0]
    assert torch.equal(agent.demo_buffer.data["obs/critic"][:, 0], demos["obs/critic"])


@pytest.mark.parametrize(("fraction", "batch_size", "from_demos"), [(0.5, 16, 8), (0.25, 12, 3), (1.0, 10, 10),
                                                                    (0.0, 10, 0)])
def test_each_batch_mixes_an_exact_number_of_demo_rows(tmp_path: Path, fraction: float, batch_size: int,
                                                       from_demos: int) -> None:
    agent = _agent(demos=str(save_demos(_demo_dict(), tmp_path / "d.pt")), demo_fraction=fraction,
                   batch_size=batch_size)
    agent.load_demos()
    replay = _online_replay(agent)  # online rewards 0, demo rewards 1
    for _ in range(3):
        batch = agent.sample_batch(replay)
        assert batch["returns"].shape == (batch_size,)
        assert batch["returns"].tolist() == [1.0] * from_demos + [0.0] * (batch_size - from_demos)
        assert batch["heads"].shape == (2,)
    empty = ReplayBuffer(4, 1, agent.storage_fields(), agent.device)
    assert agent.sample_batch(empty)["returns"].tolist() == [1.0] * batch_size  # nothing online yet: all demos


def test_n_step_returns_stop_at_demo_episode_ends(tmp_path: Path) -> None:
    agent = _agent(demos=str(save_demos(_demo_dict(rows=6, episodes=2), tmp_path / "d.pt")), n_step=3, gamma=0.5)
    agent.load_demos()
    batch = agent.gather_transitions(agent.demo_buffer, torch.arange(6), torch.zeros(6, dtype=torch.int64))
    # episodes are rows 0-2 and 3-5, each ending terminated; every reward is 1
    assert batch["returns"].tolist() == [1.75, 1.5, 1.0, 1.75, 1.5, 1.0]
    assert batch["discounts"].tolist() == [0.0] * 6


def test_the_actor_never_reads_the_critic_group(tmp_path: Path) -> None:
    """Policy values lie in [0, 1), critic values >= 1000: record every input the actor network gets."""
    agent = _agent(demos=str(save_demos(_demo_dict(), tmp_path / "d.pt")))
    agent.load_demos()
    seen: list[torch.Tensor] = []
    original = agent.actor.apply_params

    def recording(params: Any, x: torch.Tensor, heads: Any = None) -> torch.Tensor:
        seen.append(x.detach().clone())
        return original(params, x, heads)

    agent.actor.apply_params = recording
    obs = {"policy": torch.rand(4, POLICY_DIM), "critic": torch.rand(4, CRITIC_DIM) + 1000.0}
    agent.act(obs)
    agent.act(obs, deterministic=True)
    agent.offline_update(2)
    agent.update(_online_replay(agent), 2)
    assert len(seen) == 6
    for x in seen:
        assert x.shape[-1] == POLICY_DIM and float(x.max()) < 1.0 and float(x.min()) >= 0.0
    # symmetric AWR: the critics read the policy group too
    assert _agent(critic_obs="policy").groups == ["policy"]


# --- errors -------------------------------------------------------------------------------------
def test_a_mismatched_demo_file_is_one_error_naming_file_and_key(tmp_path: Path) -> None:
    bad = save_demos(_demo_dict(critic_dim=CRITIC_DIM + 1), tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"algo.demos.*bad.pt.*'obs/critic' has 6 values per step, the env's "
                                          r"'critic' group has 5"):
        _agent(demos=str(bad)).load_demos()
    actions = save_demos(_demo_dict(action_dim=1), tmp_path / "act.pt")
    with pytest.raises(ConfigError, match=r"act.pt.*'actions' has 1 values per step.*action space has 2"):
        _agent(demos=str(actions)).load_demos()
    no_critic = _demo_dict()
    del no_critic["obs/critic"], no_critic["next_obs/critic"]
    path = save_demos(no_critic, tmp_path / "policy_only.pt")
    with pytest.raises(ConfigError, match=r"policy_only.pt' has no obs group 'critic'"):
        _agent(demos=str(path)).load_demos()
    assert _agent(demos=str(path), critic_obs="policy").load_demos() == 12  # symmetric AWR reads it fine
    with pytest.raises(ConfigError, match=r"'algo.demos': demo file '.*missing.pt' does not exist"):
        _agent(demos=str(tmp_path / "missing.pt")).load_demos()


def test_bad_config_and_action_space_errors(tmp_path: Path) -> None:
    base = {"agent": "aawr", "env": {"id": standin.ENV_ID}}
    from drl.registry import resolve_config

    for algo, key in (({"expectile": 1.0}, "algo.expectile"), ({"beta": 0.0}, "algo.beta"),
                      ({"demo_fraction": 1.5}, "algo.demo_fraction"), ({"weighting": "soft"}, "algo.weighting"),
                      ({"critic_type": "categorical"}, "algo.critic_type"),
                      ({"offline_log_interval": 0}, "algo.offline_log_interval")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            resolve_config({**base, "algo": algo})
    bc = resolve_config({"agent": "aawr", "env": {"id": standin.ENV_ID},  # a config may leave demos to --demos
                         "algo": {"weighting": "uniform", "demo_fraction": 1.0, "critic_obs": "policy"}})
    with pytest.raises(ConfigError, match="'algo.demos'.*behaviour cloning .* needs demonstrations"):
        OfflineToOnlineRunner(bc, AAWR, tmp_path / "bc")  # refused before the run folder is claimed
    assert not (tmp_path / "bc").exists()
    with pytest.raises(ConfigError, match="'algo.demos': demo_fraction 1.0 draws every batch from demonstrations"):
        _agent(demo_fraction=1.0).load_demos()
    obs, _ = _spaces()
    with pytest.raises(TypeError, match="^AAWR needs a Box action space; for Discrete actions use: ppo"):
        AAWR(obs, gym.spaces.Discrete(2), AAWRConfig(compile=False), 1, torch.device("cpu"))


def test_registry_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert AGENTS["aawr"].runner_class is OfflineToOnlineRunner
    assert AGENTS["aawr"].default_env == "drl/ActiveSearch-v0"
    bc = load_yaml(CONFIG_DIR / "aawr" / "drl-ActiveSearch-v0-bc.yaml")  # the AAWR-code BC baseline
    assert bc["agent"] == "aawr" and bc["algo"]["weighting"] == "uniform" and bc["algo"]["demo_fraction"] == 1.0
    assert bc["algo"]["critic_obs"] == "policy"
    assert default_config_dict("aawr")["algo"]["learning_starts"] == 0
    assert main(["train", "sac", "--demos", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert ("--demos: agent 'sac' does not learn from demonstrations; agents that take one: "
            "['aawr', 'bc', 'residual']") in err
    assert main(["train", "aawr", "--env", standin.ENV_ID, "--demos", str(tmp_path / "none.pt")]) == 2
    assert f"'algo.demos': demo file '{tmp_path / 'none.pt'}' does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--demos", "x.pt"]) == 2
    assert "drop ['--demos']" in capsys.readouterr().err  # a resumed run keeps the demos it started with


# --- the runner ---------------------------------------------------------------------------------
def _cfg(demos: Path | None, total_steps: int = 40, **algo: Any):
    return api.load_config("aawr", standin.ENV_ID, overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 3, "eval_episodes": 4,
        "eval_interval": 0, "checkpoint_interval": 0, "env": {"num_envs": 2, "num_eval_envs": 2},
        "algo": {"demos": None if demos is None else str(demos), "offline_updates": 12, "offline_log_interval": 4,
                 "batch_size": 16, "actor_hidden": [16], "critic_hidden": [16], "num_steps": 10, "compile": False,
                 **algo}})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.write_demos(tmp_path_factory.mktemp("demos") / "search.pt", episodes=8)[0]


def test_offline_phase_then_online(tmp_path: Path, demo_file: Path) -> None:
    runner = OfflineToOnlineRunner(_cfg(demo_file), AAWR, tmp_path / "run")
    agent, calls = runner.agent, []
    update = agent.update
    agent.update = lambda replay, n, progress=0.0: calls.append(
        ("demos" if replay is agent.demo_buffer else "online", n, len(replay))) or update(replay, n)
    summary = runner.train()
    assert calls[:12] == [("demos", 1, 190)] * 12  # the 8 demo episodes hold 190 transitions
    # then one update per vectorised step of 2 envs; learning_starts 0: the first step already updates
    assert calls[12:] == [("online", 1, rows) for rows in range(1, 21)]
    rows = _rows(tmp_path / "run")
    assert [int(r["global_step"]) for r in rows] == [-8, -4, 0, 20, 40]  # offline rows keyed u - U, then online
    assert [r["offline_updates"] for r in rows] == ["4", "8", "12", "", ""]
    assert [bool(r["eval_return"]) for r in rows] == [False, False, True, False, True]
    assert all(r["critic_loss"] for r in rows) and summary["steps"] == 40
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["runner"]["offline_done"] == 12


def test_without_demos_training_is_online_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    OfflineToOnlineRunner(_cfg(None, learning_starts=10), AAWR, tmp_path / "run").train()
    assert "no demonstrations (algo.demos is not set): no offline phase" in capsys.readouterr().err
    assert [int(r["global_step"]) for r in _rows(tmp_path / "run")] == [20, 40]


def test_stop_during_the_offline_phase_then_resume_is_identical(tmp_path: Path, demo_file: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    OfflineToOnlineRunner(_cfg(demo_file), AAWR, whole).train()
    runner = OfflineToOnlineRunner(_cfg(demo_file), AAWR, parts)
    offline, done = runner.agent.offline_update, []

    def stop_at_six(n: int) -> dict[str, torch.Tensor]:
        done.append(n)
        if len(done) == 6:  # inside the second row (updates 5-8)
            runner.stop.request(signal.SIGINT)
        return offline(n)

    runner.agent.offline_update = stop_at_six
    summary = runner.train()
    assert summary["interrupted"] and summary["steps"] == 0
    saved = load_checkpoint(parts / "checkpoints" / "latest.pt")
    assert saved["runner"]["offline_done"] == 4  # back to the last logged row
    assert [int(r["global_step"]) for r in _rows(parts)] == [-8]
    with (parts / "metrics.csv").open("a") as f:  # a row a killed process logged after its last checkpoint
        f.write("-4,2" + "," * (len(_rows(whole)[0]) - 2) + "\n")
    resumed = OfflineToOnlineRunner(_cfg(demo_file), AAWR, parts, resume=True)
    assert resumed.state["offline_done"] == 4
    resumed.train()
    keep = ("global_step", "iteration", "eval_return", "critic_loss", "value_loss", "actor_loss", "episode_return")
    assert [{k: r[k] for k in keep} for r in _rows(parts)] == [{k: r[k] for k in keep} for r in _rows(whole)]
    a, b = (load_checkpoint(d / "checkpoints" / "latest.pt")["agent_state"] for d in (whole, parts))
    for name, tensor in a["nets"].items():
        assert torch.equal(tensor, b["nets"][name]), name


def test_save_and_load_agent(tmp_path: Path, demo_file: Path) -> None:
    OfflineToOnlineRunner(_cfg(demo_file, weighting="binary"), AAWR, tmp_path / "run").train()
    agent, cfg = api.load_agent(tmp_path / "run", "latest")
    assert cfg.algo.weighting == "binary" and agent.demo_buffer is None  # evaluation needs no demo file
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    obs = {"policy": torch.rand(3, 4), "critic": torch.rand(3, 3)}
    action, _ = agent.act(obs, deterministic=True)
    twin = AAWR(*_standin_spaces(), cfg.algo, 1, torch.device("cpu"))
    twin.load_state_dict(ckpt["agent_state"])
    assert torch.equal(twin.act(obs, deterministic=True)[0], action)


def _standin_spaces() -> tuple[gym.Space, gym.Space]:
    env = make_vec_env(standin.ENV_ID, 1)
    return env.single_observation_space, env.single_action_space


# --- learning -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0])  # seeds 0-3 all passed
def test_aawr_learns_the_search_task_from_noisy_demos(tmp_path: Path, seed: int) -> None:
    """20 noisy-expert episodes, 1000 offline updates, 400 online steps: the deterministic policy finds the
    goal in >= 90% of 20 eval episodes (the untrained policy: <= 30%)."""
    demos, _ = standin.write_demos(tmp_path / "d.pt", episodes=20, seed=seed, noise=0.5)
    cfg = api.load_config("aawr", standin.ENV_ID, overrides={
        "total_steps": 400, "progress": False, "device": "cpu", "seed": seed, "eval_episodes": 20, "eval_interval": 0,
        "env": {"num_eval_envs": 4},
        "algo": {"demos": str(demos), "offline_updates": 1000, "offline_log_interval": 500, "batch_size": 128,
                 "actor_hidden": [64, 64], "critic_hidden": [64, 64], "compile": False, "num_steps": 200}})
    runner = OfflineToOnlineRunner(cfg, AAWR, tmp_path / "run")
    before = evaluate_policy(runner.agent, make_vec_env(standin.ENV_ID, 4), 20, seed=123)
    assert np.mean(before) <= 0.3
    summary = runner.train()
    assert summary["final_eval_return"] >= 0.9
    offline_eval = [float(r["eval_return"]) for r in _rows(tmp_path / "run") if r["global_step"] == "0"]
    assert offline_eval[0] >= 0.9  # the offline phase alone already solved it


# --- the benchmark ------------------------------------------------------------------------------
def test_active_search_benchmark_smoke(tmp_path: Path) -> None:
    """The benchmark end to end at a tiny size on the stand-in task: four variants, one seed."""
    import json

    from benchmarks.active_search import main as active_search

    out = tmp_path / "out"
    assert active_search(["--dry-run"]) == 0
    assert active_search(["--env", standin.ENV_ID, "--seeds", "1", "--offline-updates", "4", "--steps", "6",
                          "--demo-episodes", "2", "--eval-episodes", "2", "--eval-every", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["variant"], "error" in r) for r in results["runs"]] == [("aawr", False), ("awr", False), ("bc", False),
                                                                      ("aawr-gru", False)]
    for run in results["runs"]:
        assert [p["step"] for p in run["points"]] == [0, 3, 6]  # end of the offline phase, then every 3 steps
        assert 0.0 <= run["final_success"] <= 1.0 and run["final_success"] == run["points"][-1]["success"]
    assert (out / "success.png").is_file() and "| AAWR (privileged critics) | 1 |" in (out / "report.md").read_text()
