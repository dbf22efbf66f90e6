"""The layers of the streaming Transformer and Conformer encoders (`asr.models.conformer`):
causal subsampling, and the blocks, each a list of residual units (`asr.models.units`) run by
one loop.

- Conformer blocks follow Gulati et al., 2020 ("Conformer: Convolution-augmented Transformer for
  Speech Recognition"): half-step feed-forward, self-attention, convolution module, half-step
  feed-forward, LayerNorm. Transformer blocks are pre-LayerNorm self-attention and feed-forward.
  Which, and in what order, is the config's `layout` (`TransformerConfig`, `ConformerConfig`).
- Subsampling: causal 1-D convolutions over time with strides `subsample` (10 ms x 2 x 2 = 40 ms
  frames by default), each output seeing `subsample_kernel` input frames, the last of which is
  the last frame of its stride group; SiLU after each.

FLOPs per output frame (2 x multiply-accumulates of matrix products; LayerNorm, softmax, rotary
and activations are O(dim) and left out): feed-forward `2 * dim * ffn_mult * dim` (the
Conformer's two halves each); attention `4 * dim^2` for the projections plus `2 * dim` per key
the frame actually sees; convolution `2 * dim^2 + dim * conv_kernel + dim^2`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, mask_padding
from asr.models.attention import ChunkedSelfAttention
from asr.models.dense import Dense
from asr.models.gates import GateHead, gate_values
from asr.models.units import UnitOutput, shift_in

# Every unit's name, in the order that folds its key (`Block`: unit `j` runs with
# `ctx.fold(j)`); `aux["flops_by_block"]` names FLOPs alike.
SUB_BLOCKS = ("ffn1", "attention", "conv", "ffn2", "ffn")


class CausalSubsampling(nnx.Module):
  """A causal strided convolution over time: `[B, T, D_in]` (T a multiple of the stride) ->
  `[B, T / stride, D_out]`; output `j` sees inputs `(j + 1) * stride - kernel .. (j + 1) *
  stride - 1`, written as `kernel` strided slices concatenated into one matrix product."""

  def __init__(self, in_dim: int, out_dim: int, stride: int, kernel: int, *, rngs: nnx.Rngs):
    self.stride, self.kernel, self.in_dim = stride, kernel, in_dim
    self.proj = Dense(kernel * in_dim, out_dim, rngs=rngs)

  def init_state(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.kernel - self.stride, self.in_dim))

  def __call__(self, cache, x, lengths):
    joined, cache = shift_in(cache, mask_padding(x, lengths))
    t = x.shape[1]
    taps = [joined[:, i:i + t:self.stride] for i in range(self.kernel)]
    lengths = (lengths + self.stride - 1) // self.stride
    return mask_padding(jax.nn.silu(self.proj(jnp.concatenate(taps, -1))), lengths), lengths, cache


class FeedForward(nnx.Module):
  """LayerNorm, `dim -> ffn_mult * dim`, SiLU, `-> dim`: a residual unit."""

  def __init__(self, dim: int, mult: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.up = Dense(dim, mult * dim, rngs=rngs)
    self.down = Dense(mult * dim, dim, rngs=rngs)

  def macs_per_frame(self) -> int:
    return self.up.macs() + self.down.macs()

  def init_cache(self, batch: int):
    return None

  def forward(self, x):
    return self.down(jax.nn.silu(self.up(self.norm(x))))

  def __call__(self, x, frames, cache, ctx, closed=False) -> UnitOutput:
    return UnitOutput(jnp.zeros_like(x) if closed else self.forward(x), self.macs_per_frame())


class ConvModule(nnx.Module):
  """Conformer convolution module, causal: LayerNorm, pointwise `dim -> 2 dim`, GLU, depthwise
  convolution over the last `kernel` frames, LayerNorm (per frame, unlike the paper's
  BatchNorm, so padding and batch composition never change a frame), SiLU, pointwise. A
  residual unit; its cache is the depthwise convolution's last `kernel - 1` inputs."""

  def __init__(self, dim: int, kernel: int, *, rngs: nnx.Rngs):
    self.kernel, self.dim = kernel, dim
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.pointwise_in = Dense(dim, 2 * dim, rngs=rngs)
    self.depthwise = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (kernel, dim)))
    self.depthwise_bias = nnx.Param(jnp.zeros(dim))
    self.depth_norm = nnx.LayerNorm(dim, rngs=rngs)
    self.pointwise_out = Dense(dim, dim, rngs=rngs)

  def macs_per_frame(self) -> int:
    return self.pointwise_in.macs() + self.kernel * self.pointwise_out.in_dim + \
        self.pointwise_out.macs()

  def init_cache(self, batch: int):
    return jnp.zeros((batch, self.kernel - 1, self.dim))

  def forward(self, x, cache, closed=False):
    """-> `[B, T, D]`, new cache; `cache=None`: the stream starts with `x`, zeros before it,
    and no new cache. `closed`: every frame's gate is closed: only the GLU the next frames read
    is computed (into the cache), and the output is zero."""
    t = x.shape[1]
    a, gate = jnp.split(self.pointwise_in(self.norm(x)), 2, axis=-1)
    start = cache is None
    joined, cache = shift_in(self.init_cache(x.shape[0]) if start else cache,
                             a * jax.nn.sigmoid(gate))
    if closed:
      return jnp.zeros_like(x), None if start else cache
    w = self.depthwise[...]
    y = sum(joined[:, i:i + t] * w[i] for i in range(self.kernel)) + self.depthwise_bias[...]
    return self.pointwise_out(jax.nn.silu(self.depth_norm(y))), None if start else cache

  def __call__(self, x, frames, cache, ctx, closed=False) -> UnitOutput:
    y, cache = self.forward(x, cache, closed)
    # A frame whose convolution is gated off still feeds the next frames' depthwise
    # convolution its GLU output.
    return UnitOutput(y, self.macs_per_frame(), {}, cache, self.pointwise_in.macs())


def _skip_closed_chunk(unit, x, frames, cache, ctx, gate) -> UnitOutput:
  """A streamed chunk's unit output with hard gates `gate [B, T]` (0 or 1): where every valid
  frame of the chunk is closed, the unit computes only what later frames read (`closed`: its
  cache) and outputs zero; otherwise all of it (the gate then zeroes the closed frames).
  Gathering the open frames instead ran slower on this project's CPU (a trained gated
  Transformer, 61% of its gates open, at 0.76x the ungated encoder's speed where this runs at
  0.95x; BENCHMARKS.md, issue 38): a chunk's few frames cost the products' per-call overhead
  more than their arithmetic."""
  any_open = jnp.any((gate > 0) & length_mask(frames.lengths, x.shape[1]))
  return jax.lax.cond(any_open, lambda x, c: unit(x, frames, c, ctx),
                      lambda x, c: unit(x, frames, c, ctx, closed=True), x, cache)


def build_unit(name: str, cfg, *, rngs: nnx.Rngs) -> nnx.Module:
  """The residual unit a layout names: `attention`, `ffn`/`ffn1`/`ffn2`, `conv`."""
  if name == "attention":
    return ChunkedSelfAttention(cfg.dim, cfg.heads, cfg.chunk, cfg.left_chunks, rngs=rngs)
  if name in ("ffn", "ffn1", "ffn2"):
    return FeedForward(cfg.dim, cfg.ffn_mult, rngs=rngs)
  if name == "conv":
    return ConvModule(cfg.dim, cfg.conv_kernel, rngs=rngs)
  raise ValueError(f"no residual unit is called {name!r}")


class Block(nnx.Module):
  """A residual block: the units of `cfg.layout` (`(name, scale)`, held under those names, so
  parameter paths read `blocks/<i>/<name>/...`) run in order, each adding `scale` times its
  output (after dropout) to the residual stream; then a LayerNorm if `cfg.block_norm`.

  With `cfg.gates` (`asr.models.gates`) an arbitrator head (`blocks/<i>/arbitrator`) gives each
  unit a gate per frame from the arbitrators' trunk and the block's input; a unit's output is
  multiplied by its gate, and a frame costs the unit's `closed_macs` plus the gate times the
  rest."""

  def __init__(self, cfg, index: int, *, rngs: nnx.Rngs):
    self.layout = tuple((name, float(scale)) for name, scale in cfg.layout)
    self.where = f"encoder/blocks/{index}"        # names the residual stream for `observe`
    self.dropout = cfg.dropout
    # Attention is built first, then the rest in order: the order the parameters were drawn in
    # before blocks had layouts, so a seed still gives the same model.
    for name, _ in sorted(self.layout, key=lambda unit: unit[0] != "attention"):
      setattr(self, name, build_unit(name, cfg, rngs=rngs))
    self.norm = nnx.LayerNorm(cfg.dim, rngs=rngs) if cfg.block_norm else None
    self.gate_estimator = cfg.gate_estimator
    self.arbitrator = GateHead(cfg.gate_hidden, cfg.dim, len(self.layout),
                               block_input=cfg.gate_block_input, bias_init=cfg.gate_bias_init,
                               rngs=rngs) if cfg.gates else None

  def units(self):
    """`(name, scale, unit)` in order."""
    return [(name, scale, getattr(self, name)) for name, scale in self.layout]

  def init_cache(self, batch: int) -> dict:
    """`{unit name: its streaming state}` for the units that keep one."""
    caches = {name: unit.init_cache(batch) for name, _, unit in self.units()}
    return {name: c for name, c in caches.items() if c is not None}

  def __call__(self, x, frames, cache: dict, ctx, gate_trunk=None):
    """-> output `[B, T, D]` (zero past each length), `{unit: MACs per frame}`, `{unit: aux}`
    (units that report one; with gates, `gate` `[B, T]` and `gate_logit` for every unit), new
    cache. A unit runs with `ctx.fold(SUB_BLOCKS.index(name))`; dropout on its output draws
    from that key itself, so a unit's own randomness folds further (`ctx.key(0)`, ...).
    `gate_trunk [B, T, H]`: the arbitrators' trunk output, given iff the block is gated."""
    macs, aux, new = {}, {}, {}
    gates = None
    if self.arbitrator is not None:
      with jax.named_scope("arbitrator"):
        logits = self.arbitrator(gate_trunk, x)
        gates = gate_values(logits, ctx, self.gate_estimator)
    for j, (name, scale, unit) in enumerate(self.units()):
      unit_ctx = ctx.fold(SUB_BLOCKS.index(name))
      with jax.named_scope(name):     # names the unit in profiles (`benchmarks.step_ops`)
        if gates is not None and not ctx.train and cache:    # streaming with hard gates
          out = _skip_closed_chunk(unit, x, frames, cache.get(name), unit_ctx, gates[..., j])
        else:
          out = unit(x, frames, cache.get(name), unit_ctx)
        y = self._dropout(out.y, unit_ctx)
      macs[name] = out.macs
      if out.aux:
        aux[name] = out.aux
      if gates is not None:
        g = gates[..., j]
        y = y * g[..., None]
        macs[name] = out.closed_macs + g * (out.macs - out.closed_macs)
        aux[name] = dict(aux.get(name, {}), gate=g, gate_logit=logits[..., j])
      x = x + (y if scale == 1.0 else scale * y)
      ctx.note(f"{self.where}/{name}", x)
      if out.cache is not None:
        new[name] = out.cache
    if self.norm is not None:
      x = self.norm(x)
    x = mask_padding(x, frames.lengths)
    ctx.note(self.where, x)
    return x, macs, aux, new

  def _dropout(self, y, ctx):
    if not (ctx.train and self.dropout > 0 and ctx.rng is not None):
      return y
    keep = jax.random.bernoulli(ctx.key(), 1 - self.dropout, y.shape)
    return jnp.where(keep, y / (1 - self.dropout), 0.0)

