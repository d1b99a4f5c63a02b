"""Flat parameters, FlatAdam and TrainStep against torch's own optimiser and clipping."""

from __future__ import annotations

import copy

import pytest
import torch

from drl.nn import make_mlp
from drl.optim import FlatAdam, FlatParameters, TrainStep, compiler_available


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return make_mlp(4, [8, 8], 2)


def _loss_fn(net: torch.nn.Module):
    def loss(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        error = net(batch["x"]) - batch["y"]
        value = error.square().mean() * 50.0  # large enough that clipping at 0.5 is active
        return {"loss": value, "mean_error": error.mean().detach()}

    return loss


def _batches(n: int = 6) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(16, 4, generator=gen), "y": torch.randn(16, 2, generator=gen)} for _ in range(n)]


def test_flat_parameters_are_views_and_gradients_land_in_the_flat_buffer():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    flat = FlatParameters(net)
    assert flat.numel == sum(p.numel() for p in net.parameters())
    for p, value in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, value)  # same values, now stored in the flat tensor
        assert p.untyped_storage().data_ptr() == flat.data.untyped_storage().data_ptr()
    flat.data.zero_()
    assert all((p == 0).all() for p in net.parameters())
    net(torch.randn(3, 4)).sum().backward()
    assert flat.grad.abs().sum() > 0
    assert all(p.grad.untyped_storage().data_ptr() == flat.grad.untyped_storage().data_ptr()
               for p in net.parameters())
    # load_state_dict copies into the views
    net.load_state_dict(_net().state_dict())
    torch.testing.assert_close(flat.data, torch.cat([v.reshape(-1) for v in before]))


def test_flat_parameters_reject_a_module_without_parameters():
    with pytest.raises(ValueError, match="has no parameters"):
        FlatParameters(torch.nn.Tanh())


def test_flat_adam_matches_torch_adam():
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(50, generator=gen)
    reference = torch.nn.Parameter(params.clone())
    torch_adam = torch.optim.Adam([reference], lr=3e-3, eps=1e-5)
    adam = FlatAdam(50, torch.device("cpu"), eps=1e-5)
    lr = torch.tensor(3e-3)
    for _ in range(20):
        gradient = torch.randn(50, generator=gen)
        reference.grad = gradient.clone()
        torch_adam.step()
        adam.step(params, gradient, lr)
    torch.testing.assert_close(params, reference.detach(), rtol=1e-6, atol=1e-7)
    state = torch_adam.state[reference]
    torch.testing.assert_close(adam.exp_avg, state["exp_avg"])
    torch.testing.assert_close(adam.exp_avg_sq, state["exp_avg_sq"])
    assert adam.step_count.item() == 20


def test_flat_adam_state_round_trip_and_bad_state():
    adam = FlatAdam(5, torch.device("cpu"))
    adam.step(torch.zeros(5), torch.ones(5), torch.tensor(0.1))
    other = FlatAdam(5, torch.device("cpu"))
    other.load_state_dict(copy.deepcopy(adam.state_dict()))
    assert torch.equal(other.exp_avg, adam.exp_avg) and other.step_count.item() == 1
    with pytest.raises(ValueError, match="not written by drl's FlatAdam"):
        other.load_state_dict({"state": {}, "param_groups": []})  # a torch.optim state dict
    with pytest.raises(ValueError, match="holds 5 parameters, this model has 7"):
        FlatAdam(7, torch.device("cpu")).load_state_dict(adam.state_dict())


def test_eager_step_matches_torch_backward_clip_and_adam():
    net = _net()
    reference = copy.deepcopy(net)
    step = TrainStep(net, _loss_fn(net), learning_rate=1e-2, max_grad_norm=0.5, eps=1e-5)
    torch_adam = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
    reference_loss = _loss_fn(reference)
    for batch in _batches():
        losses = step(batch)
        torch_adam.zero_grad()
        expected = reference_loss(batch)
        expected["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        assert norm > 0.5  # clipping is exercised
        torch_adam.step()
        assert losses["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-5)
        assert not losses["loss"].requires_grad
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_learning_rate_is_applied():
    net = _net()
    step = TrainStep(net, _loss_fn(net), learning_rate=1e-2)
    before = step.params.data.clone()
    step.set_learning_rate(0.0)
    step(_batches(1)[0])
    assert torch.equal(step.params.data, before)
    step.set_learning_rate(1e-2)
    step(_batches(1)[0])
    assert not torch.equal(step.params.data, before)


@pytest.mark.skipif(not compiler_available(), reason="torch.compile needs a C++ compiler on the CPU")
def test_compiled_step_matches_eager_step():
    eager_net, compiled_net = _net(), _net()
    eager = TrainStep(eager_net, _loss_fn(eager_net), 1e-2, max_grad_norm=0.5, eps=1e-5)
    compiled = TrainStep(compiled_net, _loss_fn(compiled_net), 1e-2, max_grad_norm=0.5, eps=1e-5, compile=True)
    for batch in _batches():
        expected = eager(batch)
        got = compiled(batch)
        assert got["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-4)
    assert compiled.compiled
    torch.testing.assert_close(compiled.params.data, eager.params.data, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.adam.exp_avg_sq, eager.adam.exp_avg_sq, rtol=1e-5, atol=1e-9)
    # the module itself sees the compiled updates (its parameters are views of the flat tensor)
    x = _batches(1)[0]["x"]
    torch.testing.assert_close(compiled_net(x), eager_net(x), rtol=1e-5, atol=1e-6)


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    net = _net()
    step = TrainStep(net, _loss_fn(net), 1e-2, compile=True)
    before = step.params.data.clone()
    with pytest.warns(UserWarning, match="torch.compile of the training step failed .*no C\\+\\+ compiler"):
        step(_batches(1)[0])
    assert not step.compiled and not torch.equal(step.params.data, before)


def _two_nets() -> torch.nn.ModuleDict:
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"actor": make_mlp(4, [8], 2), "critic": make_mlp(4, [8], 1)})


def _two_loss(nets: torch.nn.ModuleDict):
    def loss(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        small = (nets["actor"](batch["x"]) - batch["y"]).square().mean()  # a small gradient ...
        large = 1e3 * (nets["critic"](batch["x"]).squeeze(-1) - batch["y"][:, 0]).square().mean()  # ... and a large
        return {"loss": small + large}

    return loss


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.skipif(
    not compiler_available(), reason="torch.compile needs a C++ compiler on the CPU"))])
def test_clip_groups_clip_each_group_like_its_own_clip_grad_norm(compile):
    nets = _two_nets()
    reference = copy.deepcopy(nets)
    step = TrainStep(nets, _two_loss(nets), 1e-2, max_grad_norm=0.5, eps=1e-8, compile=compile,
                     clip_groups=(("actor.",), ("critic.",)))
    torch_adam = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-8)
    reference_loss = _two_loss(reference)
    for batch in _batches():
        losses = step(batch)
        torch_adam.zero_grad()
        reference_loss(batch)["loss"].backward()
        actor_norm = torch.nn.utils.clip_grad_norm_(reference["actor"].parameters(), 0.5)
        critic_norm = torch.nn.utils.clip_grad_norm_(reference["critic"].parameters(), 0.5)
        assert critic_norm > 10 * 0.5  # the critic's clip is active: a joint clip would have shrunk the actor
        torch_adam.step()
        torch.testing.assert_close(losses["grad_norm"], torch.hypot(actor_norm, critic_norm), rtol=1e-4, atol=0)
    for p, q in zip(nets.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_clip_groups_must_cover_each_parameter_once():
    nets = _two_nets()
    with pytest.raises(ValueError, match="'critic.0.weight' is in 0 groups"):
        TrainStep(nets, _two_loss(nets), 1e-2, max_grad_norm=0.5, clip_groups=(("actor.",),))
    with pytest.raises(ValueError, match="'actor.0.weight' is in 2 groups"):
        TrainStep(nets, _two_loss(nets), 1e-2, max_grad_norm=0.5, clip_groups=(("actor.", "critic."), ("actor.",)))


def test_row_chunks_give_the_whole_minibatch_step():
    whole_net, chunked_net = _net(), _net()
    whole = TrainStep(whole_net, _loss_fn(whole_net), 1e-2, max_grad_norm=0.5, eps=1e-5)
    chunked = TrainStep(chunked_net, _loss_fn(chunked_net), 1e-2, max_grad_norm=0.5, eps=1e-5, row_chunk=5)
    for batch in _batches():  # 16 rows: chunks of 5, 5, 5 and 1
        expected, got = whole(batch), chunked(batch)
        for key in ("loss", "mean_error", "grad_norm"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(chunked.params.data, whole.params.data, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="row_chunk must be >= 1"):
        TrainStep(whole_net, _loss_fn(whole_net), 1e-2, row_chunk=0)
