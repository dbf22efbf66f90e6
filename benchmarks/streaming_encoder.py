"""Streaming speed of an encoder: one utterance heard chunk by chunk, against real time.

  taskset -c 0 .venv/bin/python -m benchmarks.streaming_encoder [--config conformer]
      [--variant small] [--chunks 1] [--seconds 8]

Runs the normalizer and the encoder's jitted `step` of `experiments/configs/<config>.py:
<variant>` (batch 1, freshly initialized: the speed does not depend on the weights) over
`--seconds` of log-mel features fed `--chunks` attention chunks (`stream_multiple` feature
frames) at a time, as a streaming recognizer on a device would. The reference is the audio's own
duration: prints how many times faster than real time the encoder runs, and the compute time
per chunk against the chunk's audio. `taskset -c 0` pins it to one core.
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
  p.add_argument("--config", default="conformer")
  p.add_argument("--variant", default="small")
  p.add_argument("--chunks", type=int, default=1, help="attention chunks per streamed step")
  p.add_argument("--seconds", type=float, default=8.0)
  p.add_argument("--rounds", type=int, default=5)
  args = p.parse_args()
  from asr.training.loop import build_model
  c = importlib.import_module(f"experiments.configs.{args.config}").get_config(args.variant)
  model = build_model(c)
  size = model.encoder.stream_multiple * args.chunks
  frames = int(args.seconds * 100) // size * size
  feats = jnp.asarray(np.random.default_rng(0).standard_normal((1, frames, c.model.num_mels)) - 6,
                      jnp.float32)
  # A pure jitted function of (variables, state, chunk): nnx.jit would re-split the module
  # on every call, a fixed Python cost per chunk that a device loop does not pay.
  graphdef, variables = nnx.split(model)
  step = jax.jit(lambda v, s, f, n: nnx.merge(graphdef, v).stream_step(s, f, n))
  full = jnp.array([size])
  chunks = [feats[:, start:start + size] for start in range(0, frames, size)]

  def run():
    state = model.init_stream(1)
    for chunk in chunks:
      out, state = step(variables, state, chunk, full)
    jax.block_until_ready(out.frames)

  run()  # compile
  best = best_of(run, args.rounds)
  audio = frames / 100
  chunk_ms = size * 10
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}), chunks of {size} feature "
        f"frames ({chunk_ms} ms of audio), {audio:.2f} s utterance, {jax.devices()[0].platform}, "
        f"{jax.local_device_count()} device(s)")
  print(f"streamed in {best * 1000:.0f} ms: {best / (frames // size) * 1000:.2f} ms per "
        f"{chunk_ms} ms chunk; **{audio / best:.0f}x faster than real time**")



if __name__ == "__main__":
  main()
