"""What fetching the step's metrics every step costs: the training loop's step rate when the
host waits for every step's metrics (the loop before issue 8) against fetching them only at log
steps (the loop now), in the same process.

  .venv/bin/python -m benchmarks.host_sync [--variant small] [--steps 60] [--log-every 50]
      [--rounds 3]

The jitted, donated step of `experiments/configs/rnnt.py:<variant>` runs on a rotation of four
synthetic 3 s batches (int16 audio, as the corpus), each sent to the device as the loop sends it
(`make_array_from_process_local_data`). Variant "every step": `jax.device_get(metrics)` after
each step. Variant "log steps" (the trainer's loop): the metrics are kept on the device and
fetched every `--log-every` steps and at the end, and the host waits only for the step
`LOOKAHEAD` (2) before the one it just dispatched. Rounds alternate the two; the best round of
each is reported with their ratio.
"""

import argparse
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asr.training.loop import LOOKAHEAD
from benchmarks.train_step import build, synthetic_batch


def main():
  from experiments.configs.rnnt import get_config
  p = argparse.ArgumentParser()
  p.add_argument("--variant", default="small")
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log-every", type=int, default=50)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  c = get_config(args.variant)
  step, state = build(c)
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  batches = [synthetic_batch(c.data.batch_size, 3.0, seed) for seed in range(4)]
  to_device = lambda b: {k: jax.make_array_from_process_local_data(sharding, v)
                         for k, v in b.items()}
  holder = {"state": state}

  def run(fetch_every: int) -> float:
    window = []
    start = time.perf_counter()
    for i in range(args.steps):
      holder["state"], metrics = step(holder["state"], to_device(batches[i % 4]))
      window.append(metrics)
      if fetch_every > 1 and len(window) > LOOKAHEAD:
        jax.block_until_ready(window[-1 - LOOKAHEAD]["loss"])
      if (i + 1) % fetch_every == 0 or i + 1 == args.steps:
        jax.device_get(window)
        window = []
    jax.block_until_ready(holder["state"])
    return (time.perf_counter() - start) / args.steps

  run(1)  # compile
  every, logged = [], []
  for _ in range(args.rounds):
    every.append(run(1))
    logged.append(run(args.log_every))
  b_every, b_logged = min(every), min(logged)
  print(f"{args.variant}: batch {c.data.batch_size} x 3 s, {args.steps} steps a round, "
        f"{jax.devices()[0].platform}")
  print(f"metrics fetched every step: {b_every * 1000:.1f} ms/step (rounds: "
        + ", ".join(f"{t * 1000:.1f}" for t in every) + ")")
  print(f"metrics fetched every {args.log_every} steps: {b_logged * 1000:.1f} ms/step (rounds: "
        + ", ".join(f"{t * 1000:.1f}" for t in logged) + ")")
  print(f"ratio (every step / log steps): {b_every / b_logged:.3f}x")


if __name__ == "__main__":
  main()
