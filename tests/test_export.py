"""Policy export (drl/export.py, each agent's ``export_actor``): the ONNX / TorchScript file, run by onnxruntime
or ``torch.jit.load`` alone, gives the agent's own deterministic actions, obs normaliser and action clip or squash
included; stateful policies and bad arguments are refused with one line."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime
import pytest
import torch

from drl.agents.aawr import AAWR, AAWRConfig
from drl.agents.bc import BC, BCConfig
from drl.agents.camrl import CAMRL, CAMRLConfig
from drl.agents.dagger import DAgger, DAggerConfig
from drl.agents.happo import HAPPO, HAPPOConfig
from drl.agents.ppo import PPO, PPOConfig
from drl.agents.ppo_residual import PPOResidual, PPOResidualConfig
from drl.agents.rarl import RARL, RARLConfig
from drl.agents.residual import Residual, ResidualConfig
from drl.agents.sac import SAC, SACConfig
from drl.agents.td3 import TD3, TD3Config
from drl.cli import main
from drl.export import CHECK_TOLERANCE, export_agent, export_agent_actors, keyed_path
from drl.nn.deploy import ExportError
from drl.registry import AGENTS
from envs import make_vec_env

CPU = torch.device("cpu")
BOX_OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
DICT_OBS = gym.spaces.Dict({"policy": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                            "critic": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)})
BOX_ACT = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32))
DISCRETE = gym.spaces.Discrete(4)
TINY = ["--steps", "512", "--num-envs", "2", "--no-progress", "--device", "cpu", "--set", "algo.num_steps=64",
        "--set", "algo.minibatch_size=64", "--set", "algo.num_epochs=1", "--set", "eval_episodes=2",
        "--set", "env.num_eval_envs=2"]


def _obs(space: gym.Space, n: int = 32) -> torch.Tensor | dict[str, torch.Tensor]:
    """Observations far from the normaliser's initial zero mean / unit variance (so that it matters)."""
    gen = torch.Generator().manual_seed(1)
    if isinstance(space, gym.spaces.Dict):
        return {k: 3.0 + 4.0 * torch.randn((n, *s.shape), generator=gen) for k, s in space.spaces.items()}
    return 3.0 + 4.0 * torch.randn((n, *space.shape), generator=gen)


def _prepare(agent, space: gym.Space, normalizers: list) -> None:
    """Fold skewed statistics into the normalisers and make the actor's outputs large (actions hit the bounds)."""
    obs = _obs(space, 256)
    for rms in normalizers:
        width = rms.mean.numel()
        x = obs if isinstance(obs, torch.Tensor) else next(v for v in obs.values() if v.shape[1] == width)
        rms.update(x.reshape(x.shape[0], -1))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in agent.export_actor().parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.3)


def _run_file(path: Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    """The file alone: onnxruntime on numpy, or torch.jit.load."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["obs"]
        return session.run(None, {"obs": x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in favour of torch.export
        return torch.jit.load(str(path))(x).numpy()


def _check(agent, space: gym.Space, tmp_path: Path, group: str = "policy") -> None:
    obs = _obs(space)
    want = agent.act(obs, deterministic=True, update_stats=False)[0].numpy()
    x = (obs[group] if isinstance(obs, dict) else obs).reshape(32, -1)
    for fmt in ("onnx", "torchscript"):
        path = tmp_path / f"policy.{fmt}"
        export_agent(agent, space, fmt, path)
        got = _run_file(path, fmt, x)
        assert got.dtype == want.dtype and got.shape == want.shape
        # float32 sums in another order (onnxruntime's kernels) differ by rounding, amplified by the perturbed
        # weights: the documented tolerance of drl.export's own check
        np.testing.assert_allclose(got, want, rtol=0, atol=CHECK_TOLERANCE * (1 + np.abs(want).max()))
    assert len(np.unique(want, axis=0)) >= 3  # not a constant policy: the comparison can fail


def _agent(cls, cfg, obs_space=BOX_OBS, act_space=BOX_ACT):
    agent = cls(obs_space, act_space, cfg, 4, CPU)
    return agent


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("case", ["discrete", "clip", "squash", "dict"])
def test_ppo_export_matches(case: str, normalize: bool, tmp_path: Path) -> None:
    cfg = PPOConfig(normalize_obs=normalize, squash_actions=case == "squash", numba_actor=False,
                    critic_obs="critic" if case == "dict" else "policy")
    obs_space = DICT_OBS if case == "dict" else BOX_OBS
    agent = _agent(PPO, cfg, obs_space, DISCRETE if case == "discrete" else BOX_ACT)
    _prepare(agent, obs_space, list(agent.obs_normalizers.values()) if normalize else [])
    _check(agent, obs_space, tmp_path)
    if case == "clip":  # the clip is in the graph: some actions sit on the bounds
        want = agent.act(_obs(obs_space), deterministic=True, update_stats=False)[0].numpy()
        assert bool(((want == BOX_ACT.low) | (want == BOX_ACT.high)).any())


def test_numba_actor_agent_exports_the_same_policy(tmp_path: Path) -> None:
    """With the numba actor on (when numba is there), the reference act() runs the kernel, the file runs torch."""
    agent = _agent(PPO, PPOConfig(numba_actor="auto"))
    _prepare(agent, BOX_OBS, list(agent.obs_normalizers.values()))
    _check(agent, BOX_OBS, tmp_path)


@pytest.mark.parametrize("cls,cfg_class", [(SAC, SACConfig), (TD3, TD3Config), (AAWR, AAWRConfig)])
@pytest.mark.parametrize("dict_obs", [False, True])
def test_off_policy_export_matches(cls, cfg_class, dict_obs: bool, tmp_path: Path) -> None:
    obs_space = DICT_OBS if dict_obs else BOX_OBS
    extra = {"layer_norm": True} if cls is TD3 else {}  # layer norm's width must stay static in the trace
    cfg = cfg_class(normalize_obs=True, compile=False, critic_obs="critic" if dict_obs else "policy", **extra)
    agent = _agent(cls, cfg, obs_space)
    _prepare(agent, obs_space, list(agent.obs_normalizers.values()))
    _check(agent, obs_space, tmp_path)


def test_bc_dagger_rarl_export_match(tmp_path: Path) -> None:
    bc = _agent(BC, BCConfig(normalize_obs=True))
    _prepare(bc, BOX_OBS, [bc.obs_normalizer])
    _check(bc, BOX_OBS, tmp_path)
    for act_space in (BOX_ACT, DISCRETE):
        student = DAgger.for_evaluation(BOX_OBS, act_space, DAggerConfig(normalize_obs=True), 4, CPU)
        _prepare(student, BOX_OBS, [student.obs_normalizer])
        _check(student, BOX_OBS, tmp_path)
    rarl = _agent(RARL, RARLConfig(numba_actor=False))  # a plain Box: the protagonist alone, as deployed
    _prepare(rarl, BOX_OBS, list(rarl.protagonist.obs_normalizers.values()))
    _check(rarl, BOX_OBS, tmp_path)


def test_normaliser_is_inside_the_graph(tmp_path: Path) -> None:
    """The file's actions on raw obs differ from the same network on raw obs without the normaliser."""
    agent = _agent(SAC, SACConfig(normalize_obs=True, compile=False))
    _prepare(agent, BOX_OBS, list(agent.obs_normalizers.values()))
    export_agent(agent, BOX_OBS, "onnx", tmp_path / "p.onnx")
    x = _obs(BOX_OBS)
    unnormalised = agent.export_actor().actor(x).detach().numpy()
    assert np.abs(_run_file(tmp_path / "p.onnx", "onnx", x) - unnormalised).max() > 1e-2


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny PPO run on a continuous task: the residuals' base."""
    run_dir = tmp_path_factory.mktemp("export") / "base"
    assert main(["train", "ppo", "--env", "drl/Pendulum-v0", "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


def test_residuals_export_base_and_residual_in_one_graph(base_run: Path, tmp_path: Path) -> None:
    probe = make_vec_env("drl/Pendulum-v0", 1, CPU)
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    probe.close()
    for cls, cfg in ((Residual, ResidualConfig(base=str(base_run), compile=False)),
                     (PPOResidual, PPOResidualConfig(base=str(base_run), numba_actor=False))):
        agent = cls(obs_space, act_space, cfg, 4, CPU)
        normalizers = list(agent.obs_normalizers.values())
        obs = _obs(obs_space, 256)
        for rms in normalizers:
            rms.update(obs)
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():  # the residual's own actor (the base's is frozen)
            module = agent.nets["actor"] if cls is Residual else agent.model
            for param in module.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * 0.5)
        _check(agent, obs_space, tmp_path)


def test_cli_export_end_to_end(base_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pendulum.onnx"
    assert main(["export", str(base_run), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out} (onnx)" in line and "[N, 3]" in line
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["drl_agent"] == "ppo" and meta["obs_group"] == "policy" and meta["env_id"] == "drl/Pendulum-v0"
    action = session.run(None, {"obs": np.zeros((7, 3), np.float32)})[0]
    assert action.shape == (7, 1) and np.all(np.abs(action) <= 2.0)
    assert main(["export", str(base_run), "--format", "torchscript", "--checkpoint", "latest"]) == 0
    assert (base_run / "policy-latest.pt").is_file()


def _one_error_line(capsys, argv: list[str], code: int, message: str) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err


def test_bad_arguments_give_one_line(tmp_path: Path, capsys) -> None:
    _one_error_line(capsys, ["export", str(tmp_path)], 2, "not a drl run folder")
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line
        main(["export", str(tmp_path), "--format", "tflite"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="--format must be one of"):
        export_agent(_agent(SAC, SACConfig(compile=False)), BOX_OBS, "tflite", tmp_path / "x")


def test_stateful_policies_are_refused_with_one_line(tmp_path: Path) -> None:
    cases = [
        (_agent(PPO, PPOConfig(rnn_type="gru")), "recurrent policy"),
        (_agent(BC, BCConfig(chunk_size=4)), "chunk_size 1"),
        (_agent(AAWR, AAWRConfig(history_length=3, critic_obs="policy", compile=False)), "AAWR with memory"),
    ]
    for agent, message in cases:
        with pytest.raises(ExportError, match=message) as info:
            export_agent(agent, BOX_OBS, "onnx", tmp_path / "x.onnx")
        assert "\n" not in str(info.value)
        assert not (tmp_path / "x.onnx").exists()


# registered agents with neither a single-agent actor (export_actor) nor per-agent / per-task actors
# (export_actors): drl.export refuses them with one line; with the reason. None today.
NO_SINGLE_ACTOR: dict[str, str] = {}


def test_every_registered_agent_exports_or_is_listed_as_refused() -> None:
    for name, spec in AGENTS.items():
        cls = spec.agent_class
        exports = callable(getattr(cls, "export_actor", None)) or callable(getattr(cls, "export_actors", None))
        assert exports or name in NO_SINGLE_ACTOR, name


def test_an_agent_without_export_actor_is_refused_with_one_line(base_run: Path, monkeypatch, capsys) -> None:
    monkeypatch.delattr(PPO, "export_actor")
    assert main(["export", str(base_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "drl export: error: agent 'ppo' has no single-agent actor to export"


# --- agents with several actors: one file per agent (HAPPO/MAPPO) or per task (CAMRL), one two-input file (MT-PPO)


def _run_inputs(path: Path, fmt: str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The file alone on named inputs (``obs``, then the extra groups in the file's order)."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == list(inputs)
        return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))(*inputs.values()).numpy()


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=CHECK_TOLERANCE * (1 + np.abs(want).max()))
    assert len(np.unique(want, axis=0)) >= 2  # not a constant policy: the comparison can fail


def _skew(normalizers, obs: dict[str, torch.Tensor], modules, seed: int) -> None:
    """Skewed normaliser statistics and perturbed weights (large actions that hit the bounds)."""
    for group, rms in normalizers.items():
        if group in obs:
            rms.update(obs[group].flatten(1) * 1.5 + 1.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * 0.5)


def _env_spaces(env_id: str, num_envs: int = 2):
    env = make_vec_env(env_id, num_envs, CPU)
    spaces = env.single_observation_space, env.single_action_space, getattr(env, "task_names", None)
    env.close()
    return spaces


HOMOGENEOUS_OBS = gym.spaces.Dict({"a": BOX_OBS, "b": BOX_OBS, "state": gym.spaces.Box(-np.inf, np.inf, (7,))})
HOMOGENEOUS_ACT = gym.spaces.Dict({"a": BOX_ACT, "b": BOX_ACT})


@pytest.mark.parametrize("case", ["Rendezvous", "RendezvousDiscrete", "shared-actor"])
def test_happo_exports_one_file_per_agent_matching_its_actions(case: str, tmp_path: Path) -> None:
    if case == "shared-actor":
        obs_space, act_space = HOMOGENEOUS_OBS, HOMOGENEOUS_ACT
    else:
        obs_space, act_space, _ = _env_spaces(f"drl/{case}-v0")
    cfg = HAPPOConfig(compile=False, normalize_obs=True, share_actor=case == "shared-actor",
                      update_scheme="mappo" if case == "RendezvousDiscrete" else "happo")
    agent = HAPPO(obs_space, act_space, cfg, 4, CPU)
    obs = _obs(obs_space)
    _skew(agent.obs_normalizers, _obs(obs_space, 256), [agent.actors], 4)
    want = agent.act(obs, deterministic=True, update_stats=False)[0]
    for fmt in ("onnx", "torchscript"):
        results = export_agent_actors(agent, obs_space, fmt, tmp_path / f"team.{fmt}")
        assert list(results) == list(agent.agents)
        for name, result in results.items():
            assert result["path"] == tmp_path / f"team-{name}.{fmt}" and result["metadata"]["agent"] == name
            assert result["metadata"]["obs_group"] == name
            _assert_close(_run_inputs(result["path"], fmt, {"obs": obs[name].flatten(1)}), want[name].numpy())
    if case == "shared-actor":  # one network, but each agent's file holds its own normaliser
        x = obs["a"].flatten(1)
        a, b = (_run_inputs(tmp_path / f"team-{n}.onnx", "onnx", {"obs": x}) for n in ("a", "b"))
        assert np.abs(a - b).max() > 1e-2
    if case == "RendezvousDiscrete":
        assert all(want[name].dtype == torch.int64 for name in agent.agents)


@pytest.mark.parametrize("env_id,mode", [("drl/MT-CartPole-v0", "camrl"), ("drl/MT-Pendulum-v0", "independent"),
                                          ("drl/MT-CartPole-v0", "always_asymmetric")])
def test_camrl_exports_one_plain_actor_per_task(env_id: str, mode: str, tmp_path: Path) -> None:
    obs_space, act_space, task_names = _env_spaces(env_id, 8)
    T = len(task_names)
    torch.manual_seed(0)  # the learners' initial weights: independent of which tests ran before
    agent = CAMRL(obs_space, act_space, CAMRLConfig(mode=mode, normalize_obs=True, minibatch_size=T), 2 * T, CPU)
    _skew(agent.obs_normalizers, _obs(obs_space, 256), [agent.model], 5)
    obs = _obs(obs_space, 96)
    ids = torch.arange(96) % T  # every task's rows in one act call
    obs["task"] = torch.nn.functional.one_hot(ids, T).float()
    want = agent.act(obs, deterministic=True, update_stats=False)[0].numpy()
    for fmt in ("onnx", "torchscript"):
        results = export_agent_actors(agent, obs_space, fmt, tmp_path / f"mt.{fmt}", task_names=task_names)
        assert list(results) == list(task_names)
        for t, (name, result) in enumerate(results.items()):
            assert result["path"] == keyed_path(tmp_path / f"mt.{fmt}", name)
            assert result["metadata"]["task"] == name and result["metadata"]["task_index"] == str(t)
            rows = ids == t
            got = _run_inputs(result["path"], fmt, {"obs": obs["policy"][rows]})
            _assert_close(got, want[rows.numpy()])
    # without the env's task names the files are keyed by index
    assert list(export_agent_actors(agent, obs_space, "onnx", tmp_path / "i.onnx")) == [f"task{t}" for t in range(T)]


@pytest.mark.parametrize("env_id", ["drl/MT-CartPole-v0", "drl/MT-Pendulum-v0"])
def test_mt_ppo_exports_one_file_with_obs_and_task_inputs(env_id: str, tmp_path: Path) -> None:
    obs_space, act_space, task_names = _env_spaces(env_id, 8)
    agent = CAMRL(obs_space, act_space, CAMRLConfig(mode="shared", normalize_obs=True), 8, CPU)
    _skew(agent.obs_normalizers, _obs(obs_space, 256), [agent.model], 6)
    obs = _obs(obs_space, 64)
    obs["task"] = torch.nn.functional.one_hot(torch.arange(64) % len(task_names), len(task_names)).float()
    want = agent.act(obs, deterministic=True, update_stats=False)[0].numpy()
    for fmt in ("onnx", "torchscript"):
        results = export_agent_actors(agent, obs_space, fmt, tmp_path / f"mt.{fmt}", task_names=task_names)
        assert list(results) == [""] and results[""]["path"] == tmp_path / f"mt.{fmt}"
        got = _run_inputs(tmp_path / f"mt.{fmt}", fmt, {"obs": obs["policy"], "task": obs["task"]})
        _assert_close(got, want)
    # the task input matters: the same obs under another task's one-hot acts differently
    other = torch.roll(obs["task"], 1, dims=1)
    moved = _run_inputs(tmp_path / "mt.onnx", "onnx", {"obs": obs["policy"], "task": other})
    assert np.abs(moved.astype(np.float64) - want).max() > 1e-3


def test_cli_exports_happo_and_camrl_runs(tmp_path: Path, capsys) -> None:
    quick = ["--no-progress", "--device", "cpu", "--set", "eval_episodes=2"]
    happo = tmp_path / "happo"
    assert main(["train", "happo", "--env", "drl/RendezvousDiscrete-v0", "--run-dir", str(happo), "--steps", "320",
                 "--num-envs", "4", "--set", "algo.num_steps=40", "--set", "algo.num_epochs=1",
                 "--set", "env.num_eval_envs=2", *quick]) == 0
    capsys.readouterr()
    assert main(["export", str(happo)]) == 0
    out = capsys.readouterr().out
    assert "[agent rover]" in out and "[agent rail]" in out
    for name, moves in (("rover", 5), ("rail", 3)):
        session = onnxruntime.InferenceSession(str(happo / f"policy-best-{name}.onnx"),
                                               providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert meta["drl_agent"] == "happo" and meta["agent"] == name and meta["action_space"] == f"Discrete({moves})"
        width = int(meta["obs_dim"])
        action = session.run(None, {"obs": np.zeros((3, width), np.float32)})[0]
        assert action.shape == (3,) and action.dtype == np.int64 and np.all((action >= 0) & (action < moves))
    camrl = tmp_path / "camrl"
    assert main(["train", "mt-ppo", "--env", "drl/MT-CartPole-v0", "--run-dir", str(camrl), "--steps", "512",
                 "--num-envs", "4", "--set", "algo.num_steps=64", "--set", "algo.minibatch_size=64",
                 "--set", "algo.num_epochs=1", "--set", "env.num_eval_envs=4", *quick]) == 0
    capsys.readouterr()
    assert main(["export", str(camrl), "--format", "torchscript", "--out", str(tmp_path / "mt.pt")]) == 0
    assert "input 'task' [N, 4] float32" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = torch.jit.load(str(tmp_path / "mt.pt"))
    assert policy(torch.zeros(2, 4), torch.eye(4)[:2]).shape == (2,)


def test_cli_exports_every_agent_of_a_competitive_run(tmp_path: Path, capsys) -> None:
    """happo-competitive: one file per agent of both teams, each self-checked by drl export and runnable alone."""
    run = tmp_path / "competitive"
    assert main(["train", "happo-competitive", "--env", "drl/PursuitEvasion-v0", "--run-dir", str(run), "--steps",
                 "256", "--num-envs", "4", "--set", "algo.num_steps=64", "--set", "algo.num_epochs=1",
                 "--set", "algo.league_episodes=4", "--set", "env.num_eval_envs=2", "--set", "eval_episodes=2",
                 "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    for name in ("pursuer_0", "pursuer_1", "evader_0"):
        assert f"[agent {name}]" in out
        session = onnxruntime.InferenceSession(str(run / f"policy-best-{name}.onnx"),
                                               providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert meta["drl_agent"] == "happo-competitive" and meta["agent"] == name
        action = session.run(None, {"obs": np.zeros((3, int(meta["obs_dim"])), np.float32)})[0]
        assert action.shape == (3, 2) and np.all(np.abs(action) <= 1)


def test_out_may_not_overwrite_the_runs_own_files_and_must_match_the_format(base_run: Path, tmp_path: Path,
                                                                          capsys) -> None:
    """`--out` naming a checkpoint, the config or a file of another format is one line (exit 2); the run still
    evaluates afterwards (nothing of it was overwritten)."""
    best = (base_run / "checkpoints" / "best.pt").read_bytes()
    for out, fmt, message in (
            (base_run / "checkpoints" / "best.pt", "torchscript", "is one of the run's own files or folders"),
            (base_run / "config.yaml", "onnx", "must end in .onnx for --format onnx"),
            (tmp_path / "x.pt", "onnx", "must end in .onnx for --format onnx"),
            (base_run / "metrics.onnx", "torchscript", "must end in .pt for --format torchscript")):
        assert main(["export", str(base_run), "--format", fmt, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("drl export: error: --out ") and message in err and "\n" not in err
    assert (base_run / "checkpoints" / "best.pt").read_bytes() == best and not (tmp_path / "x.pt").exists()


def test_a_single_actor_on_a_multi_task_env_exports(tmp_path: Path, capsys) -> None:
    """PPO trained on drl/MT-CartPole-v0: the probe env gets one copy per task (1 copy is refused by the env)."""
    run = tmp_path / "mt"
    assert main(["train", "ppo", "--env", "drl/MT-CartPole-v0", "--run-dir", str(run), "--steps", "512",
                 "--num-envs", "4", "--set", "algo.num_steps=64", "--set", "algo.minibatch_size=64",
                 "--set", "algo.num_epochs=1", "--set", "env.num_eval_envs=4", "--set", "eval_episodes=4",
                 "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    assert "matches the agent's deterministic actions" in capsys.readouterr().out
