"""Policy export: a trained run's deterministic actor as an ONNX or TorchScript file (``drl export``).

The exported graph is the agent's own :meth:`export_actor` module (:class:`drl.nn.deploy.DeployedActor`):
input ``obs`` ``[N, D]`` float32, the raw (un-normalised) actor obs group flattened (for a dict-obs env the
group the actor reads, ``"policy"`` by default; for a plain Box env the observation itself); output ``action``
the env action of ``agent.act(obs, deterministic=True, update_stats=False)``: ``[N, A]`` float32 already in the
action space's bounds (the agent's clip, or tanh and rescale, are in the graph; drl applies no other action
rescaling between agent and env), or ``[N]`` int64 for a Discrete action space. The observation normaliser's
statistics are frozen into the graph as they are in the checkpoint. The batch size ``N`` is dynamic.

What is NOT in the graph: env wrappers that change observations (``wrappers:`` entries that apply at
evaluation, e.g. a frame stack): the exported policy reads their output, so a robot must compute the same
thing; :func:`export_policy` names them in its result and in the file's metadata.

Agents with several actors implement ``export_actors() -> {key: DeployedActor}`` instead, and get one file per
actor, ``<stem>-<key><suffix>`` next to the requested path (:func:`keyed_path`): HAPPO/MAPPO one per agent
(input ``obs`` = that agent's own obs entry, output its action; also with ``share_actor``, as each agent's
obs normaliser is its own), CAMRL with one learner per task one per task (keyed by the env's task name; a
plain MLP actor reading the actor group only). An agent whose one actor reads more than the actor group
(MT-PPO: ``obs`` and the one-hot ``task``, two named graph inputs) uses the empty key: one file at the path.
The check sets the obs groups an actor holds fixed (a per-task actor's one-hot) and compares with its entry of
``act``'s output (an agent's name in a team).

Before returning, the written file is run (onnxruntime or ``torch.jit.load``) on random observations drawn
from the env's observation space and compared with the agent's own deterministic actions.

Refused with one :class:`ExportError` line (exit status 2 from the CLI): an agent with neither
``export_actor`` nor ``export_actors``, a recurrent or chunked (stateful) policy, a residual on a base that
cannot be exported (see each agent's ``export_actor``), an unknown format.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drl.nn.deploy import DeployedActor, ExportError

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_agent", "export_agent_actors", "export_policy",
           "default_export_path", "keyed_path"]

FORMATS = ("onnx", "torchscript")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
CHECK_SAMPLES = 64  # random observations the written file is checked on
CHECK_TOLERANCE = 1e-4  # max |exported - agent| per action entry, relative to 1 + |agent action|


class ExportResult(dict):
    """What :func:`export_policy` wrote: ``path``, ``format``, ``metadata`` (dict), ``max_abs_diff`` (float)."""


def default_export_path(run_dir: str | Path, fmt: str, checkpoint: str = "best") -> Path:
    """``<run_dir>/policy-<checkpoint>.onnx`` (or ``.pt`` for TorchScript); a checkpoint file: its stem."""
    label = checkpoint if checkpoint in ("best", "latest") else Path(checkpoint).stem
    return Path(run_dir) / f"policy-{label}{_SUFFIX[fmt]}"


def _obs_wrappers(cfg: Any) -> list[str]:
    """Names of the run's wrappers that change observations (they also apply at evaluation)."""
    from drl.wrappers import WRAPPERS

    names = [entry.get("name") if isinstance(entry, dict) else str(entry) for entry in (cfg.wrappers or [])]
    return [name for name in names if name in WRAPPERS and WRAPPERS[name].applies_to_eval]


def _random_obs(space: Any, n: int, seed: int) -> torch.Tensor | dict[str, torch.Tensor]:
    """``n`` observations drawn from the single observation ``space`` (a Box or a Dict of Boxes), float32."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(samples[0], dict):
        return {key: torch.as_tensor(np.stack([s[key] for s in samples]), dtype=torch.float32)
                for key in samples[0]}
    return torch.as_tensor(np.stack(samples), dtype=torch.float32)


def _flat_group(obs: torch.Tensor | dict[str, torch.Tensor], group: str) -> torch.Tensor:
    x = obs[group] if isinstance(obs, dict) else obs
    return x.reshape(x.shape[0], -1).float()


def _input_names(module: DeployedActor) -> list[str]:
    return ["obs", *module.extra_groups]


def _inputs(module: DeployedActor, obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The graph's inputs for ``obs``: the actor group, then each extra group, flattened ``[N, D_g]`` float32."""
    return (_flat_group(obs, module.group), *(_flat_group(obs, g) for g in module.extra_groups))


def _with_fixed(obs: torch.Tensor | dict[str, torch.Tensor], fixed: dict[str, torch.Tensor]
                ) -> torch.Tensor | dict[str, torch.Tensor]:
    """``obs`` with each group of ``fixed`` set to its row on every sample."""
    if not fixed:
        return obs
    if not isinstance(obs, dict):
        raise ExportError(f"the policy holds obs groups {sorted(fixed)} fixed but the env's obs has no groups")
    out = dict(obs)
    for group, row in fixed.items():
        out[group] = row.to(obs[group].dtype).reshape(obs[group].shape[1:]).expand_as(obs[group]).clone()
    return out


def _write_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path,
                metadata: dict[str, str]) -> None:
    import onnx

    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*names, "action"]}
    with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is the legacy one
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buffer, dynamo=False, input_names=names, output_names=["action"],
                          dynamic_axes=axes)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _run_onnx(path: Path, inputs: tuple[torch.Tensor, ...], names: list[str]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["action"], {name: x.numpy() for name, x in zip(names, inputs, strict=True)})[0]


def _write_torchscript(module: torch.nn.Module, example: tuple[torch.Tensor, ...], names: list[str], path: Path,
                       metadata: dict[str, str]) -> None:
    with warnings.catch_warnings():  # TracerWarnings, and torch.jit's deprecation in favour of torch.export
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"drl.json": json.dumps(metadata)})


def _run_torchscript(path: Path, inputs: tuple[torch.Tensor, ...], names: list[str]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(*inputs).numpy()


def _export_checked(agent: Any, module: DeployedActor, observation_space: Any, fmt: str, path: Path,
                    metadata: dict[str, str], seed: int) -> float:
    """Write ``module`` to ``path``, run the file on random observations and compare with ``agent.act``."""
    module = module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    obs = _with_fixed(_random_obs(observation_space, CHECK_SAMPLES, seed), module.fixed_obs)
    inputs, names = _inputs(module, obs), _input_names(module)
    metadata.update({"obs_group": module.group, "obs_dim": str(module.obs_dim),
                     "input": "obs [N, obs_dim] float32: the raw obs group, flattened (normalised inside)",
                     "output": "action: the deterministic env action ([N, A] float32, or [N] int64 if Discrete)"})
    for group in module.extra_groups:
        metadata["input_" + group] = f"{group} [N, {inputs[names.index(group)].shape[1]}] float32: obs group " \
                                     f"'{group}' as the env gives it (not normalised)"
    metadata.update(module.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        example = tuple(x[:2].clone() for x in inputs)
        (_write_onnx if fmt == "onnx" else _write_torchscript)(module, example, names, path, metadata)
        got = (_run_onnx if fmt == "onnx" else _run_torchscript)(path, inputs, names)
    with torch.inference_mode():
        want = agent.act(obs, deterministic=True, update_stats=False)[0]
        want = (want if module.output_key is None else want[module.output_key]).cpu().numpy()
    got = np.asarray(got).reshape(want.shape)
    diff = float(np.max(np.abs(got.astype(np.float64) - want)) if want.size else 0.0)
    bound = CHECK_TOLERANCE * (1.0 + float(np.max(np.abs(want)) if want.size else 0.0))
    if not diff <= bound:
        path.unlink(missing_ok=True)
        raise ExportError(f"the exported {fmt} policy differs from the agent's actions by up to {diff:.3g} "
                          f"(> {bound:.3g}) on random observations: not written (a bug; please report it)")
    return diff


def export_agent(agent: Any, observation_space: Any, fmt: str, path: str | Path,
                 metadata: dict[str, str] | None = None, seed: int = 0) -> float:
    """Write ``agent.export_actor()`` to ``path`` in format ``fmt`` and check the file against ``agent.act``.

    Args:
        agent: a drl agent with ``export_actor``.
        observation_space: the env's single observation space (the check's random observations come from it).
        fmt: ``"onnx"`` or ``"torchscript"``.
        path: the file to write (its folder is created).
        metadata: extra string entries stored in the file (``metadata`` is updated with the input's).
        seed: seeds the random observations of the check.

    Returns:
        The largest ``|exported - agent|`` over :data:`CHECK_SAMPLES` random observations.

    Raises:
        ExportError: see :func:`export_policy`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    return _export_checked(agent, agent.export_actor(), observation_space, fmt, Path(path),
                           {} if metadata is None else metadata, seed)


def keyed_path(path: str | Path, key: str) -> Path:
    """``<folder>/<stem>-<key><suffix>``: the file of one actor of a multi-actor agent (``key`` made file-safe);
    an empty key (an agent whose one actor reads several inputs): ``path`` itself."""
    path = Path(path)
    if not key:
        return path
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", key)
    return path.with_name(f"{path.stem}-{safe}{path.suffix}")


def export_agent_actors(agent: Any, observation_space: Any, fmt: str, path: str | Path,
                        metadata: dict[str, str] | None = None, seed: int = 0,
                        task_names: tuple[str, ...] | None = None) -> dict[str, ExportResult]:
    """Write each actor of ``agent.export_actors()`` to :func:`keyed_path` ``(path, key)`` and check it.

    A per-task actor (``metadata["task_index"]`` set) is keyed by its task's name when ``task_names`` (the
    env's) are given, and the name is written as ``metadata["task"]``.

    Returns:
        ``{key: ExportResult}`` in the agent's order.

    Raises:
        ExportError: see :func:`export_policy`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    results: dict[str, ExportResult] = {}
    for key, module in agent.export_actors().items():
        meta = dict(metadata or {})
        index = module.metadata.get("task_index")
        if task_names is not None and index is not None:
            key = meta["task"] = task_names[int(index)]
        file = keyed_path(path, key)
        diff = _export_checked(agent, module, observation_space, fmt, file, meta, seed)
        results[key] = ExportResult(path=file, format=fmt, metadata=meta, max_abs_diff=diff)
    return results


# what a run folder holds besides exports: ``--out`` may not overwrite them
_RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "curve.png", "hparams.json")
_RUN_FOLDERS = ("checkpoints", "tensorboard", "videos")


def _check_out_path(path: Path, run_dir: Path, fmt: str) -> None:
    """ExportError unless ``path`` ends in the format's suffix and is none of the run folder's own files."""
    suffix = _SUFFIX[fmt]
    if path.suffix != suffix:
        raise ExportError(f"--out {path} must end in {suffix} for --format {fmt}")
    target, run = path.resolve(), run_dir.resolve()
    if target.parent == run and target.name in _RUN_FILES or any(
            target.is_relative_to(run / folder) for folder in _RUN_FOLDERS):
        raise ExportError(f"--out {path} is one of the run's own files or folders; write the policy beside them "
                          f"(e.g. {run_dir / ('policy' + suffix)})")


def export_policy(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                  checkpoint: str = "best") -> ExportResult:
    """Export the deterministic actor(s) of the run in ``run_dir`` (see the module docstring).

    Args:
        run_dir: a drl run folder.
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the file to write (default :func:`default_export_path`); its folder is created. A multi-actor
            agent writes one file per actor, :func:`keyed_path` ``(out, key)``.
        checkpoint: ``best`` (falls back to ``latest``) | ``latest`` | a checkpoint file.

    Returns:
        :class:`ExportResult` with the path, the format, the metadata written into the file (agent, env id,
        input group and width, action space, obs wrappers) and the largest difference from the agent's own
        actions on :data:`CHECK_SAMPLES` random observations. A multi-actor agent: ``actors`` ``{key:
        ExportResult}`` (one per file written; key: the agent's or task's name), ``path`` the stem they share,
        ``max_abs_diff`` their largest.

    Raises:
        ExportError: an unknown format, an agent or policy that cannot be exported, or (a bug) an exported
            file whose actions differ from the agent's.
        FileNotFoundError, CheckpointError, ConfigError: not a run folder, no usable checkpoint.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    from drl.api import load_agent
    from drl.base_policy import describe_space
    from drl.wrappers import make_run_env

    agent, cfg = load_agent(run_dir, checkpoint, "cpu")
    single = getattr(agent, "export_actor", None) is not None
    if not single and getattr(agent, "export_actors", None) is None:
        raise ExportError(f"agent '{cfg.agent}' has no single-agent actor to export")
    from envs.multi_task_sources import min_copies

    copies = max(min_copies(cfg.env.id, cfg.env.kwargs), 1 if single else cfg.env.num_eval_envs)
    probe = make_run_env(cfg, copies, torch.device("cpu"), for_eval=True)
    obs_space, action_space = probe.single_observation_space, probe.single_action_space
    task_names = getattr(probe, "task_names", None)
    probe.close()
    metadata = {"drl_agent": cfg.agent, "env_id": cfg.env.id, "action_space": describe_space(action_space),
                "obs_wrappers": ",".join(_obs_wrappers(cfg))}
    path = Path(out) if out is not None else default_export_path(run_dir, fmt, checkpoint)
    _check_out_path(path, Path(run_dir), fmt)
    if single:
        diff = export_agent(agent, obs_space, fmt, path, metadata, seed=cfg.seed)
        return ExportResult(path=path, format=fmt, metadata=metadata, max_abs_diff=diff)
    actors = export_agent_actors(agent, obs_space, fmt, path, metadata, cfg.seed,
                                 None if task_names is None else tuple(task_names))
    return ExportResult(path=path, format=fmt, metadata=metadata, actors=actors,
                        max_abs_diff=max(r["max_abs_diff"] for r in actors.values()))
