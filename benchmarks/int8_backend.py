"""Speed of the int8 path against the float path: the same model decoding the same batch.

  .venv/bin/python -m benchmarks.int8_backend [--workdir W] [--config rnnt --variant small]
      [--batch 32] [--seconds 4]

The model is a run's checkpoint (`--workdir`) or a freshly initialized one of
`experiments/configs/<config>.py:<variant>` (speed does not depend on the weights; sparsity
does not change the dense integer products either). The batch is `--batch` utterances of
`--seconds` of noise. The reference is the float recognizer (`asr.training.evaluate`: features,
encoder and greedy search, one jitted function); the int8 recognizer
(`hardware.int8_backend`) runs the float front end, then the integer encoder and greedy search.
Prints the best of `--repeats` for each and the ratio (issue 11's target: the int8 evaluation at
least half as fast as the float one).
"""

import argparse
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import best_of


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default=None)
  p.add_argument("--config", default="rnnt")
  p.add_argument("--variant", default="small")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  from asr.training.evaluate import make_recognizer
  from hardware.int8_backend import int8_recognizer
  if args.workdir:
    from asr.training.loop import load_for_inference
    config, graphdef, variables, _ = load_for_inference(args.workdir)
  else:
    from asr.training.loop import build_model
    config = importlib.import_module(f"experiments.configs.{args.config}").get_config(
        args.variant)
    graphdef, *variables = nnx.split(build_model(config), nnx.Param, ...)
    variables = tuple(variables)
  rng = np.random.default_rng(0)
  samples = int(args.seconds * 16000)
  audio = jnp.asarray(rng.normal(0, 3000, (args.batch, samples)).astype(np.int16))
  lengths = jnp.full(args.batch, samples, jnp.int32)
  max_symbols = config.train.max_symbols
  float_rec = make_recognizer(graphdef, "greedy", 4, max_symbols)
  int_rec = int8_recognizer(graphdef, variables, [{"audio": audio, "audio_lengths": lengths}],
                            max_symbols=max_symbols)
  run_float = lambda: jax.device_get(float_rec(variables, audio, lengths))
  run_int = lambda: int_rec(variables, audio, lengths)   # returns host arrays
  run_float(), run_int()                                    # compile
  t_float, t_int = best_of(run_float, args.repeats), best_of(run_int, args.repeats)
  audio_s = args.batch * args.seconds
  print(f"{args.workdir or f'{args.config}:{args.variant} (fresh)'}: {args.batch} x "
        f"{args.seconds:g} s, greedy, {jax.devices()[0].platform}")
  print(f"float: {t_float * 1000:.0f} ms (RTF {t_float / audio_s:.4f})")
  print(f"int8:  {t_int * 1000:.0f} ms (RTF {t_int / audio_s:.4f}): **{t_float / t_int:.2f}x** "
        f"the float path's speed")


if __name__ == "__main__":
  main()
