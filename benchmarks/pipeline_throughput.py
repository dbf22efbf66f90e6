"""Input-pipeline throughput against what a training step consumes.

  .venv/bin/python -m benchmarks.pipeline_throughput --data-dir data [--size small] [--batches 150]

1. The pipeline alone, utterances/s and audio-s/s over the train split (TFDS read, shuffle,
   validation, tokenization, bucketing, padding): (a) delivering int16 audio, the training setup,
   where the jitted step computes the features; (b) computing log-mel features itself.
2. The named reference consumer: a jitted training step of the demo's planned size (log-mel
   features, 2 x 256 LSTM encoder over 30 ms stacked frames, a 29-way output, CTC loss, forward +
   backward + Adam, batch 32) on a batch already in memory, 3.5 s bucket. Issue 3's RNN-T step
   adds a prediction network and a joint, so it consumes less and these ratios are lower bounds.
3. Ratios of (1) to (2)'s consumption (issue 2 asks for at least 20x), and the step time when
   the audio pipeline feeds the step from its background thread on the same cores.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _lstm_params(key, sizes, vocab):
  params = []
  for i, (n_in, n_h) in enumerate(zip(sizes[:-1], sizes[1:])):
    k1, k2, key = jax.random.split(key, 3)
    params.append({"w": jax.random.normal(k1, (n_in + n_h, 4 * n_h)) / np.sqrt(n_in + n_h),
                   "b": jnp.zeros(4 * n_h)})
  return {"lstm": params, "out": jax.random.normal(key, (sizes[-1], vocab)) * 0.01}


def _encoder(params, x):
  for layer in params["lstm"]:
    n_h = layer["b"].shape[0] // 4
    def cell(carry, xt, layer=layer, n_h=n_h):
      h, c = carry
      i, f, g, o = jnp.split(jnp.concatenate([xt, h], -1) @ layer["w"] + layer["b"], 4, -1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h, c), h
    b = x.shape[0]
    _, x = jax.lax.scan(cell, (jnp.zeros((b, n_h)), jnp.zeros((b, n_h))), jnp.swapaxes(x, 0, 1))
    x = jnp.swapaxes(x, 0, 1)
  return x @ params["out"]


def make_step(opt):
  from asr.features import featurize, stack_frames

  def loss_fn(params, batch):
    feats, lengths = featurize(batch["audio"], batch["audio_lengths"])
    x, lengths = stack_frames(feats, lengths, 3)
    logits = _encoder(params, x)
    pad = (jnp.arange(x.shape[1])[None] >= lengths[:, None]).astype(jnp.float32)
    lpad = (jnp.arange(batch["labels"].shape[1])[None] >= batch["label_lengths"][:, None])
    return optax.ctc_loss(logits, pad, batch["labels"], lpad.astype(jnp.float32)).mean()

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def main(argv=None):
  from asr.data.pipeline import Batches, PipelineConfig
  from asr.data.sources import default_data_dir, open_source
  from asr.features import FeatureConfig, featurize
  from asr.tokenizer import CharTokenizer
  p = argparse.ArgumentParser()
  p.add_argument("--data-dir", default=default_data_dir())
  p.add_argument("--size", default="small")
  p.add_argument("--batches", type=int, default=150)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--steps", type=int, default=20)
  args = p.parse_args(argv)
  cfg = PipelineConfig(batch_size=args.batch_size)
  source = open_source(f"synth_speech/{args.size}", args.data_dir)
  for samples, _ in cfg.bucket_shapes():  # compile every bucket's features before timing
    featurize(jnp.zeros((args.batch_size, samples), jnp.int16), jnp.full((args.batch_size,), samples))

  # 1. The pipeline alone: (a) audio batches, (b) feature batches.
  def throughput(features):
    batches = Batches.from_source(source, "train", CharTokenizer(), cfg, seed=0, features=features)
    next(batches)  # fills the shuffle buffer
    start, utts, audio_s = time.perf_counter(), 0, 0.0
    for _ in range(args.batches):
      b = next(batches)
      utts += int((b["audio_lengths"] > 0).sum())
      audio_s += b["audio_lengths"].sum() / 16000
    wall = time.perf_counter() - start
    return batches, utts / wall, audio_s / wall

  batches, pipe_utts, pipe_audio = throughput(None)
  batches.close()
  other, feat_utts, feat_audio = throughput(FeatureConfig())
  other.close()
  batches, _, _ = throughput(None)  # a fresh one to feed the step below
  print(f"pipeline alone, audio batches   : {pipe_utts:6.0f} utterances/s, {pipe_audio:6.0f} audio-s/s")
  print(f"pipeline alone, feature batches : {feat_utts:6.0f} utterances/s, {feat_audio:6.0f} audio-s/s")

  # 2./3. The reference step fed live by the pipeline for a run of batches (kept), then the
  # same batches again from memory (every bucket shape compiled beforehand): identical work.
  keys = ("audio", "audio_lengths", "labels", "label_lengths")
  opt = optax.adam(1e-3)
  params = _lstm_params(jax.random.key(0), [240, 256, 256], 29)
  opt_state = opt.init(params)
  step = make_step(opt)
  for samples, labels in cfg.bucket_shapes():
    shaped = {"audio": jnp.zeros((args.batch_size, samples), jnp.int16),
              "audio_lengths": jnp.full((args.batch_size,), samples, jnp.int32),
              "labels": jnp.ones((args.batch_size, labels), jnp.int32),
              "label_lengths": jnp.full((args.batch_size,), 4, jnp.int32)}
    jax.block_until_ready(step(params, opt_state, shaped))

  def run(batch_iter):
    nonlocal params, opt_state
    start = time.perf_counter()
    for b in batch_iter:
      params, opt_state, loss = step(params, opt_state, b)
    jax.block_until_ready(loss)
    return time.perf_counter() - start
  held = []

  def live_batches():
    for _ in range(args.steps):
      held.append({k: jnp.asarray(v) for k, v in next(batches).items() if k in keys})
      yield held[-1]
  live = run(live_batches())
  in_memory = run(held)
  consumed = args.batch_size * args.steps / in_memory
  print(f"reference step (log-mel + 2x256 LSTM + CTC + Adam, batch {args.batch_size}), "
        f"{args.steps} batches in memory: {in_memory / args.steps * 1000:.0f} ms/step = "
        f"{consumed:.0f} utterances/s consumed")
  print(f"ratio, audio pipeline / consumption  : {pipe_utts / consumed:5.1f}x")
  print(f"ratio, feature pipeline / consumption: {feat_utts / consumed:5.1f}x")
  print(f"the same {args.steps} steps fed live by the pipeline: {live / args.steps * 1000:.0f} "
        f"ms/step ({live / in_memory:.2f}x the in-memory steps)")
  batches.close()


if __name__ == "__main__":
  main()
