"""The stream's per-sample crop/flip draws: a pure function of the sample's key, in range,
uniform (counts within 5 standard deviations over 40 000 keys)."""

from __future__ import annotations

import math
from collections import Counter

from gicl.data.stream import KeyedDraws


def draws(key: int) -> tuple[int, int, float]:
    d = KeyedDraws(key)
    return d.integers(3, 10), d.integers(0, 2**20), d.random()


def test_draws_are_a_function_of_the_key_and_differ_between_keys() -> None:
    assert draws(2**63 + 5) == draws(2**63 + 5)
    assert len({draws(k) for k in range(100)}) == 100
    d = KeyedDraws(7)
    assert len({d.integers(0, 2**30) for _ in range(50)}) == 50  # successive draws differ


def test_draws_are_uniform_and_in_range() -> None:
    n = 40_000
    sides = Counter(draws(k)[0] for k in range(n))
    assert set(sides) == set(range(3, 10))
    expected, sd = n / 7, math.sqrt(n * (1 / 7) * (6 / 7))
    assert all(abs(c - expected) < 5 * sd for c in sides.values())
    flips = [draws(k)[2] for k in range(n)]
    assert all(0 <= f < 1 for f in flips)
    assert abs(sum(f < 0.5 for f in flips) - n / 2) < 5 * math.sqrt(n / 4)
