"""The numba kernels of the episodic count (drl.wrappers.count_kernels) against the torch path they replace on
the CPU: the same keys, counts, bonuses, tables and episode counters, bitwise, on random data with episode ends,
slot collisions, negative keys and saturated counts; and the bonus wrapper's outputs and saved state either way."""

from __future__ import annotations

import pytest
import torch

from drl.wrappers import wrap_env
from drl.wrappers.bonus_parts import COUNT_BITS, COUNT_MASK, EpisodicCount
from envs import make_vec_env

pytest.importorskip("numba")


def _pair(num_envs: int, obs_dim: int, buckets: int, key: str, mode: str) -> tuple[EpisodicCount, EpisodicCount]:
    """Two counts built alike: the first on the kernels, the second on the torch path."""
    made = []
    for kernels in (True, False):
        counts = EpisodicCount(num_envs, obs_dim, buckets, key, 32, torch.tensor([0.5] * obs_dim), mode,
                               torch.Generator().manual_seed(0), torch.device("cpu"))
        counts.use_kernels = kernels
        made.append(counts)
    return made[0], made[1]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


@pytest.mark.parametrize("mode", ["inv_sqrt", "first_visit"])
def test_kernel_counts_equal_the_torch_path(mode):
    fast, slow = _pair(num_envs=7, obs_dim=3, buckets=5, key="grid", mode=mode)
    gen = torch.Generator().manual_seed(1)
    for step in range(300):
        keys = torch.randint(-(2**62), 2**62, (7,), generator=gen, dtype=torch.int64)
        if step % 3:  # few distinct keys: repeated visits and shared slots
            keys = torch.randint(-6, 6, (7,), generator=gen, dtype=torch.int64)
        done = torch.rand(7, generator=gen) < 0.1
        got, expected = fast.bonus(keys, done), slow.bonus(keys, done)
        assert _same(got, expected), (step, got, expected)
        assert _same(fast.table, slow.table) and _same(fast.episode, slow.episode)
    assert fast.episode.sum() > 0  # episodes did end


def test_kernel_counts_saturate_and_survive_a_load():
    fast, slow = _pair(num_envs=2, obs_dim=1, buckets=3, key="grid", mode="inv_sqrt")
    state = {"table": torch.full((2, 3), (1 << COUNT_BITS) | (COUNT_MASK - 1), dtype=torch.int64),
             "episode": torch.zeros(2, dtype=torch.int64)}
    for counts in (fast, slow):
        counts.load_episode_state(state)
    keys, done = torch.tensor([0, 4]), torch.tensor([False, True])
    for _ in range(3):  # COUNT_MASK, then stuck there
        got, expected = fast.bonus(keys, done), slow.bonus(keys, done)
        assert _same(got, expected) and _same(fast.table, slow.table) and _same(fast.episode, slow.episode)
    assert int(fast.table[0, 0]) & COUNT_MASK == COUNT_MASK


def test_kernel_bonus_is_torch_rsqrt_for_every_count():
    n = torch.arange(1, COUNT_MASK + 1, dtype=torch.int64)  # every count a slot can hold
    fast, _ = _pair(num_envs=n.numel(), obs_dim=1, buckets=1, key="grid", mode="inv_sqrt")
    # each env's only slot holds n - 1 visits of its current episode: this visit makes n (saturating at the top)
    fast.load_episode_state({"table": ((1 << COUNT_BITS) | (n - 1).clamp(max=COUNT_MASK - 1))[:, None],
                             "episode": torch.zeros_like(n)})
    got = fast.bonus(torch.zeros_like(n), torch.zeros(n.numel(), dtype=torch.bool))
    assert _same(got, n.float().rsqrt())


def test_kernel_simhash_keys_equal_the_torch_path():
    fast, slow = _pair(num_envs=64, obs_dim=6, buckets=16, key="simhash", mode="inv_sqrt")
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        white = torch.randn(64, 6, generator=gen).clamp(-5, 5)
        white[:3] = 0.0  # projections of exactly 0: not > 0
        white[3, 0] = float("nan")
        assert _same(fast.hash(white, white), slow.hash(white, white))


def _run(kernels: bool, steps: int, state: dict | None = None) -> tuple[list, dict]:
    env = make_vec_env("drl/CartPole-v0", 6, torch.device("cpu"), env_kwargs={"max_episode_steps": 15})
    env = wrap_env(env, [{"name": "bonus", "global_bonus": "none", "episodic_bonus": "count",
                          "count_buckets": 8, "hash_bits": 6}], defaults={"seed": 3})
    env.counts.use_kernels = kernels
    env.reset(seed=0)
    if state is not None:
        env.load_state_dict(state)
    gen = torch.Generator().manual_seed(4)
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(torch.randint(0, 2, (6,), generator=gen))
        out.append((obs, reward, info["intrinsic_reward"], info["env_reward"], sorted(info)))
    out.append(env.metrics())
    return out, env.state_dict()


def test_bonus_wrapper_with_kernels_equals_the_torch_path_and_resumes():
    fast, fast_state = _run(True, 40)
    slow, slow_state = _run(False, 40)
    for a, b in zip(fast[:-1], slow[:-1], strict=True):
        assert all(_same(x, y) for x, y in zip(a[:4], b[:4], strict=True)) and a[4] == b[4]
    assert fast[-1] == slow[-1]
    episode = fast_state["wrapper/bonus"]["episode"]
    assert _same(episode["table"], slow_state["wrapper/bonus"]["episode"]["table"])
    assert _same(episode["episode"], slow_state["wrapper/bonus"]["episode"]["episode"])
    # the torch path resumes from the kernels' state as the kernels do
    resumed_fast, _ = _run(True, 10, fast_state)
    resumed_slow, _ = _run(False, 10, fast_state)
    for a, b in zip(resumed_fast[:-1], resumed_slow[:-1], strict=True):
        assert all(_same(x, y) for x, y in zip(a[:4], b[:4], strict=True))


@pytest.mark.parametrize("num_envs", [512, 1])
def test_fused_count_step_equals_the_torch_path(monkeypatch, num_envs):
    from drl.wrappers import count_kernels

    calls = {"fused": 0}
    fused = count_kernels.episodic_count_reward

    def counted(*args):
        calls["fused"] += 1
        return fused(*args)

    monkeypatch.setattr(count_kernels, "episodic_count_reward", counted)

    def run(kernels: bool) -> list:
        env = make_vec_env("drl/CartPole-v0", num_envs, torch.device("cpu"), env_kwargs={"max_episode_steps": 25})
        env = wrap_env(env, [{"name": "bonus", "global_bonus": "none", "episodic_bonus": "count", "coef": 0.3}],
                       defaults={"seed": 3})
        env.counts.use_kernels = kernels
        env.reset(seed=0)
        gen = torch.Generator().manual_seed(6)
        out = [env.step(torch.randint(0, 2, (num_envs,), generator=gen)) for _ in range(60)]
        return [(o[1], o[4]["intrinsic_reward"], o[4]["env_reward"]) for o in out] + [env.metrics(), env.state_dict(),
                                                                                       env.learner_state_dict()]

    fast = run(True)
    assert calls["fused"] == 60  # every step took the fused kernel path
    slow = run(False)
    assert calls["fused"] == 60
    for a, b in zip(fast[:60], slow[:60], strict=True):
        assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert {k: repr(v) for k, v in fast[60].items()} == {k: repr(v) for k, v in slow[60].items()}
    for key in ("table", "episode"):
        assert _same(fast[61]["wrapper/bonus"]["episode"][key], slow[61]["wrapper/bonus"]["episode"][key])
    for key in ("mean", "var", "count"):
        assert _same(fast[62]["obs_stats"][key], slow[62]["obs_stats"][key])
