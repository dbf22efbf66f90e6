"""A unidirectional LSTM layer for padded batches and for streaming, in Flax NNX: a cell and the
scan that runs it.

The cell is the layer's per-frame update, apart from the loop: `inputs(x, ctx)` is the input
projection of every frame (one matmul before the scan, `[B, T, D] @ [D, 4H]`), and
`cell(carry, inputs_t, ctx) -> (carry, y_t, aux_t)` one frame (the recurrent matmul
`[B, H] @ [H, 4H]` and the gates). `scan_cell` runs any layer with that interface over a padded
batch, collecting each frame's `aux` (`[B, T, ...]`): a routed cell (several branches sharing
one state) is a subclass that changes `inputs` and `cell`, and the encoder and the prediction
network run it unchanged. Past each length the state is held and the output is zero, so the
final state is the state after the last real frame and a chunked (streamed) run equals the full
run. Gate order in the 4H axis: input, forget, cell, output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, tree_where
from asr.models.context import Context
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


def scan_cell(layer, x: jax.Array, lengths: jax.Array, state=None, ctx: Context = Context()):
  """Runs `layer`'s cell over `x [B, T, D]` -> (`y [B, T, H]`, zero past each length; the
  state after each utterance's last frame; `aux` of every frame, `{name: [B, T, ...]}`).
  Frame `t` runs with `ctx.fold(t)`."""
  b, t, _ = x.shape
  state = state if state is not None else layer.init_state(b)
  inputs = layer.inputs(x, ctx)
  valid = length_mask(lengths, t)  # [B, T]

  def frame(carry, per_frame):
    index, inputs_t, keep = per_frame
    new, y, aux = layer.cell(carry, inputs_t, ctx.fold(index))
    return tree_where(keep, new, carry), (jnp.where(keep[:, None], y, 0.0), aux)

  time_major = jax.tree.map(lambda v: v.swapaxes(0, 1), (inputs, valid))
  state, (y, aux) = jax.lax.scan(frame, state, (jnp.arange(t), *time_major))
  return y.swapaxes(0, 1), state, jax.tree.map(lambda v: v.swapaxes(0, 1), aux)


class LSTM(nnx.Module):
  """`x [B, T, D]`, `lengths [B]`, state -> `y [B, T, H]`, new state."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.in_dim, self.hidden = in_dim, hidden
    self.input = Dense(in_dim, 4 * hidden, bias_init=_forget_gate_bias, rngs=rngs)
    self.recurrent = Dense(hidden, 4 * hidden, use_bias=False, input_bound=1.0,  # h = o tanh(c)
                           kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

  def init_state(self, batch: int) -> LSTMState:
    zeros = jnp.zeros((batch, self.hidden))
    return LSTMState(zeros, zeros)

  def macs_per_frame(self) -> int:
    """Multiply-accumulates per frame: the two matmuls (gate nonlinearities are O(H))."""
    return self.input.macs() + self.recurrent.macs()

  def inputs(self, x: jax.Array, ctx: Context = Context()) -> jax.Array:
    """Every frame's input gates, `[B, T, 4H]`: one matmul before the scan."""
    return self.input(x)

  def cell(self, carry: LSTMState, gates_in: jax.Array, ctx: Context = Context()):
    """One frame: `gates_in [B, 4H]` -> (new state, `h [B, H]`, aux {})."""
    i, f, g, o = jnp.split(gates_in + self.recurrent(carry.h), 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new = LSTMState(jax.nn.sigmoid(o) * jnp.tanh(c), c)
    return new, new.h, {}

  def __call__(self, x: jax.Array, lengths: jax.Array, state: LSTMState | None = None,
               ctx: Context = Context()) -> tuple[jax.Array, LSTMState]:
    y, state, _ = scan_cell(self, x, lengths, state, ctx)
    return y, state
