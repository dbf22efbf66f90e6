"""A unidirectional LSTM layer for padded batches and for streaming, in Flax NNX.

The input projection of every frame is one matmul before the scan (`[B, T, D] @ [D, 4H]`);
the scan carries only the recurrent matmul `[B, H] @ [H, 4H]`. Past each length the state is held
and the output is zero, so the final state is the state after the last real frame and a chunked
(streamed) run equals the full run.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LSTMState:
  h: jax.Array  # [B, H]
  c: jax.Array  # [B, H]


class LSTM(nnx.Module):
  """`x [B, T, D]`, `lengths [B]`, state -> `y [B, T, H]`, new state."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.in_dim, self.hidden = in_dim, hidden
    init = nnx.initializers.lecun_normal()
    self.w_in = nnx.Param(init(rngs.params(), (in_dim, 4 * hidden)))
    self.w_rec = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (hidden, 4 * hidden)))
    # Forget-gate bias 1: the classic remedy for vanishing memory early in training.
    bias = jnp.zeros((4, hidden)).at[1].set(1.0).reshape(-1)
    self.bias = nnx.Param(bias)

  def init_state(self, batch: int) -> LSTMState:
    zeros = jnp.zeros((batch, self.hidden))
    return LSTMState(zeros, zeros)

  def macs_per_frame(self) -> int:
    """Multiply-accumulates per frame: the two matmuls (gate nonlinearities are O(H))."""
    return 4 * self.hidden * (self.in_dim + self.hidden)

  def __call__(self, x: jax.Array, lengths: jax.Array,
               state: LSTMState | None = None) -> tuple[jax.Array, LSTMState]:
    b, t, _ = x.shape
    state = state or self.init_state(b)
    gates_in = x @ self.w_in[...] + self.bias[...]  # [B, T, 4H]
    w_rec = self.w_rec[...]
    valid = jnp.arange(t)[None, :] < lengths[:, None]  # [B, T]

    def step(carry, inputs):
      h, c = carry
      g_in, keep = inputs
      i, f, g, o = jnp.split(g_in + h @ w_rec, 4, axis=-1)
      c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
      keep = keep[:, None]
      h, c = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
      return (h, c), jnp.where(keep, h_new, 0.0)

    (h, c), y = jax.lax.scan(step, (state.h, state.c),
                             (gates_in.swapaxes(0, 1), valid.swapaxes(0, 1)))
    return y.swapaxes(0, 1), LSTMState(h, c)
