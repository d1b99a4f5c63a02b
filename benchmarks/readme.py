"""Copy the committed benchmark reports into README.md, so its numbers are never typed by hand.

    python -m benchmarks.readme

Each README block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is replaced by the
report ``benchmarks/results/NAME/report.md`` (its first heading dropped, other headings demoted, and
relative image links rewritten to point into the results folder).

A report registered in :data:`BLOCKS` whose block is not in the README yet gets one, with its
heading and introduction, right after the block named by its ``after``, the first time the report
exists (never a placeholder for a benchmark that has not run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Block:
    """A README section for one committed report.

    Args:
        after: the block (``NAME`` of ``<!-- /bench:NAME -->``) the new section follows.
        heading: the section's Markdown heading.
        intro: one paragraph above the block (what ran, and the command that regenerates it).
    """

    after: str
    heading: str
    intro: str


BLOCKS: dict[str, Block] = {
    "rslrl": Block(
        after="full", heading="### Batched-env PPO side by side with rsl_rl (CPU)",
        intro="PPO on drl's torch-batched `drl/Pendulum-v0` and MuJoCo Warp `drl/HalfCheetah-v0` with 1024 and "
              "4096 envs, drl vs rsl_rl (rsl-rl-lib) with the same settings, 3 seeds (issue 19: drl >= 1.5x rsl_rl's "
              "steps/s at equal return within seed noise; met on Pendulum, 1.82x at 1024 envs and 1.93x at 4096 with "
              "returns within seed noise; not met on HalfCheetah, 1.06x and 1.06x, where the MuJoCo Warp CPU step "
              "both libraries share takes most of the time). drl sets rsl_rl's fixed choices here (gradient norms "
              "clipped per network, Adam eps 1e-8, PyTorch's init; see PPO's optimiser choices above): "
              "`python -m benchmarks.run --suite rslrl`."),
    "ppo_profile": Block(
        after="rslrl", heading="### Where a batched PPO iteration spends its time, drl vs rsl_rl (CPU)",
        intro="The rsl_rl rows' setting, phase by phase, in thread CPU time per env step: `python -m "
              "benchmarks.ppo_profile`. On MuJoCo Warp `drl/HalfCheetah-v0` the env step, which both libraries "
              "share, takes 87-92% of the time, so even a learner that cost nothing would be at most 1.22x "
              "rsl_rl at 1024 envs and 1.29x at 4096: issue 19's 1.5x cannot be reached there on the CPU by "
              "the learner."),
    "offpolicy": Block(
        after="full", heading="### SAC side by side with Stable-Baselines3",
        intro="SB3's default SAC hyperparameters on both sides, one env, HalfCheetah-v5 at 25,000 steps, 3 seeds "
              "(target: drl >= 1.5x SB3's end-to-end steps/s, return not worse beyond seed noise), with the floor "
              "of the SAC update: `python -m benchmarks.run --suite offpolicy --only sac-halfcheetah --floor "
              "--out benchmarks/results/offpolicy`."),
    "offpolicy_td3": Block(
        after="offpolicy", heading="### TD3 side by side with Stable-Baselines3",
        intro="SB3's default TD3 hyperparameters on both sides (plus Gaussian exploration noise 0.1 on both), one "
              "env, HalfCheetah-v5 at 25,000 steps, 3 seeds: `python -m benchmarks.run --suite offpolicy --only "
              "td3-halfcheetah --out benchmarks/results/offpolicy_td3`."),
    "pendulum_solve": Block(
        after="offpolicy_td3", heading="### Wall-clock to solve Pendulum: SB3 SAC vs drl SAC vs drl's parallel mode",
        intro="Training seconds until the evaluation return reaches -200 on one CPU core (target: the parallel mode "
              "on `drl/Pendulum-v0` >= 10x sooner than SB3): `python -m benchmarks.pendulum_solve --only sb3-sac "
              "drl-sac drl-sac-parallel drl-td3-parallel --steps 10000`."),
    "offpolicy_quality": Block(
        after="pendulum_solve", heading="### SAC and TD3 learning quality on MuJoCo at 300k steps",
        intro="drl's SAC and TD3 with the rl-baselines3-zoo hyperparameters (`configs/sac/`, `configs/td3/`) on "
              "HalfCheetah-v5 and Hopper-v5, 300,000 env steps, 3 seeds, against published SAC/TD3 figures at the "
              "same step count (sources and how each figure was read are in the table): `python -m "
              "benchmarks.offpolicy_quality run --out RUNS --nice 19` (about an hour of one CPU core per run), then "
              "`python -m benchmarks.offpolicy_quality report --runs RUNS`."),
    "masked_velocity": Block(
        after="offpolicy_quality", heading="### Masked-velocity tasks: asymmetric and recurrent PPO",
        intro="PPO on `drl/CartPoleNoVel-v0` and `drl/PendulumNoVel-v0` (the policy sees positions only), four "
              "variants from one tuned config per task at equal env steps: feed-forward actor and critic on "
              "`\"policy\"` (`ppo`), the critic on the privileged `\"critic\"` group (`aac`), and both with a GRU "
              "actor (`ppo-gru`, `aac-gru`); 5 seeds (issue 10: asymmetric beats symmetric, the recurrent actor "
              "beats the feed-forward one): `python -m benchmarks.masked_velocity --seeds 5`."),
    "aacd": Block(
        after="masked_velocity", heading="### AACD: critic transfer vs asymmetric PPO from scratch vs DAgger",
        intro="Per seed one privileged teacher (stage 1), then a new actor on `\"policy\"` for the same env steps "
              "with the teacher's critic frozen, fine-tuned, or a random critic (TacSL's ordering: frozen learns "
              "fastest, fine-tuned ends best, scratch is slowest), and a DAgger student of the same teacher; 5 "
              "seeds: `python -m benchmarks.aacd --env drl/CartPoleNoVel-v0 --seeds 5`. The AACD and scratch "
              "students are the GRU actor of `configs/aacd/drl-CartPoleNoVel-v0.yaml` (a memoryless actor cannot "
              "balance on positions only); the DAgger student is feed-forward (`dagger` has no recurrent option "
              "yet), so its row shows what imitation without memory reaches, not DAgger at its best. A frozen "
              "critic keeps the values of the teacher's policy, not the student's."),
    "active_search": Block(
        after="aacd", heading="### ActiveSearch: AAWR vs symmetric AWR vs BC",
        intro="Success rate on `drl/ActiveSearch-v0` after the same offline phase on the scripted, suboptimal "
              "demonstrator's episodes and the same online budget, 5 seeds (the paper's simulated tasks show "
              "roughly 95% / 45% / 25%): `python -m benchmarks.active_search --seeds 5`."),
    "shaping": Block(
        after="active_search", heading="### Behaviour-aligned shaping (BARFI) vs naive shaping",
        intro="PPO on `drl/CartPole-v0` with a helpful heuristic (`cartpole_upright`) and a misaligned one "
              "(`step_penalty`, cost 2): the env's reward only, the naive sum with fixed weights, and the "
              "`barfi` wrapper's learned blend weights (the shaped two with reward normalisation, and the unshaped "
              "config with it as a control), at equal env steps, 5 seeds (issue 14: naive shaping "
              "hurts the primary return, BARFI matches or beats the unshaped baseline): `python -m "
              "benchmarks.shaping --seeds 5`."),
    "exploration": Block(
        after="shaping", heading="### Exploration bonuses on sparse rewards",
        intro="PPO alone vs PPO with the `bonus` wrapper (RND, episodic counts, E3B, RND x E3B) at equal env "
              "steps, 3 seeds (issue 14: on MountainCarContinuous PPO alone stays near 0 and PPO with a bonus "
              "reaches >= 90; the MiniGrid tasks follow): `python -m benchmarks.exploration --env "
              "drl/MountainCarContinuous-v0 --seeds 3`."),
    "exploration_doorkey": Block(
        after="exploration", heading="### Exploration bonuses on MiniGrid DoorKey-8x8",
        intro="The same script on MiniGrid-DoorKey-8x8-v0 (the 7x7 partial view flattened, PPO with an MLP), PPO "
              "alone vs the combined global x episodic bonus, 1M env steps, 3 seeds (issue 14: PPO + the combined "
              "bonus solves it sooner, or at all; not met here: PPO alone solves DoorKey-8x8 within the budget "
              "and the bonus slows it): `python -m benchmarks.exploration --env MiniGrid-DoorKey-8x8-v0 "
              "--seeds 3 --only ppo rnd-e3b --out benchmarks/results/exploration_doorkey`."),
    "exploration_multiroom": Block(
        after="exploration_doorkey", heading="### Exploration bonuses on MiniGrid MultiRoom-N4-S5",
        intro="MiniGrid-MultiRoom-N4-S5-v0 (four rooms, three doors), PPO alone vs the combined bonus, 500k env "
              "steps, 3 seeds (issue 14): `python -m benchmarks.exploration --env MiniGrid-MultiRoom-N4-S5-v0 "
              "--seeds 3 --only ppo rnd-e3b --steps 500000 --out benchmarks/results/exploration_multiroom`. "
              "(On MultiRoom-N2-S4 PPO alone already passes the threshold at its first evaluation, 49k steps, so "
              "that task cannot show a bonus's effect.)"),
    "bonus_cost": Block(
        after="exploration_multiroom", heading="### Per-step cost of the shaping and bonus wrappers",
        intro="Seconds per vectorised step of each wrapper next to the bare env and one pass of PPO's default "
              "critic, on `drl/CartPole-v0` with 4096 envs and HalfCheetah-v5 with one env, one torch thread "
              "(issue 14's targets: under 15% for shaping and counts, under one critic pass for RND / E3B; not "
              "met): `python -m benchmarks.bonus_cost`."),
    "subpo": Block(
        after="exploration", heading="### SubPO vs modular RL vs greedy on coverage tasks",
        intro="F (the submodular objective) of a whole episode for SubPO, the modular-RL baseline (the same "
              "config with the wrapper's `modular` switch) and a one-step greedy planner with known dynamics, on "
              "the coverage gridworld (GP-weighted coverage and GP log-det) and the continuous point mass, 3 "
              "seeds (issue 17: SubPO beats modular RL on every task), and the wrappers' steps/s at 4096 envs: "
              "`python -m benchmarks.subpo --seeds 3`."),
    "happo": Block(
        after="subpo", heading="### HAPPO vs MAPPO on multi-agent MuJoCo",
        intro="HAPPO (sequential actor updates with the compounding factor) and MAPPO (simultaneous) on the same "
              "HARL-tuned configs, MaMuJoCo HalfCheetah 2x3 and Walker2d 2x3 at 200,000 env steps (HARL's curves "
              "are at 1e7), 3 seeds, with HARL's published returns at 1e7 steps as reference rows (issue 13). At "
              "this budget Walker2d 2x3 has barely started to learn under either scheme: `python -m "
              "benchmarks.happo --envs mamujoco:HalfCheetah-2x3 --seeds 3 --steps 200000`, then `python -m "
              "benchmarks.happo --envs mamujoco:Walker2d-2x3 --seeds 3 --steps 200000 --append`."),
    "multi_agent_speed": Block(
        after="happo", heading="### Multi-agent env steps/s next to single-agent, same robot",
        intro="Env steps/s of the multi-agent paths (MaMuJoCo HalfCheetah 2x3 through the PettingZoo adapter; the "
              "MJWarp partition `drl/HalfCheetah-2x3-v0`) next to single-agent HalfCheetah on the same machine and "
              "num_envs, random actions, one torch thread, machine otherwise idle (issue 13). On the CPU part of "
              "the gap is MaMuJoCo's own step: gymnasium-robotics' `parallel_env` alone, one copy, ran at about "
              "0.6x gymnasium's HalfCheetah-v5 here; the rest is drl's PettingZoo adapter: `python -m "
              "benchmarks.multi_agent_speed`."),
    "camrl": Block(
        after="happo", heading="### CAMRL vs independent, shared and always-asymmetric learners",
        intro="CAMRL and its three baselines (the `algo.mode` switches of one config) on the torch-batched "
              "`drl/MT-CartPole-v0` family at equal env steps, 3 seeds (issue 16: CAMRL at least matches the best "
              "baseline and beats the no-mode-switch ablation; the MiniGrid and Meta-World MT10 suites are not run "
              "yet): `python -m benchmarks.camrl --only cartpole`."),
    "competitive": Block(
        after="camrl", heading="### Competitive HAPPO on PursuitEvasion: win rates against a frozen league",
        intro="Both teams of `happo-competitive` (simultaneous schedule) against the frozen snapshots of the other "
              "team and the env's scripted opponents over training, 3 seeds at 320,000 env steps (issue 13: both "
              "teams improve against the frozen league): `python -m benchmarks.competitive --seeds 3 --steps "
              "320000 --schedules simultaneous`."),
    "rarl": Block(
        after="competitive", heading="### RARL vs PPO: robustness to mass and friction errors",
        intro=("The RARL protagonist (trained against a force-applying adversary, alternating updates) and PPO "
               "with the same protagonist env steps, swept over body-mass and friction scales without the "
               "adversary, 3 seeds (issue 12: RARL's mean and worst case over the mass sweep at least PPO's, "
               "nominal return not worse beyond seed noise). On Hopper, RARL with a 5 N adversary "
               "(`adv_fraction: 1.0`, chosen after a one-seed probe on seed 0, rerun with `--append`, so the PPO "
               "runs come from an earlier commit with the same defaults) has the higher nominal return and less "
               "spread over seeds, within seed noise over 3 seeds; its mass-sweep mean and worst point are "
               "within seed noise of PPO's and slightly below them, so the claim is not met yet: "
               "`python -m benchmarks.rarl --seeds 3 --out "
               "benchmarks/results/rarl`, then `python -m benchmarks.rarl --envs Hopper-v5 --only rarl --seeds 3 "
               "--append --out benchmarks/results/rarl`.")),
    "embedding_reward": Block(
        after="competitive", heading="### Embedding-similarity reward from goal demos on PandaReach",
        intro="PPO trained only on the `embedding_reward` wrapper's reward (an encoder trained on the scripted "
              "expert's demos; the goal is the demos' final embedding) vs the untrained policy and a random one, "
              "success rate, 3 seeds (issue 15): `python -m benchmarks.embedding_reward --seeds 3`."),
    "tune_study": Block(
        after="embedding_reward", heading="### A small `drl tune` study: PPO on CartPole-v1",
        intro="20 Optuna trials (TPE, median pruning) of 50,000 env steps, then the default and the tuned config "
              "on fresh seeds (issue 18): `python -m benchmarks.tune_study`."),
    "distributed": Block(
        after="tune_study", heading="### Distributed training: 1 vs 2 processes (torchrun, gloo)",
        intro="PPO and SAC on `drl/Pendulum-v0` with their tuned configs, `env.num_envs` envs per process and the "
              "same total env steps for every process count, 3 seeds (issue 18): training env steps/s of all "
              "processes together, the scaling efficiency and the final return: `python -m "
              "benchmarks.distributed`. This machine has 2 cores, so 2 processes is its ceiling, and its gloo "
              "collectives take 0.3-1.5 ms of wall-clock each (loopback wake-ups; one gradient all-reduce per "
              "minibatch step, plus one per epoch for PPO's advantage statistics), which holds PPO's 2-process "
              "efficiency near 0.5 here."),
}


def report_block(name: str) -> str:
    folder = Path("benchmarks/results") / name
    report = ROOT / folder / "report.md"
    if not report.is_file():
        return f"_not run yet: `{folder / 'report.md'}` is missing_"
    lines = report.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = []
    for line in lines:
        if line.startswith("#"):
            line = "#" + line  # demote: the README's own section is the parent
        line = re.sub(r"!\[([^\]]*)\]\((?!http)([^)]+)\)", lambda m: f"![{m[1]}]({(folder / m[2]).as_posix()})", line)
        out.append(line)
    return "\n".join(out).strip()


def add_registered(text: str, blocks: dict[str, Block] | None = None, root: Path = ROOT) -> str:
    """``text`` with an empty block (heading, intro, markers) for each registered report that exists
    under ``root/benchmarks/results`` and has no block yet, after its ``after`` block (or at the end)."""
    blocks = BLOCKS if blocks is None else blocks
    for name, block in blocks.items():
        if f"<!-- bench:{name} -->" in text or not (root / "benchmarks" / "results" / name / "report.md").is_file():
            continue
        section = f"{block.heading}\n\n{block.intro}\n\n<!-- bench:{name} -->\n<!-- /bench:{name} -->\n"
        after, seen = block.after, {name}
        while f"<!-- /bench:{after} -->" not in text and after in blocks and after not in seen:  # not in yet: go up
            seen.add(after)
            after = blocks[after].after
        anchor = f"<!-- /bench:{after} -->\n"
        at = text.find(anchor)
        if at < 0:
            text = text.rstrip("\n") + "\n\n" + section
        else:
            at += len(anchor)
            text = text[:at] + "\n" + section + text[at:]
    return text


def update(readme: Path = ROOT / "README.md") -> list[str]:
    text = add_registered(readme.read_text())
    names = re.findall(r"<!-- bench:([\w-]+) -->", text)
    for name in names:
        pattern = re.compile(rf"(<!-- bench:{name} -->).*?(<!-- /bench:{name} -->)", re.S)
        text = pattern.sub(lambda m, n=name: f"{m[1]}\n{report_block(n)}\n{m[2]}", text)
    readme.write_text(text)
    return names


if __name__ == "__main__":
    print("updated README blocks:", ", ".join(update()))
