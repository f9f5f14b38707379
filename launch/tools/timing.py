"""Throughput timing shared by the benchmarks (bench.py) and the PyTorch reference (torch_ref.py),
which runs in a process of its own: a leaf that imports nothing of the project."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def rate(step: Callable[[], Any], B: int, seconds: float, repeats: int, sync: Callable[[], None]) -> list[float]:
    """Samples per second of ``step`` (B samples a call): two warm-up calls, then ``repeats`` rounds of at
    least ``seconds`` each, ``sync`` (the device's) before every clock read."""
    for _ in range(2):
        step()
    sync()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            sync()
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        rates.append(n * B / dt)
    return rates
