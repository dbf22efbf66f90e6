"""A unidirectional LSTM layer for padded batches and for streaming, in Flax NNX.

The input projection of every frame is one matmul before the scan (`[B, T, D] @ [D, 4H]`);
the scan carries only the recurrent matmul `[B, H] @ [H, 4H]`. Past each length the state is held
and the output is zero, so the final state is the state after the last real frame and a chunked
(streamed) run equals the full run. Gate order in the 4H axis: input, forget, cell, output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, tree_where
from asr.models.dense import Dense


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LSTMState:
  h: jax.Array  # [B, H]
  c: jax.Array  # [B, H]


def _forget_gate_bias(key, shape, dtype=jnp.float32):
  """Forget-gate bias 1: the classic remedy for vanishing memory early in training."""
  del key
  return jnp.zeros((4, shape[0] // 4), dtype).at[1].set(1.0).reshape(shape)


class LSTM(nnx.Module):
  """`x [B, T, D]`, `lengths [B]`, state -> `y [B, T, H]`, new state."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.in_dim, self.hidden = in_dim, hidden
    self.input = Dense(in_dim, 4 * hidden, bias_init=_forget_gate_bias, rngs=rngs)
    self.recurrent = Dense(hidden, 4 * hidden, use_bias=False,
                           kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

  def init_state(self, batch: int) -> LSTMState:
    zeros = jnp.zeros((batch, self.hidden))
    return LSTMState(zeros, zeros)

  def macs_per_frame(self) -> int:
    """Multiply-accumulates per frame: the two matmuls (gate nonlinearities are O(H))."""
    return self.input.macs() + self.recurrent.macs()

  def __call__(self, x: jax.Array, lengths: jax.Array,
               state: LSTMState | None = None) -> tuple[jax.Array, LSTMState]:
    b, t, _ = x.shape
    state = state or self.init_state(b)
    gates_in = self.input(x)  # [B, T, 4H]
    valid = length_mask(lengths, t)  # [B, T]

    def step(carry, inputs):
      g_in, keep = inputs
      i, f, g, o = jnp.split(g_in + self.recurrent(carry.h), 4, axis=-1)
      c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
      new = LSTMState(jax.nn.sigmoid(o) * jnp.tanh(c), c)
      return tree_where(keep, new, carry), jnp.where(keep[:, None], new.h, 0.0)

    state, y = jax.lax.scan(step, state, (gates_in.swapaxes(0, 1), valid.swapaxes(0, 1)))
    return y.swapaxes(0, 1), state
