"""Integer layers of the int8 processor: dense products, the LSTM layer with a fixed-point cell,
layer normalization. Each is a pytree of integers made from a float layer (`from_float`) and a
pure function of integers (`apply`), jitted with `hardware.fixed_point.integer_jit`;
`hardware.int8_reference` computes the same, element by element, and the tests hold them equal.

Number formats (`Qm.f`: a signed integer worth `q * 2^-f`):

- weights: int8, symmetric, one scale per output channel, `max |w| / 127` (the grid of
  `compression.quantization`, so a model trained with 8-bit QAT converts without rounding);
- activations between layers: int8 with one calibrated scale each (symmetric);
- LSTM gate pre-activations: int16 Q3.12 (range +-8: sigmoid and tanh are within 3.4e-4 of
  their limits there); the input and recurrent products are each requantized to it and added;
- sigmoid and tanh: tables of 4,096 int16 Q0.15 entries indexed by the pre-activation rounded
  to Q3.8 (a step of 1/256);
- LSTM cell state: int16 Q3.12; `c' = f c + i g` as `(f c) >> 15 + (i g) >> 18` rounded;
- LSTM output `h = o tanh(c)`: int8 Q0.7 (scale 1/128), saturated at 127/128;
- layer normalization: exact integer mean and variance of the int8 input, an integer square
  root, and one rounded division per element, into the next layer's int8 scale;
- biases: int32 at the accumulator's scale, with room for the products beside them
  (`int32_bias`: one too large for that is saturated where the output saturates whatever the
  products are, and refused, naming the layer, where it would not).

8-bit values are stored as int8, the only type a product takes (`hardware.fixed_point`). Every
layer that multiplies carries its name in the model (`encoder/layers/0/input`), so an error at
conversion or when a product is traced (`hardware.fixed_point.check_operand`) says which layer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hardware import fixed_point as fp

GATE_FRAC = 12          # gate pre-activations, Q3.12
CELL_FRAC = 12          # cell state, Q3.12
TABLE_FRAC = 8          # table index, Q3.8 (12 bits)
ACT_FRAC = 15           # sigmoid / tanh outputs, Q0.15
H_FRAC = 7              # LSTM output, Q0.7 int8
NORM_FRAC = 12          # fractional bits of the layer norm's gain

SIGMOID = fp.lookup_table(lambda v: 1 / (1 + np.exp(-v)), 2.0 ** -TABLE_FRAC, 2.0 ** -ACT_FRAC,
                          out_bits=16, in_bits=12)
TANH = fp.lookup_table(np.tanh, 2.0 ** -TABLE_FRAC, 2.0 ** -ACT_FRAC, out_bits=16, in_bits=12)


def quantize_weights(w, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Float `w [in, out]` -> (int8 `[in, out]`, scales `[out]` float64): symmetric per output
  channel, `max |w| / 127` (1 for an all-zero channel)."""
  w = np.asarray(w, np.float64)
  top = np.abs(w).max(axis=0)
  qmax = 2 ** (bits - 1) - 1
  scale = np.where(top > 0, top / qmax, 1.0)
  return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


def quantize_activation_scale(max_abs: float) -> float:
  """The int8 scale of an activation whose calibrated largest magnitude is `max_abs`."""
  return float(max_abs) / 127 if max_abs > 0 else 1.0


def calibrated_scale(scales: dict[str, float], name: str) -> float:
  """The int8 scale of layer `name`'s input from calibrated largest magnitudes
  (`hardware.int8_transducer.calibrate`), naming a missing one."""
  if name not in scales:
    raise ValueError(f"no calibrated scale for {name}'s input: calibrate the model "
                     f"(hardware.int8_transducer.calibrate) on training batches first")
  return quantize_activation_scale(scales[name])


def dense_arrays(layer, name: str) -> tuple[np.ndarray, np.ndarray | None]:
  """A float `asr.models.dense.Dense`'s (kernel, bias); any other layer in its place is refused
  by name."""
  from asr.models.dense import Dense
  if not isinstance(layer, Dense):
    raise ValueError(f"the int8 executor cannot run layer {name!r} ({type(layer).__name__}): "
                     "it runs dense layers")
  return np.asarray(layer.kernel[...]), None if layer.bias is None else np.asarray(layer.bias[...])


def int32_bias(bias, acc_scale, terms: int, multiplier, out_bits: int, name: str) -> np.ndarray:
  """Float `bias [N]` -> int32 at the accumulator's scale `acc_scale [N]`, leaving room for
  `terms` products of 8-bit values (each at most 128 x 127) so the accumulator never wraps.
  A bias beyond that room is saturated to it where the output (the accumulator times
  `multiplier [N]`, into `out_bits` bits) saturates whatever the products are, so the result is
  the same; otherwise it is refused, naming layer `name`."""
  room = 2 ** 31 - 1 - 128 * 127 * terms
  if room <= 0:
    raise ValueError(f"layer {name!r}: {terms} products of 8-bit values can exceed int32")
  b = np.round(np.asarray(bias, np.float64) / acc_scale)
  over = np.abs(b) > room
  # With the bias at +-room, |accumulator| >= room - 128 * 127 * terms: saturated if that,
  # times the multiplier, is past the output's largest value.
  least = (room - 128 * 127 * terms) * np.broadcast_to(multiplier, b.shape)
  wrong = over & (least < 2 ** (out_bits - 1))
  if wrong.any():
    c = int(np.flatnonzero(wrong)[0])
    raise ValueError(
        f"layer {name!r}: the bias of output channel {c} ({float(np.asarray(bias)[c]):.4g}) is "
        f"{abs(b[c]):.4g} accumulator steps, more than int32 holds beside the products, and its "
        "output would not saturate; the int8 executor cannot run it (calibrate on audio that "
        "gives the layer's input a realistic range)")
  return np.clip(b, -room, room).astype(np.int32)


def weight_macs(w, executed: bool = False) -> int:
  """MACs of a weight matrix per input row: all its weights, or (`executed`) its non-zero ones,
  what a processor that skips zeros spends."""
  return int(np.count_nonzero(np.asarray(w))) if executed else int(np.asarray(w).size)


def quantize(x, scale: float) -> jax.Array:
  """Float activations -> int8 at `scale`, rounded half to even and saturated: the processor's
  input from the float front end (NumPy or traced arrays)."""
  return jnp.clip(jnp.round(x / scale), -128, 127).astype(jnp.int8)


def table_index(g):
  """Q3.12 values -> the 12-bit index (Q3.8) of the sigmoid and tanh tables."""
  return fp.saturate(fp.rounding_shift(g, GATE_FRAC - TABLE_FRAC), 12)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntDense:
  """`y = requantize(x @ kernel + bias)`: int8 in, `out_bits` out (a static field)."""
  kernel: jax.Array          # [K, N] int8
  bias: jax.Array            # [N] int32, at the accumulator's scale
  m0: jax.Array              # [N] int64: accumulator -> output scale
  shift: jax.Array           # [N] int64
  out_bits: int = dataclasses.field(default=8, metadata=dict(static=True))
  name: str = dataclasses.field(default="", metadata=dict(static=True))

  @classmethod
  def from_float(cls, kernel, bias, in_scale: float, out_scale, out_bits: int = 8,
                 name: str = ""):
    """`out_scale`: a number, or one per output channel `[N]`."""
    w, s_w = quantize_weights(kernel)
    acc_scale = in_scale * s_w
    b = np.zeros(w.shape[1]) if bias is None else bias
    multiplier = acc_scale / out_scale
    m0, shift = fp.quantize_multipliers(multiplier, name)
    return cls(w, int32_bias(b, acc_scale, w.shape[0], multiplier, out_bits, name), m0, shift,
               out_bits, name)

  def apply(self, x: jax.Array) -> jax.Array:
    acc = fp.int_matmul(x, self.kernel, self.bias, self.name)
    return fp.requantize(acc, self.m0, self.shift, self.out_bits)


class LSTMCellArithmetic:
  """The integer LSTM cell's update, shared by every integer LSTM layer: a subclass gives
  `hidden`, `inputs(x)` (every frame's input gates, Q3.12) and `recurrent(h)` (the recurrent
  product's gates, Q3.12)."""

  def init_state(self, batch: int) -> tuple[jax.Array, jax.Array]:
    """(h int8 Q0.7, c int16-valued Q3.12 as int32), each `[B, H]`."""
    return (jnp.zeros((batch, self.hidden), jnp.int8),
            jnp.zeros((batch, self.hidden), jnp.int32))

  def cell(self, carry: tuple[jax.Array, jax.Array], g_in: jax.Array):
    """One frame, as `asr.models.lstm.LSTM.cell`: state (h, c), input gates `g_in [B, 4H]`
    (Q3.12) -> (new state, h `[B, H]` int8 Q0.7, aux {})."""
    h, c = carry
    g = fp.saturate(g_in + self.recurrent(h), 16)
    i, f, gg, o = jnp.split(table_index(g), 4, axis=-1)
    si, sf, so = (fp.lookup(SIGMOID, v) for v in (i, f, o))
    tg = fp.lookup(TANH, gg)
    c = fp.saturate(fp.rounding_shift(sf * c, ACT_FRAC)
                    + fp.rounding_shift(si * tg, 2 * ACT_FRAC - CELL_FRAC), 16)
    tc = fp.lookup(TANH, table_index(c))
    h = fp.saturate(fp.rounding_shift(so * tc, 2 * ACT_FRAC - H_FRAC), 8)
    return (h, c), h, {}

  def apply(self, x: jax.Array, lengths: jax.Array, state=None):
    """int8 `x [B, T, D]`, `lengths [B]` -> h `[B, T, H]` (Q0.7, zero past each length), the
    state after each utterance's last frame."""
    y, state, _ = scan_int_cell(self, x, lengths, state)
    return y, state


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntLSTM(LSTMCellArithmetic):
  """An LSTM layer (`asr.models.lstm.LSTM`: gates i, f, g, o) in integers."""
  w_in: jax.Array            # [D, 4H] int8
  b_in: jax.Array            # [4H] int32 at in_scale * s_in
  m_in: jax.Array            # [4H] int64: input products -> Q3.12
  n_in: jax.Array
  w_rec: jax.Array           # [H, 4H] int8
  m_rec: jax.Array           # [4H] int64: recurrent products (h at 2^-7) -> Q3.12
  n_rec: jax.Array
  name: str = dataclasses.field(default="", metadata=dict(static=True))

  @classmethod
  def from_float(cls, kernel_in, bias_in, kernel_rec, in_scale: float, name: str = ""):
    w_in, s_in = quantize_weights(kernel_in)
    w_rec, s_rec = quantize_weights(kernel_rec)
    to_gates = in_scale * s_in / 2.0 ** -GATE_FRAC
    m_in, n_in = fp.quantize_multipliers(to_gates, f"{name}/input")
    m_rec, n_rec = fp.quantize_multipliers(2.0 ** -H_FRAC * s_rec / 2.0 ** -GATE_FRAC,
                                           f"{name}/recurrent")
    b_in = int32_bias(bias_in, in_scale * s_in, w_in.shape[0], to_gates, 16, f"{name}/input")
    return cls(w_in, b_in, m_in, n_in, w_rec, m_rec, n_rec, name)

  @property
  def hidden(self) -> int:
    return self.w_rec.shape[0]

  def macs(self, executed: bool = False) -> int:
    """MACs per frame of both products (`executed`: on non-zero weights only)."""
    return weight_macs(self.w_in, executed) + weight_macs(self.w_rec, executed)

  def inputs(self, x: jax.Array) -> jax.Array:
    """int8 `x [B, T, D]` -> every frame's input gates `[B, T, 4H]` (Q3.12): one product
    before the scan, as `asr.models.lstm.LSTM.inputs`."""
    return fp.requantize(fp.int_matmul(x, self.w_in, self.b_in, f"{self.name}/input"),
                         self.m_in, self.n_in, 16)

  def recurrent(self, h: jax.Array) -> jax.Array:
    """h `[B, H]` int8 Q0.7 -> the recurrent product's gates `[B, 4H]` (Q3.12)."""
    acc = fp.int_matmul(h, self.w_rec, name=f"{self.name}/recurrent")
    return fp.requantize(acc, self.m_rec, self.n_rec, 16)

  def weights(self) -> dict[str, jax.Array]:
    """Its int8 matrices by name under the layer's."""
    return {"input": self.w_in, "recurrent": self.w_rec}

  def biases(self) -> list[jax.Array]:
    return [self.b_in]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntLowRankLSTM(LSTMCellArithmetic):
  """An LSTM layer whose two matrices are factored (`compression.factorization.LowRankDense`:
  `x @ U @ V`) in integers: each `x @ U` (and `h @ U'`) requantized to int8 at its calibrated
  scale, then `@ V` to the gates (Q3.12); the same cell."""
  in_u: IntDense             # [D, r] -> int8 at the calibrated scale of x @ U
  in_v: IntDense             # [r, 4H] (+ bias) -> Q3.12
  rec_u: IntDense            # [H, r'] Q0.7 -> int8 at the calibrated scale of h @ U'
  rec_v: IntDense            # [r', 4H] -> Q3.12

  @classmethod
  def from_factors(cls, in_u, in_v, in_bias, rec_u, rec_v, in_scale: float, in_mid: float,
                   rec_mid: float, name: str = ""):
    """Float factors `in_u [D, r]`, `in_v [r, 4H]` (bias `[4H]`), `rec_u [H, r']`,
    `rec_v [r', 4H]`; `in_scale` of x, `in_mid` and `rec_mid` the int8 scales of `x @ U` and
    `h @ U'` (calibrated)."""
    q312 = 2.0 ** -GATE_FRAC
    return cls(IntDense.from_float(in_u, None, in_scale, in_mid, 8, f"{name}/input/u"),
               IntDense.from_float(in_v, in_bias, in_mid, q312, 16, f"{name}/input/v"),
               IntDense.from_float(rec_u, None, 2.0 ** -H_FRAC, rec_mid, 8,
                                   f"{name}/recurrent/u"),
               IntDense.from_float(rec_v, None, rec_mid, q312, 16, f"{name}/recurrent/v"))

  @property
  def hidden(self) -> int:
    return self.rec_u.kernel.shape[0]

  def macs(self, executed: bool = False) -> int:
    return sum(weight_macs(w, executed) for w in self.weights().values())

  def inputs(self, x: jax.Array) -> jax.Array:
    return self.in_v.apply(self.in_u.apply(x))

  def recurrent(self, h: jax.Array) -> jax.Array:
    return self.rec_v.apply(self.rec_u.apply(h))

  def weights(self) -> dict[str, jax.Array]:
    return {"input/u": self.in_u.kernel, "input/v": self.in_v.kernel,
            "recurrent/u": self.rec_u.kernel, "recurrent/v": self.rec_v.kernel}

  def biases(self) -> list[jax.Array]:
    return [d.bias for d in (self.in_u, self.in_v, self.rec_u, self.rec_v)]


def tanh_to_int8(g: jax.Array) -> jax.Array:
  """tanh of Q3.12 values by table, to Q0.7 int8."""
  return fp.saturate(fp.rounding_shift(fp.lookup(TANH, table_index(g)), ACT_FRAC - H_FRAC), 8)


def scan_int_cell(layer, x: jax.Array, lengths: jax.Array, state=None, inputs=None):
  """Runs an integer cell (`inputs`, `cell`, `init_state`, as `IntLSTM`) over int8 `x [B, T, D]`
  -> (`y [B, T, H]`, zero past each length; the state after each utterance's last frame; each
  frame's aux `{name: [B, T, ...]}`): `asr.models.lstm.scan_cell` in integers. `inputs`:
  every frame's cell input where the caller made it (a routed cell's carry its routing);
  default `layer.inputs(x)`."""
  b, t, _ = x.shape
  state = state if state is not None else layer.init_state(b)
  valid = jnp.arange(t)[None, :] < lengths[:, None]

  def frame(carry, inputs):
    g, keep = inputs
    new, y, aux = layer.cell(carry, g)
    return (jax.tree.map(lambda n, o: jnp.where(keep[:, None], n, o), new, carry),
            (jnp.where(keep[:, None], y, 0), aux))

  inputs = layer.inputs(x) if inputs is None else inputs
  time_major = jax.tree.map(lambda v: v.swapaxes(0, 1), (inputs, valid))
  state, (y, aux) = jax.lax.scan(frame, state, time_major)
  return y.swapaxes(0, 1), state, jax.tree.map(lambda v: v.swapaxes(0, 1), aux)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntLayerNorm:
  """`y = gamma (x - mean) / std + beta` of an integer row, into `out_bits` (8 unless a
  Conformer's wider stages ask for more) at `out_scale`. Scale-free in its input:
  `(x - mean) / std` does not depend on the input's scale."""
  gamma: jax.Array           # [H] int64: gamma / out_scale * 2^NORM_FRAC
  beta: jax.Array            # [H] int64: beta / out_scale
  out_scale: float = dataclasses.field(default=1.0, metadata=dict(static=True))
  out_bits: int = dataclasses.field(default=8, metadata=dict(static=True))

  @classmethod
  def from_float(cls, scale, bias, out_scale: float, out_bits: int = 8):
    g = np.round(np.asarray(scale, np.float64) / out_scale * 2 ** NORM_FRAC).astype(np.int64)
    return cls(g, np.round(np.asarray(bias, np.float64) / out_scale).astype(np.int64),
               float(out_scale), out_bits)

  def apply(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.int64)
    n = x.shape[-1]
    d = n * x - jnp.sum(x, axis=-1, keepdims=True)                 # n (x - mean), exact
    var = jnp.sum(d * d, axis=-1, keepdims=True) // n              # n^2 var
    std = jnp.maximum(fp.isqrt(var), 1)                            # n std
    y = fp.round_div(d * self.gamma, std << NORM_FRAC) + self.beta
    return fp.saturate(y, self.out_bits).astype(fp.storage(self.out_bits))
