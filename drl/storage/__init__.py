"""One vectorized storage for every agent: rollouts ``[T, N, ...]`` and, in ring mode, replay."""

from drl.storage.replay import MixedSampler, ReplayBuffer
from drl.storage.rollout import Field, RolloutBuffer, flatten_obs, unflatten_obs
from drl.storage.samplers import ChunkSampler, MinibatchSampler

__all__ = [
    "Field",
    "RolloutBuffer",
    "ReplayBuffer",
    "MinibatchSampler",
    "ChunkSampler",
    "MixedSampler",
    "flatten_obs",
    "unflatten_obs",
]
