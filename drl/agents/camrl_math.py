"""CAMRL's math that is not the RL update (Huang et al. 2023, "Curriculum-based Asymmetric Multi-task RL").

* :func:`soft_rank` / :func:`soft_ranks`: the differentiable ranking function
  ``rank(x; b) = T - sum_i [tanh(s (x - b_i)) / 2 + 0.5]`` (``s = 200``), about the number of points
  ``b_i`` at or above ``x`` (1 = the largest);
* :func:`descending_ranks`: the hard ranks it is compared with (1 = the largest; ties share the
  larger rank number, scipy's ``rankdata(method="min")`` counted from the top);
* :func:`frank_wolfe`: a transfer-matrix row under ``b >= 0`` and a norm ball (l1, l2 or l-inf), with the
  linear minimisation oracle :func:`lmo` and the step ``2 / (k + 2)``;
* :func:`mode_indicator`: the probability of an asymmetric multi-task step;
* :class:`UncertaintyWeights`: ``sum_k term_k / sigma_k^2 + log prod_k sigma_k`` with ``sigma_k`` the
  running standard deviation of term ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

__all__ = ["soft_rank", "soft_ranks", "descending_ranks", "lmo", "frank_wolfe", "mode_indicator",
           "UncertaintyWeights"]

Norm = Literal["l1", "l2", "linf"]


def soft_rank(x: torch.Tensor, points: torch.Tensor, sharpness: float = 200.0) -> torch.Tensor:
    """``rank(x) = T - sum_i [tanh(sharpness (x - b_i)) / 2 + 0.5]`` for ``points = b [T]``; ``x`` any shape.

    Each summand is a smooth step (0 below ``b_i``, 1 above), so the result is about the number of
    points at or above ``x``: 1 for the largest of them. Differentiable in ``x`` and ``b``.
    """
    steps = torch.tanh(sharpness * (x.unsqueeze(-1) - points)) / 2 + 0.5
    return points.shape[-1] - steps.sum(-1)


def soft_ranks(b: torch.Tensor, offset: float = 0.01, sharpness: float = 200.0) -> torch.Tensor:
    """``[T] -> [T]``: ``rank(b_k - offset; b)`` for every entry (the offset counts ``b_k`` itself among the
    points at or above it, as the released code does), i.e. the entries' ranks with 1 = the largest."""
    return soft_rank(b - offset, b, sharpness)


def descending_ranks(x: torch.Tensor) -> torch.Tensor:
    """``[T] -> [T]`` float: ``T - #{i: x_i < x_k}``, 1 for the largest entry; ties share the larger number."""
    return x.shape[-1] - (x.unsqueeze(0) < x.unsqueeze(1)).sum(1).to(torch.float32)


def lmo(gradient: torch.Tensor, radius: float, norm: Norm) -> torch.Tensor:
    """``argmin_{s >= 0, ||s|| <= radius} <gradient, s>``, the vertex Frank-Wolfe moves toward.

    Only coordinates with a negative gradient can lower the linear objective: l-inf puts each of them at
    ``radius``; l1 puts ``radius`` on the most negative one; l2 points along the negative part, scaled to
    the radius. With no negative coordinate the minimiser is 0.
    """
    negative = (-gradient).clamp(min=0.0)
    if norm == "linf":
        return torch.where(gradient < 0, radius, 0.0).to(gradient.dtype)
    if norm == "l1":
        vertex = torch.zeros_like(gradient)
        k = int(torch.argmax(negative))
        if negative[k] > 0:
            vertex[k] = radius
        return vertex
    if norm == "l2":
        size = torch.linalg.vector_norm(negative)
        return negative * (radius / size) if size > 0 else torch.zeros_like(gradient)
    raise ValueError(f"unknown norm {norm!r}; valid: l1, l2, linf")


def frank_wolfe(objective: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, radius: float, norm: Norm,
                iterations: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Minimise ``objective(b)`` over ``{b >= 0, ||b||_norm <= radius}`` from a feasible ``start``.

    ``b_{k+1} = b_k + gamma_k (s_k - b_k)``, ``s_k = lmo(grad f(b_k))``, ``gamma_k = 2 / (k + 2)``: each
    iterate is a convex combination of feasible points, so it stays feasible; on a convex ``f`` with an
    L-Lipschitz gradient, ``f(b_k) - f* <= 2 L D^2 / (k + 2)`` (Jaggi 2013), D the set's diameter.

    Returns ``(b, iterates)``: the last iterate and every iterate, ``start`` first (detached).
    """
    b = start.detach().clone()
    iterates = [b.clone()]
    for k in range(iterations):
        with torch.enable_grad():
            x = b.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(objective(x), x)
        step = 2.0 / (k + 2.0)
        b = b + step * (lmo(gradient, radius, norm) - b)
        iterates.append(b.clone())
    return b, iterates


def mode_indicator(history: torch.Tensor, episode: int, time_scale: float = 1000.0,
                   loss_scale: float = 40.0) -> tuple[float, dict[str, float]]:
    """The probability ``I`` of an asymmetric multi-task step (CAMRL's mode indicator).

    ``history [H, T]``: each task's loss after each of the last ``H`` updates, the newest last.
    With ``l`` the newest row, ``m, s`` its mean and (population) std over tasks and ``z`` the newest row
    z-scored per task against the whole history (``(l - mean_H) / (1e-5 + std_H)``)::

        I = #{t: l_t < m - 2 s or l_t > m + 2 s} / (3T)     (performance gap)
          + exp(-episode / time_scale) / 3                  (training time)
          + exp(-mean_t(z_t) / loss_scale) / 3              (loss history)

    Returns ``(I clipped to [0, 1], {"gap", "time", "loss"})``: the three terms.
    """
    history = history.double()
    latest = history[-1]
    num_tasks = latest.numel()
    mean, std = latest.mean(), latest.std(unbiased=False)
    outside = ((latest < mean - 2 * std) | (latest > mean + 2 * std)).sum().item()
    z = (latest - history.mean(0)) / (1e-5 + history.std(0, unbiased=False))
    terms = {"gap": outside / (3 * num_tasks), "time": math.exp(-episode / time_scale) / 3,
             "loss": math.exp(-z.mean().item() / loss_scale) / 3}
    return min(1.0, max(0.0, sum(terms.values()))), terms


class UncertaintyWeights:
    """Uncertainty-based weighting of ``K`` loss terms: ``sum_k term_k / sigma_k^2 + log prod_k sigma_k``.

    ``sigma_k`` is the running (population) standard deviation of every value term ``k`` was recorded
    with (:meth:`record`; Welford's update in float64). Until a term has two values, or while its
    std is 0, its weight is 1 and its log-sigma 0 (the plain sum, as the released code starts).
    """

    def __init__(self, num_terms: int):
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(num_terms, dtype=torch.float64)
        self.m2 = torch.zeros(num_terms, dtype=torch.float64)

    def record(self, terms: torch.Tensor) -> None:
        """Add one value of every term (``[K]``)."""
        x = terms.detach().double().cpu()
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def sigma(self) -> torch.Tensor:
        """``[K]``: each term's running std; 1 where it is not defined yet (fewer than 2 values, or 0)."""
        if self.count < 2:
            return torch.ones_like(self.mean)
        std = (self.m2 / self.count).sqrt()
        return torch.where(std > 0, std, torch.ones_like(std))

    def combine(self, terms: torch.Tensor) -> torch.Tensor:
        """``sum_k terms_k / sigma_k^2 + sum_k log sigma_k`` (differentiable in ``terms [K]``)."""
        sigma = self.sigma().to(terms.device, terms.dtype)
        return (terms / sigma.square()).sum() + sigma.log().sum()

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count.copy_(state["count"])
        self.mean.copy_(state["mean"])
        self.m2.copy_(state["m2"])
