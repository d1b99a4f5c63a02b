"""Behaviour cloning (drl/agents/bc.py): chunk targets and execution math against hand values, the run folder,
and that BC learns the scripted expert of a small task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from drl import api
from drl.agents.bc import BC, BCConfig, ChunkExecutor, chunk_targets, temporal_ensemble
from drl.cli import main
from drl.config import ConfigError
from drl.registry import AGENTS
from drl.runners.offline_to_online import OfflineToOnlineRunner
from envs import make_vec_env
from envs.tasks.demos import collect_demos, save_demos

ENV = "drl/ActiveSearch-v0"


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_demos(collect_demos(ENV, episodes=20, seed=0, num_envs=4),
                      tmp_path_factory.mktemp("demos") / "search.pt")


def _bc_config(demos: Path, **algo: object) -> object:
    overrides = {"total_steps": 100, "eval_episodes": 4, "checkpoint_interval": 0, "progress": False,
                 "log_interval": -1, "env": {"num_envs": 2, "num_eval_envs": 2},
                 "algo": {"demos": str(demos), "offline_updates": 20, "offline_log_interval": 10, "num_steps": 25,
                          **algo}}
    return api.load_config("bc", ENV, overrides=overrides)


def test_chunk_targets_hand_values() -> None:
    actions = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    targets, mask = chunk_targets(actions, torch.tensor([0, 0, 0, 1, 1]), 3)
    assert targets.squeeze(-1).tolist() == [[1, 2, 3], [2, 3, 0], [3, 0, 0], [4, 5, 0], [5, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, True, False], [True, False, False],
                             [True, True, False], [True, False, False]]


def test_temporal_ensemble_weights_hand_values() -> None:
    """w_j ~ exp(m j) over the ages j of the valid chunks = ACT's exp(-m i) with i = 0 the oldest, normalised."""
    m = 0.5
    history = torch.zeros(1, 3, 3, 1)
    history[0, 0, 0, 0], history[0, 1, 1, 0], history[0, 2, 2, 0] = 1.0, 2.0, 4.0  # predictions for now, by age
    history[0, 1, 0, 0] = history[0, 2, 0, 0] = 100.0  # other steps' predictions are never read now
    full = temporal_ensemble(history, torch.tensor([[True, True, True]]), m)
    expected = (1.0 + 2.0 * math.exp(0.5) + 4.0 * math.exp(1.0)) / (1.0 + math.exp(0.5) + math.exp(1.0))
    act_form = (4.0 + 2.0 * math.exp(-0.5) + 1.0 * math.exp(-1.0)) / (1.0 + math.exp(-0.5) + math.exp(-1.0))
    assert full.item() == pytest.approx(expected, rel=1e-6) and expected == pytest.approx(act_form, rel=1e-12)
    young = temporal_ensemble(history, torch.tensor([[True, True, False]]), m)
    assert young.item() == pytest.approx((1.0 + 2.0 * math.exp(0.5)) / (1.0 + math.exp(0.5)), rel=1e-6)
    assert temporal_ensemble(history, torch.tensor([[True, False, False]]), m).item() == 1.0


def test_chunk_executor_temporal_ensemble_and_episode_starts() -> None:
    m = 0.01
    ex = ChunkExecutor(2, 3, 1, "temporal_ensemble", m, "cpu")
    c0 = torch.tensor([[[1.0], [2.0], [3.0]], [[10.0], [20.0], [30.0]]])
    c1 = c0 + 0.5
    assert ex.act(c0).squeeze(-1).tolist() == [1.0, 10.0]  # only one chunk so far: its first action
    second = ex.act(c1).squeeze(-1)
    w0, w1 = 1.0, math.exp(m)  # the new chunk's action for now (age 0) and c0's second one (age 1)
    assert second[0].item() == pytest.approx((w0 * 1.5 + w1 * 2.0) / (w0 + w1), rel=1e-6)
    ex.end_episodes(torch.tensor([True, False]))  # env 0 starts a new episode: its old chunks are forgotten
    third = ex.act(c0).squeeze(-1)
    assert third[0].item() == 1.0
    w2 = math.exp(2 * m)
    assert third[1].item() == pytest.approx((w0 * 10.0 + w1 * 20.5 + w2 * 30.0) / (w0 + w1 + w2), rel=1e-6)


def test_chunk_executor_open_loop() -> None:
    ex = ChunkExecutor(1, 3, 1, "open_loop", 0.01, "cpu")
    chunks = [torch.tensor([[[10.0 * t + j] for j in range(3)]]) for t in range(6)]  # chunk t: 10t, 10t+1, 10t+2
    executed = [ex.act(chunks[t]).item() for t in range(4)]
    assert executed == [0.0, 1.0, 2.0, 30.0]  # chunk 0 in full, then the chunk predicted at step 3
    ex.end_episodes(torch.tensor([True]))
    assert ex.act(chunks[4]).item() == 40.0  # a new episode starts a new chunk at once
    assert ex.act(chunks[5]).item() == 41.0


@pytest.mark.parametrize("execution", ["temporal_ensemble", "open_loop"])
def test_chunk_executor_peek_is_the_next_act_and_changes_no_state(execution: str) -> None:
    """peek(c) returns what act(c) returns right after, with the state untouched, at every step of an episode
    (fresh, mid-chunk, where a chunk is used up) and after an episode start."""
    ex = ChunkExecutor(2, 3, 2, execution, 0.3, "cpu")
    chunks = torch.randn(7, 2, 3, 2, generator=torch.Generator().manual_seed(0))
    for t in range(7):
        if t == 4:
            ex.end_episodes(torch.tensor([True, False]))
        state = [x.clone() for x in (ex.history, ex.valid, ex.plan, ex.position)]
        peeked = ex.peek(chunks[t])
        assert all(torch.equal(a, b) for a, b in zip(state, (ex.history, ex.valid, ex.plan, ex.position),
                                                     strict=True))
        assert torch.equal(peeked, ex.act(chunks[t]))


def test_bc_rejects_bad_input(tmp_path: Path, demos: Path, capsys: pytest.CaptureFixture) -> None:
    assert AGENTS["bc"].agent_class is BC and AGENTS["bc"].runner_class is OfflineToOnlineRunner
    cfg = api.load_config("bc", ENV, overrides={"progress": False})
    with pytest.raises(ConfigError, match="'algo.demos'.*behaviour cloning needs demonstrations"):
        OfflineToOnlineRunner(cfg, BC, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert main(["train", "bc", "--env", "drl/Pendulum-v0", "--demos", str(demos), "--run-dir",
                 str(tmp_path / "p")]) == 2
    assert "does not match the env" in capsys.readouterr().err
    for algo, key in (({"chunk_size": 0}, "algo.chunk_size"), ({"loss": "l1"}, "algo.loss"),
                      ({"execution": "closed"}, "algo.execution")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            api.load_config("bc", ENV, overrides={"algo": algo})


@pytest.mark.parametrize("algo", [{"chunk_size": 1, "loss": "mse"},
                                  {"chunk_size": 4, "loss": "gaussian", "execution": "open_loop"}])
def test_bc_run_folder_eval_resume(tmp_path: Path, demos: Path, algo: dict) -> None:
    run_dir, summary = api.train(_bc_config(demos, **algo), tmp_path / "bc")
    assert summary["steps"] == 100 and summary["final_eval_return"] is not None
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(float(r.split(",")[0])) for r in rows[1:]]
    assert steps == [-10, 0, 50, 100] and "loss" in header  # two offline rows, then two online ones
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    result = api.evaluate(run_dir, episodes=3)
    assert len(result["returns"]) == 3
    again = api.resume(run_dir)
    assert again["already_finished"]
    agent, _ = api.load_agent(run_dir)
    assert isinstance(agent, BC) and agent.cfg.chunk_size == algo["chunk_size"]
    assert json.loads((run_dir / "summary.json").read_text())["agent"] == "bc"


def test_bc_learns_the_scripted_expert(demos: Path) -> None:
    """BC on 20 episodes of the noisy demonstrator (action noise std 0.4 on 2 dims: a per-step squared error
    floor of about 2 * 0.4^2 = 0.32, less where clipping cuts the noise): the demo loss falls to that floor, and
    the cloned (deterministic) policy succeeds about as often as the demonstrator (48.9%; 20 episodes: +-11%),
    where the untrained policy never does."""
    env = make_vec_env(ENV, 1, "cpu")
    agent = BC(env.single_observation_space, env.single_action_space,
               BCConfig(demos=str(demos)), 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    env.close()
    agent.load_demos()
    from drl.runners.base import evaluate_policy

    eval_env = make_vec_env(ENV, 4, "cpu")
    before = evaluate_policy(agent, eval_env, 20, seed=123)
    first = agent.offline_update(1)["mse"].item()
    for _ in range(15):
        last = agent.offline_update(100)["mse"].item()
    after = evaluate_policy(agent, eval_env, 20, seed=123)
    eval_env.close()
    assert first > 0.45 and last < 2 * 0.4**2
    assert sum(before) / 20 == 0.0
    assert sum(after) / 20 >= 0.4


def test_demos_cli_action_noise_and_env_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`drl demos --action-noise STD --env-kwarg K=V`: the noisy expert's actions are what is recorded (they
    differ from the clean expert's on the same seed), the env kwargs and the noise are in meta."""
    from envs.tasks.demos import load_demos

    clean, noisy = tmp_path / "clean.pt", tmp_path / "noisy.pt"
    assert main(["demos", ENV, "--episodes", "2", "--num-envs", "2", "--out", str(clean),
                 "--env-kwarg", "max_episode_steps=20"]) == 0
    assert main(["demos", ENV, "--episodes", "2", "--num-envs", "2", "--out", str(noisy),
                 "--env-kwarg", "max_episode_steps=20", "--action-noise", "0.5"]) == 0
    a, b = load_demos(clean), load_demos(noisy)
    assert b["meta"]["action_noise"] == 0.5 and b["meta"]["env_kwargs"] == {"max_episode_steps": 20}
    assert a["meta"]["action_noise"] == 0.0 and int(a["episode_index"].bincount().max()) <= 20
    assert not torch.equal(a["actions"][:5], b["actions"][:5]) and bool((b["actions"].abs() <= 1.0).all())
    assert main(["demos", ENV, "--out", str(tmp_path / "x.pt"), "--action-noise", "-1"]) == 2
    assert "--action-noise must be >= 0" in capsys.readouterr().err
