"""Shared helpers: a bounded timing loop and a plain report line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Rate:
    label: str
    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else float("inf")

    def line(self) -> str:
        rate = f"{self.per_second:>10.1f}/s"
        return f"{self.label:<48} {rate}  ({self.operations} in {self.seconds:.2f} s)"


def measure(label: str, operation: Callable[[int], object], count: int) -> Rate:
    started = time.perf_counter()
    for index in range(count):
        operation(index)
    return Rate(label, count, time.perf_counter() - started)


def ratio_line(name: str, numerator: Rate, denominator: Rate) -> str:
    return f"{name}: {numerator.per_second / denominator.per_second:.2f}"
