"""Timing that holds up on a shared machine."""

import time

import jax


def best_seconds_per_call(fn, repeats, inner, warmup=2):
    """Best over `repeats` of the mean time of `inner` back-to-back calls of `fn`
    (after `warmup` calls): the least disturbed sample, as timeit recommends."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / inner)
    return best
