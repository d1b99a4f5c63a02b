"""Batched Q ensembles and the categorical critic against hand values and plain modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drl.nn import onednn
from drl.nn.critics import (
    EnsembleMLP,
    QEnsemble,
    batched_linear,
    categorical_projection,
    min_over_heads,
    q_values,
    td_critic_loss,
)


def _separate_mlps(ensemble: EnsembleMLP) -> list[nn.Sequential]:
    """K plain ``nn.Linear`` MLPs holding the ensemble's weights (head k: ``weight = weight{l}[k].T``)."""
    params = dict(ensemble.named_parameters())
    layers = len(ensemble.widths) - 1
    mlps = []
    for k in range(ensemble.num_heads):
        modules: list[nn.Module] = []
        for index in range(layers):
            linear = nn.Linear(ensemble.widths[index], ensemble.widths[index + 1])
            linear.weight.data.copy_(params[f"weight{index}"][k].T)
            linear.bias.data.copy_(params[f"bias{index}"][k, 0])
            modules.append(linear)
            if index < layers - 1:
                if ensemble.layer_norm:
                    norm = nn.LayerNorm(ensemble.widths[index + 1])
                    norm.weight.data.copy_(params[f"ln_weight{index}"][k, 0])
                    norm.bias.data.copy_(params[f"ln_bias{index}"][k, 0])
                    modules.append(norm)
                modules.append(nn.ReLU())
        mlps.append(nn.Sequential(*modules))
    return mlps


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("num_heads,hidden,out", [(1, [64, 48], 3), (2, [64, 64], 1), (3, [40, 40], 7),
                                                  (5, [8], 101)])
def test_batched_ensemble_equals_separate_mlps(num_heads: int, hidden: list[int], out: int, layer_norm: bool) -> None:
    torch.manual_seed(0)
    ensemble = EnsembleMLP(11, hidden, out, num_heads, "relu", layer_norm)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for name, p in ensemble.named_parameters():
            if name.startswith("ln_"):
                p.add_(torch.randn_like(p) * 0.1)
    mlps = _separate_mlps(ensemble)
    shared = torch.randn(9, 11)
    per_head = torch.randn(num_heads, 9, 11)
    expected_shared = torch.stack([mlp(shared) for mlp in mlps])
    expected_per_head = torch.stack([mlp(x) for mlp, x in zip(mlps, per_head, strict=True)])
    torch.testing.assert_close(ensemble(shared), expected_shared, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ensemble(per_head), expected_per_head, rtol=1e-5, atol=1e-5)
    heads = torch.tensor([num_heads - 1, 0])
    torch.testing.assert_close(ensemble(shared, heads), expected_shared[heads], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads,fan_in,fan_out", [(1, 7, 5), (2, 256, 1), (3, 40, 50), (2, 64, 64), (4, 5, 300)])
def test_batched_linear_paths_agree_with_einsum(heads: int, fan_in: int, fan_out: int) -> None:
    torch.manual_seed(1)
    weight, bias = torch.randn(heads, fan_in, fan_out), torch.randn(heads, 1, fan_out)
    for x in (torch.randn(6, fan_in), torch.randn(heads, 6, fan_in)):
        expanded = x.expand(heads, *x.shape) if x.dim() == 2 else x
        expected = torch.einsum("kbi,kio->kbo", expanded, weight) + bias
        torch.testing.assert_close(batched_linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)


def test_q_ensemble_reads_obs_then_action() -> None:
    torch.manual_seed(2)
    critic = QEnsemble(4, 2, [16], num_q=2)
    obs, action = torch.randn(3, 4), torch.randn(3, 2)
    out = critic.q(critic.own_params(), obs, action)
    assert out.shape == (2, 3, 1)
    torch.testing.assert_close(out, critic(torch.cat([obs, action], -1)))


def test_min_over_random_pair_hand_values() -> None:
    values = torch.tensor([[1.0, 5.0, -2.0],
                           [3.0, 2.0, 4.0],
                           [0.0, 9.0, 7.0],
                           [6.0, -1.0, 8.0]])  # K = 4 heads, B = 3
    assert min_over_heads(values, torch.tensor([1, 2])).tolist() == [0.0, 2.0, 4.0]
    assert min_over_heads(values, torch.tensor([3, 0])).tolist() == [1.0, -1.0, -2.0]
    assert min_over_heads(values).tolist() == [0.0, -1.0, -2.0]
    # the target critic evaluates only the drawn heads: the pair's min equals the min over those rows
    torch.manual_seed(3)
    critic = QEnsemble(3, 1, [8], num_q=4)
    obs, action, pair = torch.randn(5, 3), torch.randn(5, 1), torch.tensor([2, 0])
    everything = critic.q(critic.own_params(), obs, action).squeeze(-1)
    drawn = critic.q(critic.own_params(), obs, action, pair).squeeze(-1)
    torch.testing.assert_close(drawn.min(0).values, torch.minimum(everything[2], everything[0]))


def test_categorical_projection_hand_values() -> None:
    support = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # v_min 0, v_max 4, dz 1
    one_hot = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])

    def project(probs: torch.Tensor, reward: float, discount: float) -> list[float]:
        atoms = reward + discount * support.expand_as(probs)
        return categorical_projection(probs, atoms, support)[0].tolist()

    assert project(one_hot, 0.5, 1.0) == pytest.approx([0.0, 0.5, 0.5, 0.0, 0.0])  # 1.5: half to 1, half to 2
    assert project(one_hot, 0.25, 1.0) == pytest.approx([0.0, 0.75, 0.25, 0.0, 0.0])  # 1.25
    assert project(one_hot, 1.0, 1.0) == pytest.approx([0.0, 0.0, 1.0, 0.0, 0.0])  # lands exactly on atom 2
    assert project(one_hot, 10.0, 1.0) == pytest.approx([0.0, 0.0, 0.0, 0.0, 1.0])  # clamped at v_max
    assert project(one_hot, -3.0, 1.0) == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.0])  # clamped at v_min
    # terminal transition (discount 0): all mass around the clamped reward, whatever the next distribution
    spread = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])
    assert project(spread, 2.25, 0.0) == pytest.approx([0.0, 0.0, 0.75, 0.25, 0.0])
    assert project(spread, 7.0, 0.0) == pytest.approx([0.0, 0.0, 0.0, 0.0, 1.0])
    # gamma = 0.5: atoms 0 and 4 (mass 0.5 each) land on 0 and 2; atom 1 (0.25) on 0.5
    mixed = torch.tensor([[0.5, 0.25, 0.0, 0.0, 0.25]])
    assert project(mixed, 0.0, 0.5) == pytest.approx([0.5 + 0.125, 0.125, 0.25, 0.0, 0.0])
    # a batch: every row sums to 1
    probs = torch.softmax(torch.randn(8, 5), -1)
    atoms = torch.randn(8, 1) * 3 + torch.rand(8, 1) * support
    assert categorical_projection(probs, atoms, support).sum(-1).tolist() == pytest.approx([1.0] * 8)


def test_td_critic_loss_hand_values() -> None:
    out = torch.tensor([[[1.0]], [[2.0]]])  # K = 2, B = 1
    target_out = torch.tensor([[[3.0]], [[5.0]]])
    # y = 1 + 0.5 * (min(3, 5) - 1) = 2; loss = 0.5 * ((1 - 2)^2 + (2 - 2)^2)
    loss = td_critic_loss(out, target_out, torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([-1.0]))
    assert loss.item() == pytest.approx(0.5)
    # categorical: the target is the projected distribution of the head with the smaller mean
    support = torch.tensor([0.0, 1.0, 2.0])
    low, high = torch.tensor([0.0, 10.0, 0.0]), torch.tensor([0.0, 0.0, 10.0])  # means ~1 and ~2
    target_logits = torch.stack([high, low]).unsqueeze(1)  # head 1 has the smaller mean
    logits = torch.zeros(2, 1, 3, requires_grad=True)
    loss = td_critic_loss(logits, target_logits, torch.tensor([0.0]), torch.tensor([1.0]), None, support)
    target = categorical_projection(torch.softmax(low, -1)[None], support[None], support)
    assert loss.item() == pytest.approx(-(2 * target * torch.log_softmax(torch.zeros(3), -1)).sum().item(), rel=1e-6)
    assert q_values(target_logits, support).squeeze(-1).tolist() == pytest.approx(
        [(torch.softmax(high, -1) @ support).item(), (torch.softmax(low, -1) @ support).item()])


@pytest.mark.skipif(not onednn.available(), reason="torch has no oneDNN linear kernel here")
@pytest.mark.parametrize("shared_input", [True, False])
def test_onednn_linear_matches_aten_values_and_gradients(monkeypatch, shared_input: bool) -> None:
    """drl.nn.onednn (opt-in) gives batched_linear's values and gradients, eagerly and under torch.func.grad."""
    torch.manual_seed(0)
    net = EnsembleMLP(7, [48, 40], 3, num_heads=2)
    params = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(16, 7) if shared_input else torch.randn(2, 16, 7)

    def loss(ps: list[torch.Tensor]) -> torch.Tensor:
        return net.apply_params(ps, x).square().sum()

    results = {}
    for enabled in (False, True):
        monkeypatch.setattr(onednn, "ENABLED", enabled)
        value = net.apply_params(params, x)
        grads = torch.func.grad(loss)(params)
        leaves = [p.clone().requires_grad_(True) for p in params]
        loss(leaves).backward()
        results[enabled] = (value, grads, [p.grad for p in leaves])
    (v0, g0, _), (v1, g1, a1) = results[False], results[True]
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-5)
    for ref, func_grad, autograd_grad in zip(g0, g1, a1, strict=True):
        torch.testing.assert_close(func_grad, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(autograd_grad, ref, rtol=1e-4, atol=1e-4)
    # no gradient (acting): ATen's ops, bitwise the default path
    with torch.no_grad():
        assert torch.equal(net.apply_params(params, x), v0)
