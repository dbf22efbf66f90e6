"""Prediction networks: the transducer's label-history model.

`__call__(labels [B, U]) -> [B, U+1, H]`: output u conditions on the blank/start token 0
followed by labels[:u]. `step(state, tokens [B]) -> (out [B, H], state)` advances one token for
decoding; `init_state(batch)` is the state before any label, whose first step takes token 0.
`__call__` equals the outputs of `step` token by token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.models.dense import Dense
from asr.models.lstm import LSTM, LSTMState


def _shift_right(labels: jax.Array) -> jax.Array:
  """`[B, U]` -> `[B, U+1]` with the start token 0 first."""
  return jnp.pad(labels, ((0, 0), (1, 0)))


class LSTMPredictor(nnx.Module):
  """Embedding + one LSTM layer (the classic RNN-T prediction network)."""

  def __init__(self, vocab: int, embed: int, hidden: int, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab, embed, rngs=rngs)
    self.lstm = LSTM(embed, hidden, rngs=rngs)
    self.out_dim = hidden

  def init_state(self, batch: int) -> LSTMState:
    return self.lstm.init_state(batch)

  def flops_per_step(self) -> int:
    return 2 * self.lstm.macs_per_frame()  # the embedding is a lookup

  def step(self, state: LSTMState, tokens: jax.Array) -> tuple[jax.Array, LSTMState]:
    x = self.embed(tokens)[:, None, :]
    y, state = self.lstm(x, jnp.ones(tokens.shape[0], jnp.int32), state)
    return y[:, 0], state

  def __call__(self, labels: jax.Array) -> jax.Array:
    x = self.embed(_shift_right(labels))
    y, _ = self.lstm(x, jnp.full(labels.shape[0], labels.shape[1] + 1, jnp.int32))
    return y


class StatelessPredictor(nnx.Module):
  """Embeddings of the last `context` tokens, concatenated and projected (Ghodsi et al., 2020,
  "RNN-transducer with stateless prediction network").

  It leans less on the label history than an LSTM, so it memorizes sentence templates less
  readily than an LSTM prediction network does on small corpora.
  """

  def __init__(self, vocab: int, embed: int, hidden: int, context: int = 2, *, rngs: nnx.Rngs):
    self.context = context
    self.embed = nnx.Embed(vocab, embed, rngs=rngs)
    self.proj = Dense(embed * context, hidden, rngs=rngs)
    self.out_dim = hidden

  def init_state(self, batch: int) -> jax.Array:
    return jnp.zeros((batch, self.context), jnp.int32)  # the last `context` tokens, newest last

  def flops_per_step(self) -> int:
    return 2 * self.proj.macs()

  def _out(self, history: jax.Array) -> jax.Array:
    e = self.embed(history)  # [..., context, E]
    return jnp.tanh(self.proj(e.reshape(*e.shape[:-2], -1)))

  def step(self, state: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    state = jnp.concatenate([state[:, 1:], tokens[:, None]], axis=1)
    return self._out(state), state

  def __call__(self, labels: jax.Array) -> jax.Array:
    padded = jnp.pad(labels, ((0, 0), (self.context, 0)))  # [B, context + U]
    u1 = labels.shape[1] + 1
    idx = jnp.arange(u1)[:, None] + jnp.arange(self.context)[None, :]  # [U+1, context]
    return self._out(padded[:, idx])
