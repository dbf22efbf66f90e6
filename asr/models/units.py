"""Residual units: the sub-blocks a Transformer or Conformer block is made of, as data.

A block is a list of `(name, scale)` (`Block.layout`) over units it holds under those names;
one loop runs them: `x = x + scale * dropout(unit(x, frames, cache, ctx).y)`. Every unit has
the same call,

  unit(x [B, T, D], frames: Frames, cache, ctx: Context) -> UnitOutput(y, macs, aux, cache)

so a mechanism that changes a unit (a per-frame gate, say) is one unit class and a config
field, on the float path and, through the same layout, the int8 path
(`hardware.int8_transformer`). `macs` is the unit's multiply-accumulates per frame (a number,
or `[B, T]` where frames differ), `aux` what it reports, `cache` its streaming state (None for
a unit that has none), `closed_macs` what a frame whose gate is closed still pays for it (work
other frames read: attention's keys and values, the GLU outputs a convolution's neighbours
read; `asr.models.gates`). A unit called with `cache=None` starts the
stream at `x` (a whole utterance: no left context, as after `init_cache`) and returns no cache;
with `closed=True` (every frame's gate closed) it computes only that work, into its cache, and
outputs zeros.
"""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Frames:
  """Where the frames of a chunk are: `lengths [B]` valid frames, `positions [B, T]` (rotary
  positions of the stream)."""
  lengths: jax.Array
  positions: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class UnitOutput:
  y: jax.Array                          # [B, T, D], added to the residual stream
  macs: object                          # per frame: a number or [B, T]
  aux: dict = dataclasses.field(default_factory=dict)
  cache: object = None                  # the unit's new streaming state
  closed_macs: object = 0               # per frame, paid with its gate closed (`asr.models.gates`)


def shift_in(cache: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`cache [B, C, D]` and `x [B, T, D]` -> their concatenation and its last C frames: a
  causal layer's input with its left context, and the context the next chunk needs."""
  joined = jax.numpy.concatenate([cache, x], axis=1)
  return joined, joined[:, joined.shape[1] - cache.shape[1]:]
