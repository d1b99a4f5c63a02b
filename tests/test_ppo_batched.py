"""The batched PPO path's shortcuts agree with the plain computation (issue 19).

* :func:`drl.nn.mlp.mlp_forward`: oneDNN's fused Linear + activation on large CPU batches, against
  ``nn.Sequential``'s call (values within one ulp of ``torch.tanh``, ReLU exact; gradients from autograd).
* :meth:`PPO._next_values`: ``V(final_obs)`` reusing ``V(obs_{t+1})`` where no episode ended, against the
  full critic pass over every final obs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.nn import mlp as mlp_module
from drl.nn.mlp import FUSED_MIN_ROWS, make_mlp, mlp_forward
from drl.storage import RolloutBuffer

fused = pytest.mark.skipif(not mlp_module._FUSED, reason="torch built without oneDNN's fused linear")


@fused
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_mlp_matches_sequential(activation: str) -> None:
    torch.manual_seed(0)
    net = make_mlp(5, [64, 32], 2, activation)
    x = torch.randn(FUSED_MIN_ROWS * 4, 5, requires_grad=True)
    plain, fast = net(x), mlp_forward(net, x)
    assert "LinearActivation" in type(mlp_forward(net[:2], x).grad_fn).__name__  # the fused path was taken
    if activation == "relu":
        assert torch.equal(plain, fast)
    else:
        torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-6)
    weights = torch.randn_like(plain)
    grads_plain = torch.autograd.grad((plain * weights).sum(), [x, *net.parameters()])
    grads_fast = torch.autograd.grad((fast * weights).sum(), [x, *net.parameters()])
    for a, b in zip(grads_plain, grads_fast, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


@fused
def test_fused_mlp_falls_back_on_small_batches_and_elu() -> None:
    torch.manual_seed(0)
    net = make_mlp(3, [16], 1, "tanh")
    x = torch.randn(FUSED_MIN_ROWS - 1, 3)
    assert torch.equal(mlp_forward(net, x), net(x))  # below the threshold: the plain layers, bitwise
    elu = make_mlp(3, [16], 1, "elu")
    x = torch.randn(FUSED_MIN_ROWS, 3)
    assert torch.equal(mlp_forward(elu, x), elu(x))  # no fused ELU


def _filled_storage(agent: PPO, steps: int, num_envs: int, seed: int) -> RolloutBuffer:
    storage = RolloutBuffer(steps, num_envs, agent.storage_fields())
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_envs, 3, generator=gen)
    for _ in range(steps):
        _, record = agent.act(obs)
        next_obs = torch.randn(num_envs, 3, generator=gen)
        terminated = torch.rand(num_envs, generator=gen) < 0.05
        truncated = torch.rand(num_envs, generator=gen) < 0.05
        done = terminated | truncated
        final = torch.where(done.unsqueeze(1), torch.randn(num_envs, 3, generator=gen), next_obs)
        storage.add(agent.record_outcome(record, torch.randn(num_envs, generator=gen), terminated, truncated, final))
        obs = next_obs
    return storage


def test_next_values_reuse_matches_full_critic_pass() -> None:
    """Every final obs of a step without an episode end is the next obs, so reusing V(obs_{t+1}) there and
    evaluating the rest gives the full pass's ``V(final_obs)`` (hence the same advantages)."""
    torch.manual_seed(0)
    cfg = PPOConfig(num_steps=6, minibatch_size=6 * 40, numba_actor=False, compile=False)
    agent = PPO(gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-2, 2, (1,)), cfg, 40, torch.device("cpu"))
    storage = _filled_storage(agent, 6, 40, seed=1)
    done = storage["terminated"] | storage["truncated"]
    assert 0 < int(done[:-1].sum()) < done[:-1].numel()  # both kinds of rows occur
    with torch.no_grad():
        values = agent.model.value(storage["obs/policy"].reshape(240, 3)).view(6, 40)
        final = storage["final_obs/policy"].reshape(240, 3)
        full = agent.model.value(final).view(6, 40)
        reused = agent._next_values(values, final, done)
    torch.testing.assert_close(reused, full, atol=1e-6, rtol=1e-6)
    # and where an episode ended the value is the final obs's, not the next obs's
    assert not torch.allclose(values[1:][done[:-1]], full[:-1][done[:-1]])


def test_bf16_autocast_losses_close_to_float32() -> None:
    """``algo.autocast: bf16`` runs the networks in bfloat16 and the losses in float32: the same minibatch's
    losses agree with the float32 ones to bfloat16's precision, and the loss graph stays float32."""
    torch.manual_seed(0)
    agents = {}
    for mode in ("none", "bf16"):
        cfg = PPOConfig(num_steps=8, minibatch_size=8 * 64, numba_actor=False, compile=False, autocast=mode)
        agents[mode] = PPO(gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-2, 2, (1,)), cfg, 64,
                           torch.device("cpu"))
    agents["bf16"].model.load_state_dict(agents["none"].model.state_dict())
    storage = _filled_storage(agents["none"], 8, 64, seed=2)
    batch = storage.flat(["obs/policy", "actions", "log_probs"])
    batch["values"], batch["advantages"], batch["returns"] = (torch.randn(512) for _ in range(3))
    losses = {mode: agent._minibatch_loss(batch) for mode, agent in agents.items()}
    assert losses["bf16"]["loss"].dtype == torch.float32
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        torch.testing.assert_close(losses["bf16"][key], losses["none"][key], atol=2e-2, rtol=2e-2)
    assert not torch.equal(losses["bf16"]["value_loss"], losses["none"]["value_loss"])  # bf16 did run
    metrics = agents["bf16"].update(storage)
    assert all(np.isfinite(v) for v in metrics.values())


def test_compile_auto_stays_eager_on_large_cpu_minibatches() -> None:
    """``compile: auto`` on a run long enough to compile: minibatches of COMPILE_AUTO_MAX_CPU_MINIBATCH rows and
    more stay eager on the CPU (the fused layers are faster there), smaller ones compile as before."""
    from drl.agents.ppo import COMPILE_AUTO_MAX_CPU_MINIBATCH
    from drl.optim import compiler_available

    obs, act = gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-2, 2, (1,))
    num_envs, steps = 1024, 32
    total = 10**10  # far past COMPILE_AUTO_MIN_STEPS minibatch steps for both
    for minibatch, compiled in ((COMPILE_AUTO_MAX_CPU_MINIBATCH, not mlp_module._FUSED and compiler_available()),
                                (COMPILE_AUTO_MAX_CPU_MINIBATCH // 2, compiler_available())):
        cfg = PPOConfig(num_steps=steps, minibatch_size=minibatch, numba_actor=False)
        agent = PPO(obs, act, cfg, num_envs, torch.device("cpu"), total_steps=total)
        assert agent._should_compile(num_envs, total) == compiled, minibatch


@fused
def test_fused_mlp_stays_plain_under_a_jit_trace() -> None:
    """A traced network (what an ONNX export records) holds only standard ops, whatever the batch size."""
    torch.manual_seed(0)
    net = make_mlp(3, [16], 1, "tanh")

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mlp_forward(self.net, x)

    traced = torch.jit.trace(Body(), torch.randn(FUSED_MIN_ROWS * 2, 3))
    assert "mkldnn" not in str(traced.graph) and "aten::tanh" in str(traced.graph)
