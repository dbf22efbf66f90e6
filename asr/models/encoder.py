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
  """Frame stacking (e.g. three 10 ms frames -> one 30 ms frame) then a stack of LSTMs.

  Streaming: `step` takes chunks whose length is a multiple of `stack` (the last chunk of an
  utterance may be shorter); the output equals the full-utterance output.
  """

  def __init__(self, num_mels: int, hidden: int, layers: int, stack: int = 3,
               layer_norm: bool = False, *, rngs: nnx.Rngs):
    self.stack = stack
    self.hidden = hidden
    dims = [num_mels * stack] + [hidden] * layers
    self.layers = nnx.List([LSTM(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    # LayerNorm after each LSTM (per frame, so still causal) speeds early training markedly.
    self.norms = nnx.List([nnx.LayerNorm(hidden, rngs=rngs) for _ in range(layers)]
                          if layer_norm else [])

  @property
  def out_dim(self) -> int:
    return self.hidden

  def flops_per_frame(self) -> int:
    """Two matmuls per LSTM layer (gates and LayerNorm are O(hidden) and left out)."""
    return 2 * sum(layer.macs_per_frame() for layer in self.layers)

  def init_state(self, batch: int) -> list[LSTMState]:
    return [layer.init_state(batch) for layer in self.layers]

  def step(self, state: list[LSTMState], features: jax.Array,
           lengths: jax.Array) -> tuple[EncoderOutput, list[LSTMState]]:
    x, lengths = stack_frames(features, lengths, self.stack)
    new_state = []
    for i, (layer, s) in enumerate(zip(self.layers, state)):
      x, s = layer(x, lengths, s)
      if self.norms:
        x = self.norms[i](x)
      new_state.append(s)
    valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    flops = jnp.where(valid, float(self.flops_per_frame()), 0.0)
    return EncoderOutput(x, lengths, flops), new_state

  def __call__(self, features: jax.Array, lengths: jax.Array, *, train: bool = False) -> EncoderOutput:
    del train  # no train-only behaviour: augmentation happens on the features
    out, _ = self.step(self.init_state(features.shape[0]), features, lengths)
    return out
