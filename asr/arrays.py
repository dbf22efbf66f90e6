"""What every layer of the recognizer needs from arrays, written once: length masks, a tree-wide
`where`, and the log-space sentinel.

Lengths cross module boundaries (`lengths [B]`, never boolean masks); masks are derived here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# A finite "log 0": exp() underflows to 0, and NEG_INF - NEG_INF is 0, never NaN as inf - inf is.
NEG_INF = -1e30


def is_live(log_score):
  """True where a log-space score is a real path or hypothesis, not the NEG_INF sentinel (sums of
  a few sentinels stay below NEG_INF / 2)."""
  return log_score > NEG_INF / 2


def length_mask(lengths, size: int):
  """`lengths [B]` -> `[B, size]` bool, True where index < length (NumPy in, NumPy out)."""
  xp = np if isinstance(lengths, np.ndarray) else jnp
  return xp.arange(size)[None, :] < xp.asarray(lengths)[:, None]


def mask_padding(x: jax.Array, lengths: jax.Array, value=0.0) -> jax.Array:
  """`x [B, T, ...]` with every position at or past `lengths [B]` set to `value`."""
  mask = length_mask(lengths, x.shape[1])
  return jnp.where(mask.reshape(*mask.shape, *([1] * (x.ndim - 2))), x, value)


def tree_where(cond: jax.Array, new, old):
  """`where(cond, new, old)` on every leaf of two same-shaped trees. `cond` is a scalar or has
  the leaves' leading dimensions (`[B]` selects per batch row whatever the leaf's rank)."""
  cond = jnp.asarray(cond)

  def pick(a, b):
    return jnp.where(cond.reshape(*cond.shape, *([1] * (a.ndim - cond.ndim))), a, b)
  return jax.tree.map(pick, new, old)
