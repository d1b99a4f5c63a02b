"""Network building blocks: MLPs, action heads, running normalisers."""

from drl.nn.heads import CategoricalHead, GaussianHead, make_action_head
from drl.nn.mlp import make_mlp, orthogonal_init
from drl.nn.normalization import RewardScaler, RunningMeanStd

__all__ = [
    "make_mlp",
    "orthogonal_init",
    "CategoricalHead",
    "GaussianHead",
    "make_action_head",
    "RunningMeanStd",
    "RewardScaler",
]
