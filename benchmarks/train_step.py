"""Training-step throughput and its share of this machine's matmul peak.

  .venv/bin/python -m benchmarks.train_step [--config rnnt] [--variant small] [--seconds 3.0]
      [--repeats 10] [--labels-per-second 12] [--set model.lstm.reduce=1]
      [--set model.matmul_dtype=bfloat16]      # mixed precision, against the bfloat16 peak

Times the jitted training step of `experiments/configs/<config>.py:<variant>` (features,
encoder, stateless prediction network, lean RNN-T + CTC loss, backward, AdamW) on a batch of
`batch_size` utterances of `--seconds` audio with 12 labels per second (this corpus's
characters; about 5.7 for its 256 word pieces: `--set model.vocab=256 --labels-per-second
5.7`), state donated as in training. FLOPs per step are counted analytically
(`analytic_flops`, from the encoder's own per-frame accounting); XLA's cost analysis is printed
beside it but counts a scan's body once, not once per step, so it undercounts recurrent models.
The reference, measured in the same run: the best matmul rate of a 2048^3 `jnp.dot` (8192^3
on an accelerator) in the model's `matmul_dtype` on this machine. Prints audio-s/s, achieved
FLOP/s, and the share of that peak.
"""

import argparse
import ast

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import best_of
from experiments import huge_pages


def matmul_peak(dtype: str = "float32", n: int | None = None, repeats=10) -> tuple[float, int]:
  """(best FLOP/s, n) of an `n x n x n` product in `dtype` (`model.matmul_dtype`, float32
  sums as the model's own products): n = 2048 on a CPU, 8192 on an accelerator, which a
  2048 product does not fill."""
  n = n or (2048 if jax.default_backend() == "cpu" else 8192)
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a))
  return 2 * n**3 / best_of(lambda: jax.block_until_ready(f(a)), repeats), n


def synthetic_batch(batch_size: int, seconds: float, seed: int = 0, labels_per_second=12.0,
                    vocab: int = 29) -> dict:
  """`batch_size` utterances of `seconds` noise with `labels_per_second` labels in [1, vocab),
  int16 like the corpus."""
  samples, u = int(seconds * 16000), int(seconds * labels_per_second)
  rng = np.random.default_rng(seed)
  return {"audio": (rng.standard_normal((batch_size, samples)) * 3000).astype(np.int16),
          "audio_lengths": np.full((batch_size,), samples, np.int32),
          "labels": rng.integers(1, vocab, (batch_size, u)).astype(np.int32),
          "label_lengths": np.full((batch_size,), u, np.int32)}


def build(config):
  """(jitted donated step, initial state) of a config, as the trainer builds them."""
  from flax import nnx
  from asr.training import train_step as ts
  from asr.training.loop import build_model, build_step, loss_terms
  model = build_model(config)
  terms = loss_terms(config)
  step, tx, _ = build_step(config, nnx.graphdef(model), terms=terms)
  return jax.jit(step, donate_argnums=0), ts.init_train_state(model, tx, 0, terms=terms)


def recipe_arguments(p: argparse.ArgumentParser, repeats: int = 10) -> None:
  """The options every step benchmark takes: the recipe, its batch's seconds, the repeats and
  config overrides (`recipe` reads them)."""
  p.add_argument("--config", default="rnnt", help="a module of experiments/configs")
  p.add_argument("--variant", default="small")
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--repeats", type=int, default=repeats)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config value, e.g. model.lstm.reduce=1 (repeatable)")


def recipe(args):
  """`experiments/configs/<--config>.py:<--variant>` with the `--set` overrides."""
  import importlib
  module = importlib.import_module(f"experiments.configs.{args.config}")
  config = module.get_config(args.variant)
  override(config, args.set)
  return config


def stepper(step, state, batch):
  """A function running one donated `step` on `batch` to completion, keeping the new state
  (the donated one is gone); run once here, so the step is compiled."""
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)
  one_step()
  return one_step


def override(config, items: list[str]) -> None:
  """Sets each `KEY=VALUE` of `items` (`model.lstm.reduce=1`) in `config`, the value parsed as
  a Python literal unless the key holds a string."""
  for item in items:
    key, value = item.split("=", 1)
    *path, leaf = key.split(".")
    node = config
    for k in path:
      node = node[k]
    node[leaf] = value if isinstance(node[leaf], str) else ast.literal_eval(value)


def analytic_flops(config, batch: dict) -> float:
  """FLOPs of one training step counted from the model's own per-frame accounting: the
  encoder's `flops` (its matrix products; the Encoder contract), the joint's encoder projection
  and the CTC head, x3 for forward and backward; the joint's output layer x4, as the lean loss
  recomputes it in the backward pass. The prediction network (a few labels) is left out."""
  from asr import features as F
  from asr.training.loop import build_model, loss_weights
  model, m = build_model(config), config.model
  feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"])
  encoded = model.encode(feats, lengths)
  b, frames = encoded.frames.shape[:2]
  ctc_frames = encoded.aux.get("pre_reduction", encoded.frames).shape[1]
  ctc = 2 * model.encoder.out_dim * m.vocab * ctc_frames if "ctc" in loss_weights(config) else 0
  u = batch["labels"].shape[1]
  return (3 * (float(encoded.flops.sum()) + b * (frames * 2 * model.encoder.out_dim * m.joint_dim
                                                 + ctc))
          + 4 * b * frames * (u + 1) * 2 * m.joint_dim * m.vocab)


def main():
  huge_pages.ensure()       # as the entry points train (ASR_HUGE_PAGES=0: without)
  p = argparse.ArgumentParser()
  recipe_arguments(p)
  p.add_argument("--labels-per-second", type=float, default=12.0)
  args = p.parse_args()
  c = recipe(args)
  b = c.data.batch_size
  u = int(args.seconds * args.labels_per_second)
  batch = jax.tree.map(jnp.asarray, synthetic_batch(b, args.seconds, 0, args.labels_per_second,
                                                    c.model.vocab))
  step, state = build(c)
  compiled = step.lower(state, batch).compile()
  xla_flops = compiled.cost_analysis()
  xla_flops = (xla_flops[0] if isinstance(xla_flops, (list, tuple)) else xla_flops)["flops"]
  one_step = stepper(step, state, batch)
  best = best_of(one_step, args.repeats)
  dtype = c.model.matmul_dtype
  peak, n = matmul_peak(dtype)
  flops = analytic_flops(c, batch)
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}) {' '.join(args.set)}: batch "
        f"{b} x {args.seconds:.1f} s, {u} labels each, {dtype} products, "
        f"{jax.devices()[0].device_kind}")
  print(f"step: {best * 1000:.0f} ms = {b * args.seconds / best:.0f} audio-s per s, "
        f"{flops / 1e9:.1f} GFLOP per step (analytic; XLA's cost analysis: {xla_flops / 1e9:.1f})")
  print(f"achieved {flops / best / 1e9:.1f} GFLOP/s; {dtype} matmul peak ({n}^3 jnp.dot, "
        f"same run) {peak / 1e9:.1f} GFLOP/s; share {flops / best / peak:.1%}")


if __name__ == "__main__":
  main()
