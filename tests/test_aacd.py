"""AACD (TacSL): the teacher's critic is loaded, frozen (bitwise, no gradient) or fine-tuned, or ignored
(scratch); the actor is new; mismatched teachers are refused; `drl train aacd` without a teacher trains
one first and resumes without redoing it.

Env: drl/CartPoleNoVel-v0 (policy (x, theta), critic the full state); the learning test uses
drl/TestCartPoleGroups-v0 (tests/privileged_fixtures.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
import yaml
from privileged_fixtures import solved_teacher_and_config

from drl import api
from drl.agents.aacd import AACD
from drl.agents.ppo import PPO
from drl.cli import main
from drl.config import ConfigError, merge
from drl.registry import resolve_config
from drl.storage import RolloutBuffer
from envs import make_vec_env

CARTPOLE_ID = "drl/CartPoleNoVel-v0"

SMALL = {"num_steps": 16, "minibatch_size": 64, "num_epochs": 2, "actor_hidden": [16], "critic_hidden": [16],
         "compile": False, "numba_actor": False, "normalize_obs": True, "learning_rate": 3e-3}


def run_config(agent: str, total_steps: int = 512, **algo: Any) -> Any:
    raw = {"agent": agent, "total_steps": total_steps, "device": "cpu", "progress": False, "log_interval": -1,
           "eval_episodes": 2, "eval_interval": 0, "checkpoint_interval": 0,
           "env": {"id": CARTPOLE_ID, "num_envs": 4, "num_eval_envs": 2}, "algo": merge(SMALL, algo)}
    return resolve_config(raw)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A privileged teacher: aac (PPO) with actor and critic on "critic", obs normalisation on."""
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    api.train(run_config("aac", total_steps=1024, actor_obs="critic"), run_dir)
    return run_dir


def space() -> tuple[gym.Space, gym.Space]:
    env = make_vec_env(CARTPOLE_ID, 1)
    spaces = env.single_observation_space, env.single_action_space
    env.close()
    return spaces


def make_aacd(seed: int = 0, **algo: Any) -> AACD:
    cfg = run_config("aacd", **algo).algo
    obs_space, action_space = space()
    torch.manual_seed(seed)
    return AACD(obs_space, action_space, cfg, 4, torch.device("cpu"), torch.Generator().manual_seed(seed))


def rollout(agent: PPO, steps: int = 16, seed: int = 0) -> RolloutBuffer:
    """One rollout of ``agent`` on 4 drl/CartPoleNoVel-v0 envs."""
    env = make_vec_env(CARTPOLE_ID, 4)
    storage = RolloutBuffer(steps, 4, agent.storage_fields())
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action, record = agent.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        storage.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
    env.close()
    return storage


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_critic_and_its_normaliser_are_the_teachers(teacher_dir: Path) -> None:
    teacher, _ = api.load_agent(teacher_dir)
    agent = make_aacd(teacher=str(teacher_dir), critic_mode="finetune")
    assert agent.model.critic[0].in_features == 4 and agent.model.actor_body[0].in_features == 2
    x = torch.randn(32, 4) * 3
    assert torch.equal(agent.model.value(x), teacher.model.value(x))
    mine, theirs = agent.obs_normalizers["critic"], teacher.obs_normalizers["critic"]
    assert theirs.count > 1 and torch.equal(mine.mean, theirs.mean) and torch.equal(mine.var, theirs.var)
    assert torch.equal(mine.normalize(x), theirs.normalize(x))


def test_the_actor_is_new_and_random(teacher_dir: Path) -> None:
    """The actor is PPO's own random initialisation (the same as a plain aac agent built from the same
    seed: loading the teacher neither touches the actor nor draws from the RNG), not the teacher's."""
    teacher, _ = api.load_agent(teacher_dir)
    agent = make_aacd(seed=3, teacher=str(teacher_dir))
    after_aacd = torch.rand(3)
    obs_space, action_space = space()
    torch.manual_seed(3)
    plain = PPO(obs_space, action_space, run_config("aac").algo, 4, torch.device("cpu"))
    assert torch.equal(torch.rand(3), after_aacd)
    for mine, fresh in zip(agent.model.actor_body.parameters(), plain.model.actor_body.parameters(), strict=True):
        assert torch.equal(mine, fresh)
    assert agent.model.actor_body[0].weight.shape == (16, 2) and teacher.model.actor_body[0].weight.shape == (16, 4)
    assert not torch.equal(agent.model.head.logits.weight, teacher.model.head.logits.weight)


def test_frozen_critic_gets_no_gradient_and_stays_bitwise_equal(teacher_dir: Path) -> None:
    agent = make_aacd(teacher=str(teacher_dir), critic_mode="frozen")
    critic_before, actor_before = params(agent.model.critic), params(agent.model.actor_body)
    normaliser_before = agent.obs_normalizers["critic"].mean.clone(), agent.obs_normalizers["critic"].var.clone()
    policy_count = float(agent.obs_normalizers["policy"].count)
    for seed in range(3):
        metrics = agent.update(rollout(agent, seed=seed))
        assert metrics["value_loss"] > 0  # the value loss is computed (and reported), it just trains nothing
    assert all(p.grad is None and not p.requires_grad for p in agent.model.critic.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params(agent.model.critic), critic_before, strict=True))
    assert agent.train_step.params.numel == sum(p.numel() for p in agent.model.actor_body.parameters()) + sum(
        p.numel() for p in agent.model.head.parameters())  # the critic is not in the optimised vector
    assert not all(torch.equal(a, b) for a, b in zip(params(agent.model.actor_body), actor_before, strict=True))
    # the frozen critic's inputs keep the teacher's normalisation; the actor's group is still tracked
    assert torch.equal(agent.obs_normalizers["critic"].mean, normaliser_before[0])
    assert torch.equal(agent.obs_normalizers["critic"].var, normaliser_before[1])
    assert agent.obs_normalizers["policy"].count > policy_count


def test_frozen_critic_keeps_the_teachers_reward_scale(tmp_path: Path) -> None:
    """With normalize_reward the teacher's values are in units of its scaled rewards: the student's reward
    scale starts from the teacher's return statistics; frozen keeps them, finetune goes on updating them."""
    teacher_dir = tmp_path / "teacher"
    api.train(run_config("aac", total_steps=512, actor_obs="critic", normalize_reward=True), teacher_dir)
    teacher, _ = api.load_agent(teacher_dir)
    stats = teacher.reward_scaler.return_stats
    frozen = make_aacd(teacher=str(teacher_dir), critic_mode="frozen", normalize_reward=True)
    storage = rollout(frozen)
    rewards = storage["rewards"].clone()
    frozen.update(storage)
    assert torch.equal(frozen.reward_scaler.return_stats.var, stats.var)
    assert torch.equal(frozen.reward_scaler.return_stats.count, stats.count)
    expected = (rewards / stats.std_as(torch.float32)).clamp(-10.0, 10.0)
    assert torch.equal(frozen.reward_scaler.scale_rollout(rewards, storage["terminated"], storage["truncated"]),
                        expected)
    finetune = make_aacd(teacher=str(teacher_dir), critic_mode="finetune", normalize_reward=True)
    assert torch.equal(finetune.reward_scaler.return_stats.var, stats.var)
    finetune.update(rollout(finetune))
    assert finetune.reward_scaler.return_stats.count > stats.count
    with pytest.raises(ConfigError, match="normalize_reward True vs False here"):
        make_aacd(teacher=str(teacher_dir))


def test_finetuned_critic_moves_at_its_own_learning_rate(teacher_dir: Path) -> None:
    """One Adam step from zero moments moves every coordinate by lr * g / (|g| + eps) ~= lr: the critic's
    by critic_learning_rate, the actor's by learning_rate."""
    agent = make_aacd(teacher=str(teacher_dir), critic_mode="finetune", critic_learning_rate=1e-4,
                      learning_rate=1e-3, num_epochs=1, minibatch_size=64, max_grad_norm=1e9)
    critic_before, actor_before = params(agent.model.critic), params(agent.model.actor_body)
    agent.update(rollout(agent))
    critic_step = max((a - b).abs().max().item() for a, b in zip(params(agent.model.critic), critic_before,
                                                                  strict=True))
    actor_step = max((a - b).abs().max().item() for a, b in zip(params(agent.model.actor_body), actor_before,
                                                                strict=True))
    # |step| <= lr for every coordinate (float32 rounding aside), near lr where |g| >> eps = 1e-5
    assert 0.9e-4 < critic_step <= 1e-4 * (1 + 1e-3) and 0.9e-3 < actor_step <= 1e-3 * (1 + 1e-3)
    names = agent.train_step.params.names
    rates = dict(zip(names, agent.train_step.params.views(agent.train_step.lr), strict=True))
    assert all(torch.allclose(rate, torch.full_like(rate, 1e-4 if name.startswith("critic.") else 1e-3), rtol=1e-6,
                              atol=0) for name, rate in rates.items())
    agent.train_step.set_learning_rate(5e-4)  # annealing scales both, keeping their ratio
    assert sorted(agent.train_step.lr.unique().tolist()) == pytest.approx([5e-5, 5e-4], rel=1e-6)


def test_finetune_without_its_own_rate_trains_the_critic_like_ppo(teacher_dir: Path) -> None:
    agent = make_aacd(teacher=str(teacher_dir), critic_mode="finetune")
    before = params(agent.model.critic)
    agent.update(rollout(agent))
    assert agent.train_step.params.numel == sum(p.numel() for p in agent.model.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(params(agent.model.critic), before, strict=True))


def test_scratch_ignores_the_teacher(tmp_path: Path) -> None:
    """scratch = plain asymmetric PPO: the critic is the random one a plain aac agent gets from the same
    seed, and the teacher is not even read (a missing folder is no error)."""
    agent = make_aacd(seed=5, critic_mode="scratch", teacher=str(tmp_path / "no-such-run"))
    obs_space, action_space = space()
    torch.manual_seed(5)
    plain = PPO(obs_space, action_space, run_config("aac").algo, 4, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(agent.model.parameters(), plain.model.parameters(), strict=True))


def test_teacher_errors(tmp_path: Path, teacher_dir: Path) -> None:
    with pytest.raises(ConfigError, match="algo.teacher.*--teacher RUN_DIR"):
        make_aacd(critic_mode="frozen")
    with pytest.raises(ConfigError, match="algo.teacher.*cannot load the teacher run"):
        make_aacd(teacher=str(tmp_path / "nothing"))
    other = tmp_path / "other"  # a plain PPO teacher: critic on "policy", other widths, no normalisation
    api.train(run_config("ppo", total_steps=64, critic_hidden=[8], normalize_obs=False, activation="relu"), other)
    with pytest.raises(ConfigError) as err:
        make_aacd(teacher=str(other))
    message = str(err.value)
    assert message.startswith("config key 'algo.teacher'") and "\n" not in message
    assert "critic reads obs group 'policy', this one 'critic'" in message
    assert "critic_hidden [8] vs [16]" in message and "activation 'relu' vs 'tanh'" in message
    assert "normalize_obs False vs True" in message
    with pytest.raises(ConfigError, match="critic_learning_rate.*only a fine-tuned critic"):
        run_config("aacd", critic_learning_rate=1e-3)
    with pytest.raises(ConfigError, match="algo.actor_obs"):
        run_config("aacd", actor_obs="critic")


# --- a recurrent student actor ---------------------------------------------------------------
GRU = {"rnn_type": "gru", "rnn_hidden_size": 8, "seq_len": 16}  # num_steps 16, minibatch 64: 4 chunks


def test_teacher_config_has_no_memory_even_for_a_recurrent_student() -> None:
    from drl.agents.aacd import teacher_config

    cfg = run_config("aacd", teacher_steps=256, **GRU)
    teacher = teacher_config(cfg)
    assert cfg.algo.rnn_type == "gru" and cfg.algo.recurrent and not cfg.algo.critic_recurrent
    assert teacher.agent == "aac" and teacher.total_steps == 256
    assert teacher.algo.rnn_type == "none" and not teacher.algo.recurrent and not teacher.algo.critic_recurrent
    assert teacher.algo.actor_obs == teacher.algo.critic_obs == "critic"
    assert teacher.algo.rnn_hidden_size == 8  # the other PPO fields are the student's


def test_frozen_critic_with_a_gru_actor(teacher_dir: Path) -> None:
    """rnn_type gru, critic on "critic" (rnn_critic auto: no critic core): the teacher's feed-forward
    critic is loaded and stays bitwise unchanged with no gradient, while the actor's GRU core and body
    train; the optimised vector is exactly actor_rnn + actor_body + head."""
    teacher, _ = api.load_agent(teacher_dir)
    agent = make_aacd(teacher=str(teacher_dir), critic_mode="frozen", **GRU)
    model = agent.model
    assert model.critic_rnn is None and model.actor_rnn is not None and not agent.train_step.compiled
    x = torch.randn(32, 4) * 3
    assert torch.equal(model.value(x), teacher.model.value(x))
    critic_before, rnn_before, body_before = params(model.critic), params(model.actor_rnn), params(model.actor_body)
    for seed in range(3):
        agent.update(rollout(agent, seed=seed))
    assert all(p.grad is None and not p.requires_grad for p in model.critic.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params(model.critic), critic_before, strict=True))
    assert torch.equal(model.value(x), teacher.model.value(x))
    # every tensor of the GRU core moves (weights and biases of both layers' gates)
    assert not any(torch.equal(a, b) for a, b in zip(params(model.actor_rnn), rnn_before, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(params(model.actor_body), body_before, strict=True))
    actor_side = [model.actor_rnn, model.actor_body, model.head]
    assert agent.train_step.params.numel == sum(p.numel() for m in actor_side for p in m.parameters())
    assert {name.split(".")[0] for name in agent.train_step.params.names} == {"actor_rnn", "actor_body", "head"}


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_a_recurrent_critic_cannot_be_transferred(mode: str) -> None:
    with pytest.raises(ConfigError) as err:
        run_config("aacd", critic_mode=mode, rnn_critic=True, **GRU)
    message = str(err.value)
    assert message.startswith("config key 'algo.rnn_critic'") and message.count("config key") == 1
    assert f"critic_mode '{mode}'" in message and "\n" not in message
    run_config("aacd", critic_mode="scratch", rnn_critic=True, **GRU)  # a new critic may have memory


def test_a_recurrent_teacher_critic_is_refused_before_stage_one() -> None:
    """teacher_algo may give the teacher memory, but with rnn_critic auto its critic (on the actor's group)
    would be recurrent too: refused at config time, before stage 1 trains it."""
    from drl.agents.aacd import teacher_config

    with pytest.raises(ConfigError, match=r"^config key 'algo.teacher_algo': rnn_type 'gru' gives the teacher a "
                                          "recurrent critic"):
        run_config("aacd", teacher_algo={"rnn_type": "gru"})
    cfg = run_config("aacd", teacher_algo={"rnn_type": "gru", "rnn_critic": False})
    teacher = teacher_config(cfg).algo
    assert teacher.rnn_type == "gru" and teacher.recurrent and not teacher.critic_recurrent


def test_a_teacher_with_a_recurrent_critic_is_refused(tmp_path: Path) -> None:
    """A privileged teacher with a GRU (actor and critic on "critic": rnn_critic auto gives the critic a
    core) cannot hand its critic to a feed-forward one: one error, naming only that difference."""
    teacher_dir = tmp_path / "gru-teacher"
    api.train(run_config("aac", total_steps=64, actor_obs="critic", **GRU), teacher_dir)
    teacher, _ = api.load_agent(teacher_dir)
    assert teacher.model.critic_rnn is not None
    for mode in ("frozen", "finetune"):
        with pytest.raises(ConfigError) as err:
            make_aacd(teacher=str(teacher_dir), critic_mode=mode, **GRU)
        assert str(err.value) == (f"config key 'algo.teacher': the critic of teacher run '{teacher_dir}' does not "
                                  "fit this config: its critic is recurrent (gru), AACD transfers a feed-forward one")


def stamps_of(run_dir: Path) -> dict[Path, int]:
    """Modification times of a run's files (its lock file aside: resuming takes the lock)."""
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".drl.lock"}


def test_chained_run_trains_the_teacher_first_then_resumes_without_redoing_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "aacd"
    cfg = run_config("aacd", total_steps=256, teacher_steps=512)
    api.train(cfg, run_dir)
    teacher_dir = run_dir / "teacher"
    teacher_summary = yaml.safe_load((teacher_dir / "summary.json").read_text())
    assert teacher_summary["agent"] == "aac" and teacher_summary["steps"] == 512
    teacher_cfg = yaml.safe_load((teacher_dir / "config.yaml").read_text())
    assert teacher_cfg["algo"]["actor_obs"] == "critic" and teacher_cfg["algo"]["critic_obs"] == "critic"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["algo"]["teacher"] == str(teacher_dir)
    agent, _ = api.load_agent(run_dir, "latest")
    teacher, _ = api.load_agent(teacher_dir)
    x = torch.randn(8, 4)
    assert torch.equal(agent.model.value(x), teacher.model.value(x))  # frozen through stage 2
    stamps = stamps_of(teacher_dir)

    summary = api.resume(run_dir, total_steps=512)  # extend stage 2
    assert summary["steps"] == 512
    assert stamps_of(teacher_dir) == stamps


def test_chained_run_finds_its_teacher_from_another_folder_and_after_a_move(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chained run records its teacher as an absolute path (not relative to the working folder), and a
    run folder moved elsewhere still evaluates and resumes: its teacher is its own ``<run>/teacher``."""
    import shutil

    monkeypatch.chdir(tmp_path)
    api.train(run_config("aacd", total_steps=128, teacher_steps=128), Path("rel") / "aacd")
    saved = yaml.safe_load((tmp_path / "rel" / "aacd" / "config.yaml").read_text())
    assert saved["algo"]["teacher"] == str(tmp_path / "rel" / "aacd" / "teacher")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "rel" / "aacd", moved)
    monkeypatch.chdir(moved)  # neither the old place nor the old working folder
    assert api.evaluate(moved, episodes=1)["episodes"] == 1
    assert api.resume(moved, total_steps=256)["steps"] == 256


def test_rerun_after_stage_one_reuses_the_finished_teacher(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Stage 1 done, stage 2 never started (e.g. interrupted between them): the same train command with
    the same run folder continues, and the finished teacher is not retrained."""
    from drl.agents.aacd import teacher_config

    run_dir = tmp_path / "aacd"
    cfg = run_config("aacd", total_steps=128, teacher_steps=256)
    api.train(teacher_config(cfg), run_dir / "teacher")
    stamps = stamps_of(run_dir / "teacher")
    api.train(cfg, run_dir)
    assert "continuing the teacher run" in capsys.readouterr().err
    assert stamps_of(run_dir / "teacher") == stamps
    assert yaml.safe_load((run_dir / "summary.json").read_text())["steps"] == 128


def test_stop_in_stage_one_names_the_command_that_continues_both_stages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C while the teacher trains: the line printed names the train command that continues stage 1 and
    then runs stage 2 (not a --resume of the teacher alone, which would never run stage 2), and a --resume
    of the half-made run folder says the same in one line."""
    import signal

    from drl.runners.base import Runner

    end_iteration = Runner._end_iteration

    def stop_after_one(runner: Runner) -> None:
        end_iteration(runner)
        runner.stop.request(signal.SIGINT)

    monkeypatch.setattr(Runner, "_end_iteration", stop_after_one)
    run_dir = tmp_path / "chain"
    argv = ["train", "aacd", "--env", CARTPOLE_ID, "--steps", "64", "--num-envs", "4", "--no-progress", "--set",
            "algo.teacher_steps=128", "--set", "algo.num_steps=16", "--set", "algo.minibatch_size=64",
            "--run-dir", str(run_dir), "--overwrite"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    rerun = argv[:-3] + ["--run-dir", str(run_dir)]  # --overwrite would retrain the teacher
    assert err.endswith(f"continue with the same command: drl {' '.join(rerun)}"), err
    assert not (run_dir / "config.yaml").exists() and (run_dir / "teacher" / "config.yaml").is_file()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds only the teacher (stage 1) of an aacd run" in err and "\n" not in err, err


def test_the_readme_teacher_command_fits_the_tuned_aacd_config() -> None:
    """README: `drl train aac ... --set algo.actor_obs=critic --run-dir runs/t`, then `drl train aacd --teacher
    runs/t`: the teacher that command trains has the critic the tuned aacd config loads."""
    import shlex

    from drl.config import parse_overrides

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    start = f"drl train aac --env {CARTPOLE_ID} --set algo.actor_obs"
    line = next(x for x in readme.splitlines() if x.startswith(start))
    words = shlex.split(line.split("#")[0])
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    teacher = api.load_config("aac", CARTPOLE_ID, overrides=parse_overrides(sets)).algo
    student = api.load_config("aacd", CARTPOLE_ID).algo
    for name in ("critic_hidden", "activation", "normalize_obs", "gamma", "normalize_reward"):
        assert getattr(teacher, name) == getattr(student, name), name
    assert teacher.actor_obs == teacher.critic_obs == student.critic_obs


def test_a_bad_teacher_algo_is_refused_before_anything_runs_naming_its_key() -> None:
    """Stage 1's config (the PPO fields with teacher_algo over them) is checked with the run's: the error
    names algo.teacher_algo (not the stage-2 key of the same name), before a run folder is claimed."""
    with pytest.raises(ConfigError, match="config key 'algo.teacher_algo': .*minibatch_size.*got 100"):
        run_config("aacd", teacher_algo={"minibatch_size": 100})
    run_config("aacd", teacher="x", teacher_algo={"minibatch_size": 100})  # a given teacher: no stage 1


def test_cli_teacher_flag(tmp_path: Path, teacher_dir: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--env", CARTPOLE_ID, "--steps", "64", "--num-envs", "4", "--no-progress", "--set",
              "algo.num_steps=16", "--set", "algo.minibatch_size=64", "--set", "algo.actor_hidden=[16]", "--set",
              "algo.critic_hidden=[16]", "--set", "algo.normalize_obs=true", "--set", "eval_episodes=1",
              "--set", "algo.gamma=0.99"]  # the teacher's gamma (the tuned config has 0.98)
    run_dir = tmp_path / "cli"
    assert main(["train", "aacd", "--teacher", str(teacher_dir), "--run-dir", str(run_dir), *common]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algo"]["teacher"] == str(teacher_dir)
    assert not (run_dir / "teacher").exists()
    assert main(["train", "ppo", "--teacher", str(teacher_dir), "--run-dir", str(tmp_path / "ppo"), *common]) == 2
    assert "--teacher: agent 'ppo' learns without a teacher run; agents that take one: ['aacd', 'dagger']" in (
        capsys.readouterr().err)


def test_frozen_aacd_learns_cartpole(tmp_path: Path) -> None:
    """The new actor learns with the teacher's frozen critic alone (seed 0; seeds 0-2 all passed while
    choosing the budget: best evaluations 492, 456, 500 within 40k steps)."""
    _, cfg = solved_teacher_and_config(tmp_path, "aacd", 40_000, critic_mode="frozen")
    _, summary = api.train(cfg, tmp_path / "aacd")
    assert summary["best_eval_return"] >= 400


def test_benchmark_summary_hand_values() -> None:
    """benchmarks/aacd.py: final eval = the last evaluation (median, min, max over seeds); steps to the
    threshold = the first evaluation at or above it (median over the seeds that reached it)."""
    from benchmarks.aacd import summarise

    def run(variant: str, seed: int, returns: list[float]) -> dict[str, Any]:
        return {"variant": variant, "seed": seed, "points": [{"step": 100 * (i + 1), "eval_return": r}
                                                             for i, r in enumerate(returns)]}

    runs = [run("teacher", 0, [5, 50]), run("frozen", 0, [10, 60, 40]), run("frozen", 1, [20, 30, 70]),
            run("frozen", 2, [0, 10, 20]), {"variant": "dagger", "seed": 0, "error": "boom"}]
    teacher, frozen, dagger = summarise(runs, ["frozen", "dagger"], threshold=50.0)
    assert teacher["final_median"] == 50 and teacher["median_steps_to_threshold"] == 200
    assert (frozen["seeds"], frozen["final_median"], frozen["final_min"], frozen["final_max"]) == (3, 40, 20, 70)
    assert frozen["reached"] == 2 and frozen["median_steps_to_threshold"] == 250  # seeds 0 (200) and 1 (300)
    assert dagger["seeds"] == 0 and dagger["errors"] == 1 and dagger["final_median"] is None


def agent_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from drl.checkpoint import load_checkpoint

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(tree, dict):
            return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix: tree}

    return flat(load_checkpoint(run_dir / "checkpoints" / "latest.pt")["agent_state"])


@pytest.mark.parametrize("agent", ["aacd", "aacd-gru", "dagger"])
def test_resume_is_bitwise(tmp_path: Path, teacher_dir: Path, agent: str) -> None:
    """Half a run, resumed to the end, ends in the uninterrupted run's exact agent state (the teacher is
    re-read on resume without touching the RNG streams; aacd-gru: a frozen critic with a GRU actor, whose
    hidden states and optimised vector are part of the state)."""
    algo = {"teacher": str(teacher_dir)} if agent == "aacd" else {
        "teacher": str(teacher_dir), "num_steps": 16, "num_updates": 3, "minibatch_size": 32}
    if agent == "aacd-gru":
        agent, algo = "aacd", {"teacher": str(teacher_dir), **GRU}
    if agent == "dagger":
        raw = {"agent": "dagger", "total_steps": 256, "device": "cpu", "progress": False, "log_interval": -1,
               "eval_episodes": 1, "eval_interval": 0, "checkpoint_interval": 0,
               "env": {"id": CARTPOLE_ID, "num_envs": 4, "num_eval_envs": 1}, "algo": algo}
        full_cfg, half_cfg = resolve_config(raw), resolve_config({**raw, "total_steps": 128})
    else:
        full_cfg, half_cfg = run_config(agent, total_steps=256, **algo), run_config(agent, total_steps=128, **algo)
    api.train(full_cfg, tmp_path / "full")
    api.train(half_cfg, tmp_path / "half")
    api.resume(tmp_path / "half", total_steps=256)
    full, resumed = agent_state(tmp_path / "full"), agent_state(tmp_path / "half")
    assert full.keys() == resumed.keys()
    for key, value in full.items():
        assert torch.equal(value, resumed[key]) if isinstance(value, torch.Tensor) else value == resumed[key], key
