"""MuJoCo Warp backend: agreement with gymnasium's CPU MuJoCo v5 tasks and the env contract.

Runs on warp's ``cpu`` device. The first run compiles warp kernels (~1-2 min on 2 cores); later
runs load them from warp's kernel cache. Envs are built once per module and reused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("warp")
pytest.importorskip("mujoco_warp")
pytest.importorskip("mujoco")
gym = pytest.importorskip("gymnasium")
try:
    gym.make("Hopper-v5").close()
except gym.error.DependencyNotInstalled:  # pragma: no cover
    pytest.skip("gymnasium's MuJoCo envs are not installed", allow_module_level=True)

import envs  # noqa: E402  (registers drl/ ids)
import envs.mjwarp.core as mjwarp_core  # noqa: E402
from envs.core import MissingDependencyError  # noqa: E402
from envs.mjwarp import Ant, HalfCheetah, Hopper, MjWarpEnv, Walker2d, warp_device_for  # noqa: E402
from envs.mjwarp.locomotion import gymnasium_asset  # noqa: E402

NUM_ENVS = 2  # two rows, each compared with its own gymnasium env: checks the batch rows are independent

# Tolerances. Warp integrates in float32 (eps 1.2e-7), MuJoCo C in float64, so the two start
# ~1e-7 apart and each contact event (a contact appearing a substep earlier in one of them,
# a solver stopping at a different iterate) amplifies the gap; the tasks are chaotic, so past
# some horizon the trajectories separate completely. Measured on 20 random v5 initial states with
# uniform random actions (max |obs diff| over the horizon, worst seed / median seed):
#   Hopper       until termination (<=50 steps): 1.4e-5 / 4e-6    reward 2.1e-6 worst
#   Walker2d     until termination (<=50 steps): 2.7e-4 / 9e-5    reward 2.0e-5 worst
#   HalfCheetah  10 steps: 5.5e-2 / 1.3e-4; 20 steps: 0.5 / 7e-4 (for some initial states a foot
#                or head contact early on is a branching point)
#   Ant (elliptic cones) 15 steps: 1.1e-3 / 8e-5; 20 steps: 1.1 / 2e-4
# Each case below uses horizons and tolerances with >=10x margin over the error measured for its
# own (pinned) seeds: obs 1.1e-4, 1.0e-5, 1.7e-4, 6.1e-4, 1.7e-6 and reward 1.7e-5, 3.1e-6,
# 6.2e-6, 4.7e-5, 1.2e-7 for the five cases in order.
#
# The default Ant-v5 uses pyramidal friction cones, whose edges depend on the contact frame's
# tangent directions. For a capsule on a plane MuJoCo C aligns the first tangent with the
# capsule's axis projected on the plane, while mujoco_warp 4.0.0 falls back to a fixed axis when
# that projection is shorter than 0.5 (steep legs). The Ant's pyramid is then rotated and the
# friction force differs at the first such foot contact, a real modelling difference rather than
# round-off. So the full Ant comparison runs with elliptic (rotation-invariant) cones in both
# simulators, and the default Ant is compared over its first step, before any foot touches the
# floor. The planar models are unaffected: their capsules' axes project onto the x axis, where both
# choices give the same pyramid.
CASES = {
    # name: (env kwargs, reset noise (scale, qvel law), steps, obs atol, reward atol, seed)
    "HalfCheetah": ({}, (0.1, "normal"), 10, 1e-2, 5e-3, 0),
    "Hopper": ({}, (5e-3, "uniform"), 50, 2e-4, 5e-5, 0),
    "Walker2d": ({}, (5e-3, "uniform"), 50, 3e-3, 2e-4, 0),
    "Ant-elliptic": ({"xml_file": "elliptic"}, (0.1, "normal"), 15, 1e-2, 2e-3, 0),
    "Ant": ({}, (0.1, "normal"), 1, 1e-4, 1e-5, 0),
}
TASKS = {"HalfCheetah": HalfCheetah, "Hopper": Hopper, "Walker2d": Walker2d, "Ant": Ant}


@pytest.fixture(scope="module")
def elliptic_ant_xml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """gymnasium's ant.xml with elliptic friction cones."""
    text = open(gymnasium_asset("ant.xml")).read()
    assert '<option integrator="RK4"' in text
    path = tmp_path_factory.mktemp("mjcf") / "ant_elliptic.xml"
    path.write_text(text.replace("<option ", '<option cone="elliptic" '))
    return str(path)


@pytest.fixture(scope="module")
def task_envs(elliptic_ant_xml: str) -> dict[str, MjWarpEnv]:
    """One batched env per comparison case (built once: construction compiles/loads kernels)."""
    built = {}
    for case, (kwargs, *_rest) in CASES.items():
        name = case.split("-")[0]
        if kwargs.get("xml_file") == "elliptic":
            kwargs = {**kwargs, "xml_file": elliptic_ant_xml}
        built[case] = TASKS[name](num_envs=NUM_ENVS, **kwargs)
    return built


def _v5_initial_state(gym_env, rng: np.random.Generator, scale: float, qvel_law: str) -> np.ndarray:
    """A state drawn like v5's reset_model: ``[nq + nv]`` (qpos then qvel)."""
    model = gym_env.unwrapped.model
    qpos = gym_env.unwrapped.init_qpos + rng.uniform(-scale, scale, model.nq)
    if qvel_law == "normal":
        qvel = gym_env.unwrapped.init_qvel + scale * rng.standard_normal(model.nv)
    else:
        qvel = gym_env.unwrapped.init_qvel + rng.uniform(-scale, scale, model.nv)
    return np.concatenate([qpos, qvel])


@pytest.mark.parametrize("case", list(CASES))
def test_agrees_with_gymnasium_v5(case: str, task_envs: dict[str, MjWarpEnv], elliptic_ant_xml: str) -> None:
    kwargs, (scale, qvel_law), steps, obs_atol, reward_atol, seed = CASES[case]
    name = case.split("-")[0]
    if kwargs.get("xml_file") == "elliptic":
        kwargs = {**kwargs, "xml_file": elliptic_ant_xml}
    env = task_envs[case]
    gym_envs = [gym.make(f"{name}-v5", **kwargs).unwrapped for _ in range(NUM_ENVS)]
    rng = np.random.default_rng(seed)
    states = []
    for gym_env in gym_envs:
        gym_env.reset(seed=0)
        state = _v5_initial_state(gym_env, rng, scale, qvel_law)
        nq = gym_env.model.nq
        gym_env.set_state(state[:nq], state[nq:])
        states.append(state)
    obs, _ = env.reset(options={"state": torch.tensor(np.array(states), dtype=torch.float32)})
    assert obs.shape == (NUM_ENVS, *env.single_observation_space.shape)
    gym_obs = np.array([gym_env.unwrapped._get_obs() for gym_env in gym_envs])
    np.testing.assert_allclose(obs.numpy(), gym_obs, atol=1e-5)

    alive = [True] * NUM_ENVS
    for step in range(steps):
        actions = rng.uniform(-1.0, 1.0, (NUM_ENVS, env.single_action_space.shape[0])).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(torch.from_numpy(actions))
        for i, gym_env in enumerate(gym_envs):
            if not alive[i]:
                continue
            gym_obs, gym_reward, gym_terminated, _, gym_info = gym_env.step(actions[i])
            where = f"{case} env {i} step {step}"
            if case == "Ant":
                assert gym_env.data.ncon == 0, "the pyramidal-cone Ant is only compared before foot contact"
            np.testing.assert_allclose(info["final_obs"][i].numpy(), gym_obs, atol=obs_atol, err_msg=where)
            assert abs(reward[i].item() - gym_reward) < reward_atol, where
            assert bool(terminated[i]) == gym_terminated, where
            assert not truncated[i]
            for key in ("reward_forward", "reward_ctrl", "reward_survive", "reward_contact", "x_position"):
                if key in gym_info:
                    assert abs(info[key][i].item() - gym_info[key]) < max(reward_atol, obs_atol), f"{where}: {key}"
            alive[i] = not gym_terminated
        if not any(alive):
            break
    for gym_env in gym_envs:
        gym_env.close()


def test_info_has_reward_terms_per_env(task_envs: dict[str, MjWarpEnv]) -> None:
    env = task_envs["Ant"]
    env.reset(seed=1)
    _, reward, _, _, info = env.step(torch.zeros(NUM_ENVS, 8))
    terms = ("reward_forward", "reward_ctrl", "reward_contact", "reward_survive")
    for key in terms:
        assert info[key].shape == (NUM_ENVS,)
    torch.testing.assert_close(reward, sum(info[key] for key in terms))
    assert env.single_observation_space.shape == (105,)  # v5 default: cfrc_ext of 13 bodies included


def test_same_step_autoreset_on_termination(task_envs: dict[str, MjWarpEnv]) -> None:
    env = task_envs["Hopper"]
    env.reset(seed=0)
    state = torch.cat([env.qpos, env.qvel], dim=-1).clone()
    state[0, 1] = 0.5  # torso height below healthy_z_range: env 0 terminates on its first step
    obs, _ = env.reset(options={"state": state})
    next_obs, _, terminated, truncated, info = env.step(torch.zeros(NUM_ENVS, 3))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert info["_final_obs"].tolist() == [True, False]
    assert info["final_obs"][0, 0] < 0.7  # the true last obs: the fallen torso
    assert abs(next_obs[0, 0].item() - env.init_qpos[1].item()) <= 5e-3 + 1e-6  # already the next episode
    torch.testing.assert_close(info["final_obs"][1], next_obs[1])  # unfinished env: same obs
    assert env.episode_steps.tolist() == [0, 1]


def test_same_step_autoreset_on_truncation(task_envs: dict[str, MjWarpEnv]) -> None:
    env = task_envs["HalfCheetah"]
    saved = env.max_episode_steps
    env.max_episode_steps = 2
    try:
        env.reset(seed=0)
        _, _, _, truncated, info = env.step(torch.zeros(NUM_ENVS, 6))
        assert not truncated.any() and not info["_final_obs"].any()
        obs, _, terminated, truncated, info = env.step(torch.zeros(NUM_ENVS, 6))
        assert truncated.all() and not terminated.any() and info["_final_obs"].all()
        assert not torch.equal(info["final_obs"], obs)  # final obs kept; obs is the reset obs
        assert env.episode_steps.tolist() == [0, 0]
    finally:
        env.max_episode_steps = saved


def test_reset_by_mask_touches_only_masked_envs(task_envs: dict[str, MjWarpEnv]) -> None:
    env = task_envs["HalfCheetah"]
    actions = torch.full((NUM_ENVS, 6), 0.5)
    mask = torch.tensor([True, False])

    def rollout(reset_env_0: bool) -> tuple[torch.Tensor, torch.Tensor]:
        env.reset(seed=3)
        for _ in range(3):
            env.step(actions)
        before = torch.cat([env.qpos, env.qvel], dim=-1).clone()
        if reset_env_0:
            env._reset_envs(mask)
            after = torch.cat([env.qpos, env.qvel], dim=-1)
            assert torch.equal(after[1], before[1])
            assert not torch.equal(after[0], before[0])
            assert (env.qpos[0] - env.init_qpos).abs().max() <= 0.1 + 1e-6  # v5 reset noise range
        obs, *_ = env.step(actions)
        return before, obs

    before_reset, obs_with_reset = rollout(reset_env_0=True)
    before_plain, obs_plain = rollout(reset_env_0=False)
    assert torch.equal(before_reset, before_plain)
    # the untouched env continues bitwise as if nothing had happened (its warm start etc. kept)
    assert torch.equal(obs_with_reset[1], obs_plain[1])
    assert not torch.equal(obs_with_reset[0], obs_plain[0])


def test_reset_seed_is_reproducible(task_envs: dict[str, MjWarpEnv]) -> None:
    env = task_envs["Walker2d"]
    first, _ = env.reset(seed=7)
    second, _ = env.reset(seed=7)
    third, _ = env.reset(seed=8)
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert not torch.equal(first[0], first[1])  # each env draws its own noise


# --- generic env: external forces, per-env model parameters -----------------------------------
BALL_XML = """
<mujoco>
  <option timestep="0.01" gravity="0 0 0"/>
  <worldbody>
    <body name="ball" pos="0 0 1">
      <freejoint/>
      <geom type="sphere" size="0.1" mass="2" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
</mujoco>
"""

SLIDER_XML = """
<mujoco>
  <option timestep="0.005"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1" friction="0.01 0.005 0.0001"/>
    <body name="slider" pos="0 0 0.05">
      <freejoint/>
      <geom name="slider" type="capsule" fromto="-0.2 0 0 0.2 0 0" size="0.05" mass="1"/>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def ball_env() -> MjWarpEnv:
    """A free ball without gravity or contacts: velocity changes only through applied forces."""
    return MjWarpEnv(BALL_XML, num_envs=NUM_ENVS, frame_skip=5, per_env_model_fields=("body_mass",))


def test_external_force_acts_for_every_substep_then_clears(ball_env: MjWarpEnv) -> None:
    env = ball_env
    obs, _ = env.reset()
    assert obs.shape == (NUM_ENVS, 7 + 6)
    forces = torch.zeros(NUM_ENVS, 1, 6)
    forces[0, 0, 0] = 10.0  # +x force on env 0 only
    env.set_external_force(["ball"], forces)
    env.step(torch.zeros(NUM_ENVS, 0))
    # Euler with no damping: dv = F / m * (frame_skip * timestep) exactly when all 5 substeps see F
    assert env.qvel[0, 0].item() == pytest.approx(10.0 / 2.0 * 5 * 0.01, rel=1e-5)
    assert env.qvel[1].abs().max() == 0
    assert env.xfrc_applied.abs().max() == 0  # cleared after the step
    env.step(torch.zeros(NUM_ENVS, 0))
    assert env.qvel[0, 0].item() == pytest.approx(0.25, rel=1e-5)  # no force any more: constant velocity
    with pytest.raises(ValueError, match="shape"):
        env.set_external_force(["ball"], torch.zeros(NUM_ENVS, 6))
    with pytest.raises(KeyError):
        env.set_external_force(["no_such_body"], torch.zeros(NUM_ENVS, 1, 6))


def test_per_env_body_mass(ball_env: MjWarpEnv) -> None:
    env = ball_env
    env.reset()
    env.set_body_mass(["ball"], torch.tensor([[2.0], [4.0]]))
    forces = torch.zeros(NUM_ENVS, 1, 6)
    forces[:, 0, 0] = 10.0
    env.set_external_force(["ball"], forces)
    env.step(torch.zeros(NUM_ENVS, 0))
    assert env.qvel[:, 0].tolist() == pytest.approx([0.25, 0.125], rel=1e-5)  # dv = F dt / m per env
    assert env.model_view("body_inertia")[1, 1].tolist() == pytest.approx(
        (env.mj_model.body_inertia[1] * 2.0).tolist(), rel=1e-5
    )  # inertia scaled with the mass
    env.set_body_mass(["ball"], torch.tensor([[2.0], [2.0]]))


def test_per_env_geom_friction() -> None:
    env = MjWarpEnv(SLIDER_XML, num_envs=NUM_ENVS, frame_skip=4, per_env_model_fields=("geom_friction",))
    # contact friction is the larger of the two geoms': the floor's is 0.01, the slider's sets it
    env.set_geom_friction(["slider"], torch.tensor([[[0.1, 0.005, 1e-4]], [[1.0, 0.005, 1e-4]]]))
    state = torch.zeros(NUM_ENVS, 13)
    state[:, 2] = 0.05  # resting on the floor
    state[:, 3] = 1.0  # identity quaternion
    state[:, 7] = 1.0  # sliding along its axis at 1 m/s
    env.reset(options={"state": state})
    for _ in range(10):  # 0.2 s
        env.step(torch.zeros(NUM_ENVS, 0))
    # Coulomb: v = 1 - mu g t -> 0.80 for mu = 0.1; mu = 1 stops it within 0.1 s
    assert env.qvel[0, 0].item() == pytest.approx(1.0 - 0.1 * 9.81 * 0.2, abs=0.03)
    assert abs(env.qvel[1, 0].item()) < 0.02
    with pytest.raises(ValueError, match="per_env_model_fields"):
        env.set_body_mass(["slider"], torch.ones(NUM_ENVS, 1))


# --- construction --------------------------------------------------------------------------
def test_registered_ids_build_the_warp_env() -> None:
    assert envs.ENVS["drl/Hopper-v0"].extra == "mjwarp"
    env = envs.make_vec_env("drl/Hopper-v0", num_envs=1, env_kwargs={"max_episode_steps": 5})
    assert isinstance(env, Hopper) and env.max_episode_steps == 5


def test_missing_backend_raises_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mjwarp_core, "wp", None)
    with pytest.raises(MissingDependencyError, match="mujoco-warp"):
        HalfCheetah(num_envs=1)


def test_device_mapping_and_bad_fields() -> None:
    assert warp_device_for(torch.device("cpu")) == "cpu"
    assert warp_device_for(torch.device("cuda:1")) == "cuda:1"
    with pytest.raises(ValueError, match="cpu or cuda"):
        warp_device_for(torch.device("meta"))
    with pytest.raises(ValueError, match="per-world"):
        MjWarpEnv(BALL_XML, num_envs=1, per_env_model_fields=("nbody",))
