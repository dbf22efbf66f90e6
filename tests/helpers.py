"""Test helpers: models with random (not freshly initialized) parameters, a FLOP count read
off the program itself rather than from the formulas under test, a float model whose products
see 8-bit operands, the tiny model's training step on a synthetic batch, and an int8 recognizer
run over noise."""

import contextlib
import math

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from flax import nnx


def randomize(model: nnx.Module, seed: int = 0, scale: float = 0.5) -> nnx.Module:
  """Sets every parameter to Gaussian noise (LayerNorm biases and scales included: a fresh
  LayerNorm has bias 0, which hides what padding does to it). Returns the model."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  nnx.update(model, jax.tree.unflatten(treedef, noisy))
  return model


def _sub_jaxprs(eqn):
  for name, value in eqn.params.items():
    if isinstance(value, jex.core.ClosedJaxpr):
      yield name, value.jaxpr
    elif isinstance(value, jex.core.Jaxpr):
      yield name, value
    elif isinstance(value, (tuple, list)):
      for v in value:
        if isinstance(v, jex.core.ClosedJaxpr):
          yield name, v.jaxpr


def _count(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
    elif eqn.primitive.name == "scan":
      total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr)
    elif eqn.primitive.name == "cond":
      total += max(_count(b.jaxpr) for b in eqn.params["branches"])
    elif eqn.primitive.name == "while":
      raise ValueError("a while loop's trip count is unknown to a static FLOP count")
    else:
      total += sum(_count(sub) for _, sub in _sub_jaxprs(eqn))
  return total


def matmul_flops(fn, *args) -> int:
  """2 x multiply-accumulates of every matrix product `fn(*args)` executes, scans unrolled."""
  return _count(jax.make_jaxpr(fn)(*args).jaxpr)


@contextlib.contextmanager
def on_int8_grids(model: nnx.Module, scales: dict[str, float]):
  """Within the block, every `Dense` of `model` multiplies its input rounded to its int8 grid
  (step `scales[name] / 127`, from calibrated largest magnitudes; the LSTM's recurrent inputs,
  bounded by construction, at 2^-7) by its kernel rounded per output channel (step
  `max |w| / 127`), in float: what 8-bit operands alone cost the float model. Computed from the
  float model and the calibrated magnitudes only, never from a converted layer."""
  from asr.models.dense import intercept_dense
  from hardware.int8_transducer import dense_names
  names = dense_names(model)

  def on_grids(layer, x, apply):
    name = names[id(layer)]
    step = 2.0 ** -7 if name.split("/")[-1] == "recurrent" else scales[name] / 127
    kernel = layer.kernel[...]
    w_step = jnp.where(jnp.abs(kernel).max(0) > 0, jnp.abs(kernel).max(0) / 127, 1.0)
    return apply(jnp.clip(jnp.round(x / step), -128, 127) * step,
                 jnp.round(kernel / w_step) * w_step)

  with intercept_dense(on_grids):
    yield


def numpy_lstm(x, lengths, w_in, b, w_rec):
  """A textbook LSTM in float64, one frame at a time; gates input, forget, cell, output."""
  sig = lambda z: 1 / (1 + np.exp(-z))
  bsz, t, _ = x.shape
  hidden = w_rec.shape[0]
  h, c = np.zeros((bsz, hidden)), np.zeros((bsz, hidden))
  y = np.zeros((bsz, t, hidden))
  for step in range(t):
    z = x[:, step] @ w_in + b + h @ w_rec
    i, f, g, o = np.split(z, 4, axis=-1)
    c_new = sig(f) * c + sig(i) * np.tanh(g)
    h_new = sig(o) * np.tanh(c_new)
    live = (step < lengths)[:, None]
    h, c = np.where(live, h_new, h), np.where(live, c_new, c)
    y[:, step] = np.where(live, h_new, 0.0)
  return y, h, c


def tiny_step(config=None, transforms=(), batch_size=4):
  """(config, train state, the un-jitted step, a synthetic batch `[batch_size, 16000]` whose
  last row is padding, schedules) of the `tiny` LSTM recipe with `transforms`."""
  from asr.training import train_step as ts
  from asr.training.loop import build_model, build_step, loss_terms
  from experiments.configs.rnnt import get_config
  c = config or get_config("tiny")
  c.train.num_steps, c.train.max_nonfinite_in_a_row = 10, 3
  c.optim.warmup_steps = 5
  model = build_model(c)
  terms = loss_terms(c)
  step, tx, schedules = build_step(c, nnx.graphdef(model), transforms, terms)
  state = ts.init_train_state(model, tx, 0, transforms, terms)
  rng = np.random.default_rng(0)
  batch = {"audio": (rng.standard_normal((batch_size, 16000)) * 0.1).astype(np.float32),
           "audio_lengths": np.array([16000, 12000, 9000, 0][:batch_size], np.int32),
           "labels": rng.integers(1, 29, (batch_size, 12)).astype(np.int32),
           "label_lengths": np.array([12, 7, 3, 0][:batch_size], np.int32)}
  return c, state, step, batch, schedules


def int8_recognition(model, max_symbols: int = 3):
  """The int8 recognizer of `model` (`hardware.int8_backend.int8_recognizer`), calibrated on and
  run over three utterances of noise (1, 0.69 and 0.31 s): (recognize, its output)."""
  from hardware.int8_backend import int8_recognizer
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  audio = jnp.asarray(np.random.default_rng(1).standard_normal((3, 16000)) * 0.1, jnp.float32)
  audio_lengths = jnp.asarray([16000, 11000, 5000])
  batch = {"audio": audio, "audio_lengths": audio_lengths}
  recognize = int8_recognizer(graphdef, (params, rest), [batch], max_symbols=max_symbols)
  return recognize, recognize((params, rest), audio, audio_lengths)
