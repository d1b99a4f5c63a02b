"""The normalisers' torch path (GPUs, no numba): no host sync per step, and the compiled graphs of
:class:`RunningMeanStd` against the eager ops and the definition (on the CPU through inductor's C++
backend; on CUDA, where they run in training, under the ``cuda`` marker)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_nn import _obs_stream, _ReferenceStats
from torch.utils._python_dispatch import TorchDispatchMode

import drl.nn.normalization as normalization
from drl.nn import RewardScaler, RunningMeanStd
from drl.nn.numba_actor import numba_available
from drl.optim import compiler_available

_SYNCS = ("aten._local_scalar_dense", "aten.equal", "aten.is_nonzero")


class _NoHostRead(TorchDispatchMode):
    """Raises on the ops that bring a device value to the host (``.item()``, ``float(t)``, ``bool(t)``...)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(str(func).startswith(name) for name in _SYNCS):
            raise AssertionError(f"host read of a tensor on the hot path: {func}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _no_host_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside: reading a tensor's value on the host raises, through the Python methods or the aten op."""
    def refuse(*args, **kwargs):
        raise AssertionError("host read of a tensor on the hot path")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
            patch.setattr(torch.Tensor, name, refuse)
        with _NoHostRead():
            yield


@pytest.fixture
def torch_path(monkeypatch):
    monkeypatch.setattr(normalization, "_KERNELS", False)


@pytest.fixture
def fresh_compiled(monkeypatch):
    """The compiled path on the CPU, with this process's compile state reset around the test."""
    if not compiler_available():
        pytest.skip("inductor needs a C++ compiler")
    monkeypatch.setattr(normalization, "_KERNELS", False)
    monkeypatch.setattr(normalization, "_COMPILE_DEVICES", ("cpu",))
    for name, value in (("update_normalize", None), ("failed", False), ("checked", False)):
        monkeypatch.setattr(normalization._Compiled, name, value)


# ------------------------------------------------------------------------------------------------
# no host sync per step
# ------------------------------------------------------------------------------------------------


def test_torch_path_reads_no_device_value_per_step(torch_path, monkeypatch):
    # the count is a host float kept beside its buffer: known at construction, after .to()/.double() and
    # after a state dict is loaded, and carried by every update, so a step never reads the device
    stream = torch.from_numpy(_obs_stream(12, 16))
    rms, other = RunningMeanStd((17,)), RunningMeanStd((17,))
    other.update(stream[0])
    scaler = RewardScaler(16, gamma=0.99)
    rewards, done = torch.randn(12, 16), torch.rand(12, 16) < 0.2
    with _no_host_read(monkeypatch):
        for x in stream[:4]:
            rms.update_normalize(x)
            rms.normalize(x)
    rms.double()  # buffers replaced
    with _no_host_read(monkeypatch):
        for x in stream[4:8]:
            rms.update(x)
            rms.normalize(x)
    rms.load_state_dict(other.state_dict())  # read while loading, not on the next step
    with _no_host_read(monkeypatch):
        for x in stream[8:]:
            rms.update_normalize(x)
        for r, d in zip(rewards, done, strict=True):
            scaler.scale(r, d)
    assert rms._host_count() == rms.count.item() == 1e-4 + 16 * 5
    # the guard can fail: a count written in place is unknown on the host until read
    rms.count.fill_(3.0)
    with _no_host_read(monkeypatch), pytest.raises(AssertionError, match="host read"):
        rms.update(stream[0])


def test_ppo_torch_path_step_reads_no_device_value(torch_path, monkeypatch):
    from drl.agents.ppo import PPO, PPOConfig

    monkeypatch.setattr("drl.agents.ppo.numba_available", lambda: False)
    cfg = PPOConfig(normalize_obs=True, normalize_reward=True, compile=False)
    agent = PPO(gym.spaces.Box(-np.inf, np.inf, (17,)), gym.spaces.Box(-1, 1, (6,)), cfg, 32, torch.device("cpu"))
    obs, reward = torch.randn(32, 17), torch.randn(32)
    done = torch.zeros(32, dtype=torch.bool)
    with _no_host_read(monkeypatch):
        for _ in range(5):
            agent.record_outcome(agent.act(obs)[1], reward, done, done, obs)
    assert agent.obs_normalizers["policy"].count.item() == 1e-4 + 5 * 32


# ------------------------------------------------------------------------------------------------
# the compiled graphs (run on CUDA; here through inductor's C++ backend)
# ------------------------------------------------------------------------------------------------


def _check_against_eager_and_definition(device: torch.device, steps: int, num_envs: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _obs_stream(steps, num_envs)
    compiled = RunningMeanStd((17,), compile_cuda=True).to(device)
    eager, ref = RunningMeanStd((17,)).to(device), _ReferenceStats(17)
    for t, x_np in enumerate(stream):
        x = torch.from_numpy(x_np).to(device)
        with torch.inference_mode():  # as PPO.act calls it
            out = compiled.update_normalize(x)
        if t == 0:
            assert normalization._Compiled.checked and not normalization._Compiled.failed
        expected = eager.update_normalize(x)
        ref.update(x_np)
        # the rounded mean and std and the quotient taken as the eager ops take them: the same bits
        assert torch.equal(out, expected), (t, (out - expected).abs().max().item())
        np.testing.assert_array_max_ulp(out.cpu().numpy(), ref.normalize(x_np), maxulp=1)
        np.testing.assert_allclose(compiled.mean.cpu().numpy(), ref.mean, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(compiled.var.cpu().numpy(), ref.var, rtol=1e-13, atol=1e-300)
        assert compiled.count.item() == ref.count == compiled._host_count()
        assert torch.equal(compiled.normalize(x), eager.normalize(x))
    # steady state: no host read on either graph
    x = torch.from_numpy(stream[-1]).to(device)
    with _no_host_read(monkeypatch):
        compiled.update_normalize(x)
        compiled.normalize(x)


def test_compiled_normaliser_equals_eager_and_definition(fresh_compiled, monkeypatch):
    _check_against_eager_and_definition(torch.device("cpu"), 25, 64, monkeypatch)


def test_compiled_normaliser_falls_back_to_eager_when_compiling_fails(fresh_compiled, monkeypatch):
    def broken(fn, **kwargs):
        def call(x, mean, *rest):  # mean: the buffer's flat view
            mean.add_(1.0)  # a partial write before the failure is undone
            raise RuntimeError("no backend")
        return call

    monkeypatch.setattr(normalization.torch, "compile", broken)
    x = torch.from_numpy(_obs_stream(1, 8)[0])
    rms, eager = RunningMeanStd((17,), compile_cuda=True), RunningMeanStd((17,))
    with pytest.warns(UserWarning, match="continuing eagerly"):
        out = rms.update_normalize(x)
    assert torch.equal(out, eager.update_normalize(x))
    assert torch.equal(rms.mean, eager.mean) and torch.equal(rms.var, eager.var)
    assert normalization._Compiled.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later calls go eager quietly
        assert torch.equal(rms.update_normalize(x), eager.update_normalize(x))


def test_ppo_compiles_its_normalisers_with_its_step():
    from drl.agents.ppo import PPO, PPOConfig

    space, actions = gym.spaces.Box(-np.inf, np.inf, (17,)), gym.spaces.Box(-1, 1, (6,))
    for flag in (True, False):
        agent = PPO(space, actions, PPOConfig(normalize_obs=True, compile=flag), 4, torch.device("cpu"))
        assert agent.obs_normalizers["policy"].compile_cuda is flag


# ------------------------------------------------------------------------------------------------
# CUDA (benchmarks/gpu_check.sh runs these with -m cuda)
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _cuda_sync_errors() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_cuda", [False, True])
def test_cuda_normaliser_step_has_no_host_sync(compile_cuda):
    device = torch.device("cuda")
    stream = torch.from_numpy(_obs_stream(6, 4096)).to(device)
    rms = RunningMeanStd((17,), compile_cuda=compile_cuda).to(device)
    scaler = RewardScaler(4096, gamma=0.99).to(device)
    reward, done = torch.randn(4096, device=device), torch.rand(4096, device=device) < 0.01
    with torch.inference_mode():
        rms.update_normalize(stream[0])  # the compiled graphs build here (compiling may synchronise)
        rms.normalize(stream[0])
    with _cuda_sync_errors(), torch.inference_mode():
        for x in stream[1:]:
            rms.update_normalize(x)
            rms.normalize(x)
            scaler.scale(reward, done)
    assert rms.count.item() == 1e-4 + 6 * 4096


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_normaliser_equals_eager_and_definition(monkeypatch):
    from torch.utils._triton import has_triton

    if not has_triton():
        pytest.skip("torch.compile on CUDA needs Triton")
    _check_against_eager_and_definition(torch.device("cuda"), 30, 4096, monkeypatch)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_normaliser_launches_fewer_kernels():
    from torch.utils._triton import has_triton

    if not has_triton():
        pytest.skip("torch.compile on CUDA needs Triton")
    device = torch.device("cuda")
    x = torch.randn(4096, 17, device=device) * 3 + 1
    kernels = {}
    for flag in (False, True):
        rms = RunningMeanStd((17,), compile_cuda=flag).to(device)
        with torch.inference_mode():
            rms.update_normalize(x)
            rms.normalize(x)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                rms.update_normalize(x)
                rms.normalize(x)
                torch.cuda.synchronize()
        kernels[flag] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    # eager: 13 ops for the update + normalise (a var_mean may take more than one kernel) and 3 for the
    # normalise; compiled: a few fused kernels (how many is inductor's choice: printed by
    # `python -m benchmarks.normalizer_cost --device cuda --compile`), then the same 3 with the graph's mean and std
    assert 16 <= kernels[False] and kernels[True] < kernels[False], kernels


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_kernel_statistics_do_not_depend_on_the_input_layout():
    # numba compiles one specialisation per array layout, and a strided one rounds differently from the
    # contiguous one; the normaliser hands the kernels contiguous rows only, so a strided view of a batch
    # and its contiguous copy fold in bitwise alike (else which one ran would depend on numba's cache)
    batch = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))[:, ::2]
    assert not batch.is_contiguous()
    results = []
    for x in (batch, batch.contiguous()):
        rms = RunningMeanStd((8,))
        rms.update(torch.full((5, 8), 0.3))
        rms.update(x)
        normalized = rms.update_normalize(x)
        results.append((rms.mean.clone(), rms.var.clone(), normalized))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
