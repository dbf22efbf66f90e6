"""Streaming Transformer and Conformer encoder families (`model.encoder = "transformer"` or
`"conformer"`): causal convolutional subsampling, chunk-wise self-attention with a limited left
context and rotary positions, and (Conformer) a causal depthwise convolution module.

- Conformer blocks follow Gulati et al., 2020 ("Conformer: Convolution-augmented Transformer for
  Speech Recognition"): half-step feed-forward, self-attention, convolution module, half-step
  feed-forward, LayerNorm. Transformer blocks are pre-LayerNorm self-attention and feed-forward.
- Streaming follows the chunk-wise masking of Emformer / U2-style streaming Transformers (Shi
  et al., 2021; Zhang et al., 2020): output frames are grouped in chunks of `chunk` frames; a
  frame attends to every frame of its own chunk (a look-ahead of up to `chunk - 1` frames) and of
  the `left_chunks` chunks before it. So a chunk's output depends on nothing after the chunk, at
  every layer, and a streaming recognizer that feeds whole chunks with a key/value cache of the
  last `left_chunks * chunk` frames computes exactly what training computed.
- Positions are rotary (Su et al., 2021, "RoFormer"): a score depends only on the distance
  between query and key, so cached keys need no re-encoding.
- Subsampling: causal 1-D convolutions over time with strides `subsample` (10 ms x 2 x 2 = 40 ms
  frames by default), each output seeing `subsample_kernel` input frames, the last of which is
  the last frame of its stride group; SiLU after each.

Padding never reaches a valid frame: every step is causal or chunk-local and attention masks
keys past each length. Frames past the length are zeroed between subsampling layers (a partial
stride group must see zeros, in any bucket) and after each block (LayerNorm maps a zero frame to
its bias; the output contract wants zeros there).

FLOPs per output frame (2 x multiply-accumulates of matrix products; LayerNorm, softmax, rotary
and activations are O(dim) and left out), reported per sub-block in `aux["flops_by_block"]`:
subsampling `sum_i kernel * in_i * dim * (frames of layer i per output frame)`; feed-forward
`2 * dim * ffn_mult * dim` (the Conformer's two halves each); attention `4 * dim^2` for the
projections plus `2 * dim` per key the frame actually sees (valid keys of its window: fewer at
the start of an utterance); convolution `2 * dim^2 + dim * conv_kernel + dim^2`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import NEG_INF, length_mask, mask_padding, tree_where
from asr.features import FeatureConfig
from asr.models.context import Context
from asr.models.dense import Dense, mixed_einsum
from asr.models.encoder import EncoderOutput, register_encoder


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


@dataclasses.dataclass(frozen=True)
class ConformerConfig(TransformerConfig):
  conv_kernel: int = 15       # the causal depthwise convolution's width, in output frames


# Every sub-block's name, as `aux["flops_by_block"]` and dropout keys know it.
SUB_BLOCKS = ("ffn1", "attention", "conv", "ffn2", "ffn")


# ---- streaming state ----

@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCache:
  keys: jax.Array     # [B, W, H, D/H] rotated keys of the last W = left_chunks * chunk frames
  values: jax.Array   # [B, W, H, D/H]
  valid: jax.Array    # [B, W] bool: False before the stream's first frame
  conv: jax.Array     # [B, conv_kernel - 1, D] the depthwise convolution's last inputs ([B, 0, D]
                      # for a Transformer)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ConformerState:
  offset: jax.Array            # [B] output frames heard so far (rotary positions)
  subsample: list[jax.Array]   # per subsampling layer: its last kernel - stride inputs
  layers: list[LayerCache]


def _shift_in(cache: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`cache [B, C, D]` and `x [B, T, D]` -> their concatenation and its last C frames."""
  joined = jnp.concatenate([cache, x], axis=1)
  return joined, joined[:, joined.shape[1] - cache.shape[1]:]


# ---- building blocks ----

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
    joined, cache = _shift_in(cache, mask_padding(x, lengths))
    t = x.shape[1]
    taps = [joined[:, i:i + t:self.stride] for i in range(self.kernel)]
    lengths = (lengths + self.stride - 1) // self.stride
    return mask_padding(jax.nn.silu(self.proj(jnp.concatenate(taps, -1))), lengths), lengths, cache


class FeedForward(nnx.Module):
  """LayerNorm, `dim -> ffn_mult * dim`, SiLU, `-> dim`."""

  def __init__(self, dim: int, mult: int, *, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.up = Dense(dim, mult * dim, rngs=rngs)
    self.down = Dense(mult * dim, dim, rngs=rngs)

  def macs_per_frame(self) -> int:
    return self.up.macs() + self.down.macs()

  def __call__(self, x):
    return self.down(jax.nn.silu(self.up(self.norm(x))))


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotary position embedding (RoFormer): `x [B, T, H, D]` (D even), `positions [B, T]`.
  Pairs `(x[i], x[i + D/2])` rotate by `position * 10000^(-2i/D)`."""
  half = x.shape[-1] // 2
  freqs = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions[..., None, None].astype(jnp.float32) * freqs      # [B, T, 1, D/2]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  a, b = x[..., :half], x[..., half:]
  return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def chunk_visibility(queries: int, keys: int, chunk: int, left_chunks: int) -> jax.Array:
  """`[queries, keys]` bool: may query `i` see key `j`, where the keys are the `keys - queries`
  cached frames followed by the queries' own frames (chunk boundaries at multiples of `chunk`
  from the first key; `keys - queries` is a multiple of `chunk`)."""
  cached = keys - queries
  q_chunk = (jnp.arange(queries) + cached) // chunk
  k_chunk = jnp.arange(keys) // chunk
  return (k_chunk[None] <= q_chunk[:, None]) & (k_chunk[None] >= q_chunk[:, None] - left_chunks)


class ChunkedSelfAttention(nnx.Module):
  """Multi-head self-attention where the frames of chunk `n` attend to chunks `n - left .. n`.

  Works on whole chunks: `x [B, T, D]` with `T` a multiple of `chunk`, after a cache holding the
  rotated keys and values of the `left * chunk` frames before it. The scores are one masked
  `[T, left * chunk + T]` product per head: on this project's 2-core CPU that ran faster than
  gathering each chunk's `(left + 1) * chunk` keys into many small products (531 against 614 ms
  for a `small` Conformer's forward and backward over 32 x 3 s), although it computes scores a
  streaming device never would. FLOPs count only the keys a frame sees.
  """

  matmul_dtype = "float32"  # of the score and value products (`asr.models.dense`)

  def __init__(self, dim: int, heads: int, chunk: int, left_chunks: int, *, rngs: nnx.Rngs):
    if dim % heads or (dim // heads) % 2:
      raise ValueError(f"dim={dim} must split into {heads} heads of an even size (rotary)")
    self.dim, self.heads, self.chunk, self.left = dim, heads, chunk, left_chunks
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.qkv = Dense(dim, 3 * dim, rngs=rngs)
    self.out = Dense(dim, dim, rngs=rngs)

  def macs_per_frame(self, keys):
    """Projections plus scores and weighted values over `keys` visible keys."""
    return self.qkv.macs() + self.out.macs() + 2 * self.dim * keys

  def init_cache(self, batch: int):
    shape = (batch, self.left * self.chunk, self.heads, self.dim // self.heads)
    return jnp.zeros(shape), jnp.zeros(shape), jnp.zeros(shape[:2], bool)

  def __call__(self, x, lengths, positions, cache):
    """-> output `[B, T, D]`, keys each frame sees `[B, T]`, new cache (keys, values, valid)."""
    b, t, d = x.shape
    h = self.heads
    q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, t, 3 * h, d // h), 3, axis=2)
    q, k = rotary(q, positions), rotary(k, positions)
    keys, cached_keys = _shift_in(cache[0], k)
    values, cached_values = _shift_in(cache[1], v)
    valid, cached_valid = _shift_in(cache[2][..., None], length_mask(lengths, t)[..., None])
    seen = (chunk_visibility(t, keys.shape[1], self.chunk, self.left)[None]
            & valid[:, None, :, 0])                                          # [B, T, W + T]
    scores = mixed_einsum("bqhd,bkhd->bhqk", q, keys, self.matmul_dtype) / math.sqrt(d // h)
    probs = jax.nn.softmax(jnp.where(seen[:, None], scores, NEG_INF), axis=-1)
    y = mixed_einsum("bhqk,bkhd->bqhd", probs, values, self.matmul_dtype).reshape(b, t, d)
    return self.out(y), seen.sum(-1), (cached_keys, cached_values, cached_valid[..., 0])


class ConvModule(nnx.Module):
  """Conformer convolution module, causal: LayerNorm, pointwise `dim -> 2 dim`, GLU, depthwise
  convolution over the last `kernel` frames, LayerNorm (per frame, unlike the paper's
  BatchNorm, so padding and batch composition never change a frame), SiLU, pointwise."""

  def __init__(self, dim: int, kernel: int, *, rngs: nnx.Rngs):
    self.kernel = kernel
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.pointwise_in = Dense(dim, 2 * dim, rngs=rngs)
    self.depthwise = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (kernel, dim)))
    self.depthwise_bias = nnx.Param(jnp.zeros(dim))
    self.depth_norm = nnx.LayerNorm(dim, rngs=rngs)
    self.pointwise_out = Dense(dim, dim, rngs=rngs)

  def macs_per_frame(self) -> int:
    return self.pointwise_in.macs() + self.kernel * self.pointwise_out.in_dim + \
        self.pointwise_out.macs()

  def __call__(self, x, cache):
    t = x.shape[1]
    a, gate = jnp.split(self.pointwise_in(self.norm(x)), 2, axis=-1)
    joined, cache = _shift_in(cache, a * jax.nn.sigmoid(gate))
    w = self.depthwise[...]
    y = sum(joined[:, i:i + t] * w[i] for i in range(self.kernel)) + self.depthwise_bias[...]
    return self.pointwise_out(jax.nn.silu(self.depth_norm(y))), cache


class Block(nnx.Module):
  """One Conformer block (with a convolution module) or pre-LayerNorm Transformer block."""

  def __init__(self, cfg: TransformerConfig, conv_kernel: int, *, rngs: nnx.Rngs):
    self.conformer = conv_kernel > 0
    self.attention = ChunkedSelfAttention(cfg.dim, cfg.heads, cfg.chunk, cfg.left_chunks,
                                          rngs=rngs)
    if self.conformer:
      self.ffn1 = FeedForward(cfg.dim, cfg.ffn_mult, rngs=rngs)
      self.conv = ConvModule(cfg.dim, conv_kernel, rngs=rngs)
      self.ffn2 = FeedForward(cfg.dim, cfg.ffn_mult, rngs=rngs)
      self.norm = nnx.LayerNorm(cfg.dim, rngs=rngs)
    else:
      self.ffn = FeedForward(cfg.dim, cfg.ffn_mult, rngs=rngs)

  def __call__(self, x, lengths, positions, cache: LayerCache, drop):
    """-> output, {sub-block: MACs per frame, `[B, T]` or a number}, new cache. `drop(name, y)`
    applies dropout to a sub-block's output."""
    macs = {}
    if self.conformer:
      x = x + 0.5 * drop("ffn1", self.ffn1(x))
      macs["ffn1"] = self.ffn1.macs_per_frame()
    y, keys_seen, (k, v, valid) = self.attention(x, lengths, positions,
                                                 (cache.keys, cache.values, cache.valid))
    x = x + drop("attention", y)
    macs["attention"] = self.attention.macs_per_frame(keys_seen)
    conv = cache.conv
    if self.conformer:
      y, conv = self.conv(x, conv)
      x = x + drop("conv", y)
      macs["conv"] = self.conv.macs_per_frame()
      x = self.norm(x + 0.5 * drop("ffn2", self.ffn2(x)))
      macs["ffn2"] = self.ffn2.macs_per_frame()
    else:
      x = x + drop("ffn", self.ffn(x))
      macs["ffn"] = self.ffn.macs_per_frame()
    return mask_padding(x, lengths), macs, LayerCache(k, v, valid, conv)


# ---- the encoder ----

class TransformerEncoder(nnx.Module):
  """Streaming: `step` takes chunks of `stream_multiple` input frames (or a multiple; the last
  chunk of an utterance may hold fewer real frames), and its output equals `__call__` on the
  whole utterance."""

  family = "transformer"

  def __init__(self, num_mels: int, cfg: TransformerConfig, *,
               input_frame_seconds: float = FeatureConfig().hop_seconds, rngs: nnx.Rngs):
    conv_kernel = getattr(cfg, "conv_kernel", 0)
    name = f"model.{self.family}"
    if not cfg.subsample or any(s < 1 or s > cfg.subsample_kernel for s in cfg.subsample):
      raise ValueError(f"{name}.subsample={cfg.subsample}: strides of at least 1 and at most "
                       f"subsample_kernel={cfg.subsample_kernel}")
    if cfg.chunk < 1 or cfg.left_chunks < 0 or cfg.layers < 1:
      raise ValueError(f"{name}: chunk={cfg.chunk} must be >= 1, left_chunks={cfg.left_chunks} "
                       f">= 0 and layers={cfg.layers} >= 1")
    if isinstance(cfg, ConformerConfig) and conv_kernel < 1:
      raise ValueError(f"{name}.conv_kernel={conv_kernel} must be >= 1")
    if not 0.0 <= cfg.dropout < 1.0:
      raise ValueError(f"{name}.dropout={cfg.dropout} must be in [0, 1)")
    self.cfg = cfg
    self.subsample_factor = math.prod(cfg.subsample)
    self.input_frame_seconds = input_frame_seconds
    self.frame_seconds = input_frame_seconds * self.subsample_factor
    dims = [num_mels] + [cfg.dim] * len(cfg.subsample)
    self.subsampling = nnx.List([CausalSubsampling(a, b, s, cfg.subsample_kernel, rngs=rngs)
                                 for a, b, s in zip(dims, dims[1:], cfg.subsample)])
    self.blocks = nnx.List([Block(cfg, conv_kernel, rngs=rngs) for _ in range(cfg.layers)])
    self.conv_kernel = conv_kernel
    self.final_norm = None if conv_kernel else nnx.LayerNorm(cfg.dim, rngs=rngs)

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

  def init_state(self, batch: int) -> ConformerState:
    width = max(self.conv_kernel - 1, 0)
    caches = []
    for block in self.blocks:
      k, v, valid = block.attention.init_cache(batch)
      caches.append(LayerCache(k, v, valid, jnp.zeros((batch, width, self.cfg.dim))))
    return ConformerState(jnp.zeros(batch, jnp.int32),
                          [s.init_state(batch) for s in self.subsampling], caches)

  def step(self, state: ConformerState, features: jax.Array, lengths: jax.Array,
           ctx: Context = Context()) -> tuple[EncoderOutput, ConformerState]:
    """`features [B, C, F]` (normalized; C a multiple of `stream_multiple`), `lengths [B]` ->
    this chunk's `C / subsample_factor` output frames and the new state."""
    if features.shape[1] % self.stream_multiple:
      raise ValueError(f"a streamed chunk of {features.shape[1]} feature frames is not a "
                       f"multiple of {self.stream_multiple} (subsampling x attention chunk)")
    x, out_lengths, sub_state = features, lengths, []
    for layer, cache in zip(self.subsampling, state.subsample):
      x, out_lengths, cache = layer(cache, x, out_lengths)
      sub_state.append(cache)
    positions = state.offset[:, None] + jnp.arange(x.shape[1])
    dropping = ctx.train and self.cfg.dropout > 0 and ctx.rng is not None

    def dropper(i):
      def drop(name, y):
        if not dropping:
          return y
        key = ctx.key(i, SUB_BLOCKS.index(name))
        keep = jax.random.bernoulli(key, 1 - self.cfg.dropout, y.shape)
        return jnp.where(keep, y / (1 - self.cfg.dropout), 0.0)
      return drop

    layer_caches, per_block = [], {}
    for i, (block, cache) in enumerate(zip(self.blocks, state.layers)):
      x, macs, cache = block(x, out_lengths, positions, cache, dropper(i))
      layer_caches.append(cache)
      for name, m in macs.items():
        per_block.setdefault(name, []).append(jnp.broadcast_to(m, x.shape[:2]))
    if self.final_norm is not None:
      x = mask_padding(self.final_norm(x), out_lengths)

    valid = length_mask(out_lengths, x.shape[1])
    flops_by_block = {"subsampling": jnp.where(valid, 2.0 * self.subsampling_macs(), 0.0)}
    for name, per_layer in per_block.items():
      flops_by_block[name] = jnp.where(valid[..., None], 2.0 * jnp.stack(per_layer, -1), 0.0)
    flops = sum(f if f.ndim == 2 else f.sum(-1) for f in flops_by_block.values())
    new = ConformerState(state.offset + x.shape[1], sub_state, layer_caches)
    out = EncoderOutput(x, out_lengths, flops, self.frame_seconds,
                        {"flops_by_block": flops_by_block})
    return out, tree_where(lengths > 0, new, state)

  def __call__(self, features: jax.Array, lengths: jax.Array,
               ctx: Context = Context()) -> EncoderOutput:
    """`features [B, T, F]` -> `ceil(T / subsample_factor)` frames (`[B, T', dim]`); every
    leaf of `aux` with a frame axis is cut to the same frames."""
    t = features.shape[1]
    padded = jnp.pad(features, ((0, 0), (0, -t % self.stream_multiple), (0, 0)))
    out, _ = self.step(self.init_state(features.shape[0]), padded, lengths, ctx)
    keep, frames = -(-t // self.subsample_factor), out.frames.shape[1]
    cut = lambda v: v[:, :keep] if v.ndim >= 2 and v.shape[1] == frames else v
    return EncoderOutput(out.frames[:, :keep], out.lengths, out.flops[:, :keep],
                         out.frame_seconds, jax.tree.map(cut, out.aux))


register_encoder("transformer", TransformerConfig)(TransformerEncoder)


@register_encoder("conformer", ConformerConfig)
class ConformerEncoder(TransformerEncoder):
  family = "conformer"
