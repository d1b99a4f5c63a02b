"""BARFI-style behaviour-aligned reward shaping (Gupta, Chandak, Jordan, Thomas, da Silva 2023, "Behavior
Alignment via Reward Function Optimization", NeurIPS): learn how much of each designer heuristic to add.

The agent learns on the blend ``r_phi = r + sum_i phi_i * h_i(s, a, s')`` of the env's reward ``r`` with named
heuristic terms ``h_i``; the blend weights ``phi`` are learned in an outer loop to maximise the PRIMARY
objective ``J_p(theta(phi))``, the discounted return of the env's own reward (``info["env_reward"]``), not the
blended one. A heuristic whose pursuit costs primary return is turned down (``phi_i -> 0`` or below); one
that helps is kept.

Outer gradient (what :meth:`BARFI.update` estimates). The paper differentiates the primary return through
the inner learner by the implicit function theorem, ``d J_p / d phi = -(d^2 J_phi / d theta d phi)^T H^-1
grad_theta J_p``, with the inverse Hessian ``H^-1`` approximated. A wrapper has no access to the agent's
parameters, so here the inner step is modelled as a natural policy gradient step of size ``alpha`` (PPO's
trust region is a first-order approximation of one): ``H ~ -F / alpha`` with ``F`` the policy's Fisher
matrix. For the linear blend ``d grad_theta J_phi / d phi_i = grad_theta J_{h_i}``, so

    d J_p / d phi_i  ~  alpha * grad J_p^T F^-1 grad J_{h_i}  =  alpha * E_pi[ A_p(s, a) * A_{h_i}(s, a) ],

the last step by compatible function approximation (Kakade 2001: ``F^-1 grad J_x`` is the weight ``w_x``
with ``w_x . grad log pi(a|s) = A_x(s, a)``, so ``w_p^T F w_h = E[A_p A_h]``). In words: a heuristic is
raised when the actions it favours are the actions the primary reward favours, state by state, under the
current policy. The wrapper estimates ``A_p`` and each ``A_{h_i}`` by GAE(lambda) with its own small critic
(one head per reward stream, trained on the recorded transitions), and steps ``phi`` along the normalised
alignment ``c_i = mean(A_p A_{h_i}) / (rms(A_p) rms(A_{h_i}))`` (a correlation in [-1, 1], so ``meta_lr`` is
in units of blend weight per iteration, whatever the reward scales). This is a one-step, first-order
estimate: it sees only the primary advantages the current policy experiences (a sparse primary reward never
reached gives no signal) and is biased where the critics are wrong. A zeroth-order alternative (perturbing
``phi`` across env sub-groups of one batch) was rejected: all envs share one policy, and the reward of a
rollout does not change the actions of that rollout, so within-batch perturbations carry no signal about
``J_p(theta(phi))``.

Simplifications against the paper: the paper's blend weights may depend on the state (and action) and it
also learns the weight of ``r`` and a discount ``gamma_phi``; here the primary reward keeps weight 1, each
heuristic has one state-independent weight, and the agent keeps its own discount.

With ``learn: false`` the blend stays at ``init_weights`` (naive added shaping, the baseline BARFI fixes).
Config::

    wrappers: [{name: barfi, heuristics: [cartpole_upright, cartpole_spin], init_weights: [1.0, 1.0]}]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from gymnasium.vector import VectorEnv

from drl.nn.mlp import make_mlp
from drl.returns import gae
from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group
from drl.wrappers.shaping import mountaincar_energy, resolve_function, zero_obs

__all__ = ["HEURISTICS", "register_heuristic", "BARFI", "alignment"]

Heuristic = Callable[..., torch.Tensor]
HEURISTICS: dict[str, Heuristic] = {}
_THETA_LIMIT = 12 * math.pi / 180  # CartPole's termination angle (radians)


def register_heuristic(name: str) -> Callable[[Heuristic], Heuristic]:
    """Decorator: make ``fn(obs [N, D], actions [N, ...], next_obs [N, D], **kwargs) -> [N]`` selectable
    as a BARFI heuristic ``NAME`` (``next_obs`` is the true next obs, the final one at an episode end)."""

    def add(fn: Heuristic) -> Heuristic:
        HEURISTICS[name] = fn
        return fn

    return add


@register_heuristic("cartpole_upright")
def cartpole_upright(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """``1 - |theta'| / 12 deg``: keep the pole upright (a helpful CartPole term, in [0, 1] while alive)."""
    return 1.0 - next_obs[:, 2].abs() / _THETA_LIMIT


@register_heuristic("cartpole_centered")
def cartpole_centered(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """``1 - |x'| / 2.4``: keep the cart near the centre (a helpful CartPole term)."""
    return 1.0 - next_obs[:, 0].abs() / 2.4


@register_heuristic("cartpole_spin")
def cartpole_spin(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, scale: float = 1.0
                  ) -> torch.Tensor:
    """``scale * |theta_dot'|`` (rad/s): rewards a swinging pole, a misaligned CartPole term (a swinging pole
    falls; the designer wanted "lively" balancing)."""
    return scale * next_obs[:, 3].abs()


@register_heuristic("cartpole_drift")
def cartpole_drift(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """``|x'| / 2.4``: rewards driving the cart away from the centre (a misaligned CartPole term)."""
    return next_obs[:, 0].abs() / 2.4


@register_heuristic("step_penalty")
def step_penalty(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor, cost: float = 1.0
                 ) -> torch.Tensor:
    """``-cost`` every step: the usual "finish fast" term of goal-reaching tasks, misaligned wherever a longer
    episode is better (CartPole: with ``cost`` above the reward per step, ending early pays)."""
    return torch.full((obs.shape[0],), -float(cost), device=obs.device)


@register_heuristic("mountaincar_energy_gain")
def mountaincar_energy_gain(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                            scale: float = 1.0) -> torch.Tensor:
    """Gain of the car's normalised mechanical energy (``shaping.mountaincar_energy``) over the step: rewards
    rocking the car (a helpful MountainCar term)."""
    return mountaincar_energy(next_obs, scale) - mountaincar_energy(obs, scale)


@register_heuristic("action_cost")
def action_cost(obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """``-||a||^2`` of a continuous action ``[N, A]``: a control-effort penalty."""
    if actions.dim() != 2:
        actions = actions.reshape(actions.shape[0], -1)
    return (actions if actions.dtype is torch.float32 else actions.float()).square().sum(-1).neg_()


def _label(entry: Any) -> str:
    spec = entry["fn"] if isinstance(entry, dict) else entry
    if not isinstance(spec, str):
        return getattr(spec, "__name__", "h")
    return str(entry.get("label", spec.rpartition(":")[2])) if isinstance(entry, dict) else spec.rpartition(":")[2]


@register_wrapper("barfi")
class BARFI(TorchVectorWrapper):
    """Reward ``r + sum_i phi_i h_i(s, a, s')``, the weights ``phi`` learned for the env's own return (BARFI-style).

    The outer gradient estimate and its assumptions are in the module docstring.

    Args:
        env: the vector env (torch tensors ``[N, ...]``).
        heuristics: K terms, each a name in :data:`HEURISTICS`, ``"module:function"``, or a mapping
            ``{fn: NAME_OR_MODULE_FUNCTION, kwargs: {...}, label: NAME}``; logged as ``barfi/phi_<label>``.
        init_weights: K starting blend weights (default all 1: the naive sum of every term).
        learn: learn the weights (False: naive added shaping with fixed ``init_weights``).
        meta_lr: outer step size (blend weight per iteration at full alignment).
        weight_bound: the weights are clipped to ``[-weight_bound, weight_bound]``.
        warmup_updates: iterations that only train the critics before ``phi`` moves.
        gamma: the primary discount (the agent's by default); gae_lambda: of the critics' advantages.
        critic_hidden / critic_lr / critic_epochs: the per-stream critic ``V [1 + K]`` (primary first).
        group: obs group the critics and heuristics read (None: the obs, or its ``"policy"`` group).
        seed: seeds the critic's initial weights (the run's seed by default).

    Raises ValueError for unknown heuristics, a wrong number of weights or out-of-range settings.
    """

    gives_reward = True

    records_transitions = True

    def __init__(self, env: VectorEnv, heuristics: list[Any], init_weights: list[float] | None = None,
                 learn: bool = True, meta_lr: float = 0.05, weight_bound: float = 2.0, warmup_updates: int = 3,
                 gamma: float = 0.99, gae_lambda: float = 0.9, critic_hidden: list[int] | None = None,
                 critic_lr: float = 1e-3, critic_epochs: int = 4, group: str | None = None, seed: int = 0):
        super().__init__(env)
        if not isinstance(heuristics, list) or not heuristics:
            raise ValueError(f"heuristics must be a non-empty list of names or 'module:function', got {heuristics!r}")
        self.heuristics = [resolve_function(h["fn"] if isinstance(h, dict) else h, HEURISTICS, "heuristic",
                                            h.get("kwargs") if isinstance(h, dict) else None) for h in heuristics]
        self.labels = [_label(h) for h in heuristics]
        self._log_keys = tuple(f"h_{label}" for label in self.labels)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"heuristic labels must differ, got {self.labels} (give a 'label' to repeats)")
        k = len(self.heuristics)
        weights = [1.0] * k if init_weights is None else list(init_weights)
        if len(weights) != k:
            raise ValueError(f"init_weights has {len(weights)} entries for {k} heuristics")
        for name, value, low, high in (("meta_lr", meta_lr, 0.0, None), ("weight_bound", weight_bound, 0.0, None),
                                       ("gamma", gamma, 0.0, 1.0), ("gae_lambda", gae_lambda, 0.0, 1.0),
                                       ("critic_lr", critic_lr, 0.0, None)):
            if not (value >= low and (high is None or value <= high)):
                raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {value}")
        if critic_epochs < 1 or warmup_updates < 0:
            raise ValueError("critic_epochs must be >= 1 and warmup_updates >= 0")
        self.phi = torch.tensor(weights, dtype=torch.float32, device=self.device)  # [K]
        self.learn, self.meta_lr, self.weight_bound = bool(learn), float(meta_lr), float(weight_bound)
        self.warmup_updates, self.updates = int(warmup_updates), 0
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.critic_epochs, self.group = int(critic_epochs), group
        sample = zero_obs(env, 1, self.device)
        flat = select_group(sample, group).float()
        obs_dim = flat.shape[1]
        action = torch.zeros(1, *env.single_action_space.shape, device=self.device)
        for label, fn in zip(self.labels, self.heuristics, strict=True):  # a wrong function fails now, not mid-run
            try:
                value = fn(flat, action, flat)
            except (IndexError, RuntimeError) as err:
                raise ValueError(f"heuristic '{label}' does not fit obs group '{group or 'policy'}' ({obs_dim} values "
                                 f"per step): {err}; choose another heuristic or set group") from None
            if not isinstance(value, torch.Tensor) or value.shape != (1,):
                raise ValueError(f"heuristic '{label}' must return a tensor [N] for obs [N, D], got "
                                 f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.critic = make_mlp(obs_dim, critic_hidden or [64, 64], 1 + k).to(self.device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr)
        self._streams: list[torch.Tensor] = []  # per step [N, 1 + K]: primary reward, then each h_i

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        prev = self._inner_obs
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        if prev is None:
            raise RuntimeError("barfi: step() before reset()")
        s, s_next = select_group(prev, self.group), select_group(info.get("final_obs", obs), self.group)
        s, s_next = (x if x.dtype is torch.float32 else x.float() for x in (s, s_next))
        terms = [fn(s, actions, s_next) for fn in self.heuristics]
        h = torch.stack(terms, dim=-1)  # [N, K]
        primary = info.get("env_reward", reward)  # the env's own reward, whatever wraps inside
        if primary.dtype is not torch.float32:
            primary = primary.float()
        if h.dtype is torch.float32 and primary.dim() == 1:  # the same [N, 1 + K] as the cat below, in one op
            self._streams.append(torch.stack([primary, *terms], dim=-1))
        else:
            self._streams.append(torch.cat([primary[:, None], h], dim=-1))
        if len(self._streams) > self.max_record_steps:
            del self._streams[0]
        self._log_mean_columns(self._log_keys, h)
        info["heuristics"] = h
        blend = h @ self.phi
        blended = reward + (blend if blend.dtype is reward.dtype else blend.to(reward.dtype))
        return obs, self._replace_reward(info, reward, blended), terminated, truncated, info

    def advantages(self, batch: dict[str, Any], streams: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Fit the critics to ``batch`` (``[T, N, ...]``, see :meth:`update`) with reward ``streams [T, N, 1 + K]``
        (``critic_epochs`` regressions on the current critic's GAE(lambda) targets), then return the GAE
        advantages ``[T, N, 1 + K]`` of every stream and the critics' last loss."""
        obs = select_group_seq(batch["obs"], self.group)  # [T, N, D]
        next_obs = select_group_seq(batch["next_obs"], self.group)
        term, trunc = batch["terminated"].bool(), batch["truncated"].bool()
        loss = torch.zeros(())
        for _ in range(self.critic_epochs):
            with torch.no_grad():
                _, targets = gae(streams, self.critic(obs), self.critic(next_obs), term, trunc, self.gamma,
                                 self.gae_lambda)
            loss = (self.critic(obs) - targets).square().mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            adv, _ = gae(streams, self.critic(obs), self.critic(next_obs), term, trunc, self.gamma, self.gae_lambda)
        return adv, float(loss.detach())

    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """One outer step on the transitions since the last call (or ``batch`` with a ``"streams"`` entry
        ``[T, N, 1 + K]``): fit the critics, estimate the alignment, move ``phi`` (after warm-up, when
        learning). Returns ``phi_<label>``, ``align_<label>`` and ``critic_loss``."""
        if batch is None:
            record_len = len(self._record)
            batch = self.recorded_batch()
            streams = torch.stack(self._streams[-record_len:]) if batch is not None else None
            self._streams = []
        else:
            streams = batch["streams"]
        out = {f"phi_{label}": float(self.phi[i]) for i, label in enumerate(self.labels)}
        if batch is None:
            return out
        adv, loss = self.advantages(batch, streams)
        corr = alignment(adv)
        self.updates += 1
        if self.learn and self.updates > self.warmup_updates:
            self.phi = (self.phi + self.meta_lr * corr).clamp(-self.weight_bound, self.weight_bound)
        out = {f"phi_{label}": float(self.phi[i]) for i, label in enumerate(self.labels)}
        out |= {f"align_{label}": float(corr[i]) for i, label in enumerate(self.labels)}
        return out | {"critic_loss": loss}

    def learner_state_dict(self) -> dict[str, Any]:
        return {"phi": self.phi.clone(), "updates": self.updates, "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        self.phi = state["phi"].clone().to(self.device)
        self.updates = int(state["updates"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])


def alignment(advantages: torch.Tensor) -> torch.Tensor:
    """Normalised outer gradient ``c_i = mean(A_p A_i) / (rms(A_p) rms(A_i))`` (module docstring) from
    ``advantages [..., 1 + K]`` (primary first) -> ``[K]`` in [-1, 1]; 0 for a stream with no advantage."""
    flat = advantages.reshape(-1, advantages.shape[-1])
    a_p, a_h = flat[:, :1], flat[:, 1:]
    rms = flat.square().mean(0).sqrt()
    return (a_p * a_h).mean(0) / (rms[:1] * rms[1:] + 1e-8)


def select_group_seq(obs: Obs, group: str | None) -> torch.Tensor:
    """:func:`select_group` of a ``[T, N, ...]`` obs (or dict of them) -> ``[T, N, D]`` float."""
    if isinstance(obs, dict):
        lead = next(iter(obs.values())).shape[:2]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in obs.items()}
    else:
        lead, flat = obs.shape[:2], obs.reshape(-1, *obs.shape[2:])
    return select_group(flat, group).reshape(*lead, -1).float()

