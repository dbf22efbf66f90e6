"""Feature normalization inside the model, causal by default, so a streaming recognizer hears
exactly what training saw.

Modes (`model.normalization`):
- `"causal"` (default): each frame is normalized by the mean and variance of the utterance so
  far, with the training set's statistics as a prior worth `prior_frames` frames (the online
  CMVN of streaming recognizers, e.g. Kaldi's `apply-cmvn-online`). Early frames lean on the
  training statistics; later ones adapt to the speaker and channel, using only the past.
- `"global"`: the training set's mean and standard deviation only.
- `"utterance"`: each utterance by its own statistics. Needs the whole utterance, so it cannot
  stream; kept to compare against.

The training statistics (`mean`, `std`, `[F]`) are `FeatureStats` variables: estimated from the
training data when a run starts, saved in its checkpoints, never trained.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, tree_where

NORMALIZATIONS = ("causal", "global", "utterance")


class FeatureStats(nnx.Variable):
  """Statistics of the training features: part of the model's state, not a parameter."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class NormalizerState:
  """Running sums over the frames heard so far, of features standardized by the prior."""
  total: jax.Array    # [B, F]
  squares: jax.Array  # [B, F]
  count: jax.Array    # [B]


class FeatureNormalizer(nnx.Module):
  """`features [B, T, F]`, `lengths [B]` -> normalized features, zero past each length."""

  def __init__(self, num_mels: int, mode: str = "causal", prior_frames: float = 100.0,
               eps: float = 1e-5):
    if mode not in NORMALIZATIONS:
      raise ValueError(f"model.normalization={mode!r}: one of {', '.join(NORMALIZATIONS)}")
    if mode == "causal" and prior_frames <= 0:
      raise ValueError(f"model.norm_prior_frames={prior_frames} must be positive")
    self.mode, self.prior_frames, self.eps = mode, float(prior_frames), eps
    self.mean = FeatureStats(jnp.zeros(num_mels))
    self.std = FeatureStats(jnp.ones(num_mels))

  def set_statistics(self, mean, std) -> None:
    self.mean[...] = jnp.asarray(mean, jnp.float32)
    self.std[...] = jnp.asarray(std, jnp.float32)

  def init_state(self, batch: int) -> NormalizerState:
    f = self.mean.shape[0]
    return NormalizerState(jnp.zeros((batch, f)), jnp.zeros((batch, f)), jnp.zeros(batch))

  def _standardize(self, features, valid):
    x = (features - self.mean[...]) / (self.std[...] + self.eps)
    return jnp.where(valid[..., None], x, 0.0)

  def step(self, state: NormalizerState, features: jax.Array,
           lengths: jax.Array) -> tuple[jax.Array, NormalizerState]:
    """One chunk `[B, C, F]` of a stream; equals `__call__` on the whole utterance."""
    if self.mode == "utterance":
      raise ValueError("model.normalization='utterance' needs the whole utterance and cannot "
                       "stream; train with 'causal' or 'global'")
    valid = length_mask(lengths, features.shape[1])
    x = self._standardize(features, valid)
    if self.mode == "global":
      return x, state
    total = state.total[:, None] + jnp.cumsum(x, axis=1)           # [B, C, F]
    squares = state.squares[:, None] + jnp.cumsum(x * x, axis=1)
    count = state.count[:, None] + jnp.cumsum(valid, axis=1)        # [B, C]
    n = (count + self.prior_frames)[..., None]
    mean = total / n
    var = (squares + self.prior_frames) / n - mean * mean  # the prior: mean 0, variance 1
    out = jnp.where(valid[..., None], (x - mean) / jnp.sqrt(jnp.maximum(var, 0.0) + self.eps), 0.0)
    # The sums after each utterance's last frame of the chunk (unchanged for a finished one).
    last = jnp.maximum(lengths - 1, 0)[:, None, None]
    take = lambda a: jnp.take_along_axis(a, last, axis=1)[:, 0]
    new = NormalizerState(take(total), take(squares), take(count[..., None])[:, 0])
    return out, tree_where(lengths > 0, new, state)

  def __call__(self, features: jax.Array, lengths: jax.Array) -> jax.Array:
    if self.mode != "utterance":
      return self.step(self.init_state(features.shape[0]), features, lengths)[0]
    valid = length_mask(lengths, features.shape[1])[..., None]
    count = jnp.maximum(lengths, 1)[:, None, None].astype(features.dtype)
    mean = jnp.sum(jnp.where(valid, features, 0.0), axis=1, keepdims=True) / count
    var = jnp.sum(jnp.where(valid, (features - mean) ** 2, 0.0), axis=1, keepdims=True) / count
    return jnp.where(valid, (features - mean) / (jnp.sqrt(var) + self.eps), 0.0)
