"""Embedding-similarity rewards: the similarity between an embedding of the observation and a goal embedding.

Wrapper ``embedding_reward``. An encoder ``f`` maps an observation group (a state vector, or camera frames
``[N, 3, H, W]`` where the env puts them in an obs group, e.g. ``drl/Panda*-v0`` with ``image: true`` and
``obs_group: image``) to an embedding; the reward of a transition is the similarity of the embedding of its
true next obs ``s'`` to a goal embedding ``g``, which comes from

* goal demonstrations (``goal_demos``, a drl demo file, envs/tasks/demos.py): ``g`` = the mean unit
  embedding of the demos' final observations (the last ``final_steps`` true next obs of each, by default of
  the successful episodes only): a perceptual reward from a few demos; or
* a text goal (``goal_text``) through a joint image-text encoder: ``g`` = the mean unit embedding of the
  prompts (VLM-as-reward, Rocamonde et al. 2023, "Vision-Language Models are Zero-Shot Reward Models").

With ``x = f(s') / |f(s')|`` and ``g``, ``b`` renormalised to unit length, the reward is VLM-RM's goal-baseline
regularised ``R_CLIP-Reg`` (Rocamonde et al. 2023, "Goal-Baseline Regularization"; as in the authors' vlmrm code):

    r = 1 - 1/2 |P (x - g)|^2,      P = alpha * d d^T / |d|^2 + (1 - alpha) * I,      d = g - b

``P (x - g)`` is ``alpha * proj_L(x) + (1 - alpha) * x - g`` for ``proj_L`` the projection onto the line through
``b`` and ``g``: ``alpha`` in [0, 1] keeps only the part of the embedding that tells the goal from the baseline.
Without a baseline (``alpha = 0``) it is the cosine similarity ``x . g``. The baseline ``b`` is the mean unit
embedding of ``baseline_text`` (e.g. "a robot arm") or, with ``baseline_demo_start``, of the demos' first
observations. (VLM-RM averages the unit prompt embeddings without renormalising; renormalising here keeps
``alpha = 0`` exactly the cosine similarity.)

Scale: ``normalize: demos`` maps the similarity linearly so that the demos' first observations score -1 and their
final ones 0 on average (a reward mostly <= 0, so reaching the goal and ending the episode is never worth
delaying); then ``reward = coef * (r + offset)`` replaces (``mode: replace``) or adds to the env reward. The env's
own reward stays in ``info["env_reward"]`` (the logged return); the similarity is logged as
``embedding_reward/similarity``. Observations are unchanged, so evaluation runs on the env's own reward.

The encoder (never trained here, never downloaded at run time): ``encoder: package.module:factory`` with
``encoder_kwargs`` (the factory's keyword arguments; it returns a torch module or any callable
``[B, *obs_shape] -> [B, E]``), or ``encoder_file`` (a drl encoder saved by :func:`drl.nn.encoders.save_encoder`,
e.g. one :func:`drl.nn.encoders.train_progress_encoder` trained on demos), or from Python any callable object.
An encoder with an ``encode_image`` method is called through it for observations; a text goal needs an
``encode_text(list[str]) -> [K, E]`` method. A CLIP model you have locally plugs in as a factory you write, e.g.
in ``my_clip.py`` on the Python path::

    import open_clip, torch

    class LocalCLIP(torch.nn.Module):
        def __init__(self, name: str, weights: str):          # weights: a local checkpoint file
            super().__init__()
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
            self.tokenizer = open_clip.get_tokenizer(name)
            size = self.model.visual.image_size
            self.size = size if isinstance(size, int) else size[0]
        def encode_image(self, frames: torch.Tensor) -> torch.Tensor:   # [B, 3, H, W] in [0, 1]
            x = torch.nn.functional.interpolate(frames, size=self.size, mode="bilinear")
            mean = x.new_tensor([0.4815, 0.4578, 0.4082])[:, None, None]
            std = x.new_tensor([0.2686, 0.2613, 0.2758])[:, None, None]
            return self.model.encode_image((x - mean) / std).float()
        def encode_text(self, prompts: list[str]) -> torch.Tensor:
            return self.model.encode_text(self.tokenizer(prompts).to(self.model.logit_scale.device)).float()

    def make(name: str = "ViT-B-32", weights: str = "/models/clip/open_clip_pytorch_model.bin") -> LocalCLIP:
        return LocalCLIP(name, weights)

then ``wrappers: [{name: embedding_reward, encoder: "my_clip:make", encoder_kwargs: {weights: ...},
obs_group: image, goal_text: "a robot arm touching the red ball", baseline_text: "a robot arm", alpha: 0.5}]``.
With transformers, ``CLIPModel.from_pretrained(local_dir)`` and ``get_image_features`` / ``get_text_features``
fill the same two methods. The wrapper moves a torch module to the env's device and calls it under
``torch.no_grad`` in chunks of ``batch_size`` observations.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

import torch
from gymnasium.vector import VectorEnv
from torch import nn

from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group_space

__all__ = ["EmbeddingReward", "similarity_reward", "import_encoder"]


def similarity_reward(x: torch.Tensor, goal: torch.Tensor, baseline: torch.Tensor | None = None,
                      alpha: float = 0.0) -> torch.Tensor:
    """VLM-RM's ``R_CLIP-Reg`` ``[N]`` of embeddings ``x [N, E]`` (see the module docstring): ``1 - |P(x̂ - ĝ)|^2
    / 2`` with ``x̂``, ``ĝ``, ``b̂`` the unit vectors and ``P = alpha * d d^T / |d|^2 + (1 - alpha) I``, ``d = ĝ - b̂``.
    ``baseline`` None (or ``alpha`` 0): the cosine similarity ``x̂ . ĝ``."""
    x = nn.functional.normalize(x.float(), dim=-1)
    g = nn.functional.normalize(goal.float(), dim=-1)
    v = x - g
    if baseline is not None and alpha != 0.0:
        d = g - nn.functional.normalize(baseline.float(), dim=-1)
        u = d / d.norm()
        v = alpha * (v @ u)[:, None] * u + (1.0 - alpha) * v
    return 1.0 - 0.5 * v.square().sum(-1)


def _line(err: BaseException) -> str:
    """``Type: first line of the message`` (a user's error in one line)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def import_encoder(spec: str, kwargs: dict[str, Any] | None = None) -> Callable[..., Any]:
    """``factory(**kwargs)`` for ``spec = "package.module:factory"``; ValueError with one line on a bad spec,
    an import failure, a missing factory or a factory that fails or returns something not callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"encoder must be 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module: one line naming it
        raise ValueError(f"encoder '{spec}': cannot import '{module_name}' ({_line(err)})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"encoder '{spec}': module '{module_name}' has no callable '{attr}'")
    try:
        encoder = factory(**(kwargs or {}))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"encoder '{spec}': the factory failed ({_line(err)})") from None
    if not callable(encoder):
        raise ValueError(f"encoder '{spec}': the factory returned a {type(encoder).__name__}, not a callable")
    return encoder


@register_wrapper("embedding_reward")
class EmbeddingReward(TorchVectorWrapper):
    """Replaces (or adds to) the reward the similarity of the next obs's embedding to a goal embedding.

    Args:
        env: the torch vector env.
        encoder: ``package.module:factory`` (config), or from Python a torch module / callable.
        encoder_kwargs: keyword arguments of the factory.
        encoder_file: instead of ``encoder``, a drl encoder file (:func:`drl.nn.encoders.save_encoder`).
        goal_demos: a drl demo file of the env; the goal is its final observations' mean embedding.
        goal_text: instead of ``goal_demos``, the goal prompt(s) for a joint image-text encoder.
        baseline_text: baseline prompt(s) (VLM-RM's ``b``); ``baseline_demo_start``: the baseline is the demos'
            first observations instead. ``alpha`` in [0, 1]: the projection factor (needs a baseline when > 0).
        obs_group: the group the encoder reads (None: the obs, or ``policy`` of grouped obs); the demo file must
            hold it with the same shape.
        final_steps: how many last true next obs of each demo episode make the goal (>= 1).
        successful_only: only the demo episodes that ended in success make the goal (and calibrate).
        normalize: ``none`` or ``demos`` (demo starts -> -1, demo goals -> 0; needs ``goal_demos``).
        mode: ``replace`` (reward = ``coef * (r + offset)``) or ``add`` (env reward plus it); ``coef`` > 0.
        batch_size: observations per encoder call.

    Raises:
        ValueError (one line): a missing or mismatched demo file, an encoder that fails to import or load, goal and
        observation embeddings of different sizes, or any other bad argument.
    """

    gives_reward = True
    path_args = ("goal_demos", "encoder_file")

    def __init__(self, env: VectorEnv, encoder: Any = None, encoder_kwargs: dict[str, Any] | None = None,
                 encoder_file: str | None = None, goal_demos: str | None = None,
                 goal_text: str | list[str] | None = None, baseline_text: str | list[str] | None = None,
                 baseline_demo_start: bool = False, alpha: float = 0.0, obs_group: str | None = None,
                 final_steps: int = 1, successful_only: bool = True, normalize: Literal["none", "demos"] = "none",
                 mode: Literal["replace", "add"] = "replace", coef: float = 1.0, offset: float = 0.0,
                 batch_size: int = 1024):
        super().__init__(env)
        checks = [(mode in ("replace", "add"), "mode", "must be 'replace' or 'add'"),
                  (normalize in ("none", "demos"), "normalize", "must be 'none' or 'demos'"),
                  (coef > 0, "coef", "must be > 0"), (0.0 <= alpha <= 1.0, "alpha", "must be in [0, 1]"),
                  (final_steps >= 1, "final_steps", "must be >= 1"), (batch_size >= 1, "batch_size", "must be >= 1")]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}, got {locals()[name]!r}")
        if (goal_demos is None) == (goal_text is None):
            raise ValueError("give exactly one goal: goal_demos (a demo file) or goal_text (prompts)")
        if baseline_demo_start and goal_demos is None:
            raise ValueError("baseline_demo_start needs goal_demos")
        if baseline_text is not None and baseline_demo_start:
            raise ValueError("give one baseline: baseline_text or baseline_demo_start")
        has_baseline = baseline_text is not None or baseline_demo_start
        if alpha > 0 and not has_baseline:
            raise ValueError(f"alpha = {alpha} projects onto the goal-baseline line: set baseline_text or "
                             "baseline_demo_start (or alpha 0)")
        if normalize == "demos" and goal_demos is None:
            raise ValueError("normalize 'demos' calibrates on the demos: it needs goal_demos")
        self.obs_group, self.alpha, self.mode = obs_group, float(alpha), mode
        self.coef, self.offset, self.batch_size = float(coef), float(offset), int(batch_size)
        self.encoder = self._make_encoder(encoder, encoder_kwargs, encoder_file)
        group_shape = tuple(int(n) for n in select_group_space(self.single_observation_space, self.obs_group).shape)
        try:
            probe = self.embed(torch.zeros((1, *group_shape), device=self.device))
        except Exception as err:  # noqa: BLE001 - the user's encoder: one line naming the input it got
            raise ValueError(f"the encoder fails on observations of shape {(1, *group_shape)} "
                             f"({_line(err)})") from None
        if probe.dim() != 2 or probe.shape[0] != 1:
            raise ValueError(f"the encoder must map [B, {', '.join(map(str, group_shape))}] observations to [B, E] "
                             f"embeddings, got shape {tuple(probe.shape)}")
        self.embed_dim = int(probe.shape[1])

        baseline: torch.Tensor | None = None
        self.calibration: torch.Tensor | None = None  # (mean similarity of demo starts, of demo goals)
        if goal_text is not None:
            goal = self._embed_text(goal_text, "goal_text")
        else:
            starts, finals = self._demo_observations(str(goal_demos), group_shape, final_steps, successful_only)
            start_emb, final_emb = self.embed(starts), self.embed(finals)
            goal = _mean_direction(final_emb)
            if baseline_demo_start:
                baseline = _mean_direction(start_emb)
        if baseline_text is not None:
            baseline = self._embed_text(baseline_text, "baseline_text")
        self.goal, self.baseline = goal, baseline
        if baseline is not None and bool(torch.allclose(goal, baseline, atol=1e-6)):
            raise ValueError("the goal and baseline embeddings coincide: the goal-baseline direction is undefined")
        if normalize == "demos":
            start_sim, goal_sim = self.similarity_of(start_emb).mean(), self.similarity_of(final_emb).mean()
            if not goal_sim > start_sim + 1e-6:
                raise ValueError(f"normalize 'demos': the demos' final observations are not more similar to the goal "
                                 f"({goal_sim:.4f}) than their first ones ({start_sim:.4f}); the encoder does not "
                                 "tell them apart")
            self.calibration = torch.stack([start_sim, goal_sim])

    # --- the encoder ----------------------------------------------------------------------------
    def _make_encoder(self, encoder: Any, kwargs: dict[str, Any] | None, path: str | None) -> Callable[..., Any]:
        if (encoder is None) == (path is None):
            raise ValueError("give exactly one encoder: encoder ('package.module:factory', or a module/callable) "
                             "or encoder_file (saved by drl.nn.encoders.save_encoder)")
        if kwargs is not None and encoder is None:
            raise ValueError("encoder_kwargs go with encoder ('package.module:factory'), not encoder_file")
        if path is not None:
            from drl.nn.encoders import load_encoder

            try:
                encoder = load_encoder(path)
            except (FileNotFoundError, ValueError) as err:
                raise ValueError(str(err)) from None
        elif isinstance(encoder, str):
            encoder = import_encoder(encoder, kwargs)
        elif kwargs is not None:
            raise ValueError("encoder_kwargs go with an import path 'package.module:factory', not an encoder object")
        if not callable(encoder):
            raise ValueError(f"encoder must be 'package.module:factory' or a callable, got {type(encoder).__name__}")
        if isinstance(encoder, nn.Module):
            encoder = encoder.to(self.device).eval().requires_grad_(False)
        return encoder

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's embeddings ``[B, E]`` (float32) of observations ``x [B, *group_shape]``."""
        call = getattr(self.encoder, "encode_image", self.encoder)
        x = x.to(self.device).float()
        parts = [torch.as_tensor(call(x[i:i + self.batch_size])) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts).float().to(self.device)

    @torch.no_grad()
    def _embed_text(self, prompts: str | list[str], key: str) -> torch.Tensor:
        encode_text = getattr(self.encoder, "encode_text", None)
        if not callable(encode_text):
            raise ValueError(f"{key} needs a joint image-text encoder with an encode_text(list[str]) method; "
                             f"{type(self.encoder).__name__} has none")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise ValueError(f"{key} must be a non-empty prompt or list of prompts, got {prompts!r}")
        emb = torch.as_tensor(encode_text(prompts)).float().to(self.device)
        if emb.dim() != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"{key} embeds to shape {tuple(emb.shape)} but the encoder maps observations to "
                             f"{self.embed_dim} dims: the goal and observation embeddings must have the same size")
        return _mean_direction(emb)

    def _demo_observations(self, path: str, group_shape: tuple[int, ...], final_steps: int,
                           successful_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(the first obs of each used demo episode, the last ``final_steps`` true next obs of each)."""
        from envs.tasks.demos import load_demos

        try:
            data = load_demos(path)
        except FileNotFoundError as err:
            raise ValueError(f"{err}: record one with `drl demos ENV --out FILE` or collect_demos") from None
        group = self.obs_group if self.obs_group is not None else "policy"
        if f"obs/{group}" not in data:
            held = sorted(k.split("/", 1)[1] for k in data if k.startswith("obs/"))
            raise ValueError(f"demo file '{path}' has no obs group '{group}' (it has {held}); set obs_group")
        obs, nxt = data[f"obs/{group}"], data[f"next_obs/{group}"]
        if tuple(obs.shape[1:]) != group_shape:
            raise ValueError(f"demo file '{path}' ({data['meta']['env_id']}) has obs/{group} of shape "
                             f"{tuple(obs.shape[1:])}, but this env's is {group_shape}: record demos of the env "
                             "being trained")
        index = data["episode_index"]
        success = data.get("success", data["terminated"])
        starts, finals = [], []
        for episode in index.unique(sorted=True).tolist():
            rows = (index == episode).nonzero().flatten()
            if successful_only and not bool(success[rows[-1]]):
                continue
            starts.append(obs[rows[:1]])
            finals.append(nxt[rows[-final_steps:]])
        if not finals:
            raise ValueError(f"demo file '{path}' has no successful episode to take a goal from "
                             "(set successful_only: false to use every episode's end)")
        return torch.cat(starts).float(), torch.cat(finals).float()

    # --- the reward -------------------------------------------------------------------------
    def similarity_of(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``R_CLIP-Reg [B]`` of embeddings ``[B, E]`` against this wrapper's goal (and baseline, alpha)."""
        return similarity_reward(embeddings, self.goal, self.baseline, self.alpha)

    def learned_reward(self, obs: Obs) -> torch.Tensor:
        """The reward ``[N]`` (before ``coef`` and ``offset``) of observations ``obs``: the similarity,
        calibrated when ``normalize`` is ``demos``."""
        sim = self.similarity_of(self.embed(self._group(obs)))
        self._log_mean("similarity", sim)
        if self.calibration is not None:
            start, goal = self.calibration[0], self.calibration[1]
            sim = (sim - goal) / (goal - start)
        return sim

    def _group(self, obs: Obs) -> torch.Tensor:
        if isinstance(obs, dict):
            key = self.obs_group if self.obs_group is not None else "policy"
            return obs[key]
        return obs

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        next_obs, reward, terminated, truncated, info = self._inner_step(actions)
        r = self.coef * (self.learned_reward(info.get("final_obs", next_obs)) + self.offset)
        new = r if self.mode == "replace" else reward + r
        return next_obs, self._replace_reward(info, reward, new.to(reward.dtype)), terminated, truncated, info

    # --- state ----------------------------------------------------------------------------------
    def learner_state_dict(self) -> dict[str, Any]:
        """The goal and baseline embeddings, alpha and the demo calibration (not the encoder's weights: the
        encoder is fixed and named by the config)."""
        def copy(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().clone()

        return {"goal": copy(self.goal), "baseline": copy(self.baseline), "alpha": self.alpha,
                "calibration": copy(self.calibration)}

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        goal = state["goal"]
        if goal.shape != (self.embed_dim,):
            raise ValueError(f"the saved goal embedding has shape {tuple(goal.shape)} but this encoder gives "
                             f"{self.embed_dim} dims: load it with the encoder it was made with")
        self.goal = goal.to(self.device)
        self.baseline = None if state["baseline"] is None else state["baseline"].to(self.device)
        self.alpha = float(state["alpha"])
        self.calibration = None if state["calibration"] is None else state["calibration"].to(self.device)


def _mean_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """The unit mean ``[E]`` of unit embeddings ``[K, E]``."""
    return nn.functional.normalize(nn.functional.normalize(embeddings.float(), dim=-1).mean(0), dim=0)
