"""The wrappers' logged means (drl.wrappers.base: _log_mean, _log_mean_columns) against their definition, bitwise:
per key, the float32 running sum ``held + values.float().sum()`` over the steps since the last read, divided by
the count; for one env and for many, with signed zeros, infinities and NaN among the values."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from drl.wrappers.base import TorchVectorWrapper
from envs import make_vec_env


def _bits(x: float) -> bytes:
    return struct.pack("<d", x) if not math.isnan(x) else b"nan"


def _reference(steps: list[torch.Tensor]) -> float:
    total = None
    for values in steps:
        step = values.detach().float().sum()
        total = step if total is None else total + step
    return float(total) / sum(v.numel() for v in steps)


def _values(gen: torch.Generator, shape: tuple[int, ...], special: bool) -> torch.Tensor:
    x = torch.randn(shape, generator=gen) * 10 ** torch.randint(-3, 4, shape, generator=gen)
    if special:
        pick = torch.randint(0, 6, shape, generator=gen)
        x = torch.where(pick == 0, -0.0, torch.where(pick == 1, 0.0, x))
    return x


@pytest.mark.parametrize("num", [1, 5])
@pytest.mark.parametrize("case", ["plain", "zeros", "inf", "nan"])
def test_logged_means_are_the_float32_running_sums(num, case):
    wrapper = TorchVectorWrapper(make_vec_env("drl/CartPole-v0", num, torch.device("cpu")))
    wrapper.name = "t"
    gen = torch.Generator().manual_seed(num)
    for _ in range(3):  # three reads: each starts a new sum
        single, columns, negative = [], [], []
        for step in range(40):
            values = _values(gen, (num,), case != "plain")
            block = _values(gen, (num, 3), case != "plain")
            if case == "inf" and step == 7:
                values[0], block[0, 1] = float("inf"), float("-inf")
            if case == "nan" and step == 9:
                values[0], block[0, 2] = float("nan"), float("nan")
            single.append(values)
            columns.append(block)
            negative.append(torch.full((num,), -0.0))
            wrapper._log_mean("single", values)
            wrapper._log_mean("negative_zero", torch.full((num,), -0.0))
            wrapper._log_mean_columns(("a", "b", "c"), block)
        got = wrapper.metrics()
        expected = {"t/single": _reference(single), "t/negative_zero": _reference(negative)}
        expected |= {f"t/{key}": _reference([b[:, i] for b in columns]) for i, key in enumerate("abc")}
        assert list(got) == ["t/single", "t/negative_zero", "t/a", "t/b", "t/c"]
        assert {k: _bits(v) for k, v in got.items()} == {k: _bits(v) for k, v in expected.items()}
