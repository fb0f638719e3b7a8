"""Adaptive timing: repeat until a time budget is spent (and at least a minimum count), never a fixed count,
so `make bench` fits its budget on a slow machine and still collects enough samples on a fast one."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_us(samples_ns: list[int]) -> dict:
    """p50, p99 and mean of nanosecond samples, in microseconds."""
    return {
        "n": len(samples_ns),
        "p50_us": round(percentile(samples_ns, 50) / 1000, 2),
        "p99_us": round(percentile(samples_ns, 99) / 1000, 2),
        "mean_us": round(sum(samples_ns) / len(samples_ns) / 1000, 2),
    }


def interleaved(
    candidates: dict[str, Callable[[], object]], *, budget_s: float, min_iterations: int, block: int = 100
) -> dict[str, dict[str, list[int]]]:
    """Time each candidate call by call, alternating blocks of `block` calls so drift (frequency scaling,
    other load) hits every candidate alike. Returns per-call CPU (process time) and wall samples in ns."""
    samples = {name: {"cpu_ns": [], "wall_ns": []} for name in candidates}
    cpu, wall = time.process_time_ns, time.perf_counter_ns
    gc.collect()
    started = time.perf_counter()
    while True:
        for name, call in candidates.items():
            cpu_samples, wall_samples = samples[name]["cpu_ns"], samples[name]["wall_ns"]
            for _ in range(block):
                c0, w0 = cpu(), wall()
                call()
                w1, c1 = wall(), cpu()
                cpu_samples.append(c1 - c0)
                wall_samples.append(w1 - w0)
        done = min(len(s["cpu_ns"]) for s in samples.values())
        if done >= min_iterations and time.perf_counter() - started >= budget_s:
            return samples


def repeated(call: Callable[[], object], *, budget_s: float, min_reps: int = 1, max_reps: int = 1000) -> dict:
    """Run `call` until the budget is spent (at least min_reps, at most max_reps times); CPU and wall per run
    in seconds (process time: worker threads' CPU is included)."""
    cpu_s: list[float] = []
    wall_s: list[float] = []
    gc.collect()
    started = time.perf_counter()
    while len(cpu_s) < max_reps:
        c0, w0 = time.process_time(), time.perf_counter()
        call()
        w1, c1 = time.perf_counter(), time.process_time()
        cpu_s.append(c1 - c0)
        wall_s.append(w1 - w0)
        if len(cpu_s) >= min_reps and w1 - started >= budget_s:
            break
    return {"cpu_s": cpu_s, "wall_s": wall_s}


def median(values: list[float]) -> float:
    return percentile(values, 50)
