"""The parts the ``bonus`` wrapper (:mod:`drl.wrappers.bonuses`) combines: global novelty bonuses computed
from everything seen in training (RND, ICM) and episodic ones computed from the current episode only
(counts, E3B), each batched over envs ``[N, ...]`` on the env's device.

Every part takes observations already whitened by the wrapper's running statistics (``[B, D]`` float32,
clipped to [-5, 5], as RND does) except the grid count, which keys the raw observation. The learned parts
(:class:`RND`'s predictor, :class:`ICM`, :class:`E3B`'s embedding) expose ``module`` (what their optimiser
trains) and ``loss(obs, next_obs, actions)``; the wrapper trains them on its recorded transitions.

Papers: Burda et al. 2018 (RND), Pathak et al. 2017 (ICM), Henaff et al. 2022 (E3B), Tang et al. 2017
(SimHash counts), Henaff et al. 2023 (global x episodic).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drl.nn import make_mlp
from drl.wrappers import count_kernels

COUNT_BITS = 20  # an episodic count's bits in a slot of EpisodicCount's table; the episode stamp above them
COUNT_MASK = (1 << COUNT_BITS) - 1

__all__ = ["RND", "ICM", "E3B", "EpisodicCount", "ActionCoder", "sherman_morrison"]


class ActionCoder:
    """Actions as network inputs and inverse-dynamics targets: ``Discrete(n)`` one-hot ``[B, n]`` with a
    cross-entropy loss; ``Box`` flattened ``[B, prod(shape)]`` with a squared-error loss. Raises ValueError
    for other spaces."""

    def __init__(self, space: gym.Space):
        if isinstance(space, gym.spaces.Discrete):
            self.discrete, self.dim = True, int(space.n)
        elif isinstance(space, gym.spaces.Box):
            self.discrete, self.dim = False, int(torch.tensor(space.shape).prod())
        else:
            raise ValueError(f"ICM and E3B need a Discrete or Box action space, got {space}")

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """``[B]`` ints or ``[B, ...]`` floats -> ``[B, dim]`` float32."""
        if self.discrete:
            return F.one_hot(actions.long().reshape(-1), self.dim).float()
        return actions.reshape(actions.shape[0], -1).float()

    def inverse_loss(self, predicted: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Mean inverse-dynamics loss of ``predicted [B, dim]`` (logits or actions) against ``actions``."""
        if self.discrete:
            return F.cross_entropy(predicted, actions.long().reshape(-1))
        return (predicted - self.encode(actions)).square().mean()


class RND(nn.Module):
    """Random network distillation (Burda et al. 2018): a fixed random ``target`` MLP and a trained
    ``predictor`` (one hidden layer more); the bonus of ``next_obs`` is the squared prediction error
    averaged over the ``out_dim`` features (RND's code, Eq. in Sec. 2.2): ``[B, D] -> [B]``."""

    def __init__(self, obs_dim: int, hidden: list[int], out_dim: int):
        super().__init__()
        self.target = make_mlp(obs_dim, hidden, out_dim, "relu").requires_grad_(False)
        self.predictor = make_mlp(obs_dim, [*hidden, hidden[-1]] if hidden else [], out_dim, "relu")

    @property
    def module(self) -> nn.Module:
        return self.predictor

    def error(self, next_obs: torch.Tensor) -> torch.Tensor:
        """``mean_k (predictor(s')_k - target(s')_k)^2``, ``[B]``."""
        return (self.predictor(next_obs) - self.target(next_obs)).square().mean(-1)

    def bonus(self, obs: torch.Tensor | None, next_obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.error(next_obs)

    def loss(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.error(next_obs).mean()
        return {"loss": loss, "rnd_loss": loss.detach()}


class _InverseDynamics(nn.Module):
    """An encoder ``phi: [B, D] -> [B, d]`` trained by predicting the action from ``(phi(s), phi(s'))``."""

    def __init__(self, obs_dim: int, hidden: list[int], embed_dim: int, actions: ActionCoder):
        super().__init__()
        self.actions = actions
        self.encoder = make_mlp(obs_dim, hidden, embed_dim, "relu")
        self.inverse = make_mlp(2 * embed_dim, hidden, actions.dim, "relu")

    def inverse_loss(self, phi: torch.Tensor, next_phi: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.actions.inverse_loss(self.inverse(torch.cat([phi, next_phi], -1)), actions)


class ICM(_InverseDynamics):
    """Intrinsic curiosity module (Pathak et al. 2017): the bonus is the forward model's error in the
    embedding, ``0.5 * ||f(phi(s), a) - phi(s')||^2`` (Eq. 6; ``[B]``); trained by
    ``(1 - beta) * L_inverse + beta * L_forward`` (Eq. 7, beta = 0.2), the forward target detached."""

    beta = 0.2

    def __init__(self, obs_dim: int, hidden: list[int], embed_dim: int, actions: ActionCoder):
        super().__init__(obs_dim, hidden, embed_dim, actions)
        self.forward_model = make_mlp(embed_dim + actions.dim, hidden, embed_dim, "relu")

    @property
    def module(self) -> nn.Module:
        return self

    def _forward_error(self, phi: torch.Tensor, next_phi: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        predicted = self.forward_model(torch.cat([phi, self.actions.encode(actions)], -1))
        return 0.5 * (predicted - next_phi).square().sum(-1)

    def bonus(self, obs: torch.Tensor | None, next_obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self._forward_error(self.encoder(obs), self.encoder(next_obs), actions)

    def loss(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        phi, next_phi = self.encoder(obs), self.encoder(next_obs)
        inverse = self.inverse_loss(phi, next_phi, actions)
        forward = self._forward_error(phi, next_phi.detach(), actions).mean()
        return {"loss": (1 - self.beta) * inverse + self.beta * forward, "icm_inverse_loss": inverse.detach(),
                "icm_forward_loss": forward.detach()}


def sherman_morrison(c_inv: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi^T C^-1 phi [N], (C + phi phi^T)^-1 [N, d, d])`` for ``c_inv = C^-1 [N, d, d]``, ``phi [N, d]``:
    the rank-one update ``C^-1 - u u^T / (1 + phi^T u)`` with ``u = C^-1 phi`` (C symmetric)."""
    u = torch.bmm(c_inv, phi.unsqueeze(-1)).squeeze(-1)
    b = (phi * u).sum(-1)
    return b, c_inv - u.unsqueeze(-1) * u.unsqueeze(-2) / (1.0 + b)[:, None, None]


class E3B(_InverseDynamics):
    """Exploration via elliptical episodic bonuses (Henaff et al. 2022, Eq. 4-5): per env
    ``b_t = phi(s_{t+1})^T C^-1 phi(s_{t+1})`` with ``C = lambda I + sum phi phi^T`` over the states reached
    earlier in the episode; ``C^-1 [N, d, d]`` is updated by Sherman-Morrison (:func:`sherman_morrison`, done
    in place) after each bonus and set back to ``I / lambda`` where an episode ends. ``phi`` is trained by
    inverse dynamics only."""

    def __init__(self, obs_dim: int, hidden: list[int], embed_dim: int, actions: ActionCoder, num_envs: int,
                 ridge: float, device: torch.device):
        super().__init__(obs_dim, hidden, embed_dim, actions)
        self.ridge = ridge
        self.fresh = torch.eye(embed_dim, device=device) / ridge
        self.c_inv = self.fresh.repeat(num_envs, 1, 1)

    @property
    def module(self) -> nn.Module:
        return self

    def bonus(self, next_obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """The bonus of the states reached ``next_obs [N, D]``; then each env's matrix takes them in, and the
        envs with ``done [N]`` start over."""
        phi = self.encoder(next_obs)
        u = torch.bmm(self.c_inv, phi.unsqueeze(-1)).squeeze(-1)
        b = (phi * u).sum(-1)
        u = u / (1.0 + b).sqrt()[:, None]  # u u^T / (1 + b) as one in-place rank-one update
        self.c_inv.baddbmm_(u.unsqueeze(-1), u.unsqueeze(-2), alpha=-1.0)
        if self.c_inv.is_cpu:  # a host read is free here: reset only the envs that ended
            if done.any():
                self.c_inv[done] = self.fresh
        else:  # no host sync on a GPU: one masked pass
            self.c_inv = torch.where(done[:, None, None], self.fresh, self.c_inv)
        return b

    def loss(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.inverse_loss(self.encoder(obs), self.encoder(next_obs), actions)
        return {"loss": loss, "e3b_inverse_loss": loss.detach()}

    def episode_state(self) -> dict[str, torch.Tensor]:
        return {"c_inv": self.c_inv.clone()}

    def load_episode_state(self, state: dict[str, torch.Tensor]) -> None:
        self.c_inv = state["c_inv"].to(self.c_inv.device).clone()


class EpisodicCount:
    """Counts of hashed states within each env's current episode (Tang et al. 2017's SimHash, or a grid).

    Keys: ``simhash`` takes ``sign(A x)`` of the whitened obs with a fixed Gaussian ``A [bits, D]`` as the
    bits of an int64 (``bits <= 52``); ``grid`` takes ``floor(x / cell)`` of the raw obs (``cell``: a number or
    ``[D]``), mixed by fixed random odd int64 multipliers (a state = a cell). Each env counts in its own table of
    ``buckets`` int64 slots (slot = key mod buckets) holding ``(episode + 1) << 20 | count``: a slot written in
    an earlier episode reads as 0, so an episode end costs nothing and a step is one gather and one scatter,
    O(N) (two keys sharing a slot share a count: with ``m`` distinct states in an episode about
    ``m / buckets`` of them do; counts saturate at 2^20 - 1). The bonus of reaching a
    state counted ``n`` times (this visit included) is ``1 / sqrt(n)`` (``inv_sqrt``) or ``1{n = 1}``
    (``first_visit``, Henaff et al. 2023's episodic count). On the CPU (with numba) the step after the
    projection runs in the kernels of :mod:`drl.wrappers.count_kernels`, in place, with bitwise the same keys,
    counts and bonuses (``use_kernels = False``: the torch path everywhere).
    """

    def __init__(self, num_envs: int, obs_dim: int, buckets: int, key: str, bits: int, cell: torch.Tensor | float,
                 mode: str, generator: torch.Generator, device: torch.device):
        self.key, self.cell, self.mode, self.buckets = key, cell, mode, buckets
        self.projection = torch.randn(bits, obs_dim, generator=generator).to(device)
        self.powers = (2.0 ** torch.arange(bits, dtype=torch.float64)).to(device)  # exact: bits <= 52
        self.multipliers = (torch.randint(1, 2**62, (obs_dim,), generator=generator) * 2 + 1).to(device)
        self.table = torch.zeros(num_envs, buckets, dtype=torch.int64, device=device)
        self.episode = torch.zeros(num_envs, dtype=torch.int64, device=device)  # episodes finished, per env
        self.use_kernels = count_kernels.numba is not None  # CPU tensors: the numba kernels (same results)
        self._views: tuple[Any, ...] = (None, None, None)  # (table, episode, their numpy views or None)
        self._projection_t: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self._projected: torch.Tensor | None = None  # the kernels' [N, bits] buffer of projections

    def _kernel_views(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Numpy views of ``table`` and ``episode`` when the kernels can count in them in place (CPU,
        contiguous, numba installed); None otherwise. Made again when either tensor is replaced (a load)."""
        table, episode, views = self._views
        if table is not self.table or episode is not self.episode:
            table, episode, views = self.table, self.episode, None
            if (self.use_kernels and table.is_cpu and episode.is_cpu and table.dtype is episode.dtype is torch.int64
                    and table.is_contiguous() and episode.is_contiguous() and table.dim() == 2):
                views = (table.numpy(), episode.numpy())
            self._views = (table, episode, views)
        return views

    def hash(self, whitened: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """``[N, D] -> [N]`` int64 keys."""
        if self.key == "simhash":
            held, transposed = self._projection_t
            if held is not self.projection:  # the same view as ``projection.T`` each step, made once
                held, transposed = self._projection_t = (self.projection, self.projection.T)
            if (self.use_kernels and whitened.is_cpu and transposed.is_cpu and whitened.dtype is torch.float32
                    and transposed.dtype is torch.float32 and whitened.dim() == 2 and not whitened.requires_grad):
                shape = (whitened.shape[0], transposed.shape[1])
                if self._projected is None or self._projected.shape != shape:
                    self._projected = torch.empty(shape)
                # the same product into a buffer kept across steps (no fresh [N, bits] block each step)
                projected = torch.matmul(whitened, transposed, out=self._projected)
                keys = np.empty(shape[0], np.int64)
                count_kernels.simhash_keys(projected.numpy(), keys)
                return torch.from_numpy(keys)
            return ((whitened @ transposed > 0).to(torch.float64) @ self.powers).long()
        return (torch.floor(raw.float() / self.cell).long() * self.multipliers).sum(-1)

    def bonus(self, keys: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Count ``keys [N]`` in each env's episode table; the envs with ``done [N]`` start a new episode."""
        if keys.is_cpu and done.is_cpu and keys.dtype is torch.int64 and done.dtype is torch.bool:
            views = self._kernel_views()
            if views is not None and keys.shape == done.shape == self.episode.shape:
                out = np.empty(keys.shape[0], np.float32)
                count_kernels.episodic_count(keys.numpy(), done.numpy(), views[0], views[1], COUNT_BITS,
                                             self.mode == "first_visit", out)
                return torch.from_numpy(out)
        slot = torch.remainder(keys, self.buckets)[:, None]
        held = self.table.gather(1, slot).squeeze(1)
        this_episode = self.episode + 1
        n = torch.where(held >> COUNT_BITS == this_episode, held & COUNT_MASK, 0).add_(1).clamp_(max=COUNT_MASK)
        self.table.scatter_(1, slot, ((this_episode << COUNT_BITS) | n)[:, None])
        self.episode = self.episode + done
        if self.mode == "first_visit":
            return (n == 1).float()
        return n.float().rsqrt()

    def episode_state(self) -> dict[str, Any]:
        return {"table": self.table.clone(), "episode": self.episode.clone()}

    def load_episode_state(self, state: dict[str, Any]) -> None:
        self.table = state["table"].to(self.table.device).clone()
        self.episode = state["episode"].to(self.episode.device).clone()
