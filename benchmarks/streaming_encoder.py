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

`--workdir W` (a trained run with gates, `experiments/configs/cat.py`) streams its dev set's
first utterances, joined to `--seconds`, through its encoder with the gates it learned, against
the same weights without gates, in turns: the ratio at the model's own gate rate on speech, its
gates clustered in time as speech makes them.

`--open P` (a Transformer or Conformer config) also builds the encoder with gates on every
residual unit, its arbitrators' weights random and each gate's bias set so that a share P of
the utterance's sub-block frames is open (a trained model's `open_fraction`), and times both in
turns in this process: the ratio is the ungated encoder's time over the gated one's. With hard
gates `step` skips a sub-block for a chunk whose frames are all closed (`asr.models.blocks`);
the random gates here scatter over the chunks, where a trained model's cluster in time, so the
figure is the harder case (`--workdir` measures a trained one).
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
  p.add_argument("--workdir", help="a trained gated run: its gates on its dev speech")
  args = p.parse_args()
  from asr.training.loop import build_model
  if args.workdir:
    return _trained(args)
  c = importlib.import_module(f"experiments.configs.{args.config}").get_config(args.variant)
  model = build_model(c)
  size = model.encoder.stream_multiple * args.chunks
  frames = int(args.seconds * 100) // size * size
  feats = jnp.asarray(np.random.default_rng(0).standard_normal((1, frames, c.model.num_mels)) - 6,
                      jnp.float32)
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}), chunks of {size} feature "
        f"frames ({size * 10} ms of audio), {frames / 100:.2f} s utterance, "
        f"{jax.devices()[0].platform}, {jax.local_device_count()} device(s)")
  runs = {"ungated" if args.open is not None else "encoder": _streamer(model, feats, size)}
  if args.open is not None:
    c.model[c.model.encoder].gates = True
    gated = build_model(c)
    nnx.update(gated, nnx.state(model))     # the same weights, plus arbitrators
    measured = _set_open_share(gated, feats, args.open)
    runs[f"gated ({measured:.0%} of sub-block frames open)"] = _streamer(gated, feats, size)
  _race(runs, args.rounds, frames, size)


def _race(runs: dict, rounds: int, frames: int, size: int) -> None:
  """Times each streamer in turns (both see the same machine) and prints the best of each, and
  the first's time over the second's."""
  audio, chunk_ms = frames / 100, size * 10
  best = {name: float("inf") for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      best[name] = min(best[name], best_of(run, 1))
  for name, seconds in best.items():
    print(f"{name}: streamed in {seconds * 1000:.0f} ms: {seconds / (frames // size) * 1000:.2f} "
          f"ms per {chunk_ms} ms chunk; **{audio / seconds:.0f}x faster than real time**")
  if len(best) == 2:
    (_, plain), (_, gated_s) = best.items()
    print(f"**gated {plain / gated_s:.2f}x faster than ungated**")


def _trained(args) -> None:
  """`--workdir`: the run's gates on its dev speech against its weights without gates."""
  from asr import features as F
  from asr.data.pipeline import Batches
  from asr.training.loop import (build_model, load_for_inference, open_dataset,
                                 pipeline_config, run_tokenizer)
  config, graphdef, variables, _ = load_for_inference(args.workdir)
  gated = nnx.merge(graphdef, *variables)
  batches = Batches.from_source(open_dataset(config), config.data.eval_split,
                                run_tokenizer(config, args.workdir),
                                pipeline_config(config, False), shuffle=False, num_epochs=1,
                                features=None)
  batch = next(iter(batches))
  batches.close()
  feats, lengths = F.log_mel(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_lengths"]),
                             gated.cfg.features)
  speech = np.concatenate([np.asarray(feats[i, :int(n)]) for i, n in enumerate(lengths)])
  size = gated.encoder.stream_multiple * args.chunks
  frames = min(int(args.seconds * 100), len(speech)) // size * size
  speech = jnp.asarray(speech[None, :frames])
  enc = gated.encoder
  opened = enc(gated.frontend(speech, jnp.array([frames])), jnp.array([frames])).aux["open"]
  family = config.model.encoder
  config.model[family].gates = False
  plain = build_model(config)
  weights = dict(nnx.to_flat_state(nnx.state(gated)))   # the same weights, no arbitrators
  nnx.update(plain, nnx.from_flat_state([(path, weights[path]) for path, _ in
                                         nnx.to_flat_state(nnx.state(plain))]))
  print(f"{args.workdir} (encoder {family}), chunks of {size} feature frames ({size * 10} ms "
        f"of audio), {frames / 100:.2f} s of its dev speech, {jax.devices()[0].platform}")
  _race({"ungated": _streamer(plain, speech, size),
         f"gated ({float(opened.mean()):.0%} of sub-block frames open)":
         _streamer(gated, speech, size)}, args.rounds, frames, size)


if __name__ == "__main__":
  main()
