"""Timing helper shared by the benchmarks."""

import time


def best_of(fn, repeats: int) -> float:
  """The fastest of `repeats` calls of `fn()` in seconds (fn must block until its work is done)."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best
