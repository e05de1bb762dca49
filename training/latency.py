"""Latency on a shared, noisy CPU: interleaved rounds, warm-up first, medians reported.

Timing one variant after another lets a neighbour's burst of work land on one of them only.
Here every round times each variant once, in a new random order, so that load that comes
and goes is spread over all of them; the median of many rounds ignores the bursts.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from typing import Callable


def interleaved_latencies(
    calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 3, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each named callable, ``rounds`` samples each, after ``warmup`` calls."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    order = list(calls)
    shuffle = random.Random(seed).shuffle
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            started = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - started)
    return samples


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


# The vector instructions int8 and float kernels pick from, fastest last.
_INSTRUCTIONS = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "amx_int8")


def machine_description() -> str:
    """The CPU's model name, cores and vector instructions, for the record beside the figures."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    present = [flag for flag in _INSTRUCTIONS if flag in flags]
    return f"{name}, {os.cpu_count()} cores visible" + (f" ({', '.join(present)})" if present else "")


def load_average() -> str:
    try:
        return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except OSError:
        return "unknown"
