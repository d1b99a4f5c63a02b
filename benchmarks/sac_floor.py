"""The floor of one SAC or TD3 update on one CPU core: drl's update vs a plain eager torch loop of the same math.

    python -m benchmarks.sac_floor [--agent sac|td3] [--updates 300] [--repeats 5] [--threads 1] [--no-compile]
                                   [--amp]

At Stable-Baselines3's defaults (SAC: [256, 256] ReLU actor and twin critic; TD3: [400, 300], policy
delay 2; batch 256, one gradient step per env step) and HalfCheetah's sizes (17 obs, 6 actions) an
env step costs far less than an update, so end-to-end speed is bounded by the update. This script
times, per update, on random data with ``torch.set_num_threads(threads)``:

* ``plain eager``: the update written the usual way (``nn.Linear`` MLPs, two critic modules, one
  ``torch.optim.Adam`` per loss, autograd, a per-parameter Polyak loop; TD3: the actor step and the
  Polyak averages every second update, as SB3), no replay and no RL around it: the floor of the
  conventional implementation;
* ``drl eager``: the agent's update (:class:`drl.agents.sac.SAC`, :class:`drl.agents.td3.TD3`: batched
  twin Q, one loss over one flat vector, flat Adam, one ``lerp_`` Polyak), replay sampling included;
* ``drl compiled``: the same update as one ``torch.compile``d graph (TD3: one per kind of update;
  compile time reported apart); ``--amp``: also both under bfloat16 autocast (``algo.amp``).

A TD3 update alternates critic-only and critic + actor steps, so its times are means over whole pairs.

Reports the min and median over ``repeats`` interleaved timing blocks of ``updates`` updates each (ms/update),
after warm-up; on a shared machine the min is the number to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from drl.agents.off_policy_base import OffPolicyAgent
from drl.agents.sac import SAC, SACConfig
from drl.agents.td3 import TD3, TD3Config
from drl.optim import compiler_available
from drl.storage import ReplayBuffer

OBS_DIM, ACT_DIM, HIDDEN, BATCH = 17, 6, 256, 256
TD3_HIDDEN = (400, 300)  # SB3's TD3 net_arch


def _mlp(in_dim: int, out_dim: int, hidden: tuple[int, int] = (HIDDEN, HIDDEN)) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                         nn.Linear(hidden[1], out_dim))


class PlainSAC:
    """SAC's update as a plain eager loop (what SB3 computes, without its Python around it)."""

    def __init__(self, lr: float = 3e-4, gamma: float = 0.99, tau: float = 0.005):
        self.actor = _mlp(OBS_DIM, 2 * ACT_DIM)
        self.q1, self.q2 = _mlp(OBS_DIM + ACT_DIM, 1), _mlp(OBS_DIM + ACT_DIM, 1)
        self.q1_target, self.q2_target = _mlp(OBS_DIM + ACT_DIM, 1), _mlp(OBS_DIM + ACT_DIM, 1)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr)
        self.critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.target_params = [*self.q1_target.parameters(), *self.q2_target.parameters()]
        self.critic_opt = torch.optim.Adam(self.critic_params, lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr)
        self.gamma, self.tau, self.target_entropy = gamma, tau, -float(ACT_DIM)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(obs).chunk(2, -1)
        log_std = log_std.clamp(-20, 2)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
        log_prob = log_prob - (2 * (torch.log(torch.tensor(2.0)) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
               next_obs: torch.Tensor) -> None:
        action_pi, log_prob = self.sample(obs)
        alpha_loss = -(self.log_alpha * (log_prob + self.target_entropy).detach()).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = self.sample(next_obs)
            x = torch.cat([next_obs, next_action], -1)
            next_q = torch.min(self.q1_target(x), self.q2_target(x)).squeeze(-1) - alpha * next_log_prob
            target = rewards + (1 - dones) * self.gamma * next_q
        x = torch.cat([obs, actions], -1)
        critic_loss = 0.5 * (F.mse_loss(self.q1(x).squeeze(-1), target) + F.mse_loss(self.q2(x).squeeze(-1), target))
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        x = torch.cat([obs, action_pi], -1)
        actor_loss = (alpha * log_prob - torch.min(self.q1(x), self.q2(x)).squeeze(-1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for p, tp in zip(self.critic_params, self.target_params, strict=True):
                tp.mul_(1 - self.tau).add_(p, alpha=self.tau)


class PlainTD3:
    """TD3's update as a plain eager loop (what SB3's ``TD3.train`` computes, without its Python around it):
    every update steps the critics; every ``policy_delay``-th also the actor (its loss backpropagated
    through Q1 with the critic's weight gradients computed, as SB3) and Polyak-averages both targets."""

    def __init__(self, lr: float = 1e-3, gamma: float = 0.99, tau: float = 0.005, policy_delay: int = 2,
                 noise: float = 0.2, noise_clip: float = 0.5):
        self.actor, self.actor_target = _mlp(OBS_DIM, ACT_DIM, TD3_HIDDEN), _mlp(OBS_DIM, ACT_DIM, TD3_HIDDEN)
        self.q1, self.q2 = _mlp(OBS_DIM + ACT_DIM, 1, TD3_HIDDEN), _mlp(OBS_DIM + ACT_DIM, 1, TD3_HIDDEN)
        self.q1_target, self.q2_target = _mlp(OBS_DIM + ACT_DIM, 1, TD3_HIDDEN), _mlp(OBS_DIM + ACT_DIM, 1, TD3_HIDDEN)
        for online, target in ((self.actor, self.actor_target), (self.q1, self.q1_target), (self.q2, self.q2_target)):
            target.load_state_dict(online.state_dict())
        self.critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.online_params = [*self.critic_params, *self.actor.parameters()]
        self.target_params = [*self.q1_target.parameters(), *self.q2_target.parameters(),
                              *self.actor_target.parameters()]
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr)
        self.gamma, self.tau, self.policy_delay = gamma, tau, policy_delay
        self.noise, self.noise_clip = noise, noise_clip
        self.updates = 0

    def update(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
               next_obs: torch.Tensor) -> None:
        self.updates += 1
        with torch.no_grad():
            noise = (torch.randn_like(actions) * self.noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (torch.tanh(self.actor_target(next_obs)) + noise).clamp(-1, 1)
            x = torch.cat([next_obs, next_action], -1)
            next_q = torch.min(self.q1_target(x), self.q2_target(x)).squeeze(-1)
            target = rewards + (1 - dones) * self.gamma * next_q
        x = torch.cat([obs, actions], -1)
        critic_loss = F.mse_loss(self.q1(x).squeeze(-1), target) + F.mse_loss(self.q2(x).squeeze(-1), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        if self.updates % self.policy_delay == 0:
            actor_loss = -self.q1(torch.cat([obs, torch.tanh(self.actor(obs))], -1)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            with torch.no_grad():
                for p, tp in zip(self.online_params, self.target_params, strict=True):
                    tp.mul_(1 - self.tau).add_(p, alpha=self.tau)


def plain_step(agent: str = "sac") -> Callable[[], None]:
    torch.manual_seed(0)
    plain = PlainSAC() if agent == "sac" else PlainTD3()
    data = [torch.randn(BATCH, OBS_DIM), torch.rand(BATCH, ACT_DIM) * 2 - 1, torch.randn(BATCH),
            torch.zeros(BATCH), torch.randn(BATCH, OBS_DIM)]
    return lambda: plain.update(*data)


def make_agent(compile: bool, amp: bool = False, agent: str = "sac") -> tuple[OffPolicyAgent, ReplayBuffer]:
    obs_space = gym.spaces.Box(-10.0, 10.0, (OBS_DIM,))
    act_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,))
    if agent == "sac":
        cls, cfg = SAC, SACConfig(compile=compile, amp=amp)
    else:  # SB3's TD3 defaults are TD3Config's
        cls, cfg = TD3, TD3Config(compile=compile, amp=amp)
    agent = cls(obs_space, act_space, cfg, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    replay = ReplayBuffer(10_000, 1, agent.storage_fields())
    no = torch.zeros(1, dtype=torch.bool)
    for _ in range(10_000):
        _, record = agent.random_act(torch.randn(1, OBS_DIM))
        replay.add(agent.record_outcome(record, torch.randn(1), no, no, torch.randn(1, OBS_DIM)))
    return agent, replay


def drl_step(compile: bool, amp: bool = False, agent: str = "sac") -> tuple[Callable[[], None], float]:
    """``(one update, seconds spent in the first calls, i.e. compiling)``; TD3: the first two (both kinds)."""
    learner, replay = make_agent(compile, amp, agent)
    start = time.perf_counter()
    learner.update(replay, 1 if agent == "sac" else 2)
    return (lambda: learner.update(replay, 1)), time.perf_counter() - start


def time_steps(steps: dict[str, Callable[[], None]], updates: int, repeats: int) -> dict[str, list[float]]:
    """ms per update of each step, in ``repeats`` interleaved blocks of ``updates`` calls (after a warm-up),
    so that load from other processes hits every variant alike."""
    for step in steps.values():
        for _ in range(10):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(updates):
                step()
            times[name].append((time.perf_counter() - start) / updates * 1e3)
    return times


def measure(num_updates: int, repeats: int = 5, agent: str = "sac") -> dict[str, float]:
    """ms per update (min over ``repeats`` interleaved blocks of ``num_updates`` updates, after warm-up) of
    the plain eager loop (``eager_torch``), drl's eager update (``drl_eager``), drl's compiled update
    (``drl``; only where a C++ compiler exists) and drl's compiled bfloat16-autocast update (``drl_amp``,
    algo.amp) of ``agent`` (``"sac"`` or ``"td3"``; TD3: ``num_updates`` rounded up to even): what
    ``python -m benchmarks.run --floor`` puts in its report. Uses the current torch threads."""
    if agent == "td3":
        num_updates += num_updates % 2  # whole (critic, critic + actor) pairs
    steps = {"eager_torch": plain_step(agent), "drl_eager": drl_step(False, agent=agent)[0]}
    if compiler_available():
        steps["drl"] = drl_step(True, agent=agent)[0]
        steps["drl_amp"] = drl_step(True, True, agent)[0]
    return {name: min(values) for name, values in time_steps(steps, num_updates, repeats).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=("sac", "td3"), default="sac")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--amp", action="store_true", help="also time the bfloat16-autocast update (algo.amp)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    agent = args.agent
    hidden = [HIDDEN, HIDDEN] if agent == "sac" else list(TD3_HIDDEN)
    updates = args.updates + (args.updates % 2 if agent == "td3" else 0)  # TD3: whole pairs
    print(f"{agent.upper()} update, obs {OBS_DIM}, actions {ACT_DIM}, {hidden}, batch {BATCH}, "
          f"{args.threads} thread(s), torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    steps = {"plain eager (nn.Linear, torch.optim.Adam)": plain_step(agent),
             "drl eager (batched Q, flat Adam)": drl_step(False, agent=agent)[0]}
    if not args.no_compile:
        steps["drl compiled (one graph)"], first = drl_step(True, agent=agent)
        print(f"compiling the drl update took {first:.1f} s")
    if args.amp:
        steps["drl eager, amp (bfloat16 matmuls)"] = drl_step(False, True, agent)[0]
        if not args.no_compile:
            steps["drl compiled, amp (bfloat16 matmuls)"], first = drl_step(True, True, agent)
            print(f"compiling the drl amp update took {first:.1f} s")
    times = time_steps(steps, updates, args.repeats)
    plain_min = min(next(iter(times.values())))
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:45s} min {best:7.3f}  median {median:7.3f} ms/update  ({plain_min / best:.2f}x plain, by min)")


if __name__ == "__main__":
    main()
