"""Training loops. Each runner reads top to bottom and owns env, storage, logging and checkpoints;
what they share (envs, agent, run folder, checkpoints, failures, evaluation) is :class:`Runner`."""

from drl.runners.base import Runner
from drl.runners.off_policy import OffPolicyRunner
from drl.runners.on_policy import OnPolicyRunner, evaluate_policy

__all__ = ["Runner", "OnPolicyRunner", "OffPolicyRunner", "evaluate_policy"]
