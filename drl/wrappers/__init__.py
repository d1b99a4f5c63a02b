"""Gymnasium vector wrappers on the torch env contract, selected by name from config (``wrappers:``) and
``drl train --wrapper``: reward shaping, intrinsic bonuses, learned rewards, observation summaries.

See :mod:`drl.wrappers.base` for the contract (what a wrapper saves, how it is trained, what evaluation
sees). Importing this package registers every built-in wrapper.
"""

from __future__ import annotations

from typing import Any

import torch

from drl.config import ConfigError
from drl.wrappers import (  # noqa: F401  (registers them)
    barfi,
    bonuses,
    coverage_obs,
    embedding_reward,
    learned_reward,
    preference,
    shaping,
    submodular,
)
from drl.wrappers.base import (
    WRAPPERS,
    TorchVectorWrapper,
    WrapperStack,
    parse_wrapper_flag,
    register_wrapper,
    select_group,
    validate_wrappers,
    wrap_env,
)

__all__ = ["TorchVectorWrapper", "WRAPPERS", "WrapperStack", "register_wrapper", "select_group",
           "validate_wrappers", "wrap_env", "parse_wrapper_flag", "make_run_env"]


def make_run_env(cfg: Any, num_envs: int, device: torch.device, vectorization: str = "sync",
                 for_eval: bool = False, env_kwargs: dict[str, Any] | None = None) -> Any:
    """The env of run config ``cfg`` (``make_vec_env`` of ``cfg.env``) inside ``cfg.wrappers``; for an
    evaluation env (``for_eval``) only the observation-changing ones. Wrappers that take ``gamma`` or
    ``seed`` get the agent's discount and the run's seed unless their entry sets them. ``env_kwargs``
    replaces ``cfg.env.kwargs`` (e.g. with a render mode added)."""
    from envs import make_vec_env

    env = make_vec_env(cfg.env.id, num_envs, device, vectorization,
                       cfg.env.kwargs if env_kwargs is None else env_kwargs)
    if not for_eval and getattr(env.unwrapped, "reward_free", False) and not any(
            getattr(WRAPPERS.get(spec.get("name")), "gives_reward", False) for spec in cfg.wrappers):
        env.close()
        raise ConfigError(f"config key 'env.id': {cfg.env.id} has no reward of its own (0 at every step); add a "
                          "wrapper that gives one, e.g. `--wrapper submodular` (configs/subpo/ has examples)")
    if not cfg.wrappers:
        return env
    defaults = {"seed": cfg.seed}
    if getattr(cfg.algo, "gamma", None) is not None:
        defaults["gamma"] = cfg.algo.gamma
    try:
        return wrap_env(env, cfg.wrappers, for_eval=for_eval, defaults=defaults)
    except BaseException:
        env.close()
        raise
