"""BARFI-style blend (drl.wrappers.barfi): the blended reward against hand values (true next obs at episode
ends, the primary taken from the env's own reward), the outer gradient's normalised alignment against hand
values, a misaligned heuristic turned down and a helpful one kept, config errors, the learner state in
checkpoints and across a resume, a PPO run through ``wrappers:``, and CUDA."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from scripted_env import ScriptedEnv

from drl import api
from drl.checkpoint import load_checkpoint
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.wrappers import make_run_env
from drl.wrappers.barfi import BARFI, alignment
from drl.wrappers.shaping import PotentialShaping
from envs.torch_classic import CartPole


def twice_cart_x(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """A "module:function" heuristic for the tests: 2 * x of the next obs."""
    return 2.0 * next_obs[:, 0]


def bad_shape(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return next_obs


def test_blend_against_hand_values():
    """phi = [2, -1] on h1 = 1 - |x'| / 2.4 and h2 = 2 x'. Env 0 runs on to x' = 1.2; env 1 terminates with the
    final x' = -2.4 (its reset obs has x = 0, which must not be used): r + 2 h1 - h2 =
    env 0: 1 + 2 * 0.5 - 2.4 = -0.4; env 1: 1 + 2 * 0 + 4.8 = 5.8."""
    obs0 = torch.zeros(2, 4)
    nxt = torch.tensor([[1.2, 0, 0, 0], [0.0, 0, 0, 0]])
    final = torch.tensor([[1.2, 0, 0, 0], [-2.4, 0, 0, 0]])
    script = [(nxt, torch.ones(2), torch.tensor([False, True]), torch.tensor([False, False]), final)]
    env = BARFI(ScriptedEnv(obs0, script), ["cartpole_centered", "test_barfi:twice_cart_x"], init_weights=[2.0, -1.0])
    env.reset()
    _, reward, _, _, info = env.step(torch.zeros(2, dtype=torch.int64))
    torch.testing.assert_close(reward, torch.tensor([-0.4, 5.8]))
    torch.testing.assert_close(info["heuristics"], torch.tensor([[0.5, 2.4], [0.0, -4.8]]))
    torch.testing.assert_close(info["env_reward"], torch.ones(2))
    assert env.labels == ["cartpole_centered", "twice_cart_x"]
    metrics = env.metrics()
    assert metrics["barfi/h_cartpole_centered"] == pytest.approx(0.25)
    assert metrics["barfi/h_twice_cart_x"] == pytest.approx(-1.2)


def test_alignment_against_hand_values():
    """Primary advantages [1, -1, 2, -2]; a stream proportional to them aligns +1, its negative -1, one
    orthogonal to them 0: c = mean(A_p A_h) / (rms(A_p) rms(A_h))."""
    a_p = torch.tensor([1.0, -1.0, 2.0, -2.0])
    a_h = torch.stack([2 * a_p, -0.5 * a_p, torch.tensor([1.0, 1.0, -1.0, -1.0]),
                       torch.tensor([1.0, 0.0, 0.0, 0.0])], dim=-1)
    adv = torch.cat([a_p[:, None], a_h], dim=-1).reshape(2, 2, 5)  # [T, N, 1 + K]
    c = alignment(adv)
    torch.testing.assert_close(c, torch.tensor([1.0, -1.0, 0.0, 0.25 / (math.sqrt(2.5) * 0.5)]))


def test_primary_is_the_env_reward_under_another_reward_wrapper():
    """Stacked outside potential shaping, the blend adds to the shaped reward but learns from the env's."""
    inner = PotentialShaping(CartPole(3), "cartpole_upright", gamma=0.9)
    env = BARFI(inner, ["cartpole_upright"], init_weights=[0.5])
    env.reset(seed=0)
    _, reward, _, _, info = env.step(torch.ones(3, dtype=torch.int64))
    torch.testing.assert_close(reward, info["env_reward"] + info["shaping"] + 0.5 * info["heuristics"][:, 0])
    torch.testing.assert_close(env._streams[-1][:, 0], info["env_reward"])


def _random_policy_updates(env: BARFI, updates: int, steps: int, seed: int) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    out = []
    for _ in range(updates):
        for _ in range(steps):
            env.step(torch.randint(0, 2, (env.num_envs,), generator=gen))
        out.append(env.update())
    return out


def test_misaligned_heuristic_is_turned_down_and_helpful_kept():
    """CartPole under a random policy. A step penalty is the negative of the primary reward (+1 a step while
    alive), so its advantages are the primary's negated: its weight must fall at ``meta_lr`` per update after
    the warm-up (alignment near -1). Keeping the pole upright is aligned with surviving: its weight rises.
    With ``learn: false`` both stay (naive shaping)."""
    heuristics = ["cartpole_upright", "step_penalty"]
    env = BARFI(CartPole(32), heuristics, meta_lr=0.1, warmup_updates=2, gamma=0.98, critic_epochs=8, seed=0)
    logs = _random_policy_updates(env, updates=8, steps=64, seed=0)
    assert [log["phi_step_penalty"] for log in logs[:2]] == [1.0, 1.0]  # warm-up: critics only
    assert all(log["align_step_penalty"] < -0.9 for log in logs[2:])
    assert logs[-1]["phi_step_penalty"] < 1.0 - 0.1 * 6 * 0.9
    assert logs[-1]["phi_cartpole_upright"] > 1.0 and all(log["align_cartpole_upright"] > 0 for log in logs[2:])
    naive = BARFI(CartPole(32), heuristics, learn=False, seed=0)
    logs = _random_policy_updates(naive, updates=3, steps=16, seed=0)
    assert logs[-1]["phi_step_penalty"] == logs[-1]["phi_cartpole_upright"] == 1.0


def test_learner_state_round_trip():
    env = BARFI(CartPole(8), ["cartpole_upright", "step_penalty"], warmup_updates=0, seed=1)
    _random_policy_updates(env, updates=2, steps=16, seed=1)
    state = env.learner_state_dict()
    other = BARFI(CartPole(8), ["cartpole_upright", "step_penalty"], warmup_updates=0, seed=2)
    other.load_learner_state_dict(state)
    torch.testing.assert_close(other.phi, env.phi, rtol=0, atol=0)
    assert other.updates == 2
    x = torch.randn(5, 4)
    torch.testing.assert_close(other.critic(x), env.critic(x), rtol=0, atol=0)


# --- config and runs ----------------------------------------------------------------------------
def _cfg(wrappers: list[dict[str, Any]], total_steps: int = 256, **extra: Any):
    return api.load_config("ppo", "drl/CartPole-v0", overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 1, "eval_interval": 128,
        "eval_episodes": 2, "checkpoint_interval": 0, "wrappers": wrappers,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1, "compile": False, "anneal_lr": False},
        **extra})


@pytest.mark.parametrize("entry, message", [
    ({"heuristics": ["nope"]}, "(barfi): unknown heuristic 'nope'; valid: ["),
    ({"heuristics": []}, "heuristics must be a non-empty list"),
    ({"heuristics": ["step_penalty"], "init_weights": [1.0, 2.0]}, "init_weights has 2 entries for 1 heuristics"),
    ({"heuristics": ["step_penalty"], "meta_lr": -1.0}, "meta_lr must be in [0.0, inf], got -1.0"),
    ({"heuristics": ["step_penalty", "step_penalty"]}, "heuristic labels must differ"),
    ({"heuristics": ["test_barfi:bad_shape"]}, "heuristic 'bad_shape' must return a tensor [N] for obs [N, D]"),
    ({"heuristics": [{"fn": "step_penalty", "kwargs": {"costt": 1}}]}, "(barfi): "),
    ({}, "wrapper 'barfi' needs ['heuristics']"),
])
def test_bad_config_is_one_error(entry, message):
    with pytest.raises(ConfigError) as err:
        make_run_env(_cfg([{"name": "barfi", **entry}]), 2, torch.device("cpu"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ppo_run_logs_weights_checkpoints_and_resumes_them(tmp_path):
    wrappers = [{"name": "barfi", "heuristics": ["cartpole_upright", {"fn": "step_penalty", "kwargs": {"cost": 2.0},
                                                                      "label": "time"}],
                 "warmup_updates": 1, "meta_lr": 0.1}]
    cfg = _cfg(wrappers, checkpoint_interval=64)
    env = make_run_env(cfg, 3, torch.device("cpu"))
    assert env.gamma == cfg.algo.gamma and env.labels == ["cartpole_upright", "time"]
    run_dir, _ = api.train(cfg, tmp_path / "run")
    rows = read_metrics(run_dir / "metrics.csv")
    phis = [float(r["barfi/phi_time"]) for r in rows]
    assert phis[0] == 1.0 and phis[-1] < 1.0  # moved after the warm-up, down (the time cost is misaligned)
    assert all(math.isfinite(float(r["barfi/align_cartpole_upright"])) for r in rows)
    ended = [r for r in rows if r["episode_return"] not in ("", "nan")]
    assert ended and all(r["episode_return"] == r["episode_length"] for r in ended)  # the env's own return
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    saved = ckpt["wrappers"][0]["state"]
    assert float(saved["phi"][1]) == pytest.approx(phis[-1]) and saved["updates"] == len(rows)
    half_dir, _ = api.train(_cfg(wrappers, total_steps=128, checkpoint_interval=64), tmp_path / "half")
    api.resume(half_dir, total_steps=256)
    resumed = load_checkpoint(half_dir / "checkpoints" / "latest.pt")["wrappers"][0]["state"]
    assert resumed["updates"] == len(rows)
    torch.testing.assert_close(resumed["phi"], saved["phi"], rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_barfi_on_cuda():
    """On a CUDA env the blend, the critics and the weights stay on the GPU; the step penalty is turned down."""
    env = BARFI(CartPole(256, device="cuda"), ["cartpole_upright", "step_penalty"], warmup_updates=0, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        for _ in range(32):
            _, reward, *_ = env.step(torch.randint(0, 2, (256,), device="cuda"))
            assert reward.device.type == "cuda"
        metrics = env.update()
    assert env.phi.device.type == "cuda" and next(env.critic.parameters()).device.type == "cuda"
    assert metrics["phi_step_penalty"] < 1.0


# --- the demonstration script (benchmarks/shaping.py) -------------------------------------------
def test_benchmark_claims_against_hand_values():
    """naive - unshaped = -40 with 2 s.e. = 2 * sqrt(4^2 / 2 + 2^2 / 2) = 2 sqrt(10) ~ 6.3: hurts; barfi -
    unshaped = -2 within the same noise: matches."""
    from benchmarks.shaping import claim_lines

    def row(name: str, mean: float, std: float) -> dict[str, Any]:
        return {"variant": name, "seeds": 3, "final_mean": mean, "final_std": std, "auc_mean": mean, "auc_std": std}

    lines = claim_lines([row("unshaped", 100.0, 2.0), row("naive", 60.0, 4.0), row("barfi", 98.0, 4.0)])
    assert lines[0] == ("- final eval return: naive shaping hurts: yes (naive - unshaped = -40.0, 2 s.e. 6.3); "
                        "BARFI matches or beats unshaped: matches (within seed noise) (barfi - unshaped = -2.0, "
                        "2 s.e. 6.3)")
    assert "not judged" in claim_lines([row("unshaped", 1.0, 0.0) | {"seeds": 1}, row("naive", 0.0, 0.0),
                                        row("barfi", 1.0, 0.0)])[0]


def test_benchmark_dry_run_and_bad_arguments(capsys, tmp_path):
    from benchmarks.shaping import main

    assert main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "configs/ppo/drl-CartPole-v0-naive.yaml" in out and "barfi" in out and not (tmp_path / "out").exists()
    for bad in (["--only", "nope"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            main(bad + ["--dry-run"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_barfi_recovers_where_naive_shaping_fails(seed, tmp_path):
    """The demonstration's configs as they are (100k env steps, annealed learning rate, evaluated every 10k):
    naive shaping never balances (the misaligned step penalty makes ending early pay: eval return ~9,
    CartPole's floor); BARFI turns the penalty's weight below 0 and balances (best evaluation > 200; PPO's
    evaluations dip now and then, unshaped too, so not the last one)."""
    finals = {}
    for variant in ("naive", "barfi"):
        cfg = api.load_config(config_file=f"configs/ppo/drl-CartPole-v0-{variant}.yaml", overrides={
            "seed": seed, "progress": False, "checkpoint_interval": 0,
            "device": "cpu"})
        run_dir, summary = api.train(cfg, tmp_path / variant)
        finals[variant] = summary["best_eval_return"]
        rows = read_metrics(run_dir / "metrics.csv")
        if variant == "barfi":
            assert float(rows[-1]["barfi/phi_step_penalty"]) < 0 < float(rows[-1]["barfi/phi_cartpole_upright"])
    assert finals["naive"] < 20 and finals["barfi"] > 200
