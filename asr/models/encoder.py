"""Encoders share one call and one output (ARCHITECTURE.md, "Encoder"):

  encoder(features [B, T, F], lengths [B], *, train) -> EncoderOutput(frames [B, T', H],
          lengths [B], flops [B, T'], aux)

`flops` is the analytic cost spent on each output frame (multiply-accumulates x 2), zero on
padding, so compute regularizers, latency simulation and dashboards treat every model alike.
Causal encoders also stream: `init_state(batch)` and `step(state, features, lengths)`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.features import stack_frames
from asr.models.lstm import LSTM, LSTMState


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EncoderOutput:
  frames: jax.Array    # [B, T', H]
  lengths: jax.Array   # [B]
  flops: jax.Array     # [B, T']
  aux: dict = dataclasses.field(default_factory=dict)


class LSTMEncoder(nnx.Module):
  """Frame stacking (e.g. three 10 ms frames -> one 30 ms frame) then a stack of LSTMs, with an
  optional time reduction inside the stack: after the first `reduce_after` layers, `reduce`
  consecutive outputs are concatenated into one frame (He et al., 2019, "Streaming end-to-end
  speech recognition for mobile devices"), so the upper layers, the joint and the loss run at a
  lower frame rate. The frames before the reduction are kept in `aux["pre_reduction"]` (with
  `aux["pre_reduction_lengths"]`): a CTC loss needs at least one frame per character, which
  30 ms frames give this corpus and 60 ms frames do not.

  Streaming: `step` takes chunks whose length is a multiple of `stack * reduce` (the last chunk
  of an utterance may be shorter); the output equals the full-utterance output.
  """

  def __init__(self, num_mels: int, hidden: int, layers: int, stack: int = 3,
               layer_norm: bool = False, reduce: int = 1, reduce_after: int = 1, *,
               rngs: nnx.Rngs):
    if reduce > 1 and not 1 <= reduce_after < layers:
      raise ValueError(f"reduce_after={reduce_after} must leave layers on both sides of the "
                       f"time reduction (1 <= reduce_after < layers={layers})")
    self.stack = stack
    self.hidden = hidden
    self.reduce, self.reduce_after = reduce, reduce_after if reduce > 1 else 0
    dims = [num_mels * stack] + [hidden] * layers
    in_dims = [d * (reduce if i == self.reduce_after and i > 0 else 1)
               for i, d in enumerate(dims[:-1])]
    self.layers = nnx.List([LSTM(a, b, rngs=rngs) for a, b in zip(in_dims, dims[1:])])
    # LayerNorm after each LSTM (per frame, so still causal) speeds early training markedly.
    self.norms = nnx.List([nnx.LayerNorm(hidden, rngs=rngs) for _ in range(layers)]
                          if layer_norm else [])

  @property
  def out_dim(self) -> int:
    return self.hidden

  def flops_per_frame(self) -> int:
    """Per output frame: two matmuls per LSTM layer, the layers below the time reduction run
    `reduce` times (gates and LayerNorm are O(hidden) and left out)."""
    return 2 * sum(layer.macs_per_frame() * (self.reduce if i < self.reduce_after else 1)
                   for i, layer in enumerate(self.layers))

  def init_state(self, batch: int) -> list[LSTMState]:
    return [layer.init_state(batch) for layer in self.layers]

  def step(self, state: list[LSTMState], features: jax.Array,
           lengths: jax.Array) -> tuple[EncoderOutput, list[LSTMState]]:
    x, lengths = stack_frames(features, lengths, self.stack)
    new_state, aux = [], {}
    for i, (layer, s) in enumerate(zip(self.layers, state)):
      if i and i == self.reduce_after:
        aux = {"pre_reduction": x, "pre_reduction_lengths": lengths}
        x, lengths = stack_frames(x, lengths, self.reduce)
      x, s = layer(x, lengths, s)
      if self.norms:
        x = self.norms[i](x)
      new_state.append(s)
    valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    flops = jnp.where(valid, float(self.flops_per_frame()), 0.0)
    return EncoderOutput(x, lengths, flops, aux), new_state

  def __call__(self, features: jax.Array, lengths: jax.Array, *, train: bool = False) -> EncoderOutput:
    del train  # no train-only behaviour: augmentation happens on the features
    out, _ = self.step(self.init_state(features.shape[0]), features, lengths)
    return out
