"""Weight quantization during training: post-training quantization (the baseline), fake
quantization with straight-through gradients, and the regularised form that acts in the
backward pass.

The grid: symmetric, per output channel (a column of a `[in, out]` kernel), `bits` bits:
integers `-qmax..qmax` with `qmax = 2^(bits-1) - 1`, step `scale[c] = max_i |w[i, c]| / qmax`,
so the largest weight of each channel lies on the grid and nothing clips. This is what the int8
executor (`hardware/`) stores: the integers and one scale per channel.

Three ways to get a model whose weights survive rounding to that grid:

- **PTQ**: train in float, round at the end. `fake_quantized_weights(bits, begin_step=N)` with N
  the run's last step does exactly that: training never sees it, evaluation of the final
  checkpoint (step N) does.
- **Straight-through QAT** (`fake_quantized_weights(bits)`): the forward pass sees rounded
  weights; the gradient passes the rounding as if it were the identity (Bengio et al., 2013;
  Jacob et al., 2018, "Quantization and training of neural networks for efficient
  integer-arithmetic-only inference").
- **Regularised QAT** (`regularised_quantization(bits, every)` with the loss term `quant_reg`):
  the forward pass stays float; a penalty that is zero on the grid and largest halfway between
  grid points, `1 - |cos(pi w / scale)|` (the "absolute cosine" regulariser of Amazon's
  sub-8-bit QAT: Zhen et al., Interspeech 2022, "Sub-8-bit quantization aware training for 8-bit
  neural network accelerator with on-device speech recognition"), pulls every weight towards its
  nearest grid point through its gradient, warmed up by the schedule `quant_reg_weight`; every
  `every` steps after `hard_begin_step` the weights are snapped onto the grid (hard
  quantization), so the float model the optimizer continues from is a quantized one.

  c.imports = ["compression.quantization"]        # registers the loss term `quant_reg`
  c.transforms.quant = ml_collections.ConfigDict(dict(
      factory="compression.quantization:regularised_quantization", bits=8, every=500))
  c.loss.quant_reg = 1.0

Activations (`quantize_activations`, model surgery): every selected `Dense` layer fake-quantizes
its input to `bits` bits, symmetric, one scale per layer from a moving average of the largest
input magnitude seen in training steps (Jacob et al., 2018), straight-through inside the range.
The ranges are model state (checkpointed; evaluation and decoding use them fixed), so a model
evaluates as the integer processor will run it. Layers whose input is bounded by construction,
`tanh` or `sigmoid * tanh` (the LSTM's recurrent matrix, the joint's output layer: the model
declares it, `Dense.input_bound`), use that bound as their range and keep no statistics: they
run inside `lax.scan` loops, where a statistic could not leave the loop.

  c.surgery.act = ml_collections.ConfigDict(dict(
      factory="compression.quantization:quantize_activations", bits=8, order=1))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.models.dense import Dense, statistics_updating
from asr.training.objective import LossInputs, register_loss_term
from compression.surgery import dense_layers, replace
from compression.weights import EXCLUDE, INCLUDE, Selection

def qmax(bits: int) -> int:
  if not 2 <= bits <= 16:
    raise ValueError(f"quantization: bits={bits} must be between 2 and 16")
  return 2 ** (bits - 1) - 1


def channel_scales(w: jax.Array, bits: int) -> jax.Array:
  """`w [in, out]` -> grid step per output channel `[out]` (1 where a channel is all zero, so
  dividing by it is safe and its weights stay zero)."""
  top = jnp.max(jnp.abs(w), axis=0)
  return jnp.where(top > 0, top / qmax(bits), 1.0)


def quantize(w: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
  """`w [in, out]` float -> (integers `[in, out]` int32 in `-qmax..qmax`, scales `[out]`);
  `integers * scales` is the weight on the grid."""
  scale = channel_scales(w, bits)
  q = jnp.clip(jnp.round(w / scale), -qmax(bits), qmax(bits))
  return q.astype(jnp.int32), scale


def round_to_grid(w: jax.Array, bits: int) -> jax.Array:
  """`w` with every weight replaced by its nearest grid point (no gradient defined)."""
  q, scale = quantize(w, bits)
  return (q * scale).astype(w.dtype)


def fake_quantize(w: jax.Array, bits: int) -> jax.Array:
  """Forward: `round_to_grid(w)`. Backward: the identity (straight-through), with the scale
  treated as a constant."""
  w_q = round_to_grid(jax.lax.stop_gradient(w), bits)
  return w + jax.lax.stop_gradient(w_q - w)


def grid_penalty(w: jax.Array, bits: int) -> jax.Array:
  """Mean over `w [in, out]` of `1 - |cos(pi w / scale)|`: 0 on the grid, 1 halfway between
  grid points; its gradient points away from the nearest grid point, so descent moves each
  weight onto it. The scale is a constant of the step (it moves only as the largest weight of
  a channel does)."""
  scale = jax.lax.stop_gradient(channel_scales(w, bits))
  return jnp.mean(1.0 - jnp.abs(jnp.cos(jnp.pi * w / scale)))


class FakeQuantizedWeights:
  """Straight-through fake quantization of the selected weights from `begin_step` on."""

  def __init__(self, bits: int = 8, begin_step: int = 0, include: str = INCLUDE,
               exclude: str = EXCLUDE):
    qmax(bits)
    self.bits, self.begin = int(bits), int(begin_step)
    self.select = Selection(include, exclude)

  def init(self, params):
    self.select.check(params, "compression.quantization")
    return {}

  def apply(self, params, state, step, schedules):
    on = jnp.asarray(step) >= self.begin
    return self.select.map(lambda w: jnp.where(on, fake_quantize(w, self.bits), w), params)

  def update(self, params, state, step, schedules):
    return params, state


class RegularisedQuantization:
  """Float forward pass; `penalty` for the loss term `quant_reg`; hard quantization of the
  selected weights every `every` steps from `hard_begin_step` on (0 disables it), and at
  `last_step` (the run's last: the model it ends with is on the grid; 0: none)."""

  def __init__(self, bits: int = 8, every: int = 0, hard_begin_step: int = 0,
               last_step: int = 0, include: str = INCLUDE, exclude: str = EXCLUDE):
    qmax(bits)
    if every < 0:
      raise ValueError(f"quantization: every={every} must be >= 0 (0: never hard-quantize)")
    self.bits, self.every, self.hard_begin = int(bits), int(every), int(hard_begin_step)
    self.last = int(last_step)
    self.select = Selection(include, exclude)

  def init(self, params):
    self.select.check(params, "compression.quantization")
    return {}

  def apply(self, params, state, step, schedules):
    return params

  def penalty(self, params) -> jax.Array:
    """Mean grid penalty over the selected matrices (each matrix counts equally)."""
    values = [grid_penalty(w, self.bits) for _, w in self.select.items(params)]
    return sum(values) / len(values)

  def update(self, params, state, step, schedules):
    if not (self.every or self.last):
      return params, state
    step = jnp.asarray(step) + 1   # steps done, this one included
    due = step == self.last
    if self.every:
      due |= (step >= self.hard_begin) & (step % self.every == 0)
    return self.select.map(lambda w: jnp.where(due, round_to_grid(w, self.bits), w),
                           params), state


def fake_quantized_weights(**options) -> FakeQuantizedWeights:
  return FakeQuantizedWeights(**options)


def regularised_quantization(**options) -> RegularisedQuantization:
  return RegularisedQuantization(**options)


@register_loss_term("quant_reg")
def quant_reg_term(x: LossInputs) -> jax.Array:
  """The grid penalty of every `RegularisedQuantization` transform of the run, on the weights
  the model sees (a pruned zero is on every grid and costs nothing)."""
  found = [t.penalty(x.params) for _, t in x.transforms if isinstance(t, RegularisedQuantization)]
  if not found:
    raise ValueError("loss.quant_reg needs a transform with factory "
                     "'compression.quantization:regularised_quantization'")
  return sum(found)


def fake_quantize_tensor(x: jax.Array, top: jax.Array, bits: int) -> jax.Array:
  """`x` rounded to the symmetric grid of `bits` bits spanning `[-top, top]` (clipped), with
  straight-through gradients inside the range and none outside; `top <= 0`: `x` unchanged."""
  scale = jnp.where(top > 0, top / qmax(bits), 1.0)
  clipped = jnp.clip(x, -scale * qmax(bits), scale * qmax(bits))
  rounded = jnp.round(jax.lax.stop_gradient(clipped) / scale) * scale
  out = clipped + jax.lax.stop_gradient(rounded - clipped)
  return jnp.where(top > 0, out, x)


class ActivationQuantizedDense(Dense):
  """A `Dense` (the same `kernel` and `bias` parameters, so weight methods and checkpoints see
  no difference) whose input is fake-quantized with a moving-average range `act_range`."""

  def __init__(self, dense: Dense, bits: int, momentum: float):
    self.in_dim, self.out_dim, self.input_bound = dense.in_dim, dense.out_dim, dense.input_bound
    self.kernel, self.bias = dense.kernel, dense.bias
    self.bits, self.momentum = int(bits), float(momentum)
    self.bounded = dense.input_bound is not None      # a fixed range: no statistic
    # float32, not weakly typed: the step returns it strongly typed, and a weak one in the first
    # state would compile the step twice.
    self.act_range = nnx.BatchStat(jnp.full((), dense.input_bound or 0.0, jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    top = self.act_range[...]
    if statistics_updating() and not self.bounded:
      seen = jax.lax.stop_gradient(jnp.max(jnp.abs(x))).astype(jnp.float32)
      top = jnp.where(top > 0, self.momentum * top + (1 - self.momentum) * seen, seen)
      self.act_range[...] = top
    return super().__call__(fake_quantize_tensor(x, top, self.bits))


class QuantizeActivations:
  def __init__(self, bits: int = 8, momentum: float = 0.99, include: str = "",
               exclude: str = r"^ctc_head"):
    qmax(bits)
    if not 0 <= momentum < 1:
      raise ValueError(f"quantization: momentum={momentum} must be in [0, 1)")
    self.bits, self.momentum = int(bits), float(momentum)
    self.include, self.exclude = include, exclude

  def __call__(self, model) -> None:
    for path, _, dense in dense_layers(model, self.include, self.exclude, "quantization"):
      replace(model, path, ActivationQuantizedDense(dense, self.bits, self.momentum))


def quantize_activations(**options) -> QuantizeActivations:
  """The factory `config.surgery.<name>.factory` names (options as in `QuantizeActivations`)."""
  return QuantizeActivations(**options)
