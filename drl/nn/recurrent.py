"""Recurrent cores (GRU, LSTM) for policies that must remember: one step at a time, with resets.

A core maps an observation and a hidden state to a feature vector and the next hidden state. The
hidden state of a batch is one tensor ``[B, S, H]`` (batch first, so per-env rows can be stored
and reset like any other field): ``S = num_layers`` for a GRU; ``S = 2 * num_layers`` for an LSTM,
the layers' ``h`` first, then their cell states ``c``. A zero state starts every episode.

Training unrolls a chunk of ``L`` consecutive steps (:meth:`RecurrentCore.unroll`) from a stored
initial state and sets the state to zero before each step that starts a new episode, so a chunk
that crosses an episode boundary computes exactly what two separate runs from a zero state would.

The cells are written out (``nn.Linear`` for the input and recurrent weights) rather than taken
from ``nn.GRU``/``nn.LSTM``: every line of the math is visible here, the parameters are plain
tensors that :class:`drl.optim.FlatParameters` may view into one flat vector, and the same code
runs eagerly and under ``torch.func``. The gate equations are PyTorch's (``nn.GRUCell``,
``nn.LSTMCell``; tested equal).

For off-policy learners (AAWR) that train on replay windows: :class:`RecurrentActor` (a core and an MLP on
parameter lists, as :class:`drl.agents.off_policy_base.FusedUpdate` passes them) and :class:`ObsHistory` (the
last few observations per env, the memory of a history-window policy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from drl.nn.critics import EnsembleMLP

__all__ = ["RNN_TYPES", "RecurrentCore", "RecurrentActor", "RecurrentMemory", "ObsHistory", "GRUCell", "LSTMCell"]

RNN_TYPES = ("gru", "lstm")


def _init(layer: nn.Linear) -> nn.Linear:
    """Orthogonal weights (gain 1) and zero biases, the usual init of recurrent PPO policies."""
    nn.init.orthogonal_(layer.weight, 1.0)
    nn.init.zeros_(layer.bias)
    return layer


class GRUCell(nn.Module):
    """Gated recurrent unit (Cho et al. 2014), PyTorch's form of the candidate state:

    ``r = sigma(W_ir x + b_ir + W_hr h + b_hr)``; ``z = sigma(W_iz x + b_iz + W_hz h + b_hz)``;
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; ``h' = (1 - z) * n + z * h``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input = _init(nn.Linear(input_size, 3 * hidden_size))  # rows: r, z, n
        self.recurrent = _init(nn.Linear(hidden_size, 3 * hidden_size))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x [B, in]``, ``h [B, H]`` -> ``h' [B, H]``."""
        x_r, x_z, x_n = self.input(x).chunk(3, dim=-1)
        h_r, h_z, h_n = self.recurrent(h).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1.0 - z) * n + z * h


class LSTMCell(nn.Module):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), with a forget gate:

    ``i, f, g, o = W_i x + b_i + W_h h + b_h`` (four blocks); ``c' = sigma(f) * c + sigma(i) * tanh(g)``;
    ``h' = sigma(o) * tanh(c')``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input = _init(nn.Linear(input_size, 4 * hidden_size))  # rows: i, f, g, o
        self.recurrent = _init(nn.Linear(hidden_size, 4 * hidden_size))

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, in]``, ``h, c [B, H]`` -> ``(h', c') [B, H]``."""
        i, f, g, o = (self.input(x) + self.recurrent(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class RecurrentCore(nn.Module):
    """A stack of ``num_layers`` GRU or LSTM cells; the output is the top layer's ``h``.

    Args:
        rnn_type: ``"gru"`` or ``"lstm"``.
        input_size: width of the input features.
        hidden_size: ``H``, the width of every layer's state (and of the output).
        num_layers: stacked cells; layer ``l > 0`` reads layer ``l - 1``'s new ``h``.
    """

    def __init__(self, rnn_type: Literal["gru", "lstm"], input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"unknown rnn_type '{rnn_type}'; valid: {list(RNN_TYPES)}")
        cell = GRUCell if rnn_type == "gru" else LSTMCell
        self.rnn_type = rnn_type
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cells = nn.ModuleList(cell(input_size if i == 0 else hidden_size, hidden_size) for i in range(num_layers))

    @property
    def state_shape(self) -> tuple[int, int]:
        """Per-env state ``(S, H)``: ``S = num_layers`` (GRU) or ``2 * num_layers`` (LSTM: h then c)."""
        return (self.num_layers * (2 if self.rnn_type == "lstm" else 1), self.hidden_size)

    def zero_state(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[batch, S, H]`` zeros: the state at an episode start."""
        return torch.zeros(batch, *self.state_shape, device=device)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x [B, in]``, ``state [B, S, H]`` -> ``(features [B, H], next state [B, S, H])``."""
        layers = self.num_layers
        new_h, new_c = [], []
        for i, cell in enumerate(self.cells):
            if self.rnn_type == "gru":
                x = cell(x, state[:, i])
            else:
                x, c = cell(x, state[:, i], state[:, layers + i])
                new_c.append(c)
            new_h.append(x)
        return x, torch.stack(new_h + new_c, dim=1)

    def unroll(self, x: torch.Tensor, state: torch.Tensor, resets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``L`` steps of ``B`` sequences, zeroing the state before every step that starts an episode.

        Args:
            x: ``[B, L, in]`` inputs.
            state: ``[B, S, H]`` the state before step 0 (already reset if step 0 starts an episode).
            resets: ``[B, L]`` bool, true where step ``k`` starts a new episode (the state entering it
                is replaced by zeros; at ``k = 0`` a true entry zeros ``state`` too).

        Returns:
            ``(features [B, L, H], state after the last step [B, S, H])``.
        """
        outputs = []
        for k in range(x.shape[1]):
            state = torch.where(resets[:, k, None, None], 0.0, state)
            out, state = self.step(x[:, k], state)
            outputs.append(out)
        return torch.stack(outputs, dim=1), state

    def forward(self, x: torch.Tensor, state: torch.Tensor, resets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`unroll` (so ``torch.func.functional_call`` can run the core on other parameters)."""
        return self.unroll(x, state, resets)

    def unroll_flat(self, x: torch.Tensor, state: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
        """:meth:`unroll` on chunk-major flat rows (row ``b * L + k`` is step ``k`` of sequence ``b``):
        ``x [B * L, in]``, ``state [B, S, H]``, ``resets [B * L]`` -> ``features [B * L, H]``."""
        batch = state.shape[0]
        features, _ = self.unroll(x.view(batch, -1, x.shape[-1]), state, resets.view(batch, -1))
        return features.flatten(0, 1)


class RecurrentActor(nn.Module):
    """A recurrent policy network for fused off-policy updates (AAWR): a GRU/LSTM core, then an MLP to ``out_dim``.

    Parameters (in this order, which :meth:`apply_params` relies on): the core's, then the head's
    (a one-head :class:`EnsembleMLP` on the core's ``hidden_size`` features).
    """

    def __init__(self, rnn_type: Literal["gru", "lstm"], obs_dim: int, hidden_size: int, num_layers: int,
                 hidden: list[int], out_dim: int, activation: str, layer_norm: bool):
        super().__init__()
        self.core = RecurrentCore(rnn_type, obs_dim, hidden_size, num_layers)
        self.head = EnsembleMLP(hidden_size, hidden, out_dim, 1, activation, layer_norm)
        self.core_names = [name for name, _ in self.core.named_parameters()]

    def apply_params(self, params: list[torch.Tensor], x: torch.Tensor, state: torch.Tensor, resets: torch.Tensor,
                     burn_in: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on ``params`` over ``L`` steps: ``x [B, L, D]``, ``state [B, S, H]`` entering step 0,
        ``resets [B, L]`` (zero the state entering step ``j``) -> ``(out [B, out_dim] at step L-1, state after it)``;
        the state after the first ``burn_in`` steps is detached (no gradient reaches those steps)."""
        core = dict(zip(self.core_names, params[:len(self.core_names)], strict=True))
        if burn_in:
            _, state = torch.func.functional_call(self.core, core, (x[:, :burn_in], state, resets[:, :burn_in]))
            x, resets, state = x[:, burn_in:], resets[:, burn_in:], state.detach()
        features, state = torch.func.functional_call(self.core, core, (x, state, resets))
        return self.head.apply_params(params[len(self.core_names):], features[:, -1]).squeeze(0), state


class RecurrentMemory:
    """What a recurrent agent remembers between env steps: each core's state per env, ``[N, S, H]``.

    ``states`` maps a role (``"actor"``, ``"critic"``) to its state; :meth:`step` advances one role
    (new tensors each step, never in place, so a state handed out stays as it was); episode ends
    zero the state of their envs (:meth:`end_episodes`).

    Args:
        cores: the recurrent cores by role.
        num_envs: ``N``.
        device: where the states live.
    """

    def __init__(self, cores: dict[str, RecurrentCore], num_envs: int, device: torch.device):
        self.cores = cores
        self.device = device
        self.states = {role: core.zero_state(num_envs, device) for role, core in cores.items()}

    def step(self, role: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance ``role`` on ``x [N, in]``: ``(the state it entered with [N, S, H], features [N, H])``."""
        before = self.states[role]
        features, self.states[role] = self.cores[role].step(x, before)
        return before, features

    def end_episodes(self, done: torch.Tensor) -> None:
        """Zero the state of the envs whose episode ended (``done [N]`` bool)."""
        self.states = {role: torch.where(done[:, None, None], 0.0, h) for role, h in self.states.items()}

    def reset(self) -> None:
        """Every env starts a new episode."""
        self.states = {role: torch.zeros_like(h) for role, h in self.states.items()}

    @contextlib.contextmanager
    def fresh(self, num_envs: int, roles: tuple[str, ...] = ("actor",)) -> Iterator[None]:
        """Inside: zero states of ``roles`` for ``num_envs`` other envs (an evaluation); on exit the
        previous states are back, untouched."""
        saved = self.states
        self.states = {role: self.cores[role].zero_state(num_envs, self.device) for role in roles}
        try:
            yield
        finally:
            self.states = saved

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.states)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.states = {role: state[role].to(self.device, copy=True) for role in self.states}


class ObsHistory:
    """The last ``length`` observations of each env ``[N, length, D]`` (oldest first), for a policy that reads
    a short history window; what :meth:`drl.storage.ReplayBuffer.window` gives the learner, kept while acting.

    :meth:`push` appends a step's obs and returns the window with its validity ``[N, length]`` bool
    (false for the slots before the episode's first step); :meth:`end_episodes` forgets the envs whose
    episode ended, so the next push (the next episode's first obs, SAME_STEP autoreset) starts afresh.
    The same interface as :class:`RecurrentMemory` where the runners see it (``fresh``, ``reset``, state dicts).

    Args:
        length: ``L``, observations per window.
        dim: ``D``, width of one observation.
        num_envs: ``N``.
        device: where the window lives.
    """

    def __init__(self, length: int, dim: int, num_envs: int, device: torch.device):
        self.length, self.dim, self.device = length, dim, device
        self.obs, self.count = self._empty(num_envs)

    def _empty(self, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(num_envs, self.length, self.dim, device=self.device),
                torch.zeros(num_envs, dtype=torch.int64, device=self.device))

    def push(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``x [N, D]``: ``(window [N, L, D] oldest first, valid [N, L])`` (new tensors, never in place)."""
        self.obs = torch.cat([self.obs[:, 1:], x.unsqueeze(1)], dim=1)
        self.count = (self.count + 1).clamp(max=self.length)
        back = torch.arange(self.length - 1, -1, -1, device=self.device)  # slots back from the newest
        return self.obs, back < self.count.unsqueeze(1)

    def end_episodes(self, done: torch.Tensor) -> None:
        """Forget the window of the envs whose episode ended (``done [N]`` bool)."""
        self.count = torch.where(done, 0, self.count)
        self.obs = torch.where(done[:, None, None], 0.0, self.obs)

    def reset(self) -> None:
        """Every env starts a new episode."""
        self.obs, self.count = torch.zeros_like(self.obs), torch.zeros_like(self.count)

    @contextlib.contextmanager
    def fresh(self, num_envs: int) -> Iterator[None]:
        """Inside: empty windows for ``num_envs`` other envs (an evaluation); on exit the previous ones are back."""
        saved = self.obs, self.count
        self.obs, self.count = self._empty(num_envs)
        try:
            yield
        finally:
            self.obs, self.count = saved

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"obs": self.obs, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.obs = state["obs"].to(self.device, copy=True)
        self.count = state["count"].to(self.device, copy=True)
