"""Streaming Transformer and Conformer encoder families (`model.encoder = "transformer"` or
`"conformer"`): causal convolutional subsampling, then blocks of residual units
(`asr.models.blocks`: chunk-wise self-attention with rotary positions, `asr.models.attention`;
feed-forward; for a Conformer a causal depthwise convolution module and half-step feed-forwards),
in the order the config's `layout` gives.

Padding never reaches a valid frame: every step is causal or chunk-local and attention masks
keys past each length. Frames past the length are zeroed between subsampling layers (a partial
stride group must see zeros, in any bucket) and after each block (LayerNorm maps a zero frame to
its bias; the output contract wants zeros there).

FLOPs per output frame are reported per unit in `aux["flops_by_block"]` (`[B, T']`, or
`[B, T', layers]` for the units of the blocks), the subsampling's as
`sum_i kernel * in_i * dim * (frames of layer i per output frame)`; the units' in
`asr.models.blocks`. Attention counts the valid keys each frame sees (fewer at the start of an
utterance).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, mask_padding, tree_where
from asr.features import FeatureConfig, stack_frames
from asr.models.blocks import Block, CausalSubsampling
from asr.models.context import Context
from asr.models.encoder import EncoderOutput, register_encoder
from asr.models.gates import ESTIMATORS, GateTrunk
from asr.models.units import Frames


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  dim: int = 144
  layers: int = 6
  heads: int = 4
  ffn_mult: int = 4
  subsample: tuple = (2, 2)   # strides of the causal subsampling convolutions (10 ms -> 40 ms)
  subsample_kernel: int = 3   # input frames each subsampling output sees (>= every stride)
  chunk: int = 4              # attention chunk in output frames: look-ahead up to chunk - 1
  left_chunks: int = 8        # chunks of left context each frame attends to
  dropout: float = 0.1        # on each sub-block's output, in training
  # Per-frame gates on every residual unit (`asr.models.gates`; off: the plain encoder).
  gates: bool = False
  gate_hidden: int = 32       # the arbitrators' shared hidden layer
  gate_block_input: bool = False   # each block's arbitrator also sees the block's input
  gate_estimator: str = "gumbel"   # or "straight_through"
  gate_bias_init: float = 2.0      # each gate's starting logit (open)

  @property
  def layout(self) -> tuple:
    """A block's residual units, `(name, scale)` in order: pre-LayerNorm Transformer."""
    return (("attention", 1.0), ("ffn", 1.0))

  @property
  def block_norm(self) -> bool:
    """A LayerNorm ends each block (else one after the last block)."""
    return False


@dataclasses.dataclass(frozen=True)
class ConformerConfig(TransformerConfig):
  conv_kernel: int = 15       # the causal depthwise convolution's width, in output frames

  @property
  def layout(self) -> tuple:
    """Gulati et al., 2020: half-step feed-forward, attention, convolution, half-step
    feed-forward (then the block's LayerNorm)."""
    return (("ffn1", 0.5), ("attention", 1.0), ("conv", 1.0), ("ffn2", 0.5))

  @property
  def block_norm(self) -> bool:
    return True


# ---- streaming state ----

@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ConformerState:
  offset: jax.Array            # [B] output frames heard so far (rotary positions)
  subsample: list[jax.Array]   # per subsampling layer: its last kernel - stride inputs
  layers: list[dict]           # per block: {unit name: its cache} (attention: rotated keys,
                               # values and their validity of the last left_chunks * chunk
                               # frames; conv: the depthwise convolution's last inputs)


# ---- the encoder ----

class TransformerEncoder(nnx.Module):
  """Streaming: `step` takes chunks of `stream_multiple` input frames (or a multiple; the last
  chunk of an utterance may hold fewer real frames), and its output equals `__call__` on the
  whole utterance."""

  family = "transformer"

  def __init__(self, num_mels: int, cfg: TransformerConfig, *,
               input_frame_seconds: float = FeatureConfig().hop_seconds, rngs: nnx.Rngs):
    name = f"model.{self.family}"
    if not cfg.subsample or any(s < 1 or s > cfg.subsample_kernel for s in cfg.subsample):
      raise ValueError(f"{name}.subsample={cfg.subsample}: strides of at least 1 and at most "
                       f"subsample_kernel={cfg.subsample_kernel}")
    if cfg.chunk < 1 or cfg.left_chunks < 0 or cfg.layers < 1:
      raise ValueError(f"{name}: chunk={cfg.chunk} must be >= 1, left_chunks={cfg.left_chunks} "
                       f">= 0 and layers={cfg.layers} >= 1")
    if isinstance(cfg, ConformerConfig) and cfg.conv_kernel < 1:
      raise ValueError(f"{name}.conv_kernel={cfg.conv_kernel} must be >= 1")
    if not 0.0 <= cfg.dropout < 1.0:
      raise ValueError(f"{name}.dropout={cfg.dropout} must be in [0, 1)")
    if cfg.gates and (cfg.gate_hidden < 1 or cfg.gate_estimator not in ESTIMATORS):
      raise ValueError(f"{name}: gate_hidden={cfg.gate_hidden} must be >= 1 and "
                       f"gate_estimator={cfg.gate_estimator!r} one of {', '.join(ESTIMATORS)}")
    self.cfg = cfg
    self.subsample_factor = math.prod(cfg.subsample)
    self.input_frame_seconds = input_frame_seconds
    self.frame_seconds = input_frame_seconds * self.subsample_factor
    dims = [num_mels] + [cfg.dim] * len(cfg.subsample)
    self.subsampling = nnx.List([CausalSubsampling(a, b, s, cfg.subsample_kernel, rngs=rngs)
                                 for a, b, s in zip(dims, dims[1:], cfg.subsample)])
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.layers)])
    self.final_norm = None if cfg.block_norm else nnx.LayerNorm(cfg.dim, rngs=rngs)
    self.arbitrator = (GateTrunk(num_mels * self.subsample_factor, cfg.gate_hidden, rngs=rngs)
                       if cfg.gates else None)

  @property
  def out_dim(self) -> int:
    return self.cfg.dim

  @property
  def stream_multiple(self) -> int:
    """Input frames a streamed chunk is a multiple of: one attention chunk."""
    return self.subsample_factor * self.cfg.chunk

  def subsampling_macs(self) -> int:
    """Per output frame: each subsampling layer's product, times its outputs per output frame."""
    total, per_output = 0, 1
    for layer in reversed(self.subsampling):
      total += layer.proj.macs() * per_output
      per_output *= layer.stride
    return total

  def arbitrator_macs(self) -> int:
    """Per output frame: the arbitrators' trunk and every block's head (0 without gates)."""
    if self.arbitrator is None:
      return 0
    return self.arbitrator.macs() + sum(block.arbitrator.macs() for block in self.blocks)

  def init_state(self, batch: int) -> ConformerState:
    return ConformerState(jnp.zeros(batch, jnp.int32),
                          [s.init_state(batch) for s in self.subsampling],
                          [block.init_cache(batch) for block in self.blocks])

  def step(self, state: ConformerState, features: jax.Array, lengths: jax.Array,
           ctx: Context = Context()) -> tuple[EncoderOutput, ConformerState]:
    """`features [B, C, F]` (normalized; C a multiple of `stream_multiple`), `lengths [B]` ->
    this chunk's `C / subsample_factor` output frames and the new state. Block `i` runs with
    `ctx.fold(i)`; `aux["units"]` holds, per block, what its units report (when any does)."""
    if features.shape[1] % self.stream_multiple:
      raise ValueError(f"a streamed chunk of {features.shape[1]} feature frames is not a "
                       f"multiple of {self.stream_multiple} (subsampling x attention chunk)")
    trunk = None
    if self.arbitrator is not None:   # the arbitrators see the audio each output frame covers
      with jax.named_scope("arbitrator"):
        trunk = self.arbitrator(stack_frames(features, lengths, self.subsample_factor)[0])
    x, out_lengths, sub_state = features, lengths, []
    for layer, cache in zip(self.subsampling, state.subsample):
      with jax.named_scope("subsampling"):
        x, out_lengths, cache = layer(cache, x, out_lengths)
      sub_state.append(cache)
    ctx.note("encoder/subsampling", x)
    frames = Frames(out_lengths, state.offset[:, None] + jnp.arange(x.shape[1]))

    layer_caches, per_block, unit_aux = [], {}, []
    for i, (block, cache) in enumerate(zip(self.blocks, state.layers)):
      x, macs, aux, cache = block(x, frames, cache, ctx.fold(i), trunk)
      layer_caches.append(cache)
      unit_aux.append(aux)
      for name, m in macs.items():
        per_block.setdefault(name, []).append(jnp.broadcast_to(m, x.shape[:2]))
    if self.final_norm is not None:
      x = mask_padding(self.final_norm(x), out_lengths)

    valid = length_mask(out_lengths, x.shape[1])
    flops_by_block = {"subsampling": jnp.where(valid, 2.0 * self.subsampling_macs(), 0.0)}
    if self.arbitrator is not None:
      flops_by_block["arbitrator"] = jnp.where(valid, 2.0 * self.arbitrator_macs(), 0.0)
    for name, per_layer in per_block.items():
      flops_by_block[name] = jnp.where(valid[..., None], 2.0 * jnp.stack(per_layer, -1), 0.0)
    flops = sum(f if f.ndim == 2 else f.sum(-1) for f in flops_by_block.values())
    new = ConformerState(state.offset + x.shape[1], sub_state, layer_caches)
    aux = {"flops_by_block": flops_by_block}
    if any(unit_aux):
      aux["units"] = unit_aux
    if self.arbitrator is not None:
      aux["gates"] = {name: jnp.stack([a[name]["gate"] for a in unit_aux], -1)
                      for name, _ in self.cfg.layout}                       # [B, T', layers]
      aux["open"] = jnp.where(valid, jnp.mean(jnp.concatenate(
          list(aux["gates"].values()), -1), -1), 0.0)
    out = EncoderOutput(x, out_lengths, flops, self.frame_seconds, aux)
    return out, tree_where(lengths > 0, new, state)

  def __call__(self, features: jax.Array, lengths: jax.Array,
               ctx: Context = Context()) -> EncoderOutput:
    """`features [B, T, F]` -> `ceil(T / subsample_factor)` frames (`[B, T', dim]`); every
    leaf of `aux` with a frame axis is cut to the same frames."""
    t = features.shape[1]
    padded = jnp.pad(features, ((0, 0), (0, -t % self.stream_multiple), (0, 0)))
    # No unit caches: each unit starts the stream here (`asr.models.units`), so attention
    # leaves out the empty cache's keys; the final state is not kept.
    start = dataclasses.replace(self.init_state(features.shape[0]),
                                layers=[{} for _ in self.blocks])
    out, _ = self.step(start, padded, lengths, ctx)
    keep, frames = -(-t // self.subsample_factor), out.frames.shape[1]
    cut = lambda v: v[:, :keep] if v.ndim >= 2 and v.shape[1] == frames else v
    return EncoderOutput(out.frames[:, :keep], out.lengths, out.flops[:, :keep],
                         out.frame_seconds, jax.tree.map(cut, out.aux))


register_encoder("transformer", TransformerConfig)(TransformerEncoder)


@register_encoder("conformer", ConformerConfig)
class ConformerEncoder(TransformerEncoder):
  family = "conformer"
