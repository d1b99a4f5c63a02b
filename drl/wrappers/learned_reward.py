"""Adversarial imitation as a reward wrapper: GAIL (Ho & Ermon 2016) and AIRL (Fu et al. 2018) rewards.

A discriminator ``D = sigmoid(l(x))`` is trained to tell demonstration transitions (label 1, from a drl demo
file, see :mod:`envs.tasks.demos`) from the policy's own transitions (label 0, recorded by this wrapper), by
the logistic loss (GAIL's Eq. 14, with D the probability of "expert")::

    L_D = E_demo[softplus(-l)] + E_policy[softplus(l)] + gp_coef * E_xhat[(||grad_xhat l(xhat)|| - gp_target)^2]

the last term a WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3) on ``xhat = eps x_demo + (1 - eps)
x_policy``, ``eps ~ U(0, 1)`` per pair, which keeps ``l`` smooth (Lipschitz) between the two distributions
(``gp_target: 0`` gives the zero-centred penalty of Mescheder et al. 2018). The policy's reward, per
``reward_form``, in terms of the logit ``l`` (all three numerically stable)::

    gail        -log(1 - D) = softplus(l)      (positive: a survival bonus; GAIL's usual RL reward)
    gail_log_d   log D      = -softplus(-l)    (negative: an exit bonus)
    airl         log D - log(1 - D) = l

AIRL's discriminator is ``D = exp(f) / (exp(f) + pi(a|s))`` with ``f(s, a, s') = g(s, a) + gamma h(s') -
h(s)`` (Fu et al. 2018, Eq. 4 and Sec. 5), so its logit is ``f - log pi`` and the reward ``log D - log(1 - D)
= f - log pi``. A wrapper does not see the policy's ``log pi``: here the logit is ``f`` itself (the
discriminator is ``sigmoid(f)``), the reward-shaping form of AIRL without the entropy term, and the reward
is ``f``. ``h(s')`` is dropped (0) at a terminated step, as an absorbing state's potential.

``state_only: true`` learns from observations alone (GAIfO, Torabi et al. 2019): GAIL's discriminator reads
``(s, s')``, AIRL's ``g`` reads ``s`` (the disentangled reward of AIRL's Sec. 5). Observations are whitened
by the demonstrations' mean and std (clipped to [-10, 10]); actions are clipped into the action box first
(the env executes clipped actions, and unclipped ones would give the policy away). The new reward is
``coef * r_D`` (``mode: replace``) or ``r_env + coef * r_D`` (``mode: add``); the env's own reward stays in
``info["env_reward"]`` and is what the runners log as the return. Config::

    wrappers: [{name: gail, demos: demos/pendulum.pt, reward_form: airl, state_only: true}]
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from gymnasium.vector import VectorEnv
from torch import nn

from drl.nn.mlp import make_mlp
from drl.optim import TrainStep
from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group

__all__ = ["AdversarialReward", "Discriminator", "reward_from_logits", "discriminator_loss", "gradient_penalty"]

REWARD_FORMS = ("gail", "gail_log_d", "airl")
OBS_CLIP = 10.0


def reward_from_logits(logits: torch.Tensor, form: str) -> torch.Tensor:
    """The policy's reward from discriminator logits ``l`` (any shape; ``D = sigmoid(l)``), per the module
    docstring's table: ``gail`` -log(1 - D), ``gail_log_d`` log D, ``airl`` log D - log(1 - D)."""
    if form == "gail":
        return F.softplus(logits)
    if form == "gail_log_d":
        return -F.softplus(-logits)
    if form == "airl":
        return logits
    raise ValueError(f"reward_form must be one of {list(REWARD_FORMS)}, got {form!r}")


def discriminator_loss(demo_logits: torch.Tensor, policy_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, demos labelled 1 and policy transitions 0: ``mean softplus(-l_demo) + mean
    softplus(l_policy)`` (scalar)."""
    return F.softplus(-demo_logits).mean() + F.softplus(policy_logits).mean()


def gradient_penalty(logit_fn: Any, demo_x: torch.Tensor, policy_x: torch.Tensor, eps: torch.Tensor,
                     target: float = 1.0, skip_last: int = 0) -> torch.Tensor:
    """WGAN-GP: ``mean over pairs of (||d l / d xhat||_2 - target)^2`` at ``xhat = eps demo_x + (1 - eps)
    policy_x`` (``[B, F]`` each, ``eps [B, 1]``), differentiable in the discriminator's parameters. The last
    ``skip_last`` input columns (flags, not data) are left out of the norm."""
    xhat = (eps * demo_x + (1 - eps) * policy_x).detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(logit_fn(xhat).sum(), xhat, create_graph=True)
    if skip_last:
        grads = grads[:, :-skip_last]
    return ((grads.norm(dim=1) - target) ** 2).mean()


class Discriminator(nn.Module):
    """The logit ``l(x)`` of a packed transition ``x = [s, a, s', c] [B, 2 * obs_dim + act_dim + 1]`` (``c``
    = 1 - terminated).

    ``gail``: an MLP of ``[s, a]`` (``[s, s']`` when ``state_only``). ``airl``: ``g([s, a]) + gamma c h(s') -
    h(s)`` (``g(s)`` when ``state_only``), ``g`` and ``h`` MLPs with tanh hidden layers.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], airl: bool, state_only: bool,
                 gamma: float):
        super().__init__()
        self.obs_dim, self.act_dim, self.airl, self.state_only, self.gamma = obs_dim, act_dim, airl, state_only, gamma
        if airl:
            self.g = make_mlp(obs_dim + (0 if state_only else act_dim), hidden, 1)
            self.h = make_mlp(obs_dim, hidden, 1)
        else:
            self.net = make_mlp(obs_dim + (obs_dim if state_only else act_dim), hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, a = self.obs_dim, self.act_dim
        obs, actions, next_obs, cont = x[:, :o], x[:, o:o + a], x[:, o + a:2 * o + a], x[:, -1]
        if self.airl:
            g = self.g(obs if self.state_only else torch.cat([obs, actions], 1)).squeeze(-1)
            return g + self.gamma * cont * self.h(next_obs).squeeze(-1) - self.h(obs).squeeze(-1)
        return self.net(torch.cat([obs, next_obs if self.state_only else actions], 1)).squeeze(-1)


def _flat(x: Any) -> Any:
    """``[T, N, ...] -> [T * N, ...]`` (each group of a dict obs)."""
    if isinstance(x, dict):
        return {k: v.flatten(0, 1) for k, v in x.items()}
    return x.flatten(0, 1)


@register_wrapper("gail")
class AdversarialReward(TorchVectorWrapper):
    """Replaces (or adds to) the reward a discriminator's GAIL or AIRL reward (see the module docstring).

    Args:
        env: the torch vector env (Box actions).
        demos: a drl demo file (``drl demos ...``, :func:`envs.tasks.demos.save_demos`); a relative path is
            made absolute when the config is validated.
        reward_form: ``gail`` | ``gail_log_d`` | ``airl``.
        state_only: the discriminator reads observations only (``(s, s')``; AIRL: ``g(s)``).
        mode: ``replace`` (reward = ``coef * r_D``) or ``add`` (``r_env + coef * r_D``).
        coef: the learned reward's weight (> 0).
        obs_group: the obs group the discriminator reads (None: the obs, or ``policy`` of grouped obs); the
            demo file must hold that group.
        hidden: hidden widths of the discriminator's MLPs (default 64-64).
        gp_coef: weight of the gradient penalty (>= 0; 0: none); ``gp_target``: its target gradient norm.
        learning_rate, disc_epochs, minibatch_size: the discriminator's Adam, epochs over the recorded
            policy transitions per update(), and policy transitions per step (each paired with as many
            demo transitions drawn uniformly).
        gamma: AIRL's discount in ``f`` (the agent's when omitted).
        seed: seeds the networks and the minibatch draws (the run's seed when omitted).

    Raises:
        FileNotFoundError / ValueError: a missing or unreadable demo file, or one whose observation group or
            dimensions do not fit the env's; ValueError naming any other bad argument.
    """

    gives_reward = True

    records_transitions = True
    path_args = ("demos",)

    def __init__(self, env: VectorEnv, demos: str, reward_form: Literal["gail", "gail_log_d", "airl"] = "gail",
                 state_only: bool = False, mode: Literal["replace", "add"] = "replace", coef: float = 1.0,
                 obs_group: str | None = None, hidden: list[int] | None = None, gp_coef: float = 10.0,
                 gp_target: float = 1.0, learning_rate: float = 3e-4, disc_epochs: int = 1,
                 minibatch_size: int = 256, gamma: float = 0.99, seed: int = 0):
        super().__init__(env)
        from envs.tasks.demos import load_demos

        if reward_form not in REWARD_FORMS:
            raise ValueError(f"reward_form must be one of {list(REWARD_FORMS)}, got {reward_form!r}")
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        hidden = [64, 64] if hidden is None else list(hidden)
        checks = [(coef > 0, "coef", "must be > 0"), (gp_coef >= 0, "gp_coef", "must be >= 0"),
                  (gp_target >= 0, "gp_target", "must be >= 0"), (learning_rate > 0, "learning_rate", "must be > 0"),
                  (disc_epochs >= 0, "disc_epochs", "must be >= 0"),
                  (minibatch_size >= 1, "minibatch_size", "must be >= 1"),
                  (0 <= gamma <= 1, "gamma", "must be in [0, 1]"),
                  (all(w >= 1 for w in hidden), "hidden", "widths must be >= 1")]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}, got {locals()[name]!r}")
        space = self.single_action_space
        if not hasattr(space, "low") or space.shape is None or len(space.shape) != 1:
            raise ValueError(f"gail needs a 1-D Box action space, got {space}")
        self.reward_form, self.state_only, self.mode, self.coef = reward_form, bool(state_only), mode, float(coef)
        self.obs_group, self.gp_coef, self.gp_target = obs_group, float(gp_coef), float(gp_target)
        self.disc_epochs, self.minibatch_size = int(disc_epochs), int(minibatch_size)
        device = self.device
        self.low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(space.high, dtype=torch.float32, device=device)

        try:
            data = load_demos(demos)
        except FileNotFoundError as err:  # one config error naming the file, like a bad value
            raise ValueError(f"{err}: record one with `drl demos ENV --out FILE` or collect_demos") from None
        group = obs_group if obs_group is not None else "policy"
        if f"obs/{group}" not in data:
            held = sorted(k.split("/", 1)[1] for k in data if k.startswith("obs/"))
            raise ValueError(f"demo file '{demos}' has no obs group '{group}' (it has {held}); set obs_group")
        env_obs_dim = self._obs_dim(group)
        demo_obs = data[f"obs/{group}"].flatten(1).float().to(device)
        demo_actions = data["actions"].float().to(device)
        if demo_obs.shape[1] != env_obs_dim or demo_actions.shape[1] != self.low.numel():
            raise ValueError(f"demo file '{demos}' ({data['meta']['env_id']}) has obs/{group} of {demo_obs.shape[1]} "
                             f"dims and actions of {demo_actions.shape[1]}, but this env's are {env_obs_dim} and "
                             f"{self.low.numel()}: record demos of the env being trained")
        self.obs_mean = demo_obs.mean(0)
        self.obs_std = demo_obs.std(0, unbiased=False).clamp_min(1e-2)
        self.demo_x = self._pack(demo_obs, demo_actions, data[f"next_obs/{group}"].flatten(1).float().to(device),
                                 data["terminated"].to(device))
        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # the networks' init draws from the seed, not the run's RNG
            torch.manual_seed(int(seed))
            self.disc = Discriminator(env_obs_dim, self.low.numel(), hidden, reward_form == "airl", self.state_only,
                                      float(gamma)).to(device)
        self.train_step = TrainStep(self.disc, self._loss, learning_rate)

    def _obs_dim(self, group: str) -> int:
        space = self.single_observation_space
        if hasattr(space, "spaces"):
            if group not in space.spaces:
                raise ValueError(f"obs_group '{group}' is not one of the observation's groups {sorted(space.spaces)}")
            space = space.spaces[group]
        elif group != "policy":
            raise ValueError(f"obs_group '{group}' asked of an observation without groups (use null or 'policy')")
        return int(torch.Size(space.shape).numel())

    def _pack(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
              terminated: torch.Tensor) -> torch.Tensor:
        """``[B, 2 * obs_dim + act_dim + 1]``: whitened obs, clipped actions, whitened next obs, 1 - terminated."""
        def white(o: torch.Tensor) -> torch.Tensor:
            return ((o.float() - self.obs_mean) / self.obs_std).clamp(-OBS_CLIP, OBS_CLIP)

        actions = torch.minimum(torch.maximum(actions.float().reshape(actions.shape[0], -1), self.low), self.high)
        return torch.cat([white(obs), actions, white(next_obs), (~terminated.bool()).float()[:, None]], 1)

    # --- the reward ----------------------------------------------------------------------------
    @torch.no_grad()
    def learned_reward(self, obs: Obs, actions: torch.Tensor, next_obs: Obs, terminated: torch.Tensor) -> torch.Tensor:
        """``r_D [N]`` of the transitions ``obs -> next_obs`` (true next obs) under ``actions``."""
        x = self._pack(select_group(obs, self.obs_group), actions, select_group(next_obs, self.obs_group), terminated)
        return reward_from_logits(self.disc(x), self.reward_form)

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs = self._inner_obs
        next_obs, reward, terminated, truncated, info = self._inner_step(actions)
        r_d = self.learned_reward(obs, actions, info.get("final_obs", next_obs), terminated)
        self._log_mean("reward", r_d)
        new = self.coef * r_d if self.mode == "replace" else reward + self.coef * r_d
        return next_obs, self._replace_reward(info, reward, new.to(reward.dtype)), terminated, truncated, info

    # --- learning ------------------------------------------------------------------------------
    def _loss(self, minibatch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        demo_x, policy_x, eps = minibatch
        demo_logits, policy_logits = self.disc(demo_x), self.disc(policy_x)
        bce = discriminator_loss(demo_logits, policy_logits)
        gp = (gradient_penalty(self.disc, demo_x, policy_x, eps, self.gp_target, skip_last=1)
              if self.gp_coef > 0 else torch.zeros((), device=demo_x.device))
        return {"loss": bce + self.gp_coef * gp, "disc_loss": bce, "grad_penalty": gp,
                "demo_accuracy": (demo_logits > 0).float().mean(),
                "policy_accuracy": (policy_logits < 0).float().mean()}

    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """Train the discriminator for ``disc_epochs`` epochs of shuffled minibatches of ``batch`` (``[T, N,
        ...]``; None: the recorded transitions), each against as many uniformly drawn demo transitions.
        Returns the mean BCE, gradient penalty and the accuracies on demos and policy transitions."""
        batch = self.recorded_batch() if batch is None else batch
        if batch is None or self.disc_epochs == 0:
            return {}
        policy_x = self._pack(select_group(_flat(batch["obs"]), self.obs_group), batch["actions"].flatten(0, 1),
                              select_group(_flat(batch["next_obs"]), self.obs_group), batch["terminated"].flatten(0, 1))
        rows, device = policy_x.shape[0], policy_x.device
        sums: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.disc_epochs):
            order = torch.randperm(rows, generator=self.generator).to(device)
            for start in range(0, rows, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                demo_idx = torch.randint(self.demo_x.shape[0], (idx.numel(),), generator=self.generator).to(device)
                eps = torch.rand(idx.numel(), 1, generator=self.generator).to(device)
                losses = self.train_step((self.demo_x[demo_idx], policy_x[idx], eps))
                for key, value in losses.items():
                    if key != "loss":
                        sums.setdefault(key, []).append(value)
        return {key: torch.stack(values).mean().item() for key, values in sums.items()}

    def learner_state_dict(self) -> dict[str, Any]:
        """A copy of the discriminator, its optimiser and the draw generator."""
        return copy.deepcopy({"disc": self.disc.state_dict(), "optimizer": self.train_step.adam.state_dict(),
                              "generator": self.generator.get_state()})

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
