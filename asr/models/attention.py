"""Chunk-wise causal self-attention with rotary positions: the attention unit of the streaming
Transformer and Conformer blocks (`asr.models.blocks`).

Streaming follows the chunk-wise masking of Emformer / U2-style streaming Transformers (Shi et
al., 2021; Zhang et al., 2020): output frames are grouped in chunks of `chunk` frames; a frame
attends to every frame of its own chunk (a look-ahead of up to `chunk - 1` frames) and of the
`left_chunks` chunks before it. So a chunk's output depends on nothing after the chunk, and a
streaming recognizer that feeds whole chunks with a key/value cache of the last
`left_chunks * chunk` frames computes exactly what training computed. Positions are rotary
(Su et al., 2021, "RoFormer"): a score depends only on the distance between query and key, so
cached keys need no re-encoding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import NEG_INF, length_mask
from asr.models.dense import Dense, columns, mixed_einsum
from asr.models.units import UnitOutput, shift_in


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
  rotated keys and values of the `left * chunk` frames before it, or none where the stream
  starts with `x`. The scores are one masked `[T, left * chunk + T]` (without a cache
  `[T, T]`) product per head: on this project's 2-core CPU that ran faster than gathering each
  chunk's `(left + 1) * chunk` keys into many small products (531 against 614 ms for a `small`
  Conformer's forward and backward over 32 x 3 s), although it computes scores a
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

  def macs_by_part(self, keys) -> dict:
    """Per frame: the query's projection, the key's and value's (`qkv`'s MACs split by its
    output columns), the scores and weighted values over `keys` visible keys, the output
    projection."""
    key_value = self.qkv.macs() * 2 // 3
    return {"query": self.qkv.macs() - key_value, "key_value": key_value,
            "scores": 2 * self.dim * keys, "output": self.out.macs()}

  def macs_per_frame(self, keys):
    """Projections plus scores and weighted values over `keys` visible keys."""
    return sum(self.macs_by_part(keys).values())

  def init_cache(self, batch: int):
    shape = (batch, self.left * self.chunk, self.heads, self.dim // self.heads)
    return jnp.zeros(shape), jnp.zeros(shape), jnp.zeros(shape[:2], bool)

  def forward(self, x, lengths, positions, cache, closed=False):
    """-> output `[B, T, D]`, keys each frame sees `[B, T]`, new cache (keys, values, valid).
    `cache=None`: the stream starts with `x` (a whole utterance); there is no left context to
    attend to and no new cache (None). `closed`: every frame's gate is closed (gated
    streaming, `asr.models.blocks`): only the keys and values later frames read are computed,
    and the output is zero."""
    b, t, d = x.shape
    h = self.heads
    split = lambda y, parts: y.reshape(b, t, parts * h, d // h)
    normed = self.norm(x)
    if closed:
      k, v = jnp.split(split(columns(self.qkv, normed, d, 3 * d), 2), 2, axis=2)
      q = None
    else:
      q, k, v = jnp.split(split(self.qkv(normed), 3), 3, axis=2)
      q = rotary(q, positions)
    k = rotary(k, positions)
    valid = length_mask(lengths, t)
    if cache is None:
      # Training's whole utterances: an empty cache's keys are all masked, so leaving them out
      # computes the same softmax over `T` keys instead of `left * chunk + T` (the
      # `transformer.py:small` step about 4% faster, BENCHMARKS.md).
      keys, values, new_cache = k, v, None
    else:
      keys, cached_keys = shift_in(cache[0], k)
      values, cached_values = shift_in(cache[1], v)
      valid, cached_valid = shift_in(cache[2][..., None], valid[..., None])
      valid, new_cache = valid[..., 0], (cached_keys, cached_values, cached_valid[..., 0])
    seen = (chunk_visibility(t, keys.shape[1], self.chunk, self.left)[None]
            & valid[:, None, :])                                             # [B, T, keys]
    if closed:
      return jnp.zeros_like(x), seen.sum(-1), new_cache
    # The query scaled before the product: `[B, T, H, D/H]` multiplies instead of the scores.
    scores = mixed_einsum("bqhd,bkhd->bhqk", q / math.sqrt(d // h), keys, self.matmul_dtype)
    probs = jax.nn.softmax(jnp.where(seen[:, None], scores, NEG_INF), axis=-1)
    y = mixed_einsum("bhqk,bkhd->bqhd", probs, values, self.matmul_dtype).reshape(b, t, d)
    return self.out(y), seen.sum(-1), new_cache

  def __call__(self, x, frames, cache, ctx, closed=False) -> UnitOutput:
    """The residual unit (`asr.models.units`): MACs per frame over the keys it sees."""
    y, keys, cache = self.forward(x, frames.lengths, frames.positions, cache, closed)
    # A frame whose attention is gated off still gives later frames its key and value: a
    # streaming device cannot know whether the open frames of chunks still to come attend to
    # it, so it computes them for every frame.
    return UnitOutput(y, self.macs_per_frame(keys), {}, cache,
                      self.macs_by_part(keys)["key_value"])
