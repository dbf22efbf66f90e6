"""Where a training step's time goes: each part of the step jitted alone, forward and backward.

  .venv/bin/python -m benchmarks.step_profile [--config rnnt] [--variant small] [--seconds 3.0]
      [--repeats 5] [--set model.transformer.layers=1]

On `benchmarks.train_step`'s batch (`data.batch_size` x `--seconds`, 12 labels a second), times
(best of `--repeats`) the whole jitted step, then each of its parts compiled alone with the same
shapes: the log-mel features; the encoder's forward pass and its forward and backward pass (the
gradient of its parameters under a fixed random cotangent, as the step's backward pass
receives one); each unit of one encoder layer alone (a Transformer/Conformer block's units, or
an LSTM layer with its LayerNorm, times the layers); the joint, prediction network, lean RNN-T
and CTC losses on fixed encoder frames, forward and backward; and the optimizer's update.
Prints each part's time and its share of the whole step: what XLA fuses across parts, and the
host's work between steps, are the difference between the parts' sum and the step.
"""

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import best_of
from benchmarks.train_step import build, recipe, recipe_arguments, stepper, synthetic_batch
from experiments import huge_pages


def _time(fn, *args, repeats: int) -> float:
  """Best wall time in ms of the jitted `fn(*args)`, compiled first."""
  jax.block_until_ready(fn(*args))
  return 1000 * best_of(lambda: jax.block_until_ready(fn(*args)), repeats)


def _backward(module, apply, *inputs, wrt_inputs: bool = True):
  """A jitted function of (params, *inputs): the gradient of `<apply(module), cotangent>` with
  respect to the module's parameters and (`wrt_inputs`) its float inputs, as a step's backward
  pass computes it; the cotangent is fixed noise of the output's shape."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  shape = jax.eval_shape(lambda p, *x: apply(nnx.merge(graphdef, p, rest), *x), params, *inputs)
  cotangent = jnp.asarray(np.random.default_rng(0).standard_normal(shape.shape), shape.dtype)
  floats = tuple(i for i, x in enumerate(inputs)
                 if wrt_inputs and jnp.issubdtype(x.dtype, jnp.floating))

  def loss(p, *x):
    return jnp.vdot(apply(nnx.merge(graphdef, p, rest), *x), cotangent)
  return jax.jit(jax.grad(loss, argnums=(0, *(1 + i for i in floats)))), params


def parts(config, model, batch, repeats: int) -> dict[str, float]:
  """`{part: ms}` (see the module docstring)."""
  from asr import features as F
  from asr.training import train_step as ts
  from asr.training.loop import build_step
  feature_cfg = model.cfg.features
  out = {"features": _time(jax.jit(lambda a, n: F.log_mel(a, n, feature_cfg)),
                           batch["audio"], batch["audio_lengths"], repeats=repeats)}
  feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"], feature_cfg)
  encode = lambda m, x: m.encode(x, lengths).frames
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  out["encoder forward"] = _time(jax.jit(lambda p, x: encode(nnx.merge(graphdef, p, rest), x)),
                                 params, feats, repeats=repeats)
  grad, params = _backward(model, encode, feats, wrt_inputs=False)   # the step's features
                                                                     # are not differentiated
  out["encoder forward+backward"] = _time(grad, params, feats, repeats=repeats)

  enc = model.encoder
  x = model.frontend(feats, lengths)
  if hasattr(enc, "blocks"):
    from asr.models.context import Context
    from asr.models.units import Frames
    x = jnp.pad(x, ((0, 0), (0, -x.shape[1] % enc.stream_multiple), (0, 0)))   # whole chunks
    out["  subsampling f+b"] = _time(*_fb_args(_backward(
        enc.subsampling, lambda s, v: _subsample(s, v, lengths)[0], x), x), repeats=repeats)
    y, sub_lengths = _subsample(enc.subsampling, x, lengths)
    t = y.shape[1]
    frames = Frames(sub_lengths, jnp.broadcast_to(jnp.arange(t), (y.shape[0], t)))
    block = enc.blocks[0]
    for name, _, unit in block.units():   # with no cache, as a training step runs them
      ms = _time(*_fb_args(_backward(unit, lambda u, v: u(v, frames, None, Context()).y, y),
                           y), repeats=repeats)
      out[f"  {name} f+b (x{len(enc.blocks)} layers)"] = ms * len(enc.blocks)
  else:
    y, n = F.stack_frames(x, lengths, enc.stack)
    for i, layer in enumerate(enc.layers):
      if i and i == enc.reduce_after:
        y, n = F.stack_frames(y, n, enc.reduce)
      out[f"  LSTM layer {i} f+b"] = _time(*_fb_args(_backward(
          layer, lambda l, v, n=n: l(v, n)[0], y), y), repeats=repeats)
      y = layer(y, n)[0]

  encoded = model.encode(feats, lengths)

  def score(m, frames, below):
    aux = dict(encoded.aux)
    if below is not None:
      aux["pre_reduction"] = below
    e = dataclasses.replace(encoded, frames=frames, aux=aux)
    nll = m.score(e, batch["labels"], batch["label_lengths"])
    return jnp.sum(nll["rnnt"]) + 0.5 * jnp.sum(nll.get("ctc", 0.0))
  below = encoded.aux.get("pre_reduction")
  inputs = (encoded.frames,) if below is None else (encoded.frames, below)
  g2, p2 = _backward(model, lambda m, *v: score(m, v[0], v[1] if len(v) > 1 else None), *inputs)
  out["joint + prediction + RNN-T/CTC loss f+b"] = _time(g2, p2, *inputs, repeats=repeats)

  _, tx, schedules = build_step(config, nnx.graphdef(model))
  state = ts.init_train_state(model, tx, 0)

  @jax.jit
  def update(grads, opt_state, params):
    direction, opt_state = tx.update(grads, opt_state, params)
    return jax.tree.map(lambda p, d: p - 1e-3 * d, params, direction), opt_state
  out["optimizer update"] = _time(update, state["params"], state["opt_state"], state["params"],
                                  repeats=repeats)
  return out


def _fb_args(fn_params, *inputs):
  fn, params = fn_params
  return (fn, params, *inputs)


def _subsample(layers, x, lengths):
  """The encoder's subsampling convolutions from an empty cache -> (`[B, T', D]`, lengths)."""
  for layer in layers:
    x, lengths, _ = layer(layer.init_state(x.shape[0]), x, lengths)
  return x, lengths


def main():
  huge_pages.ensure()       # as the entry points train (ASR_HUGE_PAGES=0: without)
  p = argparse.ArgumentParser()
  recipe_arguments(p, repeats=5)
  args = p.parse_args()
  from asr.training.loop import build_model
  c = recipe(args)
  batch = jax.tree.map(jnp.asarray, synthetic_batch(c.data.batch_size, args.seconds, 0, 12.0,
                                                    c.model.vocab))
  one_step = stepper(*build(c), batch)
  whole = 1000 * best_of(one_step, args.repeats)
  found = parts(c, build_model(c), batch, args.repeats)
  print(f"{args.config}:{args.variant} (encoder {c.model.encoder}): batch {c.data.batch_size} x "
        f"{args.seconds:.1f} s, {jax.devices()[0].device_kind}")
  print(f"{'whole step':<46} {whole:7.0f} ms  100%")
  for name, ms in found.items():
    print(f"{name:<46} {ms:7.1f} ms  {ms / whole:4.0%}")
  top = ["features", "encoder forward+backward", "joint + prediction + RNN-T/CTC loss f+b",
         "optimizer update"]
  rest = whole - sum(found[k] for k in top)
  print(f"{'rest (fusion across parts, guard, host)':<46} {rest:7.1f} ms  {rest / whole:4.0%}")


if __name__ == "__main__":
  main()
