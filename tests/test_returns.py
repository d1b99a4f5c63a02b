"""Return estimators against numbers worked out by hand (gamma=0.9, lambda=0.8 -> gamma*lambda=0.72)."""

from __future__ import annotations

import pytest
import torch

from drl.returns import discounted_sum, gae, n_step_replay, n_step_targets, td_target

GAMMA = 0.9
LAM = 0.8


def t(rows: list[list[float]]) -> torch.Tensor:
    """``[T][N]`` nested list -> float64 tensor ``[T, N]`` (float64 keeps hand values exact to 1e-12)."""
    return torch.tensor(rows, dtype=torch.float64)


def b(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# gae
# ------------------------------------------------------------------------------------------------


def test_gae_plain_episode():
    # env 0: r = [1, 2, 3], V(s_t) = [0.5, 1.0, 1.5], V(s_{t+1}) = [1.0, 1.5, 2.0]
    #   delta_2 = 3 + 0.9*2.0 - 1.5 = 3.3                 A_2 = 3.3
    #   delta_1 = 2 + 0.9*1.5 - 1.0 = 2.35                A_1 = 2.35 + 0.72*3.3   = 4.726
    #   delta_0 = 1 + 0.9*1.0 - 0.5 = 1.4                 A_0 = 1.4  + 0.72*4.726 = 4.80272
    #   returns = A + V = [5.30272, 5.726, 4.8]
    # env 1: r = [0, 0, 1], V = 0 everywhere -> deltas [0, 0, 1] -> A = [0.72^2, 0.72, 1] = [0.5184, 0.72, 1]
    rewards = t([[1, 0], [2, 0], [3, 1]])
    values = t([[0.5, 0], [1.0, 0], [1.5, 0]])
    next_values = t([[1.0, 0], [1.5, 0], [2.0, 0]])
    no = b([[0, 0], [0, 0], [0, 0]])
    adv, ret = gae(rewards, values, next_values, no, no, GAMMA, LAM)
    close(adv, [[4.80272, 0.5184], [4.726, 0.72], [3.3, 1.0]])
    close(ret, [[5.30272, 0.5184], [5.726, 0.72], [4.8, 1.0]])
    assert adv.shape == (3, 2) and adv.dtype == torch.float64


def test_gae_terminated_step_does_not_bootstrap_or_carry():
    # r = 1, V(s_t) = 0.5 everywhere; terminated at t=1, whose next_value 9.0 (V(final_obs)) must be ignored.
    #   delta_2 = 1 + 0.9*0.5 - 0.5 = 0.95               A_2 = 0.95
    #   delta_1 = 1 + 0         - 0.5 = 0.5               A_1 = 0.5      (A_2 not carried across the end)
    #   delta_0 = 1 + 0.9*0.5 - 0.5 = 0.95               A_0 = 0.95 + 0.72*0.5 = 1.31
    # (bootstrapping would give delta_1 = 8.6; carrying would give A_1 = 0.5 + 0.72*0.95 = 1.184)
    rewards = t([[1], [1], [1]])
    values = t([[0.5], [0.5], [0.5]])
    next_values = t([[0.5], [9.0], [0.5]])
    terminated = b([[0], [1], [0]])
    truncated = b([[0], [0], [0]])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    close(adv, [[1.31], [0.5], [0.95]])
    close(ret, [[1.81], [1.0], [1.45]])


def test_gae_truncated_step_bootstraps_from_final_obs_value_and_does_not_carry():
    # As above but *truncated* at t=1: next_values[1] = V(final_obs) = 2.0, while V(s_1) = 0.5 and the
    # next episode's first obs has V(s_2) = 0.5.
    #   delta_2 = 1 + 0.9*0.5 - 0.5 = 0.95               A_2 = 0.95
    #   delta_1 = 1 + 0.9*2.0 - 0.5 = 2.3                 A_1 = 2.3      (A_2 not carried)
    #   delta_0 = 1 + 0.9*0.5 - 0.5 = 0.95               A_0 = 0.95 + 0.72*2.3 = 2.606
    # Wrong variants: bootstrap V(s_t) -> delta_1 = 0.95; treat as terminal -> 0.5; carry -> A_1 = 2.984.
    rewards = t([[1], [1], [1]])
    values = t([[0.5], [0.5], [0.5]])
    next_values = t([[0.5], [2.0], [0.5]])
    terminated = b([[0], [0], [0]])
    truncated = b([[0], [1], [0]])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    close(adv, [[2.606], [2.3], [0.95]])
    close(ret, [[3.106], [2.8], [1.45]])


def test_gae_mid_rollout_reset_then_new_episode():
    # T=4, N=2; envs are independent columns.
    # env 0: terminated at t=1, new episode at t=2..3.
    #   r = [1, 2, 3, 4], V = [2, 1, 0, 1], next_V = [1, 5 (ignored), 1, 3]
    #   delta_3 = 4 + 0.9*3 - 1 = 5.7          A_3 = 5.7
    #   delta_2 = 3 + 0.9*1 - 0 = 3.9          A_2 = 3.9 + 0.72*5.7 = 8.004
    #   delta_1 = 2 + 0     - 1 = 1.0          A_1 = 1.0
    #   delta_0 = 1 + 0.9*1 - 2 = -0.1         A_0 = -0.1 + 0.72*1.0 = 0.62
    # env 1: truncated at t=2 with V(final_obs) = 4; r = 1, V = 1 elsewhere.
    #   delta = [0.9, 0.9, 1 + 3.6 - 1 = 3.6, 0.9]
    #   A_3 = 0.9, A_2 = 3.6, A_1 = 0.9 + 0.72*3.6 = 3.492, A_0 = 0.9 + 0.72*3.492 = 3.41424
    rewards = t([[1, 1], [2, 1], [3, 1], [4, 1]])
    values = t([[2, 1], [1, 1], [0, 1], [1, 1]])
    next_values = t([[1, 1], [5, 1], [1, 4], [3, 1]])
    terminated = b([[0, 0], [1, 0], [0, 0], [0, 0]])
    truncated = b([[0, 0], [0, 0], [0, 1], [0, 0]])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    close(adv, [[0.62, 3.41424], [1.0, 3.492], [8.004, 3.6], [5.7, 0.9]])
    close(ret, [[2.62, 4.41424], [2.0, 4.492], [8.004, 4.6], [6.7, 1.9]])


def test_gae_lambda_one_is_discounted_return_and_lambda_zero_is_td():
    # lambda = 1, V = 0, no ends: A_t = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T
    #   r = [1, 1, 1], V_T = 10: A_2 = 1 + 9 = 10, A_1 = 1 + 0.9*10 = 10, A_0 = 10
    # lambda = 0: A_t = delta_t = r + 0.9*next_V - V = [1, 1, 10]
    rewards = t([[1], [1], [1]])
    zeros = t([[0], [0], [0]])
    next_values = t([[0], [0], [10]])
    no = b([[0], [0], [0]])
    adv1, _ = gae(rewards, zeros, next_values, no, no, GAMMA, 1.0)
    close(adv1, [[10.0], [10.0], [10.0]])
    adv0, _ = gae(rewards, zeros, next_values, no, no, GAMMA, 0.0)
    close(adv0, [[1.0], [1.0], [10.0]])


def test_gae_broadcasts_over_agent_axis_like_per_agent_calls():
    gen = torch.Generator().manual_seed(0)
    T, N, A = 6, 3, 4
    rewards = torch.randn(T, N, A, generator=gen, dtype=torch.float64)
    values = torch.randn(T, N, A, generator=gen, dtype=torch.float64)
    next_values = torch.randn(T, N, A, generator=gen, dtype=torch.float64)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[1, 0] = True
    terminated[4, 2] = True
    truncated[2, 1] = True
    truncated[3, 0] = True
    adv, ret = gae(rewards, values, next_values, terminated, truncated, GAMMA, LAM)
    assert adv.shape == (T, N, A)
    for a in range(A):
        adv_a, ret_a = gae(rewards[..., a], values[..., a], next_values[..., a], terminated, truncated, GAMMA, LAM)
        torch.testing.assert_close(adv[..., a], adv_a, rtol=0, atol=1e-12)
        torch.testing.assert_close(ret[..., a], ret_a, rtol=0, atol=1e-12)
    # masks with the rewards' full shape ([T, N, A]) give the same result as [T, N] masks
    adv_full, _ = gae(rewards, values, next_values, terminated.unsqueeze(-1).expand(T, N, A),
                      truncated.unsqueeze(-1).expand(T, N, A), GAMMA, LAM)
    torch.testing.assert_close(adv_full, adv, rtol=0, atol=1e-12)


def test_gae_agent_axis_literal():
    # T=2, N=1, A=2 with a [T, N] mask terminated at t=0 for both agents; V = 0.
    # agent 0: r = [1, 2], next_V = [7 (ignored), 3]: A_1 = 2 + 2.7 = 4.7, A_0 = 1 (not carried)
    # agent 1: r = [-1, 0], next_V = [7 (ignored), 1]: A_1 = 0.9,          A_0 = -1
    rewards = torch.tensor([[[1.0, -1.0]], [[2.0, 0.0]]], dtype=torch.float64)
    next_values = torch.tensor([[[7.0, 7.0]], [[3.0, 1.0]]], dtype=torch.float64)
    zeros = torch.zeros_like(rewards)
    terminated = b([[1], [0]])
    truncated = b([[0], [0]])
    adv, _ = gae(rewards, zeros, next_values, terminated, truncated, GAMMA, LAM)
    torch.testing.assert_close(adv, torch.tensor([[[1.0, -1.0]], [[4.7, 0.9]]], dtype=torch.float64),
                               rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# discounted_sum
# ------------------------------------------------------------------------------------------------


def test_discounted_sum_resets_at_episode_end():
    # env 0: r = [1, 2, 3, 4], episode ends at t=1:
    #   out_3 = 4, out_2 = 3 + 0.9*4 = 6.6, out_1 = 2 (end), out_0 = 1 + 0.9*2 = 2.8
    # env 1: r = [1, 1, 1, 1], no end: out_3 = 1, out_2 = 1.9, out_1 = 2.71, out_0 = 3.439
    rewards = t([[1, 1], [2, 1], [3, 1], [4, 1]])
    ends = b([[0, 0], [1, 0], [0, 0], [0, 0]])
    close(discounted_sum(rewards, ends, GAMMA), [[2.8, 3.439], [2.0, 2.71], [6.6, 1.9], [4.0, 1.0]])


# ------------------------------------------------------------------------------------------------
# n_step_targets
# ------------------------------------------------------------------------------------------------


def test_n_step_one_is_the_td_target():
    # r = [1, 2, 3], next_V = [10, 20, 30]; terminated at t=1, truncated at t=2 (bootstraps):
    #   [1 + 0.9*10, 2 + 0, 3 + 0.9*30] = [10, 2, 30]
    rewards = t([[1], [2], [3]])
    next_values = t([[10], [20], [30]])
    terminated = b([[0], [1], [0]])
    truncated = b([[0], [0], [1]])
    close(n_step_targets(rewards, next_values, terminated, truncated, GAMMA, 1), [[10.0], [2.0], [30.0]])

    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    next_values = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    terminated = torch.rand(7, 3, generator=gen) < 0.3
    truncated = (torch.rand(7, 3, generator=gen) < 0.3) & ~terminated
    expected = rewards + GAMMA * (~terminated).double() * next_values
    torch.testing.assert_close(n_step_targets(rewards, next_values, terminated, truncated, GAMMA, 1), expected,
                               rtol=0, atol=1e-12)


def test_n_step_three_with_episode_end_in_window():
    # gamma = 0.5, r = [1, 2, 3, 4, 5], next_V = [10, 20, 30, 40, 50] for three envs:
    # env 0, terminated at t=2:
    #   t0: 1 + 0.5*2 + 0.25*3 = 2.75 (window ends at a terminal: no bootstrap)
    #   t1: 2 + 0.5*3 = 3.5;  t2: 3
    #   t3 (window cut by the rollout end): 4 + 0.5*5 + 0.25*50 = 19;  t4: 5 + 0.5*50 = 30
    # env 1, truncated at t=2 (bootstrap V(final_obs) = next_V[2] = 30):
    #   t0: 2.75 + 0.125*30 = 6.5;  t1: 3.5 + 0.25*30 = 11;  t2: 3 + 0.5*30 = 18;  t3: 19;  t4: 30
    # env 2, no end:
    #   t0: 2.75 + 0.125*30 = 6.5;  t1: 2 + 1.5 + 1 + 0.125*40 = 9.5;  t2: 3 + 2 + 1.25 + 0.125*50 = 12.5
    #   t3: 19;  t4: 30
    rewards = t([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [5, 5, 5]])
    next_values = t([[10, 10, 10], [20, 20, 20], [30, 30, 30], [40, 40, 40], [50, 50, 50]])
    terminated = b([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    truncated = b([[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    out = n_step_targets(rewards, next_values, terminated, truncated, 0.5, 3)
    close(out, [[2.75, 6.5, 6.5], [3.5, 11.0, 9.5], [3.0, 18.0, 12.5], [19.0, 19.0, 19.0], [30.0, 30.0, 30.0]])


@pytest.mark.parametrize("n", [0, -1])
def test_n_step_rejects_n_below_one(n):
    x = torch.zeros(3, 1)
    no = torch.zeros(3, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="n must be >= 1"):
        n_step_targets(x, x, no, no, GAMMA, n)


# ------------------------------------------------------------------------------------------------
# n_step_replay / td_target on a replay ring (gamma = 0.5 keeps the hand sums exact)
# ------------------------------------------------------------------------------------------------


def i64(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def replay_check(out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], returns: list[float],
                 discounts: list[float], last: list[int]) -> None:
    ret, disc, last_steps = out
    torch.testing.assert_close(ret, torch.tensor(returns, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(disc, torch.tensor(discounts, dtype=torch.float64), rtol=0, atol=1e-12)
    assert last_steps.dtype == torch.int64 and last_steps.tolist() == last


def test_n_step_replay_one_step_is_r_plus_gamma_not_terminated():
    # C=4, N=2, full ring, head 0. env 0 terminated at row 1, env 1 truncated at row 2.
    # n=1: returns = r, discounts = 0.5 * (1 - terminated), last = the sampled row.
    rewards = t([[1, 10], [2, 20], [3, 30], [4, 40]])
    terminated = b([[0, 0], [1, 0], [0, 0], [0, 0]])
    truncated = b([[0, 0], [0, 0], [0, 1], [0, 0]])
    steps, envs = i64([0, 1, 2, 3, 1, 2]), i64([0, 0, 0, 0, 1, 1])
    out = n_step_replay(rewards, terminated, truncated, steps, envs, 0, 4, 0.5, 1)
    replay_check(out, [1, 2, 3, 4, 20, 30], [0.5, 0.0, 0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3, 1, 2])
    # the one-step TD target: r + gamma (1 - terminated) Q(next_obs of that row); Q = 100 everywhere
    target = td_target(out[0], out[1], torch.full((6,), 100.0, dtype=torch.float64))
    close(target.unsqueeze(-1), [[51], [2], [53], [54], [70], [80]])


def test_n_step_replay_three_steps_inside_an_episode_and_stopping_at_newest_row():
    # C=6, N=1, full ring written in order (head 0: newest row 5), r = [1..6], no episode end, n=3:
    #   row 0: 1 + 0.5*2 + 0.25*3 = 2.75, gamma^3 = 0.125, last 2
    #   row 2: 3 + 2 + 1.25 = 6.25, 0.125, last 4;  row 3: 4 + 2.5 + 1.5 = 8, 0.125, last 5
    #   row 4: the window would pass the newest row 5: 5 + 3 = 8, gamma^2 = 0.25, last 5
    #   row 5: the newest row itself: 6, gamma = 0.5, last 5 (row 0 is the oldest data, never walked into)
    rewards = t([[1], [2], [3], [4], [5], [6]])
    no = b([[0]] * 6)
    steps = i64([0, 2, 3, 4, 5])
    out = n_step_replay(rewards, no, no, steps, torch.zeros(5, dtype=torch.int64), 0, 6, 0.5, 3)
    replay_check(out, [2.75, 6.25, 8.0, 8.0, 6.0], [0.125, 0.125, 0.125, 0.25, 0.5], [2, 4, 5, 5, 5])


def test_n_step_replay_termination_vs_truncation_and_envs_with_different_ends():
    # C=6, 5 rows written (head 5, size 5; row 5 holds junk 99 that must never be read), n=3, r = [1..5]:
    # env 0 terminated at row 1:  row 0: 1 + 0.5*2 = 2, discount 0 (no bootstrap), last 1
    #                             row 1: 2, discount 0, last 1
    # env 1 truncated at row 1:   row 0: 2, discount gamma^2 = 0.25 (bootstrap from row 1's final obs), last 1
    #                             row 1: 2, discount 0.5, last 1
    # both, row 2: 3 + 2 + 1.25 = 6.25, 0.125, last 4;  row 3: 4 + 2.5 = 6.5, 0.25, last 4 (newest row)
    # env 2 truncated at row 0, terminated at row 3:
    #   row 0: 1, 0.5, last 0;  row 1: 2 + 1.5 + 1 = 4.5, discount 0 (the 3rd row terminated), last 3
    #   row 2: 3 + 2 = 5, 0, last 3;  row 3: 4, 0, last 3;  row 4: 5, 0.5, last 4
    rewards = t([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4], [5, 5, 5], [99, 99, 99]])
    terminated = b([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
    truncated = b([[0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    steps = i64([0, 1, 0, 1, 2, 2, 3, 3, 0, 1, 2, 3, 4])
    envs = i64([0, 0, 1, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2])
    out = n_step_replay(rewards, terminated, truncated, steps, envs, 5, 5, 0.5, 3)
    replay_check(out,
                 [2, 2, 2, 2, 6.25, 6.25, 6.5, 6.5, 1, 4.5, 5, 4, 5],
                 [0, 0, 0.25, 0.5, 0.125, 0.125, 0.25, 0.25, 0.5, 0, 0, 0, 0.5],
                 [1, 1, 1, 1, 4, 4, 4, 4, 0, 3, 3, 3, 4])


def test_n_step_replay_window_wraps_the_ring():
    # C=5, full, head 2: rows in time order are 2, 3, 4, 0, 1 (oldest row 2, newest row 1),
    # rewards by row [4, 5, 1, 2, 3] = 1, 2, 3, 4, 5 in time order. n=3:
    # env 0 (no end): row 3: 2 + 0.5*3 + 0.25*4 = 4.5, 0.125, last 0 (wrapped)
    #                 row 4: 3 + 2 + 1.25 = 6.25, 0.125, last 1;  row 0: 4 + 2.5 = 6.5, 0.25, last 1 (newest)
    #                 row 1: 5, 0.5, last 1 (row 2 after it is the oldest data)
    # env 1 terminated at row 4: row 3: 2 + 1.5 = 3.5, 0, last 4;  row 4: 3, 0, last 4;  row 0: 6.5, 0.25, last 1
    rewards = t([[4, 4], [5, 5], [1, 1], [2, 2], [3, 3]])
    terminated = b([[0, 0], [0, 0], [0, 0], [0, 0], [0, 1]])
    no = b([[0, 0]] * 5)
    steps, envs = i64([3, 4, 0, 1, 3, 4, 0]), i64([0, 0, 0, 0, 1, 1, 1])
    out = n_step_replay(rewards, terminated, no, steps, envs, 2, 5, 0.5, 3)
    replay_check(out, [4.5, 6.25, 6.5, 5, 3.5, 3, 6.5], [0.125, 0.125, 0.25, 0.5, 0, 0, 0.25], [0, 1, 1, 1, 4, 4, 1])


def test_n_step_replay_gamma_one_and_zero():
    # C=4, full, head 0, r = [1, 2, 3, 4]; env 0 truncated at row 1, env 1 terminated at row 3. n=3, gamma=1:
    #   env 0: row 0: 1 + 2 = 3, discount 1, last 1;  row 2: 3 + 4 = 7, 1, last 3 (newest)
    #   env 1: row 0: 1 + 2 + 3 = 6, 1, last 2;  row 2: 7, 0 (terminated), last 3
    rewards = t([[1, 1], [2, 2], [3, 3], [4, 4]])
    terminated = b([[0, 0], [0, 0], [0, 0], [0, 1]])
    truncated = b([[0, 0], [1, 0], [0, 0], [0, 0]])
    steps, envs = i64([0, 2, 0, 2]), i64([0, 0, 1, 1])
    out = n_step_replay(rewards, terminated, truncated, steps, envs, 0, 4, 1.0, 3)
    replay_check(out, [3, 7, 6, 7], [1, 1, 1, 0], [1, 3, 2, 3])
    # gamma = 0: only the first reward counts and nothing is bootstrapped
    ret, disc, _ = n_step_replay(rewards, terminated, truncated, steps, envs, 0, 4, 0.0, 3)
    assert ret.tolist() == [1, 3, 1, 3] and disc.tolist() == [0, 0, 0, 0]


def test_n_step_replay_matches_n_step_targets_on_a_plain_trajectory():
    # a buffer filled once without wrapping (head = size = T) is a rollout: the replay targets must
    # equal n_step_targets, whose windows also stop at the rollout end and at episode ends
    gen = torch.Generator().manual_seed(3)
    T, N, n = 9, 4, 3
    rewards = torch.randn(T + 2, N, generator=gen, dtype=torch.float64)  # 2 unwritten rows at the end
    next_values = torch.randn(T + 2, N, generator=gen, dtype=torch.float64)
    terminated = torch.rand(T + 2, N, generator=gen) < 0.15
    truncated = (torch.rand(T + 2, N, generator=gen) < 0.15) & ~terminated
    expected = n_step_targets(rewards[:T], next_values[:T], terminated[:T], truncated[:T], GAMMA, n)
    steps = torch.arange(T).repeat_interleave(N)
    envs = torch.arange(N).repeat(T)
    ret, disc, last = n_step_replay(rewards, terminated, truncated, steps, envs, T, T, GAMMA, n)
    target = td_target(ret, disc, next_values[last, envs])
    torch.testing.assert_close(target.view(T, N), expected, rtol=0, atol=1e-12)


def _n_step_replay_reference(rewards, terminated, truncated, steps, envs, head, size, gamma, n):
    """The definition, one transition at a time."""
    capacity = rewards.shape[0]
    newest = (head - 1) % capacity
    out = []
    for step, env in zip(steps.tolist(), envs.tolist(), strict=True):
        total, row, m = 0.0, step, 0
        while True:
            total += gamma**m * rewards[row, env].item()
            m += 1
            if terminated[row, env] or truncated[row, env] or row == newest or m == n:
                break
            row = (row + 1) % capacity
        out.append((total, gamma**m * (0.0 if terminated[row, env] else 1.0), row))
    return out


@pytest.mark.parametrize(("head", "size", "n"), [(3, 8, 4), (5, 5, 3), (0, 8, 2), (7, 8, 8), (2, 8, 1)])
def test_n_step_replay_matches_the_definition_on_random_rings(head, size, n):
    gen = torch.Generator().manual_seed(head * 10 + n)
    C, N = 8, 3
    rewards = torch.randn(C, N, generator=gen, dtype=torch.float64)
    terminated = torch.rand(C, N, generator=gen) < 0.2
    truncated = (torch.rand(C, N, generator=gen) < 0.2) & ~terminated
    held = torch.arange(size) if size < C else torch.arange(C)
    steps = held.repeat_interleave(N)
    envs = torch.arange(N).repeat(len(held))
    ret, disc, last = n_step_replay(rewards, terminated, truncated, steps, envs, head, size, GAMMA, n)
    expected = _n_step_replay_reference(rewards, terminated, truncated, steps, envs, head, size, GAMMA, n)
    torch.testing.assert_close(ret, torch.tensor([e[0] for e in expected], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(disc, torch.tensor([e[1] for e in expected], dtype=torch.float64), rtol=0, atol=1e-12)
    assert last.tolist() == [e[2] for e in expected]


def test_n_step_replay_trailing_reward_axis():
    # two reward streams, the second = -2 x the first; C=4, full, head 0, n=2, gamma 0.5, no ends:
    #   row 0: 1 + 0.5*2 = 2 / -4, discount 0.25 with shape [B, 1] so it broadcasts over the streams
    first = t([[1], [2], [3], [4]])
    rewards = torch.stack([first, -2 * first], dim=-1)  # [4, 1, 2]
    no = b([[0]] * 4)
    ret, disc, last = n_step_replay(rewards, no, no, i64([0, 3]), i64([0, 0]), 0, 4, 0.5, 2)
    torch.testing.assert_close(ret, torch.tensor([[2.0, -4.0], [4.0, -8.0]], dtype=torch.float64))
    torch.testing.assert_close(disc, torch.tensor([[0.25], [0.5]], dtype=torch.float64))
    assert last.tolist() == [1, 3]
    target = td_target(ret, disc, torch.tensor([[8.0, 16.0], [2.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(target, torch.tensor([[4.0, 0.0], [5.0, -7.0]], dtype=torch.float64))


def test_n_step_replay_rejects_bad_arguments():
    x = torch.zeros(4, 2)
    no = torch.zeros(4, 2, dtype=torch.bool)
    idx = i64([0])
    with pytest.raises(ValueError, match="n must be >= 1"):
        n_step_replay(x, no, no, idx, idx, 0, 4, GAMMA, 0)
    with pytest.raises(ValueError, match="size"):
        n_step_replay(x, no, no, idx, idx, 0, 0, GAMMA, 1)
    with pytest.raises(ValueError, match="head"):
        n_step_replay(x, no, no, idx, idx, 4, 4, GAMMA, 1)
    with pytest.raises(ValueError, match=r"must be \[C, N\]"):
        n_step_replay(x, no[:, :1], no, idx, idx, 0, 4, GAMMA, 1)
