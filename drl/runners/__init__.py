"""Training loops. Each runner reads top to bottom and owns env, storage, logging and checkpoints."""

from drl.runners.on_policy import OnPolicyRunner, evaluate_policy

__all__ = ["OnPolicyRunner", "evaluate_policy"]
