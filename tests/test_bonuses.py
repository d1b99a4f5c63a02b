"""The intrinsic-bonus wrapper (drl.wrappers.bonuses) and its parts: E3B's Sherman-Morrison update and
per-env reset, episodic counts with masks, bonus normalisation and combination against hand values, the
coefficient's decay, RND's predictor learning, stacking with terminated/truncated kept apart, saved state,
and one-line config errors; on the CPU and, when there is one, on CUDA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from drl import api
from drl.config import ConfigError
from drl.wrappers import make_run_env, wrap_env
from drl.wrappers.bonus_parts import E3B, ActionCoder, EpisodicCount, sherman_morrison
from envs import make_vec_env

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _env(device: str = "cpu", num_envs: int = 3, wrappers: list | None = None, max_steps: int | None = None):
    kwargs = {"max_episode_steps": max_steps} if max_steps else None
    env = make_vec_env("drl/CartPole-v0", num_envs, torch.device(device), env_kwargs=kwargs)
    return wrap_env(env, wrappers, defaults={"seed": 3}) if wrappers else env


# --- E3B ----------------------------------------------------------------------------------------
def test_sherman_morrison_equals_the_explicit_inverse():
    gen = torch.Generator().manual_seed(0)
    ridge, d = 0.1, 5
    c = ridge * torch.eye(d, dtype=torch.float64).repeat(2, 1, 1)
    c_inv = torch.linalg.inv(c)
    for _ in range(12):
        phi = torch.randn(2, d, generator=gen, dtype=torch.float64)
        b, c_inv = sherman_morrison(c_inv, phi)
        expected_b = torch.einsum("ni,nij,nj->n", phi, torch.linalg.inv(c), phi)  # with C before phi
        c = c + phi[:, :, None] * phi[:, None, :]
        torch.testing.assert_close(b, expected_b, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(c_inv, torch.linalg.inv(c), rtol=1e-9, atol=1e-9)


def test_e3b_in_place_update_equals_the_explicit_inverse():
    e3b = E3B(4, [4], 4, ActionCoder(__import__("gymnasium").spaces.Discrete(2)), num_envs=3, ridge=0.1,
              device=torch.device("cpu"))
    e3b.encoder = nn.Identity()
    gen = torch.Generator().manual_seed(1)
    c = 0.1 * torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    for _ in range(8):
        phi = torch.randn(3, 4, generator=gen)
        b = e3b.bonus(phi, torch.zeros(3, dtype=torch.bool))
        p64 = phi.double()
        torch.testing.assert_close(b.double(), torch.einsum("ni,nij,nj->n", p64, torch.linalg.inv(c), p64),
                                   rtol=1e-4, atol=1e-4)
        c = c + p64[:, :, None] * p64[:, None, :]
        torch.testing.assert_close(e3b.c_inv.double(), torch.linalg.inv(c), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_e3b_matrices_reset_per_env_at_episode_ends(device):
    e3b = E3B(2, [4], 2, ActionCoder(__import__("gymnasium").spaces.Discrete(2)), num_envs=2, ridge=0.5,
              device=torch.device(device))
    e3b.encoder = nn.Identity()  # phi(s) = s, so the bonuses are hand values
    e1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], device=device)
    # step 1: both fresh -> 1 / ridge = 2; env 1's episode ends there
    b = e3b.bonus(e1, torch.tensor([False, True], device=device))
    torch.testing.assert_close(b.cpu(), torch.tensor([2.0, 2.0]))
    # step 2: env 0 has seen e1 once -> 1 / (ridge + 1); env 1 started over -> 2
    b = e3b.bonus(e1, torch.tensor([False, False], device=device))
    torch.testing.assert_close(b.cpu(), torch.tensor([1 / 1.5, 2.0]))
    # an orthogonal direction is still new for both
    b = e3b.bonus(torch.tensor([[0.0, 1.0], [0.0, 1.0]], device=device), torch.tensor([True, False], device=device))
    torch.testing.assert_close(b.cpu(), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(e3b.c_inv[0].cpu(), torch.eye(2) / 0.5)  # env 0 ended: I / lambda again


# --- counts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_episodic_counts_per_env_with_masks(device):
    dev = torch.device(device)
    counts = EpisodicCount(2, 1, buckets=8, key="grid", bits=8, cell=1.0, mode="inv_sqrt",
                           generator=torch.Generator().manual_seed(0), device=dev)
    keys = [[5, 5], [5, 5], [7, 5], [5, 5], [13, 9]]
    dones = [[False, True], [False, False], [False, False], [False, True], [False, False]]
    got = [counts.bonus(torch.tensor(k, device=dev), torch.tensor(d, device=dev)).cpu()
           for k, d in zip(keys, dones, strict=True)]
    # env 0, one episode: 5, 5, 7, 5 -> n = 1, 2, 1, 3; then 13, which shares 5's slot (13 mod 8 = 5): n = 4
    # env 1: 5 (episode ends), then 5, 5, 5 (n = 1, 2, 3; the episode ends), then 9 in the new episode: n = 1
    expected = [[1, 1], [2 ** -0.5, 1], [1, 2 ** -0.5], [3 ** -0.5, 3 ** -0.5], [4 ** -0.5, 1]]
    torch.testing.assert_close(torch.stack(got), torch.tensor(expected, dtype=torch.float32))


def test_count_keys_grid_and_simhash():
    counts = EpisodicCount(3, 2, buckets=64, key="grid", bits=8, cell=0.5, mode="first_visit",
                           generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    raw = torch.tensor([[0.1, 0.2], [0.4, 0.45], [0.6, 0.2]])
    keys = counts.hash(raw, raw)
    assert keys[0] == keys[1] != keys[2]  # same cells [0, 0]; the third is in cell [1, 0]
    torch.testing.assert_close(counts.bonus(keys, torch.zeros(3, dtype=torch.bool)), torch.ones(3))
    torch.testing.assert_close(counts.bonus(keys, torch.zeros(3, dtype=torch.bool)), torch.zeros(3))  # 1{n = 1}
    counts.key = "simhash"
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]])
    keys = counts.hash(x, x)
    assert keys[0] == keys[1] != keys[2]  # SimHash: signs of projections, invariant to positive scale


# --- the wrapper --------------------------------------------------------------------------------
def test_global_bonus_is_divided_by_the_running_std_of_all_raw_values():
    env = _env(num_envs=4, wrappers=[{"name": "bonus", "global_bonus": "rnd"}])
    seen = []
    for raw in ([1.0, 3.0, 2.0, 6.0], [0.5, 0.5, 4.0, 1.0]):
        raw = torch.tensor(raw)
        seen += raw.tolist()
        scaled = env._scaled(raw, env.global_std)
        # the running statistics start from var 1 with weight 1e-4: equal to the sample std to ~1e-5
        torch.testing.assert_close(scaled, raw / float(np.std(seen)), rtol=1e-4, atol=0)


@pytest.mark.parametrize("combine", ["product", "sum"])
def test_combination_and_reported_intrinsic_reward_hand_values(combine, monkeypatch):
    env = _env(num_envs=2, wrappers=[{"name": "bonus", "global_bonus": "rnd", "episodic_bonus": "count",
                                      "combine": combine, "normalize": False, "coef": 0.5}])
    monkeypatch.setattr(env.global_part, "bonus", lambda obs, next_obs, actions: torch.tensor([2.0, 3.0]))
    monkeypatch.setattr(env.counts, "hash", lambda white, raw: torch.zeros(2, dtype=torch.int64))
    env.reset(seed=0)
    rewards = []
    for _ in range(2):  # one key for every state: counts 1 then 2
        _, reward, terminated, truncated, info = env.step(torch.zeros(2, dtype=torch.int64))
        assert not (terminated | truncated).any()
        rewards.append((reward, info))
    episodic = torch.tensor([[1.0, 1.0], [2 ** -0.5, 2 ** -0.5]])
    for (reward, info), e in zip(rewards, episodic, strict=True):
        b = torch.tensor([2.0, 3.0]) * e if combine == "product" else torch.tensor([2.0, 3.0]) + e
        torch.testing.assert_close(info["intrinsic_reward"], 0.5 * b)
        torch.testing.assert_close(reward, info["env_reward"] + 0.5 * b)


def test_coefficient_decay_hand_values():
    env = _env(num_envs=4, wrappers=[{"name": "bonus", "coef": 2.0, "coef_decay": "linear", "decay_steps": 100}])
    env.env_steps = 25
    assert env.current_coef() == pytest.approx(1.5)
    env.env_steps = 400
    assert env.current_coef() == 0.0
    env = _env(num_envs=4, wrappers=[{"name": "bonus", "coef": 2.0, "coef_decay": "exponential", "decay_steps": 100}])
    env.env_steps = 200
    assert env.current_coef() == pytest.approx(0.5)
    env.reset(seed=0)
    env.step(torch.zeros(4, dtype=torch.int64))
    assert env.env_steps == 204  # counts env steps: 4 per vectorised step


def test_rnd_predictor_loss_decreases_on_a_fixed_batch():
    env = _env(num_envs=8, wrappers=[{"name": "bonus", "global_bonus": "rnd", "minibatch_size": 64,
                                      "update_epochs": 1, "hidden": [64, 64]}])
    env.reset(seed=0)
    for _ in range(16):
        env.step(torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1)))
    batch = env.recorded_batch()
    losses = [env.update(batch)["rnd_loss"] for _ in range(30)]
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize("device", DEVICES)
def test_stacked_bonuses_keep_env_obs_dones_and_the_env_reward(device):
    wrappers = [{"name": "bonus", "global_bonus": "none", "episodic_bonus": "count"},
                {"name": "bonus", "global_bonus": "rnd", "episodic_bonus": "e3b", "hidden": [16]}]
    wrapped, bare = _env(device, 6, wrappers, max_steps=14), _env(device, 6, max_steps=14)
    gen = torch.Generator().manual_seed(0)
    obs_w, _ = wrapped.reset(seed=5)
    obs_b, _ = bare.reset(seed=5)
    seen_term = seen_trunc = False
    for _ in range(60):
        actions = torch.randint(0, 2, (6,), generator=gen).to(device)
        obs_w, r_w, term_w, trunc_w, info_w = wrapped.step(actions)
        obs_b, r_b, term_b, trunc_b, info_b = bare.step(actions)
        torch.testing.assert_close(obs_w, obs_b, rtol=0, atol=0)
        assert torch.equal(term_w, term_b) and torch.equal(trunc_w, trunc_b)
        torch.testing.assert_close(info_w["env_reward"], r_b, rtol=0, atol=0)
        torch.testing.assert_close(r_w, r_b + info_w["intrinsic_reward"])
        assert (info_w["intrinsic_reward"] > 0).all()  # both wrappers' bonuses, each > 0
        seen_term |= bool((term_b & ~trunc_b).any())
        seen_trunc |= bool(trunc_b.any())
    assert seen_term and seen_trunc  # both kinds of episode end went through the stack


def test_env_state_and_learner_state_restore_bitwise():
    spec = [{"name": "bonus", "global_bonus": "rnd", "episodic_bonus": "e3b", "hidden": [16]}]
    env = _env(num_envs=4, wrappers=spec)
    env.reset(seed=1)
    gen = torch.Generator().manual_seed(2)
    actions = [torch.randint(0, 2, (4,), generator=gen) for _ in range(20)]
    for a in actions[:10]:
        env.step(a)
    env.update()
    env_state, learner = env.state_dict(), env.learner_state_dict()
    first = [env.step(a)[1] for a in actions[10:]]
    other = _env(num_envs=4, wrappers=[dict(spec[0], seed=99)])  # other weights until the state is loaded
    other.reset(seed=7)
    other.load_state_dict(env_state)
    other.load_learner_state_dict(learner)
    second = [other.step(a)[1] for a in actions[10:]]
    for x, y in zip(first, second, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("entry, message", [
    ({"global_bonus": "nope"}, "wrappers[0].global_bonus': must be one of ['rnd', 'icm', 'none'], got 'nope'"),
    ({"global_bonus": "none"}, "both none"),
    ({"combine": "max"}, "wrappers[0].combine': must be one of ['product', 'sum']"),
    ({"coef": -1.0}, "coef must be >= 0, got -1.0"),
    ({"hash_bits": 80}, "hash_bits must be in [1, 52]"),
    ({"obs_group": "critic"}, "obs_group 'critic'"),
    ({"globl_bonus": "rnd"}, "wrappers[0].globl_bonus': wrapper 'bonus' has no such option"),
])
def test_bad_config_is_one_line_naming_the_key(entry, message):
    with pytest.raises(ConfigError) as err:
        cfg = api.load_config("ppo", "drl/CartPole-v0", overrides={"wrappers": [{"name": "bonus", **entry}],
                                                                   "device": "cpu"})
        make_run_env(cfg, 2, torch.device("cpu"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_icm_and_continuous_actions():
    env = make_vec_env("drl/Pendulum-v0", 4, torch.device("cpu"))
    env = wrap_env(env, [{"name": "bonus", "global_bonus": "icm", "episodic_bonus": "e3b", "hidden": [16]}],
                   defaults={"seed": 0})
    env.reset(seed=0)
    for _ in range(5):
        _, _, _, _, info = env.step(torch.rand(4, 1) * 4 - 2)
    assert info["intrinsic_reward"].shape == (4,) and torch.isfinite(info["intrinsic_reward"]).all()
    metrics = env.update()
    assert {"icm_inverse_loss", "icm_forward_loss", "e3b_inverse_loss"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("env_id, variant, suffix", [("drl/MountainCarContinuous-v0", "rnd", "rnd"),
                                                     ("MiniGrid-DoorKey-8x8-v0", "rnd-e3b", "combined"),
                                                     ("MiniGrid-MultiRoom-N2-S4-v0", "rnd-e3b", "combined"),
                                                     ("MiniGrid-MultiRoom-N4-S5-v0", "rnd-e3b", "combined")])
def test_committed_bonus_configs_are_the_benchmark_variants(env_id, variant, suffix):
    """configs/ppo/<env>-<suffix>.yaml = the base config + what benchmarks/exploration.py's variant switches on."""
    from benchmarks.exploration import config_file, variant_overrides
    from drl.config import load_yaml, merge

    base = config_file(env_id)
    path = base.with_name(f"{base.stem}-{suffix}.yaml")
    assert load_yaml(path) == merge(load_yaml(base), variant_overrides(env_id, variant))
    cfg = api.load_config(config_file=path)  # a valid config
    assert cfg.algo.intrinsic_value and cfg.wrappers[0]["name"] == "bonus"


def test_bonus_reads_the_chosen_obs_group():
    env = make_vec_env("drl/CartPoleNoVel-v0", 3, torch.device("cpu"))
    env = wrap_env(env, [{"name": "bonus", "global_bonus": "icm", "episodic_bonus": "e3b", "obs_group": "critic",
                          "hidden": [8]}], defaults={"seed": 0})
    assert env.obs_stats.mean.shape == (4,)  # the critic group's full state, not the policy's 2 positions
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        obs, _, _, _, info = env.step(torch.zeros(3, dtype=torch.int64))
    assert isinstance(obs, dict) and info["intrinsic_reward"].shape == (3,)
    assert env.recorded_batch()["obs"]["critic"].shape == (4, 3, 4)
    env.step(torch.zeros(3, dtype=torch.int64))
    assert {"icm_inverse_loss", "e3b_inverse_loss"} <= set(env.update())
