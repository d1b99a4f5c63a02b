"""Observation encoders that drl builds itself, for embedding-similarity rewards (drl.wrappers.embedding_reward).

* :class:`RandomProjection`: a fixed Gaussian projection ``[N, *shape] -> [N, E]`` (no training; unit tests, or a
  cheap similarity on low-dimensional states).
* :class:`MLPEncoder` trained by :func:`train_progress_encoder` on a demo file: a time-contrastive encoder in the
  sense of TCN (Sermanet et al. 2018, "Time-Contrastive Networks"), single view: two observations are embedded
  close when they are at a similar stage of their demos and far apart otherwise, whichever demo episodes they
  come from. Each pair ``(i, j)`` (drawn from any episodes) is pulled towards the cosine similarity
  ``cos(pi * |p_i - p_j|)`` of its progress ``p = t / T`` (``t``: the step in the episode, ``T``: its length;
  the true final obs has ``p = 1``), a target that embeddings on a half circle meet exactly. The mean embedding
  of the demos' final observations is then the goal, and the similarity to it grows with the progress made.
* :func:`save_encoder` / :func:`load_encoder`: a drl encoder as a ``.pt`` file (constructor arguments and
  weights, read back with ``weights_only``: no code from the file runs); :func:`load_encoder` and
  :func:`random_projection` are factories the wrapper can name by import path
  (``encoder: drl.nn.encoders:random_projection``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drl.nn.mlp import make_mlp

__all__ = ["RandomProjection", "MLPEncoder", "random_projection", "train_progress_encoder", "demo_progress",
           "save_encoder", "load_encoder"]

ENCODER_FORMAT = 1


class RandomProjection(nn.Module):
    """``x [N, *shape] -> flatten(x) @ W.T [N, out_dim]`` with fixed ``W ~ N(0, 1 / in_dim)`` drawn from ``seed``.

    Args:
        in_dim: the flattened input size.
        out_dim: the embedding size.
        seed: seeds ``W`` (the run's random state is untouched).
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0):
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"in_dim and out_dim must be >= 1, got {in_dim} and {out_dim}")
        self.config = {"in_dim": int(in_dim), "out_dim": int(out_dim), "seed": int(seed)}
        generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("weight", torch.randn(out_dim, in_dim, generator=generator) / math.sqrt(in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float() @ self.weight.T


class MLPEncoder(nn.Module):
    """``x [N, *shape] -> mlp((flatten(x)[:, features] - mean) / std) [N, out_dim]``, whitened by stored demo
    statistics.

    Args:
        in_dim: the flattened input size.
        out_dim: the embedding size.
        hidden: hidden widths (tanh).
        features: indices into the flattened input that the encoder reads (None: all), e.g. the positions a
            camera would see rather than joint velocities.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: list[int] | tuple[int, ...] = (64, 64),
                 features: list[int] | None = None):
        super().__init__()
        if features is not None and (not features or not all(0 <= i < in_dim for i in features)):
            raise ValueError(f"features must be indices in [0, {in_dim}), got {features}")
        self.config = {"in_dim": int(in_dim), "out_dim": int(out_dim), "hidden": [int(w) for w in hidden],
                       "features": None if features is None else [int(i) for i in features]}
        width = in_dim if features is None else len(features)
        self.register_buffer("index", torch.arange(in_dim) if features is None else torch.tensor(features))
        self.net = make_mlp(width, list(hidden), out_dim)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.reshape(x.shape[0], -1).float()[:, self.index] - self.mean) / self.std)


_KINDS: dict[str, type[nn.Module]] = {"random_projection": RandomProjection, "mlp": MLPEncoder}


def random_projection(in_dim: int, out_dim: int = 16, seed: int = 0) -> RandomProjection:
    """Factory for ``encoder: drl.nn.encoders:random_projection`` (``encoder_kwargs: {in_dim, out_dim, seed}``)."""
    return RandomProjection(in_dim, out_dim, seed)


def demo_progress(demos: dict[str, Any], group: str = "policy") -> tuple[torch.Tensor, torch.Tensor]:
    """Every observation of a demo file with its progress: ``(obs [M + E, ...], progress [M + E])``: each
    episode's ``T`` observations ``obs/<group>`` at ``t / T`` and its true final obs (``next_obs`` of its last
    step) at 1. ValueError naming the group when the file has none such."""
    if f"obs/{group}" not in demos:
        held = sorted(k.split("/", 1)[1] for k in demos if k.startswith("obs/"))
        raise ValueError(f"the demos have no obs group '{group}' (they have {held})")
    obs, nxt, index = demos[f"obs/{group}"].float(), demos[f"next_obs/{group}"].float(), demos["episode_index"]
    xs, ps = [], []
    for episode in index.unique(sorted=True).tolist():
        rows = (index == episode).nonzero().flatten()
        length = rows.numel()
        xs += [obs[rows], nxt[rows[-1:]]]
        ps += [torch.arange(length, dtype=torch.float32) / length, torch.ones(1)]
    return torch.cat(xs), torch.cat(ps)


def train_progress_encoder(demos: dict[str, Any], group: str = "policy", out_dim: int = 16,
                           hidden: list[int] | tuple[int, ...] = (64, 64), steps: int = 2000, batch_size: int = 256,
                           learning_rate: float = 1e-3, features: list[int] | None = None,
                           seed: int = 0) -> MLPEncoder:
    """An :class:`MLPEncoder` of obs group ``group`` (its ``features``, None: all) trained on ``demos`` (see the
    module docstring).

    Loss per minibatch of ``batch_size`` random pairs ``(i, j)`` of demo observations (Adam, ``steps`` steps):
    ``mean((cos(f(x_i), f(x_j)) - cos(pi * |p_i - p_j|))^2)``. Deterministic for a given ``seed`` (the run's
    random state is untouched). Returns the encoder in eval mode, on the CPU.
    """
    if steps < 0 or batch_size < 1 or out_dim < 2:
        raise ValueError(f"need steps >= 0, batch_size >= 1, out_dim >= 2; got {steps}, {batch_size}, {out_dim}")
    x, progress = demo_progress(demos, group)
    x = x.reshape(x.shape[0], -1)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = MLPEncoder(x.shape[1], out_dim, hidden, features)
    used = x[:, encoder.index]
    encoder.mean.copy_(used.mean(0))
    encoder.std.copy_(used.std(0, unbiased=False).clamp_min(1e-3))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=learning_rate)
    for _ in range(steps):
        i, j = torch.randint(x.shape[0], (2, batch_size), generator=generator)
        e = nn.functional.normalize(encoder(x), dim=-1)  # the whole (small) demo set, then the pairs
        loss = ((e[i] * e[j]).sum(-1) - torch.cos(math.pi * (progress[i] - progress[j]).abs())).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder.eval()


def save_encoder(encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write a drl encoder (:class:`RandomProjection`, :class:`MLPEncoder`) as ``{format, kind, config,
    state_dict}``; parents are created. TypeError for any other module (save those the way their library does
    and load them with a factory of your own)."""
    kind = next((k for k, cls in _KINDS.items() if type(encoder) is cls), None)
    if kind is None:
        raise TypeError(f"save_encoder writes drl's encoders ({sorted(_KINDS)}), got {type(encoder).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": ENCODER_FORMAT, "kind": kind, "config": dict(encoder.config),
                "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}, path)
    return path


def load_encoder(path: str | os.PathLike) -> nn.Module:
    """The encoder :func:`save_encoder` wrote (eval mode, CPU). FileNotFoundError for a missing file, ValueError
    naming the problem for a file that is not a drl encoder file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder file '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several kinds on a damaged or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"'{path}' is not a readable encoder file ({type(err).__name__}: {first})") from None
    if not isinstance(data, dict) or data.get("format") != ENCODER_FORMAT or data.get("kind") not in _KINDS:
        raise ValueError(f"'{path}' is not a drl encoder file (written by drl.nn.encoders.save_encoder)")
    encoder = _KINDS[data["kind"]](**data["config"])
    encoder.load_state_dict(data["state_dict"])
    return encoder.eval()
