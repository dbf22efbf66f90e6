"""Streaming speed of an encoder: one utterance heard chunk by chunk, against real time; with
`--open`, a gated Transformer (`asr.models.gates`) against the same encoder ungated.

  taskset -c 0 .venv/bin/python -m benchmarks.streaming_encoder [--config conformer]
      [--variant small] [--chunks 1] [--seconds 8] [--open 0.35]

Runs the normalizer and the encoder's jitted `step` of `experiments/configs/<config>.py:
<variant>` (batch 1, freshly initialized: the speed does not depend on the weights) over
`--seconds` of log-mel features fed `--chunks` attention chunks (`stream_multiple` feature
frames) at a time, as a streaming recognizer on a device would. The reference is the audio's own
duration: prints how many times faster than real time the encoder runs, and the compute time
per chunk against the chunk's audio. `taskset -c 0` pins it to one core.

`--open P` (a Transformer or Conformer config) also builds the encoder with gates on every
residual unit, its arbitrators' weights random and each gate's bias set so that a share P of
the utterance's sub-block frames is open (a trained model's `open_fraction`), and times both in
turns in this process: the ratio is the ungated encoder's time over the gated one's. Hard gates
in `step` compute only the open frames (`asr.models.blocks`); the random gates here scatter
them over the chunks, where a trained model's cluster in time (a whole chunk closed costs
nothing), so the figure is the harder case.
"""

import argparse
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import best_of


def _streamer(model, feats, size):
  """A function streaming `feats` through `model`'s encoder chunk by chunk (compiled once)."""
  # A pure jitted function of (variables, state, chunk): nnx.jit would re-split the module
  # on every call, a fixed Python cost per chunk that a device loop does not pay.
  graphdef, variables = nnx.split(model)
  step = jax.jit(lambda v, s, f, n: nnx.merge(graphdef, v).stream_step(s, f, n))
  full = jnp.array([size])
  chunks = [feats[:, start:start + size] for start in range(0, feats.shape[1], size)]

  def run():
    state = model.init_stream(1)
    for chunk in chunks:
      out, state = step(variables, state, chunk, full)
    jax.block_until_ready(out.frames)

  run()  # compile
  return run


def _set_open_share(model, feats, share: float, seed: int = 0) -> float:
  """Random arbitrator kernels, and each gate's bias at the quantile of its logits over `feats`
  that leaves `share` of the frames open; returns the share of open gates measured."""
  enc = model.encoder
  rng = np.random.default_rng(seed)
  for block in enc.blocks:
    k = block.arbitrator.out.kernel
    k[...] = jnp.asarray(rng.standard_normal(k[...].shape), jnp.float32)
  lengths = jnp.array([feats.shape[1]])
  normed = model.frontend(feats, lengths)
  gates = []
  logits = enc(normed, lengths).aux["units"]
  for block, aux in zip(enc.blocks, logits):
    raw = np.stack([np.asarray(aux[name]["gate_logit"][0]) for name, _ in block.layout], -1)
    raw = raw - np.asarray(block.arbitrator.out.bias[...])
    bias = -np.quantile(raw, 1 - share, axis=0)
    block.arbitrator.out.bias[...] = jnp.asarray(bias, jnp.float32)
    gates.append(raw + bias > 0)
  return float(np.mean(gates))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--config", default="conformer")
  p.add_argument("--variant", default="small")
  p.add_argument("--chunks", type=int, default=1, help="attention chunks per streamed step")
  p.add_argument("--seconds", type=float, default=8.0)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--open", type=float, default=None,
                 help="time a gated encoder with this share of its sub-block gates open too")
  args = p.parse_args()
  from asr.training.loop import build_model
  c = importlib.import_module(f"experiments.configs.{args.config}").get_config(args.variant)
  model = build_model(c)
  size = model.encoder.stream_multiple * args.chunks
  frames = int(args.seconds * 100) // size * size
  feats = jnp.asarray(np.random.default_rng(0).standard_normal((1, frames, c.model.num_mels)) - 6,
                      jnp.float32)
  audio = frames / 100
  chunk_ms = size * 10
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}), chunks of {size} feature "
        f"frames ({chunk_ms} ms of audio), {audio:.2f} s utterance, {jax.devices()[0].platform}, "
        f"{jax.local_device_count()} device(s)")
  runs = {"ungated" if args.open is not None else "encoder": _streamer(model, feats, size)}
  if args.open is not None:
    c.model[c.model.encoder].gates = True
    gated = build_model(c)
    nnx.update(gated, nnx.state(model))     # the same weights, plus arbitrators
    measured = _set_open_share(gated, feats, args.open)
    runs[f"gated ({measured:.0%} of sub-block frames open)"] = _streamer(gated, feats, size)
  best = {name: float("inf") for name in runs}
  for _ in range(args.rounds):        # in turns, so both see the same machine
    for name, run in runs.items():
      best[name] = min(best[name], best_of(run, 1))
  for name, seconds in best.items():
    print(f"{name}: streamed in {seconds * 1000:.0f} ms: {seconds / (frames // size) * 1000:.2f} "
          f"ms per {chunk_ms} ms chunk; **{audio / seconds:.0f}x faster than real time**")
  if args.open is not None:
    (_, plain), (_, gated_s) = best.items()
    print(f"**gated {plain / gated_s:.2f}x faster than ungated**")


if __name__ == "__main__":
  main()
