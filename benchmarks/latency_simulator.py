"""Speed of the streaming latency simulator: a dataset's worth of utterances at once.

  .venv/bin/python -m benchmarks.latency_simulator [--utterances 10000] [--frames 400]

Simulates `--utterances` utterances of up to `--frames` output frames (40 ms frames: 16 s; random
lengths and per-frame costs near real time, so queues build and drain) three ways, in this
process: `hardware.latency.simulate` (the closed form: a cumulative max, jitted), the
differentiable backlog recursion `asr.losses.latency.backlog_latency` (a `lax.scan` over
frames, jitted), and the reference: a plain NumPy event loop, frame by frame, on the first
`--reference` utterances, scaled to the whole set. Prints seconds for each, the ratios against
the reference, and the largest disagreement (issue 11's target: 10,000 utterances in under 10 s).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from asr.losses.latency import backlog_latency
from benchmarks.timing import best_of
from hardware.latency import simulate


def event_loop(cost, lengths, hop):
  """The reference: one utterance, one frame at a time."""
  out = np.zeros(len(lengths))
  for i, n in enumerate(lengths):
    free = 0.0
    for t in range(n):
      free = max(free, (t + 1) * hop) + cost[i, t]
    out[i] = free - n * hop
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--utterances", type=int, default=10_000)
  p.add_argument("--frames", type=int, default=400)
  p.add_argument("--reference", type=int, default=500, help="utterances the event loop runs")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  hop = 0.04
  cost = rng.gamma(2.0, 0.5 * hop, (args.utterances, args.frames)).astype(np.float32)
  lengths = rng.integers(args.frames // 4, args.frames + 1, args.utterances).astype(np.int32)
  c, n = jnp.asarray(cost), jnp.asarray(lengths)

  closed = lambda: jax.block_until_ready(simulate(c, n, hop).latency)
  scanned = lambda: jax.block_until_ready(backlog_latency(c, n, hop))
  first = {name: best_of(fn, 1) for name, fn in (("closed", closed), ("scan", scanned))}
  t_closed, t_scan = best_of(closed, args.repeats), best_of(scanned, args.repeats)
  k = min(args.reference, args.utterances)
  start = time.perf_counter()
  ref = event_loop(cost[:k], lengths[:k], hop)
  t_ref = (time.perf_counter() - start) * args.utterances / k
  error = max(float(np.abs(np.asarray(simulate(c, n, hop).latency)[:k] - ref).max()),
              float(np.abs(np.asarray(backlog_latency(c, n, hop))[:k] - ref).max()))
  print(f"{args.utterances} utterances x up to {args.frames} frames, {jax.devices()[0].platform}")
  print(f"reference (NumPy event loop, {k} utterances scaled): {t_ref:.2f} s")
  print(f"simulate (closed form, jitted): {t_closed:.3f} s ({first['closed']:.2f} s with "
        f"compilation): **{t_ref / t_closed:.0f}x** the reference")
  print(f"backlog_latency (scan, jitted): {t_scan:.3f} s ({first['scan']:.2f} s with "
        f"compilation): {t_ref / t_scan:.0f}x the reference")
  print(f"largest disagreement with the reference: {error * 1000:.4f} ms; median latency "
        f"{np.median(ref) * 1000:.0f} ms")


if __name__ == "__main__":
  main()
