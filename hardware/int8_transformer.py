"""The streaming Transformer and Conformer encoders (`asr.models.conformer`) in integers: every
matrix product int8 x int8 into int32, every nonlinearity a table, softmax and layer
normalization in fixed point. `hardware.int8_reference` computes the same with Python
integers and the tests hold the two equal.

The integer encoder is built from the float one's description: each float block's layout of
residual units (`asr.models.blocks.Block.layout`) becomes an `IntBlock` running the same units
in the same order, each converted by the converter registered for its float class
(`register_int_unit`; a unit's scale is folded into its last requantization). Calibration
observes the float encoder's own pass (`asr.models.context.Context.observe`): nothing here
re-walks the float model.

Number formats (`Qm.f` as in `hardware.int8_layers`; scales from
`hardware.int8_transducer.calibrate`, the largest magnitudes seen on training audio):

- the residual stream: int16 at one scale for the whole encoder, twice the largest magnitude
  calibration saw after any sub-block over 32,767; each sub-block's output is requantized into
  it and added with saturation, and frames past an utterance's length are zero after every
  block;
- layer norm: `IntLayerNorm` from the int16 residual into the int8 scale of the next product;
- SiLU (the subsampling convolutions, the feed-forward layers): the product is requantized to
  12 bits at its calibrated range, and a 4,096-entry table gives SiLU at the next product's int8
  scale (the last subsampling layer's table writes the int16 residual directly);
- attention: one product gives q, k and v as int8, each at its own calibrated scale (per-channel
  requantization multipliers); rotary positions multiply by cos and sin from a table of Q1.14
  values per position, and the rotated q and k are requantized to int8 at sqrt(2) times their
  scale (a rotation keeps each pair's norm, so no rotated value exceeds sqrt(2) times the
  largest); scores are int8 dot products in int32;
- softmax: each score minus its row's largest (exact, int32), scaled to Q4.7 (12 bits, so it
  saturates at -16), exp by a table in Q0.15 (exp(-16) rounds to 0), invisible keys 0, the
  row's sum in int32, each probability `round(e * 2^8 / sum)` as uint8 Q0.8 (saturated at 255);
  the probability-weighted values in int32, requantized to int8 at the output projection's
  input scale;
- the Conformer's half-step feed-forward layers fold their 1/2 into the requantization into
  the residual; its convolution module is `IntConvModule`'s; its block norm writes the int16
  residual (the last block's, the int8 frames).

Gated residual units (`asr.models.gates`): the arbitrators' trunk takes the int8 input
stacked per output frame (the input's scale) to Q3.12, tanh by table to Q0.7; each block's head
gives Q7.8 logits (int16), from the trunk and, with the block's input, from a parameter-free
`IntLayerNorm` of the residual; a unit whose logit is not above 0 adds nothing for the frame.
`frame_macs` charges each frame what `asr.models.blocks.Block` charges it: a closed unit its
`closed_macs` (attention's key and value, the convolution's GLU), an open one all of it.

Streaming positions beyond `MAX_POSITIONS` output frames (5.5 minutes of 40 ms frames) reuse
the last table row; evaluation utterances are far shorter. Calibration sees the residual after
every unit (the float blocks' `observe` notes), on valid frames only; its 2x headroom is for
audio calibration did not hear.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from asr.arrays import length_mask, mask_padding
from asr.models.attention import ChunkedSelfAttention, chunk_visibility
from asr.models.blocks import ConvModule, FeedForward
from asr.models.units import Frames
from hardware import fixed_point as fp
from hardware.int8_families import register_int8_family
from hardware.int8_layers import (ACT_FRAC, GATE_FRAC, H_FRAC, SIGMOID, IntDense,
                                  IntLayerNorm, calibrated_scale, dense_arrays, int32_bias,
                                  quantize, quantize_weights, table_index, tanh_to_int8)
from hardware.int8_layers import weight_macs as _macs
from hardware.int8_lstm import _stack

PRE_BITS = 12          # pre-activations of SiLU: the table's index
RESIDUAL_BITS = 16
ROT_FRAC = 14          # cos and sin, Q1.14
EXP_FRAC = 7           # softmax exponents, Q4.7 (12 bits)
DEPTH_FRAC = 7         # the Conformer's normalized depthwise outputs, Q4.7 (12 bits)
PROB_FRAC = 8          # probabilities, uint8 Q0.8
MAX_POSITIONS = 8192
GATE_LOGIT_FRAC = 8    # gate logits, Q7.8 int16 (as the AmNet arbitrator's)

EXP = fp.lookup_table(np.exp, 2.0 ** -EXP_FRAC, 2.0 ** -ACT_FRAC, out_bits=16, in_bits=12)


def silu(v):
  return v / (1 + np.exp(-v))


def rotary_tables(head_dim: int, positions: int = MAX_POSITIONS) -> tuple[np.ndarray, ...]:
  """cos and sin of `asr.models.attention.rotary`'s angles, `[positions, head_dim / 2]` int32
  in Q1.14 (computed in float64)."""
  half = head_dim // 2
  angle = np.arange(positions)[:, None] * 10000.0 ** (-np.arange(half) / half)
  return tuple(np.round(f(angle) * 2 ** ROT_FRAC).astype(np.int32) for f in (np.cos, np.sin))


def exact_einsum(spec: str, a: jax.Array, b: jax.Array, name: str,
                 a_type=jnp.int8) -> jax.Array:
  """An integer contraction computed in float32: exact while every partial sum stays below
  2^24. Scores: int8 q and k over a head of at most `EXACT_K` channels (each product at most
  2^14). Context: uint8 probabilities (`a_type=jnp.uint8`) times int8 values; the
  probabilities are non-negative and a row's sum at most 256 plus half a step per key, so no
  partial sum exceeds 128 x (256 + keys / 2). Operands of other types are refused, naming
  `name` (`hardware.fixed_point.check_operand`)."""
  fp.check_operand(a, name, a_type)
  fp.check_operand(b, name)
  return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32)).astype(jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntActDense:
  """`table[requantize(x @ kernel + bias)]`: a product into 12 bits, then an activation table."""
  dense: IntDense            # out_bits = PRE_BITS
  table: jax.Array           # [4096] int32
  out_bits: int = dataclasses.field(default=8, metadata=dict(static=True))

  @classmethod
  def from_float(cls, kernel, bias, in_scale: float, pre_max: float, out_scale: float,
                 out_bits: int = 8, fn=silu, name: str = ""):
    pre_scale = pre_max / (2 ** (PRE_BITS - 1) - 1) if pre_max > 0 else 1.0
    dense = IntDense.from_float(kernel, bias, in_scale, pre_scale, out_bits=PRE_BITS, name=name)
    return cls(dense, fp.lookup_table(fn, pre_scale, out_scale, out_bits=out_bits,
                                      in_bits=PRE_BITS), out_bits)

  def apply(self, x: jax.Array) -> jax.Array:
    return fp.lookup(self.table, self.dense.apply(x))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntSubsampling:
  """`asr.models.blocks.CausalSubsampling`: `kernel` strided taps of int8 frames, one
  product, SiLU by table."""
  proj: IntActDense
  stride: int = dataclasses.field(metadata=dict(static=True))
  kernel: int = dataclasses.field(metadata=dict(static=True))

  def apply(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int8 `[B, T, D]` (T a multiple of the stride) -> `[B, T / stride, D']`, lengths."""
    t = x.shape[1]
    joined = jnp.pad(mask_padding(x, lengths, 0),
                     ((0, 0), (self.kernel - self.stride, 0), (0, 0)))
    taps = [joined[:, i:i + t:self.stride] for i in range(self.kernel)]
    lengths = (lengths + self.stride - 1) // self.stride
    return mask_padding(self.proj.apply(jnp.concatenate(taps, -1)), lengths, 0), lengths


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntAttention:
  """`asr.models.attention.ChunkedSelfAttention` on the int16 residual, whole utterances."""
  norm: IntLayerNorm
  qkv: IntDense              # -> int8 q, k, v (each at its own scale)
  rot_m0: jax.Array          # int64 scalars: Q1.14 rotation products -> int8 at sqrt(2) s
  rot_n: jax.Array
  score_m0: jax.Array        # int64 scalars: scores -> Q4.7
  score_n: jax.Array
  ctx_m0: jax.Array          # int64 scalars: Q0.8 x v -> int8 at out's input scale
  ctx_n: jax.Array
  out: IntDense              # -> the int16 residual
  cos: jax.Array             # [MAX_POSITIONS, head_dim / 2] int32 Q1.14
  sin: jax.Array
  heads: int = dataclasses.field(metadata=dict(static=True))
  chunk: int = dataclasses.field(metadata=dict(static=True))
  left: int = dataclasses.field(metadata=dict(static=True))
  name: str = dataclasses.field(default="", metadata=dict(static=True))

  def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    """int8 `x [B, T, H, Dh]`, `positions [B, T]` -> rotated, int8 at sqrt(2) x's scale."""
    pos = jnp.minimum(positions, self.cos.shape[0] - 1)
    cos, sin = self.cos[pos][:, :, None], self.sin[pos][:, :, None]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return fp.requantize(rotated, self.rot_m0, self.rot_n, 8)

  def probabilities(self, scores: jax.Array, seen: jax.Array) -> jax.Array:
    """int32 `scores [..., K]`, bool `seen` -> uint8 Q0.8 softmax over the seen keys."""
    top = jnp.max(jnp.where(seen, scores, jnp.iinfo(jnp.int32).min), axis=-1, keepdims=True)
    z = fp.requantize(jnp.where(seen, scores - top, 0), self.score_m0, self.score_n, 12)
    e = jnp.where(seen, fp.lookup(EXP, z), 0)
    total = jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1)
    return jnp.minimum(fp.round_div(e << PROB_FRAC, total), 2 ** PROB_FRAC - 1).astype(jnp.uint8)

  def macs(self, executed: bool = False) -> int:
    """Per frame, on weights (`executed`: the non-zero ones); the scores and weighted values
    cost `macs_per_key` more for each key the frame sees."""
    return _macs(self.qkv.kernel, executed) + _macs(self.out.kernel, executed)

  @property
  def macs_per_key(self) -> int:
    return 2 * self.out.kernel.shape[0]

  def closed_macs(self, executed: bool = False) -> int:
    """Per frame whose gate is closed: its key and value (`asr.models.attention`)."""
    d = self.out.kernel.shape[0]
    return _macs(self.qkv.kernel[:, d:], executed)

  def layers(self) -> dict:
    """Its integer layers by name (`hardware.int8_backend`'s accounting)."""
    return {"norm": self.norm, "qkv": self.qkv, "out": self.out}

  def apply(self, r: jax.Array, frames: Frames) -> jax.Array:
    """int16 residual `[B, T, D]` (T a multiple of `chunk`) -> the attention output in the
    residual's scale."""
    b, t, d = r.shape
    h = self.heads
    q, k, v = jnp.split(self.qkv.apply(self.norm.apply(r)).reshape(b, t, 3 * h, d // h), 3,
                        axis=2)
    q, k = self.rotate(q, frames.positions), self.rotate(k, frames.positions)
    seen = self.visible(frames.lengths, t)[:, None]                           # [B, 1, T, T]
    p = self.probabilities(exact_einsum("bqhd,bkhd->bhqk", q, k, f"{self.name}/scores"), seen)
    ctx = exact_einsum("bhqk,bkhd->bqhd", p, v, f"{self.name}/context", a_type=jnp.uint8)
    return self.out.apply(fp.requantize(ctx.reshape(b, t, d), self.ctx_m0, self.ctx_n, 8))

  def visible(self, lengths: jax.Array, t: int) -> jax.Array:
    """`[B, T, T]` bool: may frame `i` attend to frame `j` (its own and `left` chunks back,
    within the utterance's length), as `asr.models.attention.ChunkedSelfAttention` sees."""
    return chunk_visibility(t, t, self.chunk, self.left)[None] & length_mask(lengths, t)[:, None]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntFeedForward:
  """LayerNorm, a SiLU product, a product back into the residual (a Conformer's half step
  folds its 1/2 into the last requantization)."""
  norm: IntLayerNorm
  up: IntActDense
  down: IntDense             # -> the int16 residual

  def macs(self, executed: bool = False) -> int:
    return _macs(self.up.dense.kernel, executed) + _macs(self.down.kernel, executed)

  def closed_macs(self, executed: bool = False) -> int:
    return 0

  def layers(self) -> dict:
    return {"norm": self.norm, "up": self.up, "down": self.down}

  def apply(self, r: jax.Array, frames: Frames | None = None) -> jax.Array:
    return self.down.apply(self.up.apply(self.norm.apply(r)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntConvModule:
  """`asr.models.blocks.ConvModule`: LayerNorm; pointwise into the GLU's values (int8) and
  gates (Q3.12, sigmoid by table, the product back to int8); the causal depthwise convolution in
  int32, requantized per channel to int16 at one scale for every channel (the largest value
  its int8 input and weights allow, so it never saturates); LayerNorm into Q4.7 (12 bits); SiLU
  by table; pointwise into the residual."""
  norm: IntLayerNorm
  values: IntDense           # -> int8
  gates: IntDense            # -> Q3.12
  depthwise: jax.Array       # [K, D] int8, one scale per channel
  depthwise_bias: jax.Array  # [D] int32 at the products' scale
  dw_m0: jax.Array           # [D] int64: products -> int16
  dw_n: jax.Array
  depth_norm: IntLayerNorm   # -> Q4.7, 12 bits
  silu: jax.Array            # [4096] int8: Q4.7 -> int8 at out's input scale
  out: IntDense              # -> the int16 residual

  def macs(self, executed: bool = False) -> int:
    return (_macs(self.values.kernel, executed) + _macs(self.gates.kernel, executed)
            + _macs(self.depthwise, executed) + _macs(self.out.kernel, executed))

  def closed_macs(self, executed: bool = False) -> int:
    """Per frame whose gate is closed: its GLU, which the next frames' convolution reads."""
    return _macs(self.values.kernel, executed) + _macs(self.gates.kernel, executed)

  def layers(self) -> dict:
    """The depthwise kernel is an int8 `[K, D]` array, not a layer."""
    return {"norm": self.norm, "values": self.values, "gates": self.gates,
            "depthwise": self.depthwise, "depth_norm": self.depth_norm,
            "pointwise_out": self.out}

  def apply(self, r: jax.Array, frames: Frames | None = None) -> jax.Array:
    x = self.norm.apply(r)
    glu = fp.rounding_shift(self.values.apply(x)
                            * fp.lookup(SIGMOID, table_index(self.gates.apply(x))), ACT_FRAC)
    k, t = self.depthwise.shape[0], r.shape[1]
    joined = jnp.pad(glu, ((0, 0), (k - 1, 0), (0, 0)))
    acc = sum(joined[:, i:i + t] * self.depthwise[i] for i in range(k)) + self.depthwise_bias
    y = fp.requantize(acc, self.dw_m0, self.dw_n, 16)
    return self.out.apply(fp.lookup(self.silu, self.depth_norm.apply(y)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntGateHead:
  """`asr.models.gates.GateHead`: the arbitrators' trunk (Q0.7) through `out` to one logit per
  unit in Q7.8 (int16), plus, with the block's input, a parameter-free LayerNorm of the
  residual into int8 and `from_input` into the same Q7.8; a gate is open where the sum is
  above 0."""
  out: IntDense
  norm: IntLayerNorm | None = None
  from_input: IntDense | None = None

  def logits(self, trunk: jax.Array, r: jax.Array) -> jax.Array:
    """int8 `trunk [B, T, H]`, the int16 residual `[B, T, D]` -> int32 logits `[B, T, U]`."""
    logits = self.out.apply(trunk).astype(jnp.int32)
    if self.from_input is not None:
      logits = logits + self.from_input.apply(self.norm.apply(r)).astype(jnp.int32)
    return logits

  def macs(self) -> int:
    return _macs(self.out.kernel) + (0 if self.from_input is None else
                                     _macs(self.from_input.kernel))

  def layers(self) -> dict:
    out = {"out": self.out}
    if self.from_input is not None:
      out.update(norm=self.norm, from_input=self.from_input)
    return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntBlock:
  """`asr.models.blocks.Block` in integers: the same residual units in the same order (each
  adds into the int16 residual with saturation; a half step's 1/2 is in its requantization),
  then, for a Conformer, the block's LayerNorm (into the residual; the last block's into the
  int8 frames)."""
  units: dict                # {name: IntAttention | IntFeedForward | IntConvModule}
  norm: IntLayerNorm | None
  layout: tuple = dataclasses.field(metadata=dict(static=True))    # unit names, in order
  where: str = dataclasses.field(metadata=dict(static=True))       # "encoder/blocks/<i>"
  arbitrator: IntGateHead | None = None    # gated residual units (`asr.models.gates`)

  def apply(self, r: jax.Array, frames: Frames, tap=lambda name, r, scale: None,
            trunk: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The int16 residual `[B, T, D]` -> the block's output and, gated, each unit's gate
    `[B, T, units]` (bool; the arbitrators' `trunk` given); a closed gate adds nothing.
    `tap(name, r, scale)` sees the residual after each unit, and the block's normalized
    output, named as the float block's `observe` notes name them (`compare_layers`)."""
    gates = None if self.arbitrator is None else self.arbitrator.logits(trunk, r) > 0
    for j, name in enumerate(self.layout):
      y = self.units[name].apply(r, frames)
      if gates is not None:
        y = jnp.where(gates[..., j:j + 1], y, 0)
      r = fp.saturate(r + y, RESIDUAL_BITS)
      tap(f"{self.where}/{name}", r, None)
    if self.norm is not None:
      r = mask_padding(self.norm.apply(r), frames.lengths, 0)
      tap(self.where, r, self.norm.out_scale)
    return mask_padding(r, frames.lengths, 0), gates


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntTransformerEncoder:
  subsampling: list          # [IntSubsampling]
  blocks: list               # [IntBlock]
  final_norm: IntLayerNorm | None   # -> int8 at the joint's encoder projection input scale
                                    # (a Conformer's last block norm does it instead)
  multiple: int = dataclasses.field(metadata=dict(static=True))   # input frames per chunk
  residual_scale: float = dataclasses.field(default=1.0, metadata=dict(static=True))
  arbitrator: IntDense | None = None   # gates' trunk: stacked int8 features -> Q3.12

  @property
  def subsample_factor(self) -> int:
    return int(np.prod([layer.stride for layer in self.subsampling]))

  def trunk(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """int8 input `[B, T, F]` -> the arbitrators' trunk `[B, T / factor, H]` (Q0.7): each
    output frame's stacked features through `arbitrator`, tanh by table."""
    return tanh_to_int8(self.arbitrator.apply(_stack(x, lengths, self.subsample_factor)[0]))

  def prepare(self, features: jax.Array, lengths: jax.Array, scale: float):
    """Normalized float log-mels `[B, T, F]` -> int8 `[B, T', F]` (T' the next multiple of a
    streamed chunk), lengths: the processor's input."""
    t = features.shape[1]
    x = jnp.pad(features, ((0, 0), (0, -t % self.multiple), (0, 0)))
    return quantize(x, scale), lengths

  def encode(self, x: jax.Array, lengths: jax.Array,
             tap=lambda name, x, scale: None) -> tuple[jax.Array, jax.Array]:
    """int8 input (`prepare`) -> int8 encoder frames `[B, T'', D]`, their lengths.
    `tap(stage, x, scale)` sees the integers after the subsampling, after each unit and
    block norm, and after the final norm, with the scale they are at (`compare_layers`)."""
    return self.gated_encode(x, lengths, tap)[:2]

  def gated_encode(self, x: jax.Array, lengths: jax.Array, tap=lambda name, x, scale: None):
    """`encode`, and every unit's gate per frame `[B, T'', blocks, units]` (bool; None without
    gates)."""
    trunk = None if self.arbitrator is None else self.trunk(x, lengths)
    for layer in self.subsampling:
      x, lengths = layer.apply(x, lengths)
    residual = lambda name, r, scale: tap(name, r, scale or self.residual_scale)
    residual("encoder/subsampling", x, None)
    frames = Frames(lengths, jnp.broadcast_to(jnp.arange(x.shape[1])[None], x.shape[:2]))
    gates = []
    for block in self.blocks:
      x, g = block.apply(x, frames, residual, trunk)
      gates.append(g)
    if self.final_norm is not None:
      x = mask_padding(self.final_norm.apply(x), lengths, 0)
      tap("encoder/final_norm", x, self.final_norm.out_scale)
    return x, lengths, None if trunk is None else jnp.stack(gates, axis=2)

  def arbitrator_macs(self) -> int:
    """Per output frame: the trunk and every block's head (0 without gates)."""
    if self.arbitrator is None:
      return 0
    return _macs(self.arbitrator.kernel) + sum(b.arbitrator.macs() for b in self.blocks)

  def frame_macs(self, gates, keys, valid, executed: bool = False) -> np.ndarray:
    """MACs of each output frame `[B, T]` (int64, on the host) of a gated encoder with `gates [B, T, blocks,
    units]`, attending to `keys [B, T]` keys in each block: the subsampling and the
    arbitrators, and per unit what it costs closed plus, open, the rest (as
    `asr.models.blocks.Block` counts it)."""
    keys = np.asarray(keys, np.int64)
    per_frame = np.zeros(keys.shape, np.int64) + self.subsampling_macs(executed) \
        + self.arbitrator_macs()
    for i, block in enumerate(self.blocks):
      for j, name in enumerate(block.layout):
        unit = block.units[name]
        opened = unit.macs(executed) + (unit.macs_per_key * keys
                                        if isinstance(unit, IntAttention) else 0)
        closed = unit.closed_macs(executed)
        per_frame = per_frame + np.where(np.asarray(gates)[:, :, i, j], opened, closed)
    return np.where(valid, per_frame, 0)

  def macs(self, executed: bool = False) -> int:
    """MACs per output frame on weights (`executed`: the non-zero ones): the subsampling's,
    each product's at its frame rate, and every unit's; attention over its keys is
    `macs_per_key` more a key."""
    return self.subsampling_macs(executed) + sum(unit.macs(executed) for block in self.blocks
                                                 for unit in block.units.values())

  def subsampling_macs(self, executed: bool = False) -> int:
    """Per output frame: each subsampling product's, at its frame rate."""
    total, per_output = 0, 1
    for layer in reversed(self.subsampling):
      total += _macs(layer.proj.dense.kernel, executed) * per_output
      per_output *= layer.stride
    return total

  @property
  def macs_per_key(self) -> int:
    """MACs for each key a frame attends to, over all blocks."""
    return sum(u.macs_per_key for b in self.blocks for u in b.units.values()
               if isinstance(u, IntAttention))

  def visible_keys(self, lengths: jax.Array, frames: int) -> jax.Array:
    """Keys each output frame attends to in each block, `[B, frames]` (0 past a length): what
    its attention costs, counted as `ChunkedSelfAttention.macs_per_frame` counts it."""
    attention = next(u for b in self.blocks for u in b.units.values()
                     if isinstance(u, IntAttention))
    seen = attention.visible(lengths, frames).sum(-1)
    return jnp.where(length_mask(lengths, frames), seen, 0)



# ---- calibration and conversion (`hardware.int8_transducer`) ----

def stage_lengths(enc, frames: int, lengths: jax.Array) -> dict[int, jax.Array]:
  """`{frames at a rate: lengths [B] at that rate}` for every rate the float encoder `enc`
  multiplies at: the input padded to whole streamed chunks (as `float_frames` pads it), then
  after each subsampling layer."""
  t = frames + -frames % enc.stream_multiple
  out = {}
  for layer in enc.subsampling:
    t, lengths = t // layer.stride, (lengths + layer.stride - 1) // layer.stride
    out[t] = lengths
  return out


def note_output(name: str, y: jax.Array, note) -> None:
  """The ranges the integer form needs of a product's output `y`: `<qkv>/q`, `/k`, `/v` (each
  requantized at its own scale), a GLU's values (`<pointwise_in>/values`, not its gates), and
  `<name>/output` of every encoder product (a SiLU table's input range)."""
  if name.endswith("/qkv"):
    for part, values in zip("qkv", jnp.split(y, 3, axis=-1)):
      note(f"{name}/{part}", values)
  elif name.endswith("/pointwise_in"):
    note(f"{name}/values", jnp.split(y, 2, axis=-1)[0])
  elif name.startswith("encoder/"):
    note(f"{name}/output", y)


# Converters from a float residual unit to its integer form, by the unit's class:
# `convert(unit, name, scales, into) -> integer unit`, where `into` is the scale the unit's output
# is requantized to (the residual's, divided by the unit's scale in the block's layout).
UNIT_CONVERTERS: dict[type, object] = {}


def register_int_unit(float_class: type):
  """Decorator: the converter of a float residual unit class (`asr.models.units`) to its integer
  form, so a new unit runs on the int8 path by registering one function."""
  def register(fn):
    UNIT_CONVERTERS[float_class] = fn
    return fn
  return register


def _norm(layer, s_out, bits=8) -> IntLayerNorm:
  return IntLayerNorm.from_float(np.asarray(layer.scale[...]), np.asarray(layer.bias[...]),
                                 s_out, bits)


@register_int_unit(FeedForward)
def _feed_forward(ffn, name: str, scales, into: float) -> IntFeedForward:
  up, down = f"{name}/up", f"{name}/down"
  s_up, s_down = calibrated_scale(scales, up), calibrated_scale(scales, down)
  return IntFeedForward(
      _norm(ffn.norm, s_up),
      IntActDense.from_float(*dense_arrays(ffn.up, up), s_up, scales[f"{up}/output"], s_down,
                             name=up),
      IntDense.from_float(*dense_arrays(ffn.down, down), s_down, into, RESIDUAL_BITS,
                          name=down))


@register_int_unit(ChunkedSelfAttention)
def _attention(a, at: str, scales, into: float) -> IntAttention:
  scale = calibrated_scale
  s_x = scale(scales, f"{at}/qkv")
  s_q, s_k, s_v = (scale(scales, f"{at}/qkv/{part}") for part in "qkv")
  qkv = IntDense.from_float(*dense_arrays(a.qkv, f"{at}/qkv"), s_x,
                            np.repeat([s_q, s_k, s_v], a.dim), name=f"{at}/qkv")
  rot = fp.quantize_multiplier(2.0 ** -ROT_FRAC / np.sqrt(2))
  head = a.dim // a.heads
  if head > fp.EXACT_K:
    raise ValueError(f"{at}: heads of {head} channels; float32 scores are exact over at most "
                     f"{fp.EXACT_K}")
  score = fp.quantize_multiplier(2 * s_q * s_k / np.sqrt(head) * 2 ** EXP_FRAC)
  s_ctx = scale(scales, f"{at}/out")
  ctx = fp.quantize_multiplier(2.0 ** -PROB_FRAC * s_v / s_ctx)
  out = IntDense.from_float(*dense_arrays(a.out, f"{at}/out"), s_ctx, into, RESIDUAL_BITS,
                            name=f"{at}/out")
  cos, sin = rotary_tables(head)
  return IntAttention(_norm(a.norm, s_x), qkv, *(np.int64(v) for v in rot + score + ctx), out,
                      cos, sin, a.heads, a.chunk, a.left, at)


@register_int_unit(ConvModule)
def _conv_module(conv, name: str, scales, into: float) -> IntConvModule:
  scale, kernel = calibrated_scale, dense_arrays
  s_in = scale(scales, f"{name}/pointwise_in")
  k_in, b_in = kernel(conv.pointwise_in, f"{name}/pointwise_in")
  d = k_in.shape[1] // 2
  s_a = scale(scales, f"{name}/pointwise_in/values")
  values = IntDense.from_float(k_in[:, :d], b_in[:d], s_in, s_a,
                               name=f"{name}/pointwise_in/values")
  gates = IntDense.from_float(k_in[:, d:], b_in[d:], s_in, 2.0 ** -GATE_FRAC, out_bits=16,
                              name=f"{name}/pointwise_in/gates")
  w, s_w = quantize_weights(np.asarray(conv.depthwise[...]))       # [K, D], scales [D]
  acc_scale = s_a * s_w
  float_bias = np.asarray(conv.depthwise_bias[...], np.float64)
  # The largest |acc| the int8 values allow, per channel; one int16 scale for all channels.
  bound = (128 * np.abs(w.astype(np.int64)).sum(0) + np.abs(np.round(float_bias / acc_scale))
           ) * acc_scale
  s_dw = bound.max() / (2 ** 15 - 1)
  m0, n = fp.quantize_multipliers(acc_scale / s_dw)
  bias = int32_bias(float_bias, acc_scale, w.shape[0], acc_scale / s_dw, 16,
                    f"{name}/depthwise")
  s_out = scale(scales, f"{name}/pointwise_out")
  silu_table = fp.lookup_table(silu, 2.0 ** -DEPTH_FRAC, s_out, out_bits=8, in_bits=PRE_BITS)
  out = IntDense.from_float(*kernel(conv.pointwise_out, f"{name}/pointwise_out"), s_out, into,
                            RESIDUAL_BITS, name=f"{name}/pointwise_out")
  return IntConvModule(_norm(conv.norm, s_in), values, gates, w, bias, m0, n,
                       _norm(conv.depth_norm, 2.0 ** -DEPTH_FRAC, PRE_BITS), silu_table, out)


def convert_encoder(enc, scales: dict[str, float]
                    ) -> tuple[IntTransformerEncoder, float, float]:
  """A float `TransformerEncoder` or `ConformerEncoder` in integers, with calibrated `scales`
  (`hardware.int8_transducer.calibrate`) -> (the integer encoder, its input's int8 scale, its
  output frames' int8 scale: the joint's encoder projection input). Each block's units are
  converted by `UNIT_CONVERTERS`; a unit of a class with none is refused by name."""
  scale = calibrated_scale
  in_scale, out_scale = scale(scales, "encoder/subsampling/0/proj"), scale(scales, "joint/enc_proj")
  if "encoder/residual" not in scales:
    scale(scales, "encoder/residual")          # the calibration error, with its advice
  s_r = 2 * scales["encoder/residual"] / (2 ** (RESIDUAL_BITS - 1) - 1)

  sub = []
  for i, layer in enumerate(enc.subsampling):
    name = f"encoder/subsampling/{i}/proj"
    last = i + 1 == len(enc.subsampling)
    s_out = s_r if last else scale(scales, f"encoder/subsampling/{i + 1}/proj")
    proj = IntActDense.from_float(*dense_arrays(layer.proj, name), scale(scales, name),
                                  scales[f"{name}/output"], s_out,
                                  out_bits=RESIDUAL_BITS if last else 8, name=name)
    sub.append(IntSubsampling(proj, layer.stride, layer.kernel))

  blocks = []
  for i, block in enumerate(enc.blocks):
    units = {}
    for unit_name, unit_scale, unit in block.units():
      name = f"{block.where}/{unit_name}"
      if type(unit) not in UNIT_CONVERTERS:
        raise ValueError(f"the int8 executor cannot run unit {name!r} ({type(unit).__name__}): "
                         "no converter is registered for it (register_int_unit)")
      units[unit_name] = UNIT_CONVERTERS[type(unit)](unit, name, scales, s_r / unit_scale)
    norm = None
    if block.norm is not None:   # into the residual; the last block's into the int8 frames
      last = i + 1 == len(enc.blocks)
      norm = _norm(block.norm, out_scale if last else s_r, 8 if last else RESIDUAL_BITS)
    head = None if block.arbitrator is None else _gate_head(block.arbitrator,
                                                            f"{block.where}/arbitrator", scales)
    blocks.append(IntBlock(units, norm, tuple(n for n, _ in block.layout), block.where, head))
  final = None if enc.final_norm is None else _norm(enc.final_norm, out_scale)
  trunk = None
  if enc.arbitrator is not None:   # the stacked features are the input's values, at its scale
    name = "encoder/arbitrator/hidden"
    trunk = IntDense.from_float(*dense_arrays(enc.arbitrator.hidden, name), in_scale,
                                2.0 ** -GATE_FRAC, 16, name=name)
  return (IntTransformerEncoder(sub, blocks, final, enc.stream_multiple, s_r, trunk), in_scale,
          out_scale)


def _gate_head(head, at: str, scales) -> IntGateHead:
  """A float `GateHead` in integers: logits in Q7.8 from the trunk's Q0.7 and, with the block's
  input, from its parameter-free LayerNorm at the calibrated scale."""
  out = IntDense.from_float(*dense_arrays(head.out, f"{at}/out"), 2.0 ** -H_FRAC,
                            2.0 ** -GATE_LOGIT_FRAC, 16, name=f"{at}/out")
  if head.from_input is None:
    return IntGateHead(out)
  name = f"{at}/from_input"
  s_in = calibrated_scale(scales, name)
  dim = head.from_input.in_dim
  norm = IntLayerNorm.from_float(np.ones(dim), np.zeros(dim), s_in)
  return IntGateHead(out, norm, IntDense.from_float(*dense_arrays(head.from_input, name), s_in,
                                                    2.0 ** -GATE_LOGIT_FRAC, 16, name=name))


register_int8_family("transformer", "conformer", stage_lengths=stage_lengths,
                     note_output=note_output, convert_encoder=convert_encoder)
