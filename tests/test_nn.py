"""Network pieces against numpy and torch.distributions references."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import AffineTransform, Categorical, Normal, TanhTransform, TransformedDistribution
from torch.utils._python_dispatch import TorchDispatchMode

import drl.nn.normalization as normalization
from drl.nn import CategoricalHead, GaussianHead, RewardScaler, RunningMeanStd, make_action_head, make_mlp

# ------------------------------------------------------------------------------------------------
# running statistics
# ------------------------------------------------------------------------------------------------


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 4.0], size=(n, 3)) for n in (7, 50, 1, 123, 20)]
    rms = RunningMeanStd((3,))
    for batch in batches:
        rms.update(torch.as_tensor(batch, dtype=torch.float32))
    every = np.concatenate(batches)
    # the initial pseudo-count of 1e-4 at mean 0, var 1 shifts the result by ~1e-4 / 201
    np.testing.assert_allclose(rms.mean.numpy(), every.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rms.var.numpy(), every.var(0), rtol=1e-5)
    assert rms.count.item() == pytest.approx(len(every), abs=1e-3)

    x = torch.as_tensor(every[:4], dtype=torch.float32)
    expected = (every[:4] - every.mean(0)) / np.sqrt(every.var(0) + 1e-8)
    out = rms.normalize(x)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)

    # statistics travel with the state dict
    restored = RunningMeanStd((3,))
    restored.load_state_dict(rms.state_dict())
    assert set(rms.state_dict()) == {"mean", "var", "count"}
    torch.testing.assert_close(restored.mean, rms.mean, rtol=0, atol=0)
    torch.testing.assert_close(restored.var, rms.var, rtol=0, atol=0)
    torch.testing.assert_close(restored.count, rms.count, rtol=0, atol=0)
    torch.testing.assert_close(restored.normalize(x), out)


def test_running_mean_std_clips():
    rms = RunningMeanStd((1,), clip=2.0)
    rms.update(torch.tensor([[-1.0], [1.0]]))  # mean ~0, var ~1
    out = rms.normalize(torch.tensor([[100.0], [-100.0], [0.5]]))
    torch.testing.assert_close(out, torch.tensor([[2.0], [-2.0], [0.5]]), rtol=1e-3, atol=1e-3)


def test_reward_scaler_hand_checked():
    # gamma = 0.5, two envs.
    # step 1: r = [1, 3]; running returns = [1, 3]; env 1 ends -> its return resets to 0.
    #   return stats over {1, 3}: mean 2, var 1 -> scaled = r / 1 = [1, 3]
    # step 2: r = [2, 2]; returns = [0.5*1 + 2, 0.5*0 + 2] = [2.5, 2]
    #   stats over {1, 3, 2.5, 2}: mean 2.125, var = (1.265625 + 0.765625 + 0.140625 + 0.015625) / 4 = 0.546875
    #   scaled = 2 / sqrt(0.546875) = 2.704493...
    # (without the reset env 1's return would be 3.5: var over {1, 3, 2.5, 3.5} = 0.921875 -> 2.0830)
    scaler = RewardScaler(num_envs=2, gamma=0.5)
    out1 = scaler.scale(torch.tensor([1.0, 3.0]), torch.tensor([False, True]))
    torch.testing.assert_close(out1, torch.tensor([1.0, 3.0]), rtol=1e-4, atol=1e-4)
    out2 = scaler.scale(torch.tensor([2.0, 2.0]), torch.tensor([False, False]))
    torch.testing.assert_close(out2, torch.tensor([2.704493, 2.704493]), rtol=1e-4, atol=1e-4)
    assert scaler.returns.tolist() == [2.5, 2.0]
    assert scaler.return_stats.mean.item() == pytest.approx(2.125, abs=1e-4)
    # update=False only scales: the statistics and running returns stay as they are
    out3 = scaler.scale(torch.tensor([1.0, -100.0]), torch.tensor([False, False]), update=False)
    torch.testing.assert_close(out3, torch.tensor([1.352247, -10.0]), rtol=1e-4, atol=1e-4)  # -135 clipped to -10
    assert scaler.returns.tolist() == [2.5, 2.0]


# ------------------------------------------------------------------------------------------------
# the normalisers against their definition, on both paths
# ------------------------------------------------------------------------------------------------


class _ReferenceStats:
    """Running mean/var written from the definition (Chan et al.'s parallel update), in float64 numpy."""

    def __init__(self, dim: int, clip: float = 10.0, epsilon: float = 1e-8):
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4
        self.clip, self.epsilon = clip, epsilon

    def update(self, batch: np.ndarray) -> None:
        batch = batch.astype(np.float64)
        n = batch.shape[0]
        batch_mean, batch_var = batch.mean(0), batch.var(0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta * delta * self.count * n / total) / total
        self.count = total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        mean = self.mean.astype(np.float32)
        std = np.sqrt(self.var + self.epsilon).astype(np.float32)
        return np.clip((x - mean) / std, np.float32(-self.clip), np.float32(self.clip))


class _ReferenceRewardScaler:
    """SB3-style reward scaling from its definition: divide by the std of the running discounted return."""

    def __init__(self, num_envs: int, gamma: float):
        self.returns, self.gamma, self.stats = np.zeros(num_envs), gamma, _ReferenceStats(1)

    def scale(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward.astype(np.float64)
        self.stats.update(self.returns[:, None])
        self.returns[done] = 0.0
        std = np.float32(np.sqrt(self.stats.var[0] + self.stats.epsilon))
        return np.clip(reward / std, np.float32(-10.0), np.float32(10.0))


def _obs_stream(steps: int, num_envs: int, seed: int = 0) -> np.ndarray:
    """``[steps, num_envs, 17]`` float32, HalfCheetah-like: features of very different scales and offsets."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.01, 30.0, 17)
    drift = np.linspace(0.0, 2.0, steps)[:, None, None]
    return (rng.normal(size=(steps, num_envs, 17)) * scale + 5.0 * np.sin(np.arange(17)) + drift).astype(np.float32)


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch):
    """Run a test on the numba kernel path (CPU) and on the torch path (GPU, or no numba)."""
    if request.param == "kernel":
        pytest.importorskip("numba")
    else:
        monkeypatch.setattr(normalization, "_KERNELS", False)
    return request.param


def _assert_same(actual: np.ndarray, expected: np.ndarray, bitwise: bool) -> None:
    if bitwise:  # the same arithmetic in the same order: the same bits
        assert np.array_equal(actual, expected), np.abs(actual - expected).max()
    else:  # float64 rounding apart (batch moments summed in another order, or a rearranged update)
        np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("num_envs", [1, 3, 300])
def test_running_mean_std_equals_the_definition(path, num_envs):
    stream = _obs_stream(400 if num_envs < 300 else 20, num_envs)
    rms, ref = RunningMeanStd((17,)), _ReferenceStats(17)
    bitwise = path == "kernel" and num_envs == 1
    for t, x in enumerate(stream):
        out = rms.update_normalize(torch.from_numpy(x)).numpy()
        ref.update(x)
        expected = ref.normalize(x)
        if bitwise:
            assert np.array_equal(out, expected), t
        else:  # statistics a few float64 ulps apart: the float32 results at most one float32 ulp apart
            np.testing.assert_array_max_ulp(out, expected, maxulp=1)
        if t % 97 == 0 or t == len(stream) - 1:
            _assert_same(rms.mean.numpy(), ref.mean, bitwise)
            _assert_same(rms.var.numpy(), ref.var, bitwise)
            assert rms.count.item() == ref.count  # a sum of whole numbers from 1e-4: exact on both paths
    # update() then normalize() is the same as update_normalize()
    other = RunningMeanStd((17,))
    for x in stream:
        other.update(torch.from_numpy(x))
    assert torch.equal(other.mean, rms.mean) and torch.equal(other.var, rms.var)
    assert torch.equal(other.normalize(torch.from_numpy(stream[0])), rms.normalize(torch.from_numpy(stream[0])))


@pytest.mark.parametrize("num_envs", [1, 3])
def test_reward_scaler_equals_the_definition_per_step_and_per_rollout(path, num_envs):
    rng = np.random.default_rng(1)
    steps = 600
    rewards = (rng.normal(size=(steps, num_envs)) * 2.0 + 1.0).astype(np.float32)
    terminated = rng.random((steps, num_envs)) < 0.01
    truncated = (np.arange(steps)[:, None] % 250 == 249) & np.ones(num_envs, bool)  # time limits
    ref = _ReferenceRewardScaler(num_envs, gamma=0.99)
    expected = np.stack([ref.scale(r, te | tr) for r, te, tr in zip(rewards, terminated, truncated, strict=True)])
    bitwise = path == "kernel" and num_envs == 1

    per_step = RewardScaler(num_envs, gamma=0.99)
    scaled = np.stack([per_step.scale(torch.from_numpy(r), torch.from_numpy(te), truncated=torch.from_numpy(tr)).numpy()
                       for r, te, tr in zip(rewards, terminated, truncated, strict=True)])
    per_rollout = RewardScaler(num_envs, gamma=0.99)
    scaled_rollout = per_rollout.scale_rollout(torch.from_numpy(rewards), torch.from_numpy(terminated),
                                               torch.from_numpy(truncated)).numpy()
    for out, scaler in ((scaled, per_step), (scaled_rollout, per_rollout)):
        if bitwise:
            assert np.array_equal(out, expected)
        else:
            np.testing.assert_array_max_ulp(out, expected, maxulp=1)
        _assert_same(scaler.return_stats.mean.reshape(1).numpy(), ref.stats.mean, bitwise)
        _assert_same(scaler.return_stats.var.reshape(1).numpy(), ref.stats.var, bitwise)
        _assert_same(scaler.returns.numpy(), ref.returns, bitwise)
    if path == "kernel":  # a rollout at once is exactly T steps in turn: the same kernel
        assert np.array_equal(scaled_rollout, scaled)
        assert torch.equal(per_rollout.return_stats.var, per_step.return_stats.var)
        assert torch.equal(per_rollout.returns, per_step.returns)


def test_normalisers_follow_every_change_of_their_statistics(path):
    x = torch.from_numpy(_obs_stream(1, 2)[0])
    rms = RunningMeanStd((17,))
    rms.update_normalize(x)
    before = rms.normalize(x)
    # a state dict loaded in place
    fresh = RunningMeanStd((17,))
    rms.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(rms.normalize(x), fresh.normalize(x), rtol=0, atol=0)
    assert not torch.equal(rms.normalize(x), before)
    # a buffer written in place
    rms.mean.fill_(1.0)
    rms.var.fill_(4.0)
    torch.testing.assert_close(rms.normalize(x), ((x - 1.0) / math.sqrt(4.0 + 1e-8)).clamp(-10, 10), rtol=0, atol=0)
    # a deep copy updates its own buffers only
    twin = copy.deepcopy(rms)
    twin.update_normalize(x * 5)
    assert rms.mean.eq(1.0).all() and not twin.mean.eq(1.0).all()
    assert torch.equal(twin.normalize(x), twin.update_normalize(x, update=False))
    # buffers replaced (.to(), .float(), .double() ...)
    rms.float().double()
    rms.update(x)
    assert rms.count.item() == pytest.approx(1e-4 + 2, rel=1e-6)  # count was reset by the loaded state
    expected = RunningMeanStd((17,))
    expected.load_state_dict(rms.state_dict())
    torch.testing.assert_close(rms.normalize(x), expected.normalize(x), rtol=0, atol=0)


class _CountOps(TorchDispatchMode):
    """Counts the torch ops a block dispatches, leaving out the no-compute ones numpy conversion shows."""

    FREE = ("detach", "to.dtype_layout", "resolve_conj", "resolve_neg", "lift_fresh", "alias")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not any(f"aten.{free}" in name for free in self.FREE):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _ops_per_step(num_envs: int, normalize: bool) -> list[str]:
    from drl.agents.ppo import PPO, PPOConfig

    space = gym.spaces.Box(-np.inf, np.inf, (17,))
    cfg = PPOConfig(normalize_obs=normalize, normalize_reward=normalize, compile=False)
    agent = PPO(space, gym.spaces.Box(-1, 1, (6,)), cfg, num_envs, torch.device("cpu"))
    obs, reward, done = torch.randn(num_envs, 17), torch.randn(num_envs), torch.zeros(num_envs, dtype=torch.bool)
    agent.record_outcome(agent.act(obs)[1], reward, done, done, obs)  # warm: compiled kernels, cached views
    with _CountOps() as counter:
        agent.record_outcome(agent.act(obs)[1], reward, done, done, obs)
    return counter.ops


def test_normalisation_adds_no_torch_op_to_a_one_env_cpu_step():
    # obs statistics, obs normalisation (actor and final obs) and reward scaling cost one numba call each
    # at most (the rewards are scaled once per rollout); before, they were 62 small torch ops per step
    pytest.importorskip("numba")
    assert _ops_per_step(1, normalize=True) == _ops_per_step(1, normalize=False)


def test_reward_scaling_per_rollout_on_the_torch_path_is_one_op_per_step(monkeypatch):
    # a GPU scales a rollout's rewards with 1 op per step (returns_t = reward_t + returns_{t-1} * gamma_t, one
    # addcmul_) and 20 per rollout (2 of them reads of the statistics, 4 views); one step at a time it takes
    # 14 per step (before: 2 per step and 22 per rollout)
    monkeypatch.setattr(normalization, "_KERNELS", False)
    rewards = torch.randn(64, 8)
    ends = torch.zeros(64, 8, dtype=torch.bool)
    scaler = RewardScaler(8, gamma=0.99)
    with _CountOps() as counter:
        scaler.scale_rollout(rewards, ends, ends)
    assert len(counter.ops) == 64 + 20, counter.ops


def test_normalisation_torch_path_is_a_few_ops_per_step(monkeypatch):
    # where the kernels do not run (a GPU, no numba), each torch op is a kernel launch: normalisation adds
    # 7 ops of statistics (float64 copy, var_mean, the merge in 4, the count), 4 to round the mean and std
    # once per update and 3 per normalised obs (actor, final obs); before, 18 (8 of statistics), and
    # before that 62 (the reward scaler's among them: its work now happens once per rollout)
    monkeypatch.setattr(normalization, "_KERNELS", False)
    monkeypatch.setattr("drl.agents.ppo.numba_available", lambda: False)
    extra = len(_ops_per_step(8, normalize=True)) - len(_ops_per_step(8, normalize=False))
    assert extra == 7 + 4 + 3 + 3


# ------------------------------------------------------------------------------------------------
# Gaussian head
# ------------------------------------------------------------------------------------------------


def _gaussian(squash: bool, low: float = -1.0, high: float = 1.0, state_dependent_std: bool = False,
              act_dim: int = 3, in_dim: int = 5) -> GaussianHead:
    torch.manual_seed(0)
    head = GaussianHead(in_dim, torch.full((act_dim,), low), torch.full((act_dim,), high), log_std_init=-0.3,
                        state_dependent_std=state_dependent_std, squash=squash)
    with torch.no_grad():  # a non-trivial mean and per-dimension std
        head.mean.weight.normal_()
        head.mean.bias.normal_()
        if state_dependent_std:
            head.log_std_layer.weight.normal_(std=0.3)
        else:
            head.log_std.copy_(torch.tensor([-0.5, 0.0, 0.4])[:act_dim])
    return head.double()


def _normal(head: GaussianHead, features: torch.Tensor) -> Normal:
    mean = head.mean(features)
    log_std = head.log_std_layer(features).clamp(-20, 2) if head.state_dependent_std else head.log_std
    return Normal(mean, log_std.exp().expand_as(mean))


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_gaussian_log_prob_and_entropy_match_torch(state_dependent_std):
    head = _gaussian(squash=False, state_dependent_std=state_dependent_std)
    features = torch.randn(8, 5, dtype=torch.float64)
    action, log_prob = head.sample(features)
    dist = _normal(head, features)
    assert action.shape == (8, 3) and log_prob.shape == (8,)
    torch.testing.assert_close(log_prob, dist.log_prob(action).sum(-1))
    other = torch.randn(8, 3, dtype=torch.float64) * 3
    lp, ent = head.evaluate(features, other)
    torch.testing.assert_close(lp, dist.log_prob(other).sum(-1))
    torch.testing.assert_close(ent, dist.entropy().sum(-1))


def test_gaussian_unsquashed_env_action_clips_but_stored_action_does_not():
    head = _gaussian(squash=False, low=-2.0, high=2.0)
    action = torch.tensor([[-5.0, 0.5, 3.0]], dtype=torch.float64)
    assert head.env_action(action).tolist() == [[-2.0, 0.5, 2.0]]
    assert action.tolist() == [[-5.0, 0.5, 3.0]]


def test_gaussian_squashed_log_prob_is_change_of_variables_in_unit_bounds():
    head = _gaussian(squash=True)  # bounds [-1, 1]: env action = tanh(u)
    features = torch.randn(16, 5, dtype=torch.float64)
    u, log_prob = head.sample(features)
    base = _normal(head, features)
    squashed = TransformedDistribution(base, [TanhTransform()])
    env_action = head.env_action(u)
    torch.testing.assert_close(env_action, torch.tanh(u))
    torch.testing.assert_close(log_prob, squashed.log_prob(env_action).sum(-1), rtol=1e-7, atol=1e-7)
    lp, ent = head.evaluate(features, u)
    torch.testing.assert_close(lp, log_prob)
    torch.testing.assert_close(ent, -log_prob)  # one-sample entropy estimate


def test_gaussian_squashed_with_affine_rescale_to_bounds():
    low, high = -2.0, 4.0
    head = _gaussian(squash=True, low=low, high=high)
    features = torch.randn(16, 5, dtype=torch.float64)
    u, log_prob = head.sample(features)
    env_action = head.env_action(u)
    assert (env_action >= low).all() and (env_action <= high).all()
    # a = low + (tanh(u) + 1) / 2 * (high - low) = 1 + 3 tanh(u)
    dist = TransformedDistribution(_normal(head, features), [TanhTransform(), AffineTransform(1.0, 3.0)])
    torch.testing.assert_close(env_action, 1.0 + 3.0 * torch.tanh(u))
    # the head's log-prob leaves out the constant log|scale| of the affine map (irrelevant for ratios)
    torch.testing.assert_close(log_prob, dist.log_prob(env_action).sum(-1) + 3 * math.log(3.0), rtol=1e-7, atol=1e-7)


def test_gaussian_squashed_env_action_within_bounds_at_extremes():
    head = _gaussian(squash=True, low=-2.0, high=0.5)
    u = torch.tensor([[-1e3, 0.0, 1e3], [-30.0, 30.0, 0.1]], dtype=torch.float64)
    out = head.env_action(u)
    assert (out >= -2.0).all() and (out <= 0.5).all()
    torch.testing.assert_close(out[0], torch.tensor([-2.0, -0.75, 0.5], dtype=torch.float64))
    # the correction is finite where tanh saturates
    lp, _ = head.evaluate(torch.zeros(2, 5, dtype=torch.float64), u)
    assert torch.isfinite(lp[1])


def test_gaussian_deterministic_is_mean():
    for squash in (False, True):
        head = _gaussian(squash=squash, low=-2.0, high=2.0)
        features = torch.randn(4, 5, dtype=torch.float64)
        action, _ = head.sample(features, deterministic=True)
        torch.testing.assert_close(action, head.mean(features))
        if squash:
            torch.testing.assert_close(head.env_action(action), 2.0 * torch.tanh(head.mean(features)))


def test_gaussian_sampling_statistics():
    head = _gaussian(squash=False)
    features = torch.randn(1, 5, dtype=torch.float64).expand(20000, 5)
    torch.manual_seed(1)
    action, _ = head.sample(features)
    torch.testing.assert_close(action.mean(0), head.mean(features[:1])[0], rtol=0, atol=0.05)
    torch.testing.assert_close(action.std(0), head.log_std.exp(), rtol=0.03, atol=0)


# ------------------------------------------------------------------------------------------------
# Categorical head
# ------------------------------------------------------------------------------------------------


def _categorical() -> CategoricalHead:
    torch.manual_seed(0)
    head = CategoricalHead(5, 4)
    with torch.no_grad():
        head.logits.weight.normal_()
        head.logits.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    return head.double()


def test_categorical_matches_torch():
    head = _categorical()
    features = torch.randn(10, 5, dtype=torch.float64)
    dist = Categorical(logits=head.logits(features))
    action, log_prob = head.sample(features)
    assert action.shape == (10,) and action.dtype == torch.int64
    assert ((action >= 0) & (action < 4)).all()
    torch.testing.assert_close(log_prob, dist.log_prob(action))
    every = torch.arange(4).repeat(3)[:10]
    lp, ent = head.evaluate(features, every)
    torch.testing.assert_close(lp, dist.log_prob(every))
    torch.testing.assert_close(ent, dist.entropy())
    # float-stored actions are accepted
    torch.testing.assert_close(head.evaluate(features, every.double())[0], lp)
    assert torch.equal(head.env_action(action), action)


def test_categorical_deterministic_is_argmax_and_sampling_frequencies():
    head = _categorical()
    features = torch.randn(6, 5, dtype=torch.float64)
    action, _ = head.sample(features, deterministic=True)
    assert torch.equal(action, head.logits(features).argmax(-1))

    one = features[:1].expand(20000, 5)
    torch.manual_seed(2)
    samples, _ = head.sample(one)
    freq = torch.bincount(samples, minlength=4).double() / samples.numel()
    torch.testing.assert_close(freq, torch.softmax(head.logits(features[:1])[0], -1), rtol=0, atol=0.02)


# ------------------------------------------------------------------------------------------------
# make_action_head / make_mlp
# ------------------------------------------------------------------------------------------------


def test_make_action_head_dispatch():
    head = make_action_head(gym.spaces.Discrete(6), 8)
    assert isinstance(head, CategoricalHead) and head.logits.out_features == 6
    box = gym.spaces.Box(low=np.array([-1.0, -2.0], np.float32), high=np.array([1.0, 3.0], np.float32))
    head = make_action_head(box, 8, log_std_init=-1.0, squash=True)
    assert isinstance(head, GaussianHead) and head.squash
    assert head.low.tolist() == [-1.0, -2.0] and head.high.tolist() == [1.0, 3.0]
    assert head.log_std.tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(3),
                                   gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))])
def test_make_action_head_unsupported_space(space):
    with pytest.raises(TypeError, match="unsupported action space"):
        make_action_head(space, 8)


def test_make_action_head_squash_needs_finite_bounds():
    with pytest.raises(ValueError, match="finite action bounds"):
        make_action_head(gym.spaces.Box(-np.inf, np.inf, (2,)), 8, squash=True)
    assert isinstance(make_action_head(gym.spaces.Box(-np.inf, np.inf, (2,)), 8), GaussianHead)


def test_make_mlp_structure_and_init():
    mlp = make_mlp(4, [32, 16], 2, activation="relu", output_gain=0.01, layer_norm=True)
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 32), (32, 16), (16, 2)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    # orthogonal: the rows of the output weight (2 x 16) are orthogonal with norm = gain 0.01
    w = linears[-1].weight.detach()
    torch.testing.assert_close(w @ w.T, 1e-4 * torch.eye(2), rtol=0, atol=1e-8)
    # hidden gain sqrt(2): the columns of the first weight (32 x 4) have norm sqrt(2)
    w = linears[0].weight.detach()
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(4), rtol=0, atol=1e-5)
    assert mlp(torch.randn(3, 4)).shape == (3, 2)


def test_make_mlp_variants():
    body = make_mlp(3, [8], None, activation="tanh")
    assert [type(m) for m in body] == [nn.Linear, nn.Tanh]
    assert body(torch.zeros(2, 3)).shape == (2, 8)
    linear = make_mlp(3, [], 1)
    assert [type(m) for m in linear] == [nn.Linear]
    assert [type(m) for m in make_mlp(3, [4, 4], 1, activation="elu")][1] is nn.ELU
    assert [type(m) for m in make_mlp(3, [4], 1, activation="silu")][1] is nn.SiLU


def test_make_mlp_bad_activation():
    with pytest.raises(ValueError, match=r"unknown activation 'sigmoid'; valid: \['elu', 'relu', 'silu', 'tanh'\]"):
        make_mlp(3, [4], 1, activation="sigmoid")


def test_default_init_draws_pytorchs_linear_init_and_orthogonal_is_the_default():
    import math

    import gymnasium as gym

    from drl.agents.ppo import PPOConfig
    from drl.nn.actor_critic import ActorCritic

    space = gym.spaces.Box(-1, 1, (2,))
    torch.manual_seed(0)
    ortho = ActorCritic(5, 5, space, PPOConfig(actor_hidden=[64, 64], critic_hidden=[64, 64]))
    torch.manual_seed(0)
    default = ActorCritic(5, 5, space, PPOConfig(actor_hidden=[64, 64], critic_hidden=[64, 64], init="default"))
    mean_layer = ortho.head.mean.weight  # orthogonal with gain 0.01: rows of norm 0.01
    torch.testing.assert_close(mean_layer.norm(dim=1), torch.full((2,), 0.01))
    for layer in (default.actor_body[0], default.actor_body[2], default.head.mean, default.critic[4]):
        bound = 1 / math.sqrt(layer.in_features)  # nn.Linear's kaiming_uniform(a=sqrt(5)) and bias bound
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # drawn over the whole range, not shrunk
    assert default.head.mean.weight.norm(dim=1).min() > 0.1


def test_default_init_keeps_a_state_dependent_log_std_at_log_std_init():
    import gymnasium as gym

    from drl.agents.ppo import PPOConfig
    from drl.nn.actor_critic import ActorCritic

    model = ActorCritic(5, 5, gym.spaces.Box(-1, 1, (2,)),
                        PPOConfig(init="default", state_dependent_std=True, log_std_init=-1.0))
    assert torch.equal(model.head.log_std_layer.bias, torch.full((2,), -1.0))
    assert model.head.log_std_layer.weight.abs().max() < 0.05  # orthogonal, gain 0.01, as with init: orthogonal
    assert model.head.mean.weight.norm(dim=1).min() > 0.1  # the mean layer is redrawn
