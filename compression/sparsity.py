"""Gradual magnitude pruning during training (Zhu and Gupta, 2017, "To prune, or not to prune:
exploring the efficacy of pruning for model compression").

The share of zeros follows a polynomial ramp from `initial` at `begin_step` to `target` at
`end_step` (power 3: fast at first, while the network can still recover, then slowly). Every
`every` steps inside the ramp, and at its end, the mask is recomputed: the smallest-magnitude
weights (or blocks of weights) are cut until the ramp's share is reached, either over all the
selected matrices at once (`scope="global"`: layers with more redundancy give more), in each
matrix (`scope="layer"`), or over all of them by layer-adaptive scores (`scope="lamp"`, Lee et
al., ICLR 2021, "Layer-adaptive sparsity for the magnitude-based pruning"): a weight's score is
its squared magnitude over the sum of the squares of the weights of its matrix at least as
large, so scores are comparable across matrices whose scales differ (a global ranking of raw
magnitudes strips the matrices with the smallest weights first: the transducer's input layer,
93% zeros when 80% of all weights go) and every matrix keeps its largest weight (score 1).
Weights once cut stay cut: they are zero, so they rank first again.

As a parameter transform (`asr.training.transforms`), the mask multiplies the weights the
model sees, so pruned weights get no gradient; after each optimizer update it is applied again,
so they stay exactly zero although Adam's moments would move them. Masks live in the train
state (bool, shaped like their matrix) and are checkpointed with it.

Blocks: `block=(1, 4)` cuts groups of 4 adjacent output units of one input row together,
which is what zero-skipping hardware can exploit (a whole block of MACs skipped at once); a
block's score is the mean magnitude of its weights, and a matrix whose sides are not multiples
of the block is scored with partial blocks at its edges.

  c.transforms.prune = ml_collections.ConfigDict(dict(
      factory="compression.sparsity:gradual_magnitude_pruning", target=0.5, begin_step=200,
      end_step=1000, every=100))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from asr.training import schedules as S
from compression.weights import EXCLUDE, INCLUDE, Selection, leaf_name


SCOPES = ("global", "layer", "lamp")


def _block_scores(w: jax.Array, block: tuple[int, int]) -> jax.Array:
  """`w [m, n]` -> mean |w| of each block, `[ceil(m / bm), ceil(n / bn)]`."""
  bm, bn = block
  m, n = w.shape
  pm, pn = -m % bm, -n % bn
  a = jnp.pad(jnp.abs(w), ((0, pm), (0, pn)))
  ones = jnp.pad(jnp.ones_like(w), ((0, pm), (0, pn)))
  shape = ((m + pm) // bm, bm, (n + pn) // bn, bn)
  return a.reshape(shape).sum((1, 3)) / ones.reshape(shape).sum((1, 3))


def _expand(block_mask: jax.Array, block: tuple[int, int], shape) -> jax.Array:
  """`[ceil(m / bm), ceil(n / bn)]` block mask -> `[m, n]` weight mask."""
  full = jnp.repeat(jnp.repeat(block_mask, block[0], 0), block[1], 1)
  return full[: shape[0], : shape[1]]


def lamp_scores(scores: jax.Array) -> jax.Array:
  """Flat magnitudes `[N]` of one matrix -> LAMP scores `[N]`: `s[u]^2 / sum(s[v]^2 for v at or
  after u in ascending order)` (ties ordered by position); 0 where that sum is 0 (all cut)."""
  order = jnp.argsort(scores, stable=True)
  sq = jnp.square(scores[order].astype(jnp.float32))
  tail = jnp.cumsum(sq[::-1])[::-1]                       # sum of squares from u to the end
  ranked = jnp.where(tail > 0, sq / jnp.where(tail > 0, tail, 1.0), 0.0)
  return jnp.zeros_like(ranked).at[order].set(ranked)


def _keep_largest(scores: jax.Array, share_cut: jax.Array) -> jax.Array:
  """Flat `scores [N]` -> bool `[N]`, False on the `floor(share_cut * N)` smallest (ties broken
  by position, so the count is exact whatever the values)."""
  n = scores.shape[0]
  cut = jnp.floor(share_cut * n).astype(jnp.int32)
  rank = jnp.zeros(n, jnp.int32).at[jnp.argsort(scores, stable=True)].set(
      jnp.arange(n, dtype=jnp.int32))
  return rank >= cut


class GradualMagnitudePruning:
  def __init__(self, target: float, begin_step: int, end_step: int, every: int = 100,
               initial: float = 0.0, power: float = 3.0, scope: str = "global",
               block=(1, 1), include: str = INCLUDE, exclude: str = EXCLUDE):
    if not 0.0 <= initial <= target < 1.0:
      raise ValueError(f"sparsity: need 0 <= initial ({initial}) <= target ({target}) < 1")
    if not 0 <= begin_step <= end_step:
      raise ValueError(f"sparsity: need 0 <= begin_step ({begin_step}) <= end_step ({end_step})")
    if every < 1:
      raise ValueError(f"sparsity: every={every} must be at least 1")
    if scope not in SCOPES:
      raise ValueError(f"sparsity: scope={scope!r} is not one of {', '.join(SCOPES)}")
    block = tuple(int(b) for b in block)
    if len(block) != 2 or min(block) < 1:
      raise ValueError(f"sparsity: block={block} must be two positive sizes (rows, columns)")
    self.begin, self.end, self.every, self.scope, self.block = (
        int(begin_step), int(end_step), int(every), scope, block)
    self.target = float(target)
    self.ramp = S.make_schedule("sparsity", dict(kind="polynomial", start=initial, end=target,
                                                 begin_step=begin_step, end_step=end_step,
                                                 power=power))
    self.select = Selection(include, exclude)

  def sparsity(self, step) -> jax.Array:
    """The ramp's share of zeros at `step` (float32 scalar; `target` from `end_step` on, even
    when the ramp is a single step)."""
    return jnp.where(jnp.asarray(step) >= self.end, jnp.float32(self.target), self.ramp(step))

  def due(self, step) -> jax.Array:
    """True on the steps whose update recomputes the mask: every `every` steps from
    `begin_step` inside the ramp, and `end_step` itself."""
    step = jnp.asarray(step)
    inside = (step >= self.begin) & (step <= self.end)
    return inside & (((step - self.begin) % self.every == 0) | (step == self.end))

  def init(self, params):
    self.select.check(params, "compression.sparsity")
    return self.select.map(lambda w: jnp.ones(w.shape, bool), params, other=lambda x: None)

  def masks_for(self, params, share) -> object:
    """Masks (a tree with None on the leaves not pruned) that cut `share` of the selected
    weights (or blocks) by magnitude, over all of them, per matrix, or over all of them by
    LAMP scores."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    chosen = [i for i, (p, x) in enumerate(flat) if self.select(leaf_name(p), x)]
    scores = [_block_scores(flat[i][1], self.block) for i in chosen]
    if self.scope == "lamp":
      scores = [lamp_scores(s.reshape(-1)).reshape(s.shape) for s in scores]
    if self.scope in ("global", "lamp"):
      keep = _keep_largest(jnp.concatenate([s.reshape(-1) for s in scores]), share)
      sizes = np.cumsum([s.size for s in scores])[:-1]
      keeps = [k.reshape(s.shape) for k, s in zip(jnp.split(keep, sizes), scores)]
    else:
      keeps = [_keep_largest(s.reshape(-1), share).reshape(s.shape) for s in scores]
    out = [None] * len(flat)
    for i, k in zip(chosen, keeps):
      out[i] = _expand(k, self.block, flat[i][1].shape)
    return jax.tree.unflatten(treedef, out)

  def apply(self, params, masks, step, schedules):
    return self.select.map(lambda w, m: jnp.where(m, w, 0.0).astype(w.dtype), params, masks)

  def update(self, params, masks, step, schedules):
    params = self.apply(params, masks, step, schedules)
    masks = jax.lax.cond(self.due(step), lambda: self.masks_for(params, self.sparsity(step)),
                         lambda: masks)
    return self.apply(params, masks, step, schedules), masks


def gradual_magnitude_pruning(**options) -> GradualMagnitudePruning:
  """The factory `config.transforms.<name>.factory` names (options as in the class)."""
  return GradualMagnitudePruning(**options)

