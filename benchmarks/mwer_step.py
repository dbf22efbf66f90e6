"""The cost of an MWER training step against the plain RNN-T step (issue 39: a semi-on-the-fly
step at most 3x an RNN-T step).

  .venv/bin/python -m benchmarks.mwer_step [--size small] [--seconds 3.0] [--repeats 3]

Builds the three rows of `experiments/configs/mwer.py:<size>,<variant>` (`control`, `mwer`,
`mwer_otf`; untrained weights: the search's and the scoring's shapes, hence their cost, do not
depend on them) and times each on one synthetic batch of `batch_size` utterances of
`--seconds` audio with 12 character labels a second, state donated as in training. A
semi-on-the-fly step searches on one step in `every`: its figure is the mean over `every`
consecutive steps, a search among them. The reference, in the same process: the control's
RNN-T step. Prints ms per step and the ratio to the reference.
"""

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import best_of
from benchmarks.train_step import build, synthetic_batch
from experiments import huge_pages


def main():
  huge_pages.ensure()
  p = argparse.ArgumentParser()
  p.add_argument("--size", default="small", choices=("tiny", "small"))
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  from asr.training.loop import import_plugins
  from experiments.configs import mwer
  times = {}
  for variant in mwer.VARIANTS:
    c = mwer.get_config(f"{args.size},{variant}")
    c.init_from = ""
    import_plugins(c)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(c.data.batch_size, args.seconds, 0,
                                                      vocab=c.model.vocab))
    step, state = build(c)
    every = c.loss.mwer.every if variant == "mwer" else 1
    holder = {"state": state}

    def steps():
      for _ in range(every):
        holder["state"], metrics = step(holder["state"], batch)
      jax.block_until_ready(metrics)
    steps()                                    # compiles
    times[variant] = best_of(steps, args.repeats) / every
    print(f"{variant}: {times[variant] * 1000:.0f} ms per step"
          + (f" (mean of {every}, one searching)" if every > 1 else "")
          + f" = {times[variant] / times['control']:.2f}x the RNN-T step", flush=True)
  print(f"{args.size}: batch {c.data.batch_size} x {args.seconds:.1f} s, n-best "
        f"{c.loss.mwer.nbest} from a beam of {c.loss.mwer.beam}, {jax.devices()[0].device_kind}")


if __name__ == "__main__":
  main()
