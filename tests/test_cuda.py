"""The CUDA path: torch-batched envs, storage, returns, PPO and MuJoCo Warp on an NVIDIA GPU.

Every test here carries the ``cuda`` marker and is skipped without a GPU, so the default suite
(CPU only) only collects them. ``benchmarks/gpu_check.sh`` runs them with ``-m cuda`` on a GPU
machine. Right values: CUDA agrees with the CPU implementation of the same thing (same state,
same actions, same inputs) to float32 round-off, and runs on the GPU stay on the GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drl import api
from drl.returns import gae
from drl.storage import Field, RolloutBuffer
from envs.torch_classic import Acrobot, CartPole, MountainCarContinuous, Pendulum

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CLASSIC = [CartPole, Pendulum, MountainCarContinuous, Acrobot]


@pytest.mark.parametrize("cls", CLASSIC)
def test_classic_env_cuda_matches_cpu(cls: type) -> None:
    """Same state, same actions: CUDA and CPU physics agree until the first episode end.

    Autoreset draws from each device's own generator (different streams), so envs are compared
    only while no episode has ended. Physics in float64 keeps round-off far below the tolerance.
    """
    num_envs, steps = 64, 60
    cpu, gpu = cls(num_envs, device="cpu", dtype="float64"), cls(num_envs, device="cuda", dtype="float64")
    cpu.reset(seed=0)
    state = cpu.state.clone()
    gpu.reset(seed=0, options={"state": state.cuda()})
    cpu.reset(options={"state": state})
    alive = torch.ones(num_envs, dtype=torch.bool)
    compared = 0
    for step in range(steps):
        actions = torch.as_tensor(np.stack([cpu.single_action_space.sample() for _ in range(num_envs)]))
        obs_c, rew_c, term_c, trunc_c, info_c = cpu.step(actions)
        obs_g, rew_g, term_g, trunc_g, info_g = gpu.step(actions.cuda())
        assert obs_g.device.type == rew_g.device.type == term_g.device.type == "cuda"
        final_c, final_g = info_c["final_obs"], info_g["final_obs"].cpu()
        torch.testing.assert_close(final_g[alive], final_c[alive], atol=1e-5, rtol=1e-5, msg=f"step {step}")
        torch.testing.assert_close(rew_g.cpu()[alive], rew_c[alive], atol=1e-5, rtol=1e-5, msg=f"step {step}")
        assert torch.equal(term_g.cpu()[alive], term_c[alive]), f"step {step}"
        assert torch.equal(trunc_g.cpu()[alive], trunc_c[alive]), f"step {step}"
        compared += int(alive.sum())
        alive &= ~(term_c | trunc_c)
    assert compared >= num_envs * 10  # at least ten steps' worth of live envs were compared


@pytest.mark.parametrize("cls", CLASSIC)
def test_classic_env_autoreset_on_cuda(cls: type) -> None:
    """Past every time limit on the GPU: every output on the device, final obs finite."""
    env = cls(256, device="cuda", randomize={next(iter(cls(1).params)): (0.5, 1.0)})
    obs, _ = env.reset(seed=0)
    ended = torch.zeros(256, dtype=torch.bool, device="cuda")
    for _ in range(env.max_episode_steps + 1):  # past the time limit: every env has ended at least once
        action = torch.as_tensor(np.stack([env.single_action_space.sample() for _ in range(256)])).cuda()
        obs, reward, terminated, truncated, info = env.step(action)
        ended |= terminated | truncated
        for tensor in (obs, reward, terminated, truncated, info["final_obs"], info["_final_obs"]):
            assert tensor.device.type == "cuda"
    assert bool(ended.all())
    assert bool(torch.isfinite(obs).all()) and bool(torch.isfinite(info["final_obs"]).all())


def test_gae_cuda_matches_cpu() -> None:
    """The reverse scan on the GPU gives the CPU's values (float64 inputs: exact to 1e-12)."""
    g = torch.Generator().manual_seed(0)
    steps, envs = 32, 128
    rewards = torch.randn(steps, envs, generator=g, dtype=torch.float64)
    values = torch.randn(steps, envs, generator=g, dtype=torch.float64)
    next_values = torch.randn(steps, envs, generator=g, dtype=torch.float64)
    terminated = torch.rand(steps, envs, generator=g) < 0.05
    truncated = ~terminated & (torch.rand(steps, envs, generator=g) < 0.05)
    args = (rewards, values, next_values, terminated, truncated)
    adv_cpu, ret_cpu = gae(*args, gamma=0.99, gae_lambda=0.95)
    adv_gpu, ret_gpu = gae(*(a.cuda() for a in args), gamma=0.99, gae_lambda=0.95)
    assert adv_gpu.device.type == "cuda"
    torch.testing.assert_close(adv_gpu.cpu(), adv_cpu, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ret_gpu.cpu(), ret_cpu, atol=1e-12, rtol=1e-12)


def test_rollout_buffer_on_cuda() -> None:
    fields = {"obs": Field((4,)), "reward": Field(()), "done": Field((), torch.bool)}
    buf = RolloutBuffer(8, 16, fields, device="cuda")
    for t in range(8):
        buf.add({"obs": torch.full((16, 4), float(t), device="cuda"), "reward": torch.ones(16, device="cuda"),
                 "done": torch.zeros(16, dtype=torch.bool, device="cuda")})
    flat = buf.flat()
    assert flat["obs"].is_cuda and flat["obs"].shape == (128, 4)
    assert flat["obs"][:, 0].sum().item() == sum(range(8)) * 16


def _train(tmp_path, env_id: str, steps: int, run: str = "run", **overrides):
    cfg = api.load_config("ppo", env_id, overrides={"total_steps": steps, "progress": False, "seed": 0,
                                                    "device": "cuda", "checkpoint_interval": 0, **overrides})
    run_dir, summary = api.train(cfg, tmp_path / run)
    return run_dir, summary


def test_ppo_solves_torch_cartpole_on_cuda(tmp_path) -> None:
    """The default job (tuned drl/CartPole-v0 config) on the GPU solves CartPole like on the CPU."""
    run_dir, summary = _train(tmp_path, "drl/CartPole-v0", 150_000, eval_interval=16_384, env={"num_envs": 256})
    assert summary["device"].startswith("cuda")
    assert summary["best_eval_return"] >= 475.0, summary


def test_ppo_pendulum_normalised_on_cuda_and_checkpoint_loads_on_cpu(tmp_path) -> None:
    """Obs normalisation + reward scaling on the GPU; the checkpoint reloads on the CPU and acts."""
    run_dir, summary = _train(tmp_path, "drl/Pendulum-v0", 65_536, eval_interval=32_768,
                              env={"num_envs": 1024},
                              algo={"num_steps": 32, "minibatch_size": 4096, "normalize_obs": True,
                                    "normalize_reward": True})
    assert math.isfinite(summary["final_eval_return"])
    agent, _cfg = api.load_agent(run_dir, "latest", device="cpu")
    action, _ = agent.act(torch.zeros(3, 3), deterministic=True, update_stats=False)
    assert action.device.type == "cpu" and action.shape == (3, 1) and bool(torch.isfinite(action).all())


def test_ppo_cuda_runs_repeat(tmp_path) -> None:
    """Two runs with the same seed on the GPU give the same final parameters."""
    params = []
    for run in ("a", "b"):
        run_dir, _ = _train(tmp_path, "drl/CartPole-v0", 16_384, run=run, eval_interval=0)
        agent, _ = api.load_agent(run_dir, "latest", device="cpu")
        params.append(agent.state_dict())
    flat_a = torch.cat([v.flatten().double() for v in _tensors(params[0])])
    flat_b = torch.cat([v.flatten().double() for v in _tensors(params[1])])
    assert torch.equal(flat_a, flat_b), f"max diff {(flat_a - flat_b).abs().max().item():.3g}"


def _tensors(state: object) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state) for t in _tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


def test_ppo_compiled_step_on_cuda(tmp_path) -> None:
    """``algo.compile: true`` (one torch.compile'd minibatch step, inductor on CUDA) trains."""
    _run_dir, summary = _train(tmp_path, "drl/Pendulum-v0", 32_768, eval_interval=0,
                               env={"num_envs": 1024}, algo={"num_steps": 16, "minibatch_size": 4096,
                                                             "compile": True})
    assert summary["steps"] == 32_768


def test_ppo_bf16_autocast_on_cuda(tmp_path) -> None:
    """``algo.autocast: bf16`` (the update's network passes in bfloat16) trains on the GPU with finite losses."""
    run_dir, summary = _train(tmp_path, "drl/Pendulum-v0", 65_536, eval_interval=0, env={"num_envs": 1024},
                              algo={"num_steps": 32, "minibatch_size": 8192, "autocast": "bf16"})
    assert summary["steps"] == 65_536 and math.isfinite(summary["final_eval_return"])


def test_ppo_batched_cpu_shortcuts_match_cuda() -> None:
    """The CPU-only shortcuts of the batched path (oneDNN's fused Linear + tanh in the networks, V(final_obs)
    reusing V(obs_{t+1})) give the losses and returns of the plain computation, which CUDA runs."""
    import gymnasium

    from drl.agents.ppo import PPO, PPOConfig

    torch.manual_seed(0)
    num_envs, steps = 512, 8
    cfg = PPOConfig(num_steps=steps, minibatch_size=steps * num_envs, numba_actor=False, compile=False)
    spaces = (gymnasium.spaces.Box(-np.inf, np.inf, (3,)), gymnasium.spaces.Box(-2, 2, (1,)))
    agents = {dev: PPO(*spaces, cfg, num_envs, torch.device(dev)) for dev in ("cpu", "cuda")}
    agents["cuda"].model.load_state_dict(agents["cpu"].model.state_dict())
    storages = {dev: RolloutBuffer(steps, num_envs, agents["cpu"].storage_fields(), dev) for dev in agents}
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        obs = torch.randn(num_envs, 3, generator=gen)
        done = torch.rand(num_envs, generator=gen) < 0.1
        final = torch.where(done.unsqueeze(1), torch.randn(num_envs, 3, generator=gen), torch.randn(num_envs, 3))
        _, record = agents["cpu"].act(obs)
        record = agents["cpu"].record_outcome(record, torch.randn(num_envs, generator=gen), done & False, done, final)
        for dev, storage in storages.items():
            storage.add({k: v.to(dev) for k, v in record.items()})
    for dev in ("cpu", "cuda"):  # a consistent rollout: a step's final obs is the next obs unless it ended
        obs, final = storages[dev]["obs/policy"], storages[dev]["final_obs/policy"]
        ended = storages[dev]["truncated"][:-1].unsqueeze(-1)
        final[:-1] = torch.where(ended, final[:-1], obs[1:])
    out = {dev: agents[dev].compute_returns(storages[dev]) for dev in agents}
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
    losses = {}
    for dev, agent in agents.items():
        batch = storages[dev].flat(["obs/policy", "actions", "log_probs"])
        batch["values"], batch["advantages"], batch["returns"] = (x.reshape(-1) for x in out[dev])
        losses[dev] = agent._minibatch_loss(batch)
    for key in ("loss", "policy_loss", "value_loss", "entropy"):
        torch.testing.assert_close(losses["cuda"][key].cpu(), losses["cpu"][key], atol=1e-4, rtol=1e-4)


# --- MuJoCo Warp on CUDA -------------------------------------------------------------------


def _mjwarp():
    pytest.importorskip("warp")
    pytest.importorskip("mujoco_warp")
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    from envs.mjwarp import HalfCheetah, Hopper

    return gym, {"HalfCheetah": HalfCheetah, "Hopper": Hopper}


# (task, steps, obs atol, reward atol): the CPU-warp tolerances of tests/envs/test_mjwarp.py
MJWARP_CASES = [("Hopper", 50, 2e-4, 5e-5), ("HalfCheetah", 10, 1e-2, 5e-3)]


@pytest.mark.parametrize("task,steps,obs_atol,reward_atol", MJWARP_CASES)
def test_mjwarp_cuda_agrees_with_gymnasium(task: str, steps: int, obs_atol: float, reward_atol: float) -> None:
    """MJWarp on the GPU follows gymnasium's CPU MuJoCo v5 from the same initial states."""
    gym, tasks = _mjwarp()
    num_envs = 2
    env = tasks[task](num_envs=num_envs, device="cuda")
    gym_envs = [gym.make(f"{task}-v5").unwrapped for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    states = []
    for gym_env in gym_envs:
        gym_env.reset(seed=0)
        nq, nv = gym_env.model.nq, gym_env.model.nv
        qpos = gym_env.init_qpos + rng.uniform(-5e-3, 5e-3, nq)
        qvel = gym_env.init_qvel + rng.uniform(-5e-3, 5e-3, nv)
        gym_env.set_state(qpos, qvel)
        states.append(np.concatenate([qpos, qvel]))
    obs, _ = env.reset(options={"state": torch.tensor(np.array(states), dtype=torch.float32, device="cuda")})
    assert obs.device.type == "cuda"
    alive = [True] * num_envs
    for step in range(steps):
        actions = rng.uniform(-1.0, 1.0, (num_envs, env.single_action_space.shape[0])).astype(np.float32)
        _, reward, terminated, _, info = env.step(torch.from_numpy(actions).cuda())
        for i, gym_env in enumerate(gym_envs):
            if not alive[i]:
                continue
            gym_obs, gym_reward, gym_terminated, _, _ = gym_env.step(actions[i])
            where = f"{task} env {i} step {step}"
            np.testing.assert_allclose(info["final_obs"][i].cpu().numpy(), gym_obs, atol=obs_atol, err_msg=where)
            assert abs(reward[i].item() - gym_reward) < reward_atol, where
            assert bool(terminated[i]) == gym_terminated, where
            alive[i] = not gym_terminated
        if not any(alive):
            break
    for gym_env in gym_envs:
        gym_env.close()
    env.close()


def test_ppo_mjwarp_halfcheetah_on_cuda(tmp_path) -> None:
    """PPO's whole loop on the batched MJWarp HalfCheetah on the GPU (1,024 envs, 2 iterations)."""
    _mjwarp()
    _run_dir, summary = _train(tmp_path, "drl/HalfCheetah-v0", 65_536, eval_interval=0, eval_episodes=2,
                               env={"num_envs": 1024, "num_eval_envs": 2},
                               algo={"num_steps": 32, "minibatch_size": 8192, "num_epochs": 2,
                                     "normalize_obs": True, "normalize_reward": True})
    assert summary["steps"] == 65_536 and summary["device"].startswith("cuda")
    assert summary["final_eval_return"] is not None and math.isfinite(summary["final_eval_return"])
