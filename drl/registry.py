"""Agent name -> (agent class, config class, runner class): the one place that knows them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drl.agents.aacd import AACD, AACDConfig, prepare_teacher
from drl.agents.aawr import AAWR, AAWRConfig
from drl.agents.bc import BC, BCConfig
from drl.agents.camrl import CAMRL, CAMRLConfig
from drl.agents.dagger import DAgger, DAggerConfig
from drl.agents.happo import HAPPO, HAPPOConfig
from drl.agents.happo_competitive import HAPPOCompetitive, HAPPOCompetitiveConfig
from drl.agents.ppo import PPO, PPOConfig
from drl.agents.ppo_residual import PPOResidual, PPOResidualConfig
from drl.agents.rarl import RARL, RARLConfig
from drl.agents.residual import Residual, ResidualConfig
from drl.agents.sac import SAC, SACConfig
from drl.agents.subpo import SubPO, SubPOConfig
from drl.agents.td3 import TD3, TD3Config
from drl.config import ConfigError, TrainConfig, build, merge, to_dict
from drl.runners.competitive import CompetitiveRunner
from drl.runners.multi_agent import MultiAgentOnPolicyRunner
from drl.runners.off_policy import OffPolicyRunner
from drl.runners.offline_to_online import OfflineToOnlineRunner
from drl.runners.on_policy import OnPolicyRunner

__all__ = ["AgentSpec", "AGENTS", "resolve_config", "default_config_dict"]


@dataclass(frozen=True)
class AgentSpec:
    """What the registry knows of an agent: its classes, what ``drl list`` says, the env ``drl train AGENT``
    uses when none is given, and run-config defaults of its own (merged over :class:`TrainConfig`'s; an
    ``"algo"`` entry is merged over the config class's own defaults, so one agent class can back several
    registry names, e.g. a variant with another default obs group).

    ``prepare(cfg, run_dir, overwrite) -> run_dir``, when set, runs in :func:`drl.api.train` before the
    runner is built (e.g. AACD trains its teacher first); it may choose and create the run folder (given
    None) and write into the sub-folders the agent class names in ``run_subfolders``.

    ``choices`` narrows ``algo`` keys for this registry name: ``{key: the values it accepts}`` (when one agent
    class backs several names, each runs its own variants; another value is one ConfigError line naming the
    registry name that runs it, checked by :func:`resolve_config`)."""

    agent_class: type
    config_class: type
    runner_class: type
    description: str
    default_env: str = "drl/CartPole-v0"
    defaults: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[TrainConfig, Path | None, bool], Path | None] | None = None
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)


AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec(PPO, PPOConfig, OnPolicyRunner, "Proximal Policy Optimisation (discrete and continuous)"),
    # off-policy: one env unless a config says otherwise (SB3's default; updates_per_step counts per vectorised step)
    "sac": AgentSpec(SAC, SACConfig, OffPolicyRunner, "Soft Actor-Critic (continuous; ensembles, n-step, C51)",
                     default_env="drl/Pendulum-v0", defaults={"env": {"num_envs": 1}}),
    "td3": AgentSpec(TD3, TD3Config, OffPolicyRunner, "Twin Delayed DDPG (continuous; ensembles, n-step, C51)",
                     default_env="drl/Pendulum-v0", defaults={"env": {"num_envs": 1}}),
    # robust adversarial RL (issue 12): a force-applying adversary on MuJoCo bodies, trained alternately
    "rarl": AgentSpec(RARL, RARLConfig, OnPolicyRunner, "Robust Adversarial RL (Pinto et al. 2017): PPO protagonist "
                      "vs a PPO adversary pushing MuJoCo bodies (continuous)", default_env="InvertedPendulum-v5"),
    # privileged information (issue 10): the critic reads the "critic" obs group, the actor "policy"
    "aac": AgentSpec(PPO, PPOConfig, OnPolicyRunner, "Asymmetric actor-critic PPO (Pinto et al. 2017): critic "
                     "on the privileged 'critic' obs group", default_env="drl/CartPoleNoVel-v0",
                     defaults={"algo": {"critic_obs": "critic"}}),
    "aacd": AgentSpec(AACD, AACDConfig, OnPolicyRunner, "AACD (TacSL): PPO with a new actor and a privileged "
                      "teacher's critic, frozen or fine-tuned (trains the teacher first without --teacher)",
                      default_env="drl/CartPoleNoVel-v0", prepare=prepare_teacher),
    "dagger": AgentSpec(DAgger, DAggerConfig, OnPolicyRunner, "DAgger: a student on 'policy' imitates a "
                        "privileged teacher run's actor (beta-mixed rollouts, expert labels)",
                        default_env="drl/CartPoleNoVel-v0"),
    # submodular RL (issue 17): policy gradient on marginal gains; the objective is the 'submodular' wrapper's
    "subpo": AgentSpec(SubPO, SubPOConfig, OnPolicyRunner, "SubPO (Prajapat et al. 2024): policy gradient on the "
                       "marginal gains of a submodular objective (REINFORCE or GAE); tasks drl/Coverage*",
                       default_env="drl/CoverageGrid-v0",
                       defaults={"wrappers": [{"name": "submodular"}, {"name": "coverage_obs"}]}),
    # privileged-information agents: offline on demos (algo.demos / --demos), then online
    "aawr": AgentSpec(AAWR, AAWRConfig, OfflineToOnlineRunner, "Asymmetric advantage-weighted regression (IQL "
                      "critics on privileged state; offline on demos, then online; continuous)",
                      default_env="drl/ActiveSearch-v0", defaults={"env": {"num_envs": 1}}),
    # behaviour cloning (issue 11): supervised on demos, MLP or action chunks; offline phase, then the policy acts
    "bc": AgentSpec(BC, BCConfig, OfflineToOnlineRunner, "Behaviour cloning of demonstrations (--demos; MLP or "
                    "action-chunking policy, temporal ensembling or open-loop chunks; continuous)",
                    default_env="drl/PandaPush-v0", defaults={"env": {"num_envs": 1}}),
    # residual RL on a frozen base (issue 11): --base RUN_DIR or SB3 .zip; demos (optional) mixed into batches
    "residual": AgentSpec(Residual, ResidualConfig, OfflineToOnlineRunner, "Residual off-policy RL (ResFiT): a "
                          "TD3 correction on a frozen base policy (--base: drl run or SB3 .zip; continuous)",
                          default_env="drl/PandaPush-v0", defaults={"env": {"num_envs": 1}}),
    # multi-task (issue 16): one PPO learner per task on a task axis; the baselines are algo.mode switches
    "camrl": AgentSpec(CAMRL, CAMRLConfig, OnPolicyRunner, "CAMRL (Huang et al. 2023): per-task PPO learners on a "
                       "task axis, mode indicator, curriculum, transfer matrix B (its baselines: mt-ppo)",
                       default_env="drl/MT-CartPole-v0", defaults={"env": {"num_envs": 16}},
                       choices={"mode": ("camrl",)}),
    "mt-ppo": AgentSpec(CAMRL, CAMRLConfig, OnPolicyRunner, "CAMRL's baselines: MT-PPO, one shared PPO network "
                        "reading the one-hot task (algo.mode: shared | independent | always_asymmetric)",
                        default_env="drl/MT-CartPole-v0",
                        defaults={"env": {"num_envs": 16}, "algo": {"mode": "shared"}},
                        choices={"mode": ("shared", "independent", "always_asymmetric")}),
    "ppo-residual": AgentSpec(PPOResidual, PPOResidualConfig, OnPolicyRunner, "On-policy residual: PPO learning a "
                              "correction on a frozen base policy (--base; continuous)",
                              default_env="drl/PandaPush-v0"),
    # multi-agent (issue 13): envs of the envs/multi_agent.py contract; per-agent returns logged
    "happo": AgentSpec(HAPPO, HAPPOConfig, MultiAgentOnPolicyRunner, "Heterogeneous-agent PPO (Kuba et al. 2022): "
                       "one actor per agent updated in a random order with the compounding factor, V(state) critic",
                       default_env="drl/Rendezvous-v0"),
    "mappo": AgentSpec(HAPPO, HAPPOConfig, MultiAgentOnPolicyRunner, "Multi-agent PPO (Yu et al. 2022): HAPPO's "
                       "actors and V(state) critic, every actor updated at once (no factor)",
                       default_env="drl/Rendezvous-v0", defaults={"algo": {"update_scheme": "mappo"}}),
    # competitive (issue 13): two teams, a HAPPO learner each; win rates against a league of frozen opponents
    "happo-competitive": AgentSpec(HAPPOCompetitive, HAPPOCompetitiveConfig, CompetitiveRunner, "Competitive "
                                   "HAPPO: a HAPPO learner per team (simultaneous, alternate or ladder), win "
                                   "rates against a league of frozen opponents", default_env="drl/PursuitEvasion-v0"),
}


def _spec(agent: Any) -> AgentSpec:
    if not isinstance(agent, str) or agent not in AGENTS:
        raise ConfigError(f"config key 'agent': unknown agent {agent!r}; valid agents: {sorted(AGENTS)}")
    return AGENTS[agent]


def distributed_agents() -> list[str]:
    """The agents made for distributed training (their class sets ``distributed = True``: PPO, SAC, TD3 and
    their subclasses), sorted."""
    return sorted(name for name, spec in AGENTS.items() if getattr(spec.agent_class, "distributed", False))


def check_distributed(agent: str, nproc: int) -> None:
    """One ConfigError line unless ``agent`` may train with ``nproc`` processes (any agent with one)."""
    if nproc > 1 and not getattr(_spec(agent).agent_class, "distributed", False):
        raise ConfigError(f"--nproc {nproc}: agent '{agent}' is not made for distributed training (its updates "
                          f"do not average gradients across processes); agents that support --nproc: "
                          f"{distributed_agents()}")


def default_config_dict(agent: str) -> dict[str, Any]:
    """Every key of a run config for ``agent``, at its default."""
    spec = _spec(agent)
    own = {key: value for key, value in spec.defaults.items() if key != "algo"}
    data = merge(to_dict(TrainConfig(agent=agent)), own)
    data["algo"] = merge(to_dict(spec.config_class()), spec.defaults.get("algo", {}))
    return data


def resolve_config(raw: dict[str, Any]) -> TrainConfig:
    """Defaults <- ``raw``; type-check and validate everything; return the typed config."""
    agent = raw.get("agent", "ppo")
    spec = _spec(agent)
    merged = merge(default_config_dict(agent), raw)
    algo_raw = merged.pop("algo")
    if not isinstance(algo_raw, dict):
        raise ConfigError(f"config key 'algo': must be a mapping of {spec.config_class.__name__} fields")
    cfg = build(TrainConfig, merged)
    cfg.algo = build(spec.config_class, algo_raw, prefix="algo")
    _check_choices(agent, spec, cfg.algo)
    cfg.validate()
    cfg.env.validate("env")
    cfg.algo.validate("algo", cfg)
    return cfg


def _check_choices(agent: str, spec: AgentSpec, algo: Any) -> None:
    """One ConfigError line unless every ``algo`` key of ``spec.choices`` holds a value this registry name runs;
    it names the values it takes and the registry name(s) of the same agent class that run the value given."""
    for key, allowed in spec.choices.items():
        value = getattr(algo, key)
        if value in allowed:
            continue
        others = [name for name, other in AGENTS.items() if name != agent and other.agent_class is spec.agent_class
                  and value in other.choices.get(key, (value,))]
        hint = f"; {value!r} is agent {' or '.join(repr(n) for n in others)} (drl train {others[0]})" if others else ""
        raise ConfigError(f"config key 'algo.{key}': agent {agent!r} takes {' | '.join(map(str, allowed))}, "
                          f"got {value!r}{hint}")
