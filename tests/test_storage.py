"""RolloutBuffer, ReplayBuffer (ring mode), MinibatchSampler and MixedSampler."""

from __future__ import annotations

import io

import pytest
import torch

from drl.returns import gae
from drl.storage import (
    Field,
    MinibatchSampler,
    MixedSampler,
    ReplayBuffer,
    RolloutBuffer,
    flatten_obs,
    unflatten_obs,
)

# ------------------------------------------------------------------------------------------------
# RolloutBuffer basics
# ------------------------------------------------------------------------------------------------


def _ppo_fields(obs_dim: int = 3, act_dim: int = 2) -> dict[str, Field]:
    return {
        "obs": Field((obs_dim,)),
        "actions": Field((act_dim,)),
        "log_probs": Field(()),
        "rewards": Field(()),
        "terminated": Field((), torch.bool),
        "truncated": Field((), torch.bool),
        "step_id": Field((), torch.int64),
    }


def _step(t: int, num_envs: int, obs_dim: int = 3, act_dim: int = 2) -> dict[str, torch.Tensor]:
    """A transition whose values encode (t, env) so rows can be traced: obs[t, n, :] = 10 t + n."""
    env = torch.arange(num_envs)
    return {
        "obs": (10.0 * t + env.float()).unsqueeze(-1).expand(num_envs, obs_dim).clone(),
        "actions": torch.full((num_envs, act_dim), float(-t)),
        "log_probs": torch.full((num_envs,), 0.5 * t),
        "rewards": env.float() + t,
        "terminated": env == t % num_envs,
        "truncated": torch.zeros(num_envs, dtype=torch.bool),
        "step_id": torch.full((num_envs,), t, dtype=torch.int64),
    }


def test_rollout_shapes_dtypes_device():
    buf = RolloutBuffer(5, 4, _ppo_fields(), device="cpu")
    assert buf["obs"].shape == (5, 4, 3)
    assert buf["actions"].shape == (5, 4, 2)
    assert buf["log_probs"].shape == (5, 4)
    assert buf["terminated"].dtype == torch.bool
    assert buf["step_id"].dtype == torch.int64
    assert buf["obs"].dtype == torch.float32
    assert all(tensor.device == torch.device("cpu") for _, tensor in buf.items())
    assert len(buf) == 0 and not buf.full
    assert "obs" in buf and "values" not in buf


def test_rollout_allocates_on_requested_device():
    # the meta device allocates without memory: proves tensors are created where asked, with no GPU needed
    buf = RolloutBuffer(4, 2, {"obs": Field((3,)), "done": Field((), torch.bool)}, device="meta")
    assert buf.device == torch.device("meta")
    assert buf["obs"].device.type == "meta" and buf["obs"].shape == (4, 2, 3)
    assert buf["done"].device.type == "meta"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rollout_on_cuda():
    buf = RolloutBuffer(3, 2, _ppo_fields(), device="cuda")
    buf.add({k: v.cuda() for k, v in _step(0, 2).items()})
    assert all(tensor.is_cuda for _, tensor in buf.items())
    assert buf.flat()["obs"].is_cuda


def test_rollout_rejects_bad_sizes():
    with pytest.raises(ValueError, match="capacity and num_envs"):
        RolloutBuffer(0, 2, _ppo_fields())
    with pytest.raises(ValueError, match="capacity and num_envs"):
        RolloutBuffer(2, 0, _ppo_fields())


def test_rollout_add_flat_clear():
    T, N = 3, 2
    buf = RolloutBuffer(T, N, _ppo_fields())
    buf.add(_step(0, N))
    assert len(buf) == 1 and buf.step == 1 and not buf.full
    # flat() only covers the valid steps
    assert buf.flat()["obs"].shape == (N, 3)
    buf.add(_step(1, N))
    buf.add(_step(2, N))
    assert len(buf) == T and buf.full
    assert buf["obs"][2, 1, 0].item() == 21.0
    assert buf["terminated"][1].tolist() == [False, True]

    flat = buf.flat()
    assert flat["obs"].shape == (T * N, 3)
    assert flat["log_probs"].shape == (T * N,)
    assert flat["actions"].shape == (T * N, 2)
    # row t * N + n holds step t of env n
    assert flat["obs"][:, 0].tolist() == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]
    assert flat["step_id"].tolist() == [0, 0, 1, 1, 2, 2]
    # a subset of names
    assert set(buf.flat(["obs", "rewards"])) == {"obs", "rewards"}
    # flat gives views: no copy on the hot path
    assert flat["obs"].data_ptr() == buf["obs"].data_ptr()

    buf.clear()
    assert len(buf) == 0 and buf.step == 0 and not buf.full
    buf.add(_step(7, N))
    assert buf["step_id"][0].tolist() == [7, 7]
    assert buf.flat()["step_id"].tolist() == [7, 7]


def test_rollout_errors_missing_unknown_full():
    buf = RolloutBuffer(1, 2, _ppo_fields())
    partial = _step(0, 2)
    del partial["log_probs"]
    with pytest.raises(KeyError, match=r"missing \['log_probs'\], unknown \[\]"):
        buf.add(partial)
    extra = {**_step(0, 2), "bogus": torch.zeros(2)}
    with pytest.raises(KeyError, match=r"missing \[\], unknown \['bogus'\]"):
        buf.add(extra)
    assert len(buf) == 0  # a rejected write does not advance the cursor
    buf.add(_step(0, 2))
    with pytest.raises(RuntimeError, match="full"):
        buf.add(_step(1, 2))


def test_obs_groups_flatten_unflatten():
    obs = {"policy": torch.randn(2, 3), "critic": torch.randn(2, 5)}
    flat = flatten_obs("obs", obs)
    assert set(flat) == {"obs/policy", "obs/critic"}
    assert flatten_obs("obs", obs["policy"]).keys() == {"obs"}

    fields = {"obs/policy": Field((3,)), "obs/critic": Field((5,)), "next_obs/critic": Field((5,))}
    buf = RolloutBuffer(2, 2, fields)
    for _ in range(2):
        buf.add({**flat, **flatten_obs("next_obs", {"critic": obs["critic"] + 1})})
    groups = unflatten_obs("obs", buf.flat())
    assert set(groups) == {"policy", "critic"}  # "next_obs/critic" is not picked up by the "obs" prefix
    assert groups["policy"].shape == (4, 3) and groups["critic"].shape == (4, 5)
    torch.testing.assert_close(groups["critic"][2:], obs["critic"])
    torch.testing.assert_close(unflatten_obs("next_obs", buf.flat())["critic"][:2], obs["critic"] + 1)

    plain = {"obs": torch.ones(4, 3)}
    assert unflatten_obs("obs", plain) is plain["obs"]
    with pytest.raises(KeyError, match="no field 'state'"):
        unflatten_obs("state", buf.flat())


# ------------------------------------------------------------------------------------------------
# The storage serves the agents to come
# ------------------------------------------------------------------------------------------------


def test_agent_axis_field():
    T, N, num_agents, act_dim = 4, 3, 2, 5
    buf = RolloutBuffer(T, N, {
        "actions": Field((num_agents, act_dim)),
        "log_probs": Field((num_agents,)),
        "rewards": Field((num_agents,)),
    })
    assert buf["actions"].shape == (T, N, num_agents, act_dim)
    for t in range(T):
        actions = torch.arange(N * num_agents * act_dim, dtype=torch.float32).view(N, num_agents, act_dim) + 100 * t
        buf.add({"actions": actions, "log_probs": torch.full((N, num_agents), float(t)),
                 "rewards": torch.tensor([[1.0, -1.0]] * N)})
    flat = buf.flat()
    assert flat["actions"].shape == (T * N, num_agents, act_dim)
    assert flat["log_probs"].shape == (T * N, num_agents)
    # step 3, env 1, agent 1, dim 4 -> value 100*3 + (1*2 + 1)*5 + 4 = 319
    assert flat["actions"][3 * N + 1, 1, 4].item() == 319.0
    # per-agent returns with shared [T, N] masks
    terminated = torch.zeros(T, N, dtype=torch.bool)
    zeros = torch.zeros(T, N, num_agents)
    adv, _ = gae(buf["rewards"], zeros, zeros, terminated, terminated, 1.0, 1.0)
    assert adv.shape == (T, N, num_agents)
    torch.testing.assert_close(adv[0, 0], torch.tensor([4.0, -4.0]))


def test_heterogeneous_per_agent_spaces():
    # agent_0 acts in Box(3) (float32), agent_1 in Discrete (int64): one field per agent
    fields = {
        "obs/agent_0": Field((4,)),
        "obs/agent_1": Field((2, 2)),
        "actions/agent_0": Field((3,), torch.float32),
        "actions/agent_1": Field((), torch.int64),
        "log_probs/agent_0": Field(()),
        "log_probs/agent_1": Field(()),
    }
    T, N = 2, 3
    buf = RolloutBuffer(T, N, fields)
    assert buf["actions/agent_0"].shape == (T, N, 3) and buf["actions/agent_0"].dtype == torch.float32
    assert buf["actions/agent_1"].shape == (T, N) and buf["actions/agent_1"].dtype == torch.int64
    assert buf["obs/agent_1"].shape == (T, N, 2, 2)
    for t in range(T):
        buf.add({
            "obs/agent_0": torch.zeros(N, 4),
            "obs/agent_1": torch.zeros(N, 2, 2),
            "actions/agent_0": torch.full((N, 3), 0.25 * t),
            "actions/agent_1": torch.tensor([0, 1, 2]) + 3 * t,
            "log_probs/agent_0": torch.zeros(N),
            "log_probs/agent_1": torch.zeros(N),
        })
    actions = unflatten_obs("actions", buf.flat())
    assert set(actions) == {"agent_0", "agent_1"}
    assert actions["agent_1"].tolist() == [0, 1, 2, 3, 4, 5]
    assert actions["agent_1"].dtype == torch.int64
    assert actions["agent_0"][-1].tolist() == [0.25, 0.25, 0.25]


def test_task_id_per_env_and_selecting_one_task():
    T, N = 3, 4
    buf = RolloutBuffer(T, N, {"obs": Field((2,)), "rewards": Field(()), "task_id": Field((), torch.int64)})
    assert buf["task_id"].dtype == torch.int64
    task_of_env = torch.tensor([0, 1, 0, 2])
    for t in range(T):
        obs = torch.stack([torch.full((N,), float(t)), torch.arange(N, dtype=torch.float32)], dim=-1)
        buf.add({"obs": obs, "rewards": torch.ones(N) * t, "task_id": task_of_env})
    flat = buf.flat()
    rows = flat["task_id"] == 0
    assert rows.sum().item() == T * 2
    # task 0 runs on envs 0 and 2: rows (t, env) = (0,0),(0,2),(1,0),(1,2),(2,0),(2,2)
    assert flat["obs"][rows].tolist() == [[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 2.0], [2.0, 0.0], [2.0, 2.0]]
    assert flat["rewards"][flat["task_id"] == 2].tolist() == [0.0, 1.0, 2.0]
    # per-task mean reward with a scatter (what a multi-task agent logs)
    sums = torch.zeros(3).index_add_(0, flat["task_id"], flat["rewards"])
    counts = torch.bincount(flat["task_id"], minlength=3).float()
    assert (sums / counts).tolist() == [1.0, 1.0, 1.0]


def test_two_players_on_one_env():
    T, N = 3, 2
    buf = RolloutBuffer(T, N, {
        "obs": Field((3,)),
        "actions/protagonist": Field((2,)),
        "actions/adversary": Field((1,)),
        "log_probs/protagonist": Field(()),
        "log_probs/adversary": Field(()),
        "rewards/protagonist": Field(()),
        "rewards/adversary": Field(()),
    })
    for t in range(T):
        reward = torch.tensor([1.0, 2.0]) * (t + 1)
        buf.add({
            "obs": torch.zeros(N, 3),
            "actions/protagonist": torch.ones(N, 2),
            "actions/adversary": -torch.ones(N, 1),
            "log_probs/protagonist": torch.full((N,), -0.1 * t),
            "log_probs/adversary": torch.full((N,), -0.2 * t),
            "rewards/protagonist": reward,
            "rewards/adversary": -reward,
        })
    flat = buf.flat()
    assert flat["actions/protagonist"].shape == (T * N, 2)
    assert flat["actions/adversary"].shape == (T * N, 1)
    torch.testing.assert_close(flat["rewards/protagonist"] + flat["rewards/adversary"], torch.zeros(T * N))
    assert flat["rewards/protagonist"].tolist() == [1.0, 2.0, 2.0, 4.0, 3.0, 6.0]
    assert not torch.equal(flat["log_probs/protagonist"], flat["log_probs/adversary"])
    torch.testing.assert_close(flat["log_probs/adversary"], 2 * flat["log_probs/protagonist"])
    players = unflatten_obs("rewards", flat)
    assert set(players) == {"protagonist", "adversary"}


def test_extra_reward_stream_combined():
    T, N = 3, 2
    buf = RolloutBuffer(T, N, {"rewards": Field(()), "rewards_intrinsic": Field(())})
    extrinsic = [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    intrinsic = [[0.5, 0.25], [0.5, 0.25], [0.0, 0.0]]
    for t in range(T):
        buf.add({"rewards": torch.tensor(extrinsic[t]), "rewards_intrinsic": torch.tensor(intrinsic[t])})
    # extrinsic + 0.1 * intrinsic
    combined = buf["rewards"] + 0.1 * buf["rewards_intrinsic"]
    torch.testing.assert_close(combined, torch.tensor([[1.05, 0.025], [0.05, 0.025], [0.0, 1.0]]))
    # or both streams stacked on a trailing axis, one return per stream (gae broadcasts over it)
    streams = torch.stack([buf["rewards"], buf["rewards_intrinsic"]], dim=-1)
    zeros = torch.zeros_like(streams)
    no = torch.zeros(T, N, dtype=torch.bool)
    adv, _ = gae(streams, zeros, zeros, no, no, 0.5, 1.0)
    # env 0: extrinsic 1 + 0.5*0 + 0.25*0 = 1; intrinsic 0.5 + 0.25 + 0 = 0.75
    torch.testing.assert_close(adv[0, 0], torch.tensor([1.0, 0.75]))


# ------------------------------------------------------------------------------------------------
# MinibatchSampler
# ------------------------------------------------------------------------------------------------


def test_minibatch_sampler_covers_every_index_once_and_disjoint():
    sampler = MinibatchSampler(24, 6, torch.Generator().manual_seed(0))
    assert sampler.num_minibatches == 4
    for _ in range(3):
        batches = list(sampler.epoch())
        assert len(batches) == 4
        assert all(batch.shape == (6,) and batch.dtype == torch.int64 for batch in batches)
        seen = torch.cat(batches)
        assert sorted(seen.tolist()) == list(range(24))
        assert len(set(seen.tolist())) == 24  # disjoint minibatches


def test_minibatch_sampler_reproducible_with_seed():
    def draws(seed: int) -> list[list[int]]:
        sampler = MinibatchSampler(32, 8, torch.Generator().manual_seed(seed))
        return [batch.tolist() for _ in range(2) for batch in sampler.epoch()]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
    first_epoch, second_epoch = draws(3)[:4], draws(3)[4:]
    assert first_epoch != second_epoch  # each epoch reshuffles


@pytest.mark.parametrize("minibatch_size", [5, 0, -4])
def test_minibatch_sampler_rejects_non_dividing(minibatch_size):
    with pytest.raises(ValueError, match="must be >= 1 and divide the rollout size"):
        MinibatchSampler(24, minibatch_size)


# ------------------------------------------------------------------------------------------------
# ReplayBuffer (ring mode)
# ------------------------------------------------------------------------------------------------


def _replay_fields() -> dict[str, Field]:
    return {"obs": Field((2,)), "actions": Field((), torch.int64), "marker": Field(())}


def _transition(i: int, num_envs: int = 2) -> dict[str, torch.Tensor]:
    env = torch.arange(num_envs)
    return {
        "obs": torch.stack([torch.full((num_envs,), float(i)), env.float()], dim=-1),
        "actions": env + 10 * i,
        "marker": torch.full((num_envs,), float(i + 1)),  # 0 would mean "never written"
    }


def test_replay_ring_wraps_and_overwrites_oldest_in_order():
    buf = ReplayBuffer(3, 2, _replay_fields())
    for i in range(2):
        buf.add(_transition(i))
    assert len(buf) == 2 and not buf.full
    buf.add(_transition(2))
    assert len(buf) == 3 and buf.full and buf.step == 0
    buf.add(_transition(3))  # overwrites slot 0 (the oldest, i=0)
    assert buf["marker"][:, 0].tolist() == [4.0, 2.0, 3.0]
    buf.add(_transition(4))  # overwrites slot 1 (now the oldest, i=1)
    assert buf["marker"][:, 0].tolist() == [4.0, 5.0, 3.0]
    assert buf["actions"][:, 1].tolist() == [31, 41, 21]
    assert len(buf) == 3 and buf.step == 2
    # ring mode never raises "full"
    for i in range(5, 12):
        buf.add(_transition(i))
    assert sorted(buf["marker"][:, 0].tolist()) == [10.0, 11.0, 12.0]


def test_replay_samples_only_valid_rows_with_shapes():
    buf = ReplayBuffer(10, 2, _replay_fields())
    for i in range(3):
        buf.add(_transition(i))
    batch = buf.sample(500, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (500, 2)
    assert batch["actions"].shape == (500,) and batch["actions"].dtype == torch.int64
    assert batch["marker"].shape == (500,)
    assert set(batch["marker"].tolist()) == {1.0, 2.0, 3.0}  # never an unwritten (zero) row
    # columns of one sampled row belong together: actions = env + 10 i, obs = [i, env], marker = i + 1
    torch.testing.assert_close(batch["actions"].float(), batch["obs"][:, 1] + 10 * batch["obs"][:, 0])
    torch.testing.assert_close(batch["marker"], batch["obs"][:, 0] + 1)
    # both envs are drawn
    assert set(batch["obs"][:, 1].tolist()) == {0.0, 1.0}


def test_replay_sample_reproducible_and_empty_raises():
    buf = ReplayBuffer(4, 2, _replay_fields())
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(4)
    for i in range(4):
        buf.add(_transition(i))
    a = buf.sample(16, torch.Generator().manual_seed(5))
    b = buf.sample(16, torch.Generator().manual_seed(5))
    assert torch.equal(a["obs"], b["obs"])


def test_replay_from_tensors():
    data = {"obs": torch.arange(10, dtype=torch.float32).view(5, 2), "actions": torch.arange(5)}
    buf = ReplayBuffer.from_tensors(data)
    assert buf.num_envs == 1 and buf.capacity == 5 and len(buf) == 5 and buf.full
    assert buf["obs"].shape == (5, 1, 2) and buf["actions"].dtype == torch.int64
    torch.testing.assert_close(buf.flat()["obs"], data["obs"])
    batch = buf.sample(64, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (64, 2)
    torch.testing.assert_close(batch["obs"][:, 0], 2.0 * batch["actions"].float())
    with pytest.raises(ValueError, match="same number of rows"):
        ReplayBuffer.from_tensors({"obs": torch.zeros(5, 2), "actions": torch.zeros(4)})


def test_replay_sample_indices_uniform_over_held_and_gather_by_hand():
    buf = ReplayBuffer(10, 2, _replay_fields())
    for i in range(3):
        buf.add(_transition(i))
    steps, envs = buf.sample_indices(60_000, torch.Generator().manual_seed(0))
    assert steps.shape == envs.shape == (60_000,)
    assert steps.dtype == envs.dtype == torch.int64 and steps.device == buf.device
    assert 0 <= steps.min() and steps.max() <= 2 and 0 <= envs.min() and envs.max() <= 1
    counts = torch.bincount(steps * 2 + envs, minlength=6)
    assert counts.shape == (6,) and ((counts - 10_000).abs() < 500).all()  # 6 transitions, 10,000 each +- 5%
    # sample = sample_indices + gather with the same generator state
    a = buf.sample(32, torch.Generator().manual_seed(7))
    b = buf.gather(*buf.sample_indices(32, torch.Generator().manual_seed(7)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # by hand: row 2 of env 1 is transition i=2 (marker 3, action 21), row 0 of env 0 is i=0 (marker 1, action 0)
    got = buf.gather(torch.tensor([2, 0]), torch.tensor([1, 0]), ["marker", "actions"])
    assert set(got) == {"marker", "actions"}
    assert got["marker"].tolist() == [3.0, 1.0] and got["actions"].tolist() == [21, 0]


def test_replay_sample_indices_cover_a_wrapped_ring():
    buf = ReplayBuffer(4, 3, _replay_fields())
    for i in range(6):  # wraps: head 2
        buf.add(_transition(i, 3))
    steps, envs = buf.sample_indices(2000, torch.Generator().manual_seed(1))
    assert set((steps * 3 + envs).tolist()) == set(range(12))
    assert set(buf.gather(steps, envs)["marker"].tolist()) == {3.0, 4.0, 5.0, 6.0}


def test_replay_add_cached_views_and_indexed_writes_agree():
    cached, indexed = ReplayBuffer(3, 2, _replay_fields()), ReplayBuffer(3, 2, _replay_fields())
    indexed.max_cached_rows = 0  # the path of very large buffers
    for i in range(7):
        cached.add(_transition(i))
        indexed.add(_transition(i))
    assert all(torch.equal(cached[k], indexed[k]) for k in cached.fields)
    assert cached.step == indexed.step == 1 and cached.full and indexed.full
    assert cached["marker"][:, 0].tolist() == [7.0, 5.0, 6.0]
    # the cached rows are views into the storage
    assert cached._rows[1]["obs"].data_ptr() == cached["obs"][1].data_ptr()
    assert indexed._rows[1] is None
    with pytest.raises(KeyError, match=r"missing \['marker'\]"):
        cached.add({k: v for k, v in _transition(0).items() if k != "marker"})
    assert cached.step == 1  # a rejected write does not advance the ring


def _saved_and_loaded(buf: ReplayBuffer, capacity: int | None = None) -> ReplayBuffer:
    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    loaded = ReplayBuffer(capacity or buf.capacity, buf.num_envs, buf.fields)
    loaded.load_state_dict(torch.load(blob, weights_only=True))
    return loaded


@pytest.mark.parametrize("adds", [0, 2, 4, 6])
def test_replay_state_dict_round_trip_gives_identical_tensors_and_samples(adds):
    buf = ReplayBuffer(4, 2, _replay_fields())
    for i in range(adds):
        buf.add(_transition(i))
    state = buf.state_dict()
    assert state["step"] == buf.step and state["full"] == buf.full
    held = len(buf)
    assert all(tensor.shape[0] == held for tensor in state["data"].values())  # no unused capacity
    if 0 < held < buf.capacity:  # a copy of the held rows only, not a view keeping the whole storage
        assert state["data"]["obs"].untyped_storage().nbytes() == held * 2 * 2 * 4
    loaded = _saved_and_loaded(buf)
    assert (loaded.step, loaded.full, len(loaded)) == (buf.step, buf.full, len(buf))
    assert all(torch.equal(loaded[k][:held], buf[k][:held]) for k in buf.fields)
    if held:
        for seed in range(3):
            a = buf.sample(16, torch.Generator().manual_seed(seed))
            b = loaded.sample(16, torch.Generator().manual_seed(seed))
            assert all(torch.equal(a[k], b[k]) for k in a)
    # and they stay identical as training goes on
    for i in range(adds, adds + 3):
        buf.add(_transition(i))
        loaded.add(_transition(i))
    assert all(torch.equal(loaded[k], buf[k]) for k in buf.fields) and loaded.step == buf.step


def test_replay_load_into_another_capacity_keeps_time_order():
    buf = ReplayBuffer(3, 2, _replay_fields())
    for i in range(5):  # full, head 2: ring rows hold markers [4, 5, 3]
        buf.add(_transition(i))
    bigger = _saved_and_loaded(buf, capacity=5)
    assert bigger["marker"][:, 0].tolist() == [3.0, 4.0, 5.0, 0.0, 0.0]  # oldest first
    assert bigger.step == 3 and not bigger.full and len(bigger) == 3
    bigger.add(_transition(5))
    assert bigger["marker"][:, 1].tolist() == [3.0, 4.0, 5.0, 6.0, 0.0]
    with pytest.raises(ValueError, match="'capacity' 2"):
        ReplayBuffer(2, 2, _replay_fields()).load_state_dict(buf.state_dict())
    partial = ReplayBuffer(8, 2, _replay_fields())
    partial.add(_transition(0))
    partial.add(_transition(1))
    small = _saved_and_loaded(partial, capacity=2)  # 2 rows fit a capacity of 2: full, head 0
    assert small.full and small.step == 0 and small["marker"][:, 0].tolist() == [1.0, 2.0]


def test_replay_load_mismatch_raises_naming_the_field_and_changes_nothing():
    buf = ReplayBuffer(4, 2, _replay_fields())
    for i in range(3):
        buf.add(_transition(i))
    state = buf.state_dict()
    wrong_shape = ReplayBuffer(4, 2, {**_replay_fields(), "obs": Field((3,))})
    with pytest.raises(ValueError, match="field 'obs' has shape"):
        wrong_shape.load_state_dict(state)
    assert len(wrong_shape) == 0 and not wrong_shape["obs"].any()
    with pytest.raises(ValueError, match="field 'actions' has dtype"):
        ReplayBuffer(4, 2, {**_replay_fields(), "actions": Field(())}).load_state_dict(state)
    with pytest.raises(ValueError, match="lacks field 'next_obs'"):
        ReplayBuffer(4, 2, {**_replay_fields(), "next_obs": Field((2,))}).load_state_dict(state)
    with pytest.raises(ValueError, match="has field 'marker'"):
        ReplayBuffer(4, 2, {"obs": Field((2,)), "actions": Field((), torch.int64)}).load_state_dict(state)
    with pytest.raises(ValueError, match="'num_envs'"):
        ReplayBuffer(4, 3, _replay_fields()).load_state_dict(state)
    with pytest.raises(ValueError, match="lacks 'step'"):
        ReplayBuffer(4, 2, _replay_fields()).load_state_dict({k: v for k, v in state.items() if k != "step"})
    with pytest.raises(ValueError, match="'step' 1"):
        ReplayBuffer(4, 2, _replay_fields()).load_state_dict({**state, "step": 1})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replay_on_cuda_with_a_cpu_generator_draws_like_on_cpu():
    cpu, gpu = ReplayBuffer(5, 3, _replay_fields()), ReplayBuffer(5, 3, _replay_fields(), device="cuda")
    for i in range(7):
        cpu.add(_transition(i, 3))
        gpu.add({k: v.cuda() for k, v in _transition(i, 3).items()})
    steps, envs = gpu.sample_indices(64, torch.Generator().manual_seed(2))
    assert steps.is_cuda and envs.is_cuda
    a = cpu.sample(64, torch.Generator().manual_seed(2))
    b = gpu.sample(64, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[k], b[k].cpu()) for k in a)
    loaded = ReplayBuffer(5, 3, _replay_fields(), device="cuda")
    loaded.load_state_dict(cpu.state_dict())
    assert all(torch.equal(loaded[k].cpu(), cpu[k]) for k in cpu.fields)


# ------------------------------------------------------------------------------------------------
# MixedSampler
# ------------------------------------------------------------------------------------------------


def _demo_and_online(online_steps: int) -> tuple[ReplayBuffer, ReplayBuffer]:
    demos = ReplayBuffer.from_tensors({
        "obs": torch.randn(20, 3),
        "actions": torch.randn(20, 2),
        "is_demo": torch.ones(20, dtype=torch.bool),
    })
    online = ReplayBuffer(50, 4, {"obs": Field((3,)), "actions": Field((2,)), "is_demo": Field((), torch.bool)})
    for _ in range(online_steps):
        online.add({"obs": torch.randn(4, 3), "actions": torch.randn(4, 2),
                    "is_demo": torch.zeros(4, dtype=torch.bool)})
    return demos, online


@pytest.mark.parametrize(("fraction", "batch_size", "num_demo"), [(0.25, 32, 8), (0.5, 10, 5), (0.0, 16, 0),
                                                                   (1.0, 16, 16), (0.3, 10, 3)])
def test_mixed_sampler_exact_demo_fraction(fraction, batch_size, num_demo):
    demos, online = _demo_and_online(5)
    sampler = MixedSampler(demos, online, fraction)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = sampler.sample(batch_size, gen)
        assert batch["obs"].shape == (batch_size, 3) and batch["actions"].shape == (batch_size, 2)
        assert batch["is_demo"].sum().item() == num_demo
        assert batch["is_demo"][:num_demo].all() and not batch["is_demo"][num_demo:].any()


def test_mixed_sampler_rows_come_from_their_source():
    demos, online = _demo_and_online(5)
    batch = MixedSampler(demos, online, 0.5).sample(40, torch.Generator().manual_seed(1))
    demo_obs = demos.flat()["obs"]
    online_obs = online.flat()["obs"]

    def is_row_of(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return (rows[:, None, :] == table[None, :, :]).all(-1).any(-1)

    assert is_row_of(batch["obs"][batch["is_demo"]], demo_obs).all()
    assert is_row_of(batch["obs"][~batch["is_demo"]], online_obs).all()


def test_mixed_sampler_all_demo_when_online_empty():
    demos, online = _demo_and_online(0)
    batch = MixedSampler(demos, online, 0.25).sample(12, torch.Generator().manual_seed(0))
    assert batch["is_demo"].shape == (12,) and batch["is_demo"].all()


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_mixed_sampler_bad_fraction(fraction):
    demos, online = _demo_and_online(1)
    with pytest.raises(ValueError, match=r"demo_fraction must be in \[0, 1\]"):
        MixedSampler(demos, online, fraction)


def test_mixed_sampler_demos_missing_field():
    demos = ReplayBuffer.from_tensors({"obs": torch.zeros(4, 3)})
    _, online = _demo_and_online(1)
    with pytest.raises(KeyError, match="actions"):
        MixedSampler(demos, online, 0.5)
