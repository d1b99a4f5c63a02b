"""RARL's adversarial env (envs.adversarial): where, how hard and how long the adversary pushes, on both backends."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from envs import make_vec_env
from envs.adversarial import PAPER_ADVERSARY, AdversarialEnv
from envs.model_scaling import PER_ENV_FIELDS, ModelScaler

CPU = torch.device("cpu")


def cpu_env(env_id: str = "InvertedPendulum-v5", num_envs: int = 1, **kwargs) -> AdversarialEnv:
    return AdversarialEnv(make_vec_env(env_id, num_envs, CPU, "sync", {}), **kwargs)


def record_xfrc(env: AdversarialEnv) -> list[np.ndarray]:
    """What ``xfrc_applied`` held while MuJoCo stepped (each call of the frame-skip loop), per step."""
    seen: list[np.ndarray] = []
    sub = env.unwrapped.envs[0].unwrapped
    original = sub._step_mujoco_simulation

    def spy(ctrl, n_frames):
        seen.append(sub.data.xfrc_applied.copy())
        return original(ctrl, n_frames)

    sub._step_mujoco_simulation = spy
    return seen


def test_force_on_named_body_for_exactly_one_step_then_zeroed():
    env = cpu_env(adv_fraction=0.5)  # bound 2.5 N
    assert env.bodies == ("pole",) and env.axes == "xz" and env.bound == 2.5
    seen = record_xfrc(env)
    env.reset(seed=0)
    sub = env.unwrapped.envs[0].unwrapped
    pole = sub.model.body("pole").id
    env.step(torch.tensor([[0.0, 0.4, -1.0]]))  # protagonist 0; adversary x 0.4, z -1
    expected = np.zeros((sub.model.nbody, 6))
    expected[pole, :3] = [1.0, 0.0, -2.5]
    np.testing.assert_allclose(seen[0], expected)  # during the step: on the pole only, world frame
    assert not sub.data.xfrc_applied.any()  # removed after the step
    env.step(torch.tensor([[0.0, 0.0, 0.0]]))
    assert not seen[1].any()  # the next step without an adversary action has no force


def _x_momentum(sub) -> float:
    """Total x momentum of the cart subtree (cart + pole) from qvel."""
    mujoco.mj_kinematics(sub.model, sub.data)
    mujoco.mj_comPos(sub.model, sub.data)
    jacp = np.zeros((3, sub.model.nv))
    mujoco.mj_jacSubtreeCom(sub.model, sub.data, jacp, 1)
    return float(sub.model.body_subtreemass[1] * (jacp @ sub.data.qvel)[0])


def test_force_changes_momentum_by_force_times_dt():
    """A horizontal push F on the pole for one step (dt = 2 x 0.02 s) changes the cart+pole x momentum by
    F dt against the same step without it (their centre of mass accelerates by F / total mass): the rail
    takes no x force, and joint damping adds < 1e-3 relative."""
    momenta = []
    for push in (0.0, 1.0):
        env = cpu_env(adv_fraction=1.0)  # F = 5 N
        env.reset(seed=3)
        sub = env.unwrapped.envs[0].unwrapped
        sub.set_state(sub.init_qpos, sub.init_qvel)  # at rest, upright: both runs start identically
        p0 = _x_momentum(sub)
        env.step(torch.tensor([[0.0, push, 0.0]]))
        momenta.append(_x_momentum(sub) - p0)
    assert momenta[1] - momenta[0] == pytest.approx(5.0 * 0.04, rel=5e-3)


def test_bounds_sign_and_layout():
    env = cpu_env("HalfCheetah-v5", 2, adv_fraction=0.2)  # bound 1 N
    assert env.bodies == ("torso", "bfoot", "ffoot")
    assert env.protagonist_action_space.shape == (6,) and env.adversary_action_space.shape == (6,)
    env.reset(seed=0)
    adversary = torch.tensor([[10.0, -10.0, 0.5, 0.0, -0.3, 1.0], [-3.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    _, reward, _, _, info = env.step(torch.cat([torch.zeros(2, 6), adversary], 1))
    force = info["adversary_force"]
    assert force.shape == (2, 3, 6) and force.abs().max() <= env.bound
    torch.testing.assert_close(force[0, :, [0, 2]], torch.tensor([[1.0, -1.0], [0.5, 0.0], [-0.3, 1.0]]))
    assert not force[..., [1, 3, 4, 5]].any()  # no y force, no torque
    torch.testing.assert_close(info["adversary_reward"], -reward)
    env.active = False
    _, _, _, _, info = env.step(torch.cat([torch.zeros(2, 6), adversary], 1))
    assert not info["adversary_force"].any()


def test_bad_body_is_one_clear_error_listing_the_bodies():
    with pytest.raises(ValueError, match=r"\['feet'\] are not bodies of the Hopper model; its bodies: \['world', "
                                         r"'torso', 'thigh', 'leg', 'foot'\]"):
        cpu_env("Hopper-v5", bodies=["feet"])
    with pytest.raises(ValueError, match="no paper default adversary bodies for task 'Ant'"):
        cpu_env("Ant-v5")
    with pytest.raises(ValueError, match="distinct letters of 'xyz'"):
        cpu_env(axes="xw")


@pytest.mark.parametrize("task", ["InvertedPendulum", "Hopper"])
def test_cpu_and_mjwarp_apply_the_same_force(task):
    """Same model, same state, same forces -> the same next state on both backends (float32 tolerance)."""
    cpu = cpu_env(f"{task}-v5", adv_fraction=1.0)
    warp = AdversarialEnv(make_vec_env(f"drl/{task}-v0", 1, CPU, "sync", {}), adv_fraction=1.0)
    assert cpu.bodies == warp.bodies == PAPER_ADVERSARY[task][0]
    cpu.reset(seed=0)
    warp.reset(seed=0)
    sub = cpu.unwrapped.envs[0].unwrapped
    base = warp.unwrapped
    base.write_state(torch.ones(1, dtype=torch.bool), torch.tensor(sub.data.qpos[None], dtype=torch.float32),
                     torch.tensor(sub.data.qvel[None], dtype=torch.float32))
    size = cpu.protagonist_size + cpu.adversary_action_space.shape[0]
    action = torch.linspace(-0.9, 0.9, size).view(1, size)
    obs_cpu, r_cpu, *_ = cpu.step(action)
    obs_warp, r_warp, *_ = warp.step(action)
    obs_plain, *_ = AdversarialEnv(make_vec_env(f"drl/{task}-v0", 1, CPU, "sync", {}), active=False).step(action)
    torch.testing.assert_close(obs_warp, obs_cpu, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(r_warp, r_cpu, atol=1e-3, rtol=1e-4)
    assert not base.xfrc_applied.any()  # zeroed after the step on MJWarp too
    assert (obs_plain - obs_warp).abs().max() > 1e-3  # the force mattered


def test_model_scaler_sets_and_restores_both_backends():
    cpu = make_vec_env("InvertedPendulum-v5", 2, CPU, "sync", {})
    subs = [e.unwrapped for e in cpu.envs]
    nominal = {k: getattr(subs[0].model, k).copy() for k in ("body_mass", "body_inertia", "geom_friction",
                                                               "body_subtreemass", "dof_invweight0")}
    scaler = ModelScaler(cpu, ["pole"])
    scaler.apply([2.0, 0.5], [1.5, 1.0])
    np.testing.assert_allclose(subs[0].model.body_mass, nominal["body_mass"] * [1, 1, 2])
    np.testing.assert_allclose(subs[1].model.body_inertia[2], nominal["body_inertia"][2] * 0.5)
    np.testing.assert_allclose(subs[0].model.geom_friction, nominal["geom_friction"] * 1.5)
    np.testing.assert_allclose(subs[0].model.body_subtreemass[1], nominal["body_mass"][1] + 2 * nominal["body_mass"][2])
    scaler.restore()
    for sub in subs:
        for key, value in nominal.items():
            np.testing.assert_array_equal(getattr(sub.model, key), value, err_msg=key)

    warp = make_vec_env("drl/InvertedPendulum-v0", 3, CPU, "sync", {"per_env_model_fields": PER_ENV_FIELDS})
    base = warp.unwrapped
    mass0 = base.model_view("body_mass").clone()
    scaler = ModelScaler(warp)
    scaler.apply([0.5, 1.0, 1.5], [1.0, 2.0, 1.0])
    torch.testing.assert_close(base.model_view("body_mass")[:, 1:], mass0[:, 1:] * torch.tensor([[0.5], [1.0], [1.5]]))
    assert base.model_view("geom_friction")[1].equal(2 * base.model_view("geom_friction")[0])
    scaler.restore()
    assert base.model_view("body_mass").equal(mass0)
    with pytest.raises(ValueError, match="per_env_model_fields"):
        ModelScaler(make_vec_env("drl/InvertedPendulum-v0", 1, CPU, "sync", {}))
