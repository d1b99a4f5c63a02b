"""One rank of the tests of :mod:`drl.distributed` (tests/test_distributed.py starts it as a process per rank).

``python tests/distributed_worker.py MODE OUT [ARGS...]``, with torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) set for a multi-rank run or unset for the single-process reference:

* ``ppo`` / ``offpolicy``: the same data, split by env columns (PPO) or batch rows (SAC, TD3) between the
  ranks; writes ``OUT/rank<r>.pt`` with the flat parameters after every update and the normaliser statistics;
* ``norm``: the obs statistics through PPO's, SAC's and TD3's own acting paths on each rank's env columns,
  merged by ``sync_ranks`` after every rollout / iteration (``OUT/rank<r>.pt``, see :func:`run_norm`);
* ``die``: rank 1 exits at once after joining; rank 0 keeps all-reducing and reports what it gets;
* ``train``: ``drl train ARGS`` (the CLI, as under torchrun); ranks other than 0 record every file they open
  for writing, make or replace (an audit hook) into ``OUT/writes-rank<r>.json``; with
  ``DRL_TEST_DIE_AFTER_ITERATION`` set, rank 1 exits (code 3) where it would log its first iteration; with
  ``DRL_TEST_RECORD_SYNC`` set, every rank writes its agent's obs statistics after each of the runner's
  ``_sync_ranks`` calls into ``OUT/synced-rank<r>.pt``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

from drl import distributed

N_ENVS, N_STEPS, ROLLOUTS = 8, 16, 2  # PPO: the one-process rollout is [16, 8]
BATCH, UPDATES = 32, 4  # off-policy: the one-process batch
OBS = gym.spaces.Box(-1.0, 1.0, (5,))
ACT = gym.spaces.Box(-2.0, 2.0, (3,))


def ppo_data(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``ROLLOUTS`` rollouts ``{field: [T, N, ...]}`` of raw obs, final obs, actions, log-probs, rewards, flags."""
    g = torch.Generator().manual_seed(seed)
    shape = (N_STEPS, N_ENVS)
    return [{"obs": 3.0 * torch.randn(*shape, 5, generator=g) + 1.0,
             "final_obs": torch.randn(*shape, 5, generator=g),
             "actions": torch.randn(*shape, 3, generator=g),
             "log_probs": -3.0 + 0.1 * torch.randn(*shape, generator=g),
             "rewards": torch.randn(*shape, generator=g),
             "terminated": torch.rand(*shape, generator=g) < 0.05,
             "truncated": torch.rand(*shape, generator=g) < 0.05} for _ in range(ROLLOUTS)]


def run_ppo(out: Path) -> None:
    from drl.agents.ppo import PPO, PPOConfig
    from drl.storage import RolloutBuffer

    rank, world = distributed.rank(), distributed.world_size()
    n = N_ENVS // world
    cols = slice(rank * n, (rank + 1) * n)
    cfg = PPOConfig(num_steps=N_STEPS, minibatch_size=N_STEPS * n, num_epochs=3, normalize_obs=True,
                    normalize_reward=True, max_grad_norm=0.5, compile=False, numba_actor=False,
                    actor_hidden=[16, 16], critic_hidden=[16, 16])
    torch.manual_seed(0)  # every rank builds the same agent, as the runner does
    agent = PPO(OBS, ACT, cfg, num_envs=n, device=torch.device("cpu"), generator=torch.Generator().manual_seed(rank))
    norm = agent.obs_normalizers[agent.groups[0]]
    storage = RolloutBuffer(N_STEPS, n, agent.storage_fields())
    params = []
    for rollout in ppo_data():
        storage.clear()
        for t in range(N_STEPS):
            norm.update(rollout["obs"][t, cols])  # the rank's envs: folded in by this rank alone
        agent.sync_ranks()  # the rollout's end: every rank's obs merged
        for t in range(N_STEPS):  # normalised with the merged statistics, which one process holds too
            storage.add({f"obs/{agent.groups[0]}": norm.normalize(rollout["obs"][t, cols]),
                         f"final_obs/{agent.groups[0]}": rollout["final_obs"][t, cols],
                         **{k: rollout[k][t, cols] for k in ("actions", "log_probs", "rewards", "terminated",
                                                            "truncated")}})
        agent.update(storage)
        params.append(agent.train_step.params.data.clone())
    errors = []  # the checks that compare ranks: silent when they agree, one error when they do not
    distributed.check_agree(7, "a constant")
    distributed.check_in_sync(agent.policy, "the updates")
    layer = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(layer.weight, float(rank))
    for check in (lambda: distributed.check_agree(rank, "the rank"),
                  lambda: distributed.check_in_sync(layer, "filling a layer with the rank")):
        try:
            check()
        except distributed.DistributedError as err:
            errors.append(str(err))
    # an epoch's K minibatches of advantages, normalised in one collective: this rank's columns of [K, 2M] rows
    rows = torch.arange(3 * 8, dtype=torch.float32).reshape(3, 8).square()
    row_stats = distributed.mean_std_rows(rows[:, rank * 8 // world:(rank + 1) * 8 // world])
    torch.save({"params": params, "errors": errors, "obs_mean": norm.mean.clone(), "obs_var": norm.var.clone(),
                "row_mean": row_stats[0], "row_std": row_stats[1],
                "obs_count": norm.count.clone(), "return_var": agent.reward_scaler.return_stats.var.clone()},
               out / f"rank{rank}.pt")


def _stats(norm: torch.nn.Module) -> torch.Tensor:
    """``[mean..., var..., count]`` of a :class:`RunningMeanStd` (float64)."""
    return torch.cat([norm.mean, norm.var, norm.count.reshape(1)]).clone()


def run_norm(out: Path) -> None:
    """The observation statistics through the agents' own paths: PPO's ``act`` (numba kernel where installed) and
    ``record_outcome`` on the rank's env columns of ``ROLLOUTS`` rollouts, each followed by ``sync_ranks`` and an
    update; SAC's and TD3's ``random_act`` / ``act`` on the rank's envs for ``ROLLOUTS`` iterations of ``N_STEPS``
    vectorised steps, with an update per step and ``sync_ranks`` at each iteration's end. Records each agent's
    statistics before and after every ``sync_ranks`` and its flat parameters after every iteration."""
    from drl.agents.ppo import PPO, PPOConfig
    from drl.agents.sac import SAC, SACConfig
    from drl.agents.td3 import TD3, TD3Config
    from drl.storage import ReplayBuffer, RolloutBuffer

    rank, world = distributed.rank(), distributed.world_size()
    n = N_ENVS // world
    cols = slice(rank * n, (rank + 1) * n)
    data = ppo_data(seed=1)
    cfg = PPOConfig(num_steps=N_STEPS, minibatch_size=N_STEPS * n, num_epochs=2, normalize_obs=True, compile=False,
                    actor_hidden=[16, 16], critic_hidden=[16, 16])
    torch.manual_seed(0)
    agent = PPO(OBS, ACT, cfg, num_envs=n, device=torch.device("cpu"), generator=torch.Generator().manual_seed(rank))
    norm = agent.obs_normalizers[agent.groups[0]]
    result: dict = {"kernel": norm.kernel_views(data[0]["obs"][0, cols]) is not None,
                    "numba_actor": agent.numba_actor is not None}
    storage = RolloutBuffer(N_STEPS, n, agent.storage_fields())
    record = {"before": [], "after": [], "params": []}
    for rollout in data:
        storage.clear()
        for t in range(N_STEPS):
            _, step = agent.act(rollout["obs"][t, cols])
            step["actions"], step["log_probs"] = rollout["actions"][t, cols], rollout["log_probs"][t, cols]
            storage.add(agent.record_outcome(step, rollout["rewards"][t, cols], rollout["terminated"][t, cols],
                                             rollout["truncated"][t, cols], rollout["final_obs"][t, cols]))
        record["before"].append(_stats(norm))
        agent.sync_ranks()
        record["after"].append(_stats(norm))
        agent.update(storage)
        record["params"].append(agent.train_step.params.data.clone())
    result["ppo"] = record
    for name, agent_class, cfg_class in (("sac", SAC, SACConfig), ("td3", TD3, TD3Config)):
        torch.manual_seed(0)
        agent = agent_class(OBS, ACT, cfg_class(batch_size=8, compile=False, normalize_obs=True,
                                                actor_hidden=[16, 16], critic_hidden=[16, 16]), n,
                            torch.device("cpu"), torch.Generator().manual_seed(rank))
        norm = agent.obs_normalizers[agent.groups[0]]
        replay = ReplayBuffer(64, n, agent.storage_fields())
        record = {"before": [], "after": [], "params": []}
        for i, rollout in enumerate(data):
            for t in range(N_STEPS):
                obs = rollout["obs"][t, cols]
                _, step = agent.random_act(obs) if i == 0 else agent.act(obs)
                replay.add(agent.record_outcome(step, rollout["rewards"][t, cols], rollout["terminated"][t, cols],
                                                rollout["truncated"][t, cols], rollout["final_obs"][t, cols]))
                if i > 0:
                    agent.update(replay, 1)
            record["before"].append(_stats(norm))
            agent.sync_ranks()
            record["after"].append(_stats(norm))
            record["params"].append(agent.step.params.data.clone())
        result[name] = record
    torch.save(result, out / f"rank{rank}.pt")


def offpolicy_batches(agent_class: type, cfg_class: type, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``UPDATES`` full batches of ``BATCH`` rows (the agent's own sampling and noise, one process)."""
    from drl.storage import ReplayBuffer

    torch.manual_seed(seed)
    agent = agent_class(OBS, ACT, cfg_class(batch_size=BATCH, compile=False, actor_hidden=[16, 16],
                                            critic_hidden=[16, 16]), 1, torch.device("cpu"),
                        torch.Generator().manual_seed(seed))
    replay = ReplayBuffer(64, 1, agent.storage_fields())
    for t in range(64):
        _, record = agent.random_act(torch.randn(1, 5))
        replay.add(agent.record_outcome(record, torch.randn(1), torch.tensor([t % 10 == 9]),
                                        torch.zeros(1, dtype=torch.bool), torch.randn(1, 5)))
    batches = []
    for _ in range(UPDATES):
        batch = agent.sample_batch(replay)
        agent._draw_noise(batch)
        batches.append(batch)
    return batches


def run_offpolicy(out: Path) -> None:
    from drl.agents.sac import SAC, SACConfig
    from drl.agents.td3 import TD3, TD3Config

    rank, world = distributed.rank(), distributed.world_size()
    b = BATCH // world
    result = {}
    for name, agent_class, cfg_class in (("sac", SAC, SACConfig), ("td3", TD3, TD3Config)):
        torch.manual_seed(0)  # every rank builds the same agent
        agent = agent_class(OBS, ACT, cfg_class(batch_size=b, compile=False, actor_hidden=[16, 16],
                                                critic_hidden=[16, 16], max_grad_norm=1.0), 1,
                            torch.device("cpu"), torch.Generator().manual_seed(rank))
        params = []
        for batch in offpolicy_batches(agent_class, cfg_class):
            rows = {k: v[rank * b:(rank + 1) * b] if v.dim() and v.shape[0] == BATCH else v for k, v in batch.items()}
            agent._update_once(rows)
            agent.num_updates += 1
            params.append(agent.step.params.data.clone())
        result[name] = params
    torch.save(result, out / f"rank{rank}.pt")


def run_die(out: Path) -> None:
    import torch.distributed as dist

    dist.barrier()
    if distributed.rank() == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        for _ in range(10_000):
            distributed.average_gradients_(torch.ones(4))
            time.sleep(0.01)
    except distributed.DistributedError as err:
        (out / "rank0-error.txt").write_text(f"{time.monotonic() - start:.1f}\n{err}")
        distributed.shutdown()  # as drl train does: leaving it to interpreter exit, gloo may abort (SIGABRT)
        sys.exit(6)
    sys.exit(0)


def run_train(out: Path, argv: list[str]) -> int:
    from drl.cli import main

    rank = int(os.environ.get("RANK", "0"))
    writes: list[str] = []
    if rank:
        def audit(event: str, args: tuple) -> None:
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                mode, flags = args[1], args[2]
                if (mode and any(c in str(mode) for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR)):
                    writes.append(f"open {args[0]}")
            elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.rmtree"):
                writes.append(f"{event} {args[0]}")

        sys.addaudithook(audit)
    if rank and os.environ.get("DRL_TEST_DIE_AFTER_ITERATION"):  # rank 1 dies once the first iteration is logged
        from drl.runners.base import Runner

        def die(self, *args: object) -> None:
            os._exit(3)

        Runner._log_and_checkpoint = die
    synced: list[dict[str, torch.Tensor]] = []  # the agent's obs statistics after each Runner._sync_ranks
    if os.environ.get("DRL_TEST_RECORD_SYNC"):
        from drl.runners.base import Runner

        sync = Runner._sync_ranks

        def recording(self) -> None:
            sync(self)
            synced.append({g: _stats(m) for g, m in self.agent.obs_normalizers.items()})

        Runner._sync_ranks = recording
    code = main(argv)
    if rank:
        (out / f"writes-rank{rank}.json").write_text(json.dumps(writes))
    if os.environ.get("DRL_TEST_RECORD_SYNC"):
        torch.save(synced, out / f"synced-rank{rank}.pt")
    return code


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    distributed.init("cpu", timeout_s=20.0) if mode != "train" else None
    if mode == "ppo":
        run_ppo(out_dir)
    elif mode == "offpolicy":
        run_offpolicy(out_dir)
    elif mode == "norm":
        run_norm(out_dir)
    elif mode == "die":
        run_die(out_dir)
    elif mode == "train":
        sys.exit(run_train(out_dir, sys.argv[3:]))
    distributed.shutdown()
