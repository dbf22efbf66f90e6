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

A plain `LSTM` (its own cell, a plain recurrent `Dense`) runs a fused recurrence with its own
backward pass (`lstm_recurrence`): autodiff of the scan would accumulate the recurrent matrix's
gradient frame by frame, a `[H, B] @ [B, 4H]` product per frame; the fused pass keeps every
frame's gate gradients and forms it after the scan in one `[H, T * B] @ [T * B, 4H]` product,
as cuDNN's LSTM does. The same numbers as the cell's scan (a test holds them to it), the
`rnnt.py:small` step 7% faster (BENCHMARKS.md, issue 35).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, tree_where
from asr.models.context import Context
from asr.models.dense import Dense, executed_macs, is_plain, matmul


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LSTMState:
  h: jax.Array  # [B, H]
  c: jax.Array  # [B, H]


def _forget_gate_bias(key, shape, dtype=jnp.float32):
  """Forget-gate bias 1: the classic remedy for vanishing memory early in training."""
  del key
  return jnp.zeros((4, shape[0] // 4), dtype).at[1].set(1.0).reshape(shape)


def scan_cell(layer, x: jax.Array, lengths: jax.Array, state=None, ctx: Context = Context(),
              inputs=None):
  """Runs `layer`'s cell over `x [B, T, D]` -> (`y [B, T, H]`, zero past each length; the
  state after each utterance's last frame; `aux` of every frame, `{name: [B, T, ...]}`).
  Frame `t` runs with `ctx.fold(t)`. `inputs`: every frame's cell input (a tree of
  `[B, T, ...]`) where the caller made it (a routed cell's inputs carry each frame's routing:
  `asr.models.amnet`); default `layer.inputs(x, ctx)`."""
  b, t, _ = x.shape
  state = state if state is not None else layer.init_state(b)
  inputs = layer.inputs(x, ctx) if inputs is None else inputs
  valid = length_mask(lengths, t)  # [B, T]
  if type(layer).cell is LSTM.cell and is_plain(layer.recurrent):
    y, h, c = lstm_recurrence(layer.recurrent.matmul_dtype, layer.recurrent.kernel[...],
                              inputs.swapaxes(0, 1), valid.swapaxes(0, 1), state.h, state.c)
    return y.swapaxes(0, 1), LSTMState(h, c), {}

  def frame(carry, per_frame):
    index, inputs_t, keep = per_frame
    new, y, aux = layer.cell(carry, inputs_t, ctx.fold(index))
    return tree_where(keep, new, carry), (jnp.where(keep[:, None], y, 0.0), aux)

  time_major = jax.tree.map(lambda v: v.swapaxes(0, 1), (inputs, valid))
  state, (y, aux) = jax.lax.scan(frame, state, (jnp.arange(t), *time_major))
  return y.swapaxes(0, 1), state, jax.tree.map(lambda v: v.swapaxes(0, 1), aux)


def _gates(pre: jax.Array, c: jax.Array):
  """Gate pre-activations `[B, 4H]` and `c [B, H]` -> new `h`, new `c`, the activations
  (input, forget, cell, output): `LSTM.cell`'s arithmetic."""
  i, f, g, o = jnp.split(pre, 4, axis=-1)
  si, sf, tg, so = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c = sf * c + si * tg
  return so * jnp.tanh(c), c, (si, sf, tg, so)


def _recurrence_forward(dtype, kernel, inputs, keep, h, c):
  def frame(carry, per_frame):
    h, c = carry
    gates_in, k = per_frame
    h_new, c_new, acts = _gates(gates_in + matmul(h, kernel, dtype), c)
    k = k[:, None]
    return ((jnp.where(k, h_new, h), jnp.where(k, c_new, c)),
            (jnp.where(k, h_new, 0.0), (h, c, acts)))
  (h, c), (y, saved) = jax.lax.scan(frame, (h, c), (inputs, keep))
  return (y, h, c), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_recurrence(dtype: str, kernel: jax.Array, inputs: jax.Array, keep: jax.Array,
                    h: jax.Array, c: jax.Array):
  """The plain LSTM cell scanned over time-major frames, with a fused backward pass.

  `kernel [H, 4H]` (the recurrent matrix, products in `dtype`), `inputs [T, B, 4H]` (each
  frame's input gates), `keep [T, B]` bool (frames inside each length), state `h, c [B, H]`
  -> (`y [T, B, H]`, zero where not kept; the final `h`, `c`, held past each length)."""
  return _recurrence_forward(dtype, kernel, inputs, keep, h, c)[0]


def _recurrence_fwd(dtype, kernel, inputs, keep, h, c):
  out, saved = _recurrence_forward(dtype, kernel, inputs, keep, h, c)
  return out, (kernel, keep, saved)


def _recurrence_bwd(dtype, residuals, cotangents):
  kernel, keep, (h_prev, c_prev, (si, sf, tg, so)) = residuals
  dy, dh, dc = cotangents

  def frame(carry, per_frame):
    dh, dc = carry
    dy, k, c_prev, si, sf, tg, so = per_frame
    k = k[:, None]
    # A held frame passes the state's gradient through; a kept one sends it (and the
    # output's) into the cell.
    dh_new, dc_new = jnp.where(k, dh + dy, 0.0), jnp.where(k, dc, 0.0)
    tc = jnp.tanh(sf * c_prev + si * tg)
    dc_new = dc_new + dh_new * so * (1.0 - tc * tc)
    d_pre = jnp.concatenate([dc_new * tg * si * (1.0 - si), dc_new * c_prev * sf * (1.0 - sf),
                             dc_new * si * (1.0 - tg * tg), dh_new * tc * so * (1.0 - so)], -1)
    dh = matmul(d_pre, kernel.T, dtype) + jnp.where(k, 0.0, dh)
    dc = dc_new * sf + jnp.where(k, 0.0, dc)
    return (dh, dc), d_pre

  (dh, dc), d_pre = jax.lax.scan(frame, (dh, dc), (dy, keep, c_prev, si, sf, tg, so),
                                 reverse=True)
  hidden = kernel.shape[0]
  d_kernel = matmul(h_prev.reshape(-1, hidden).T, d_pre.reshape(-1, 4 * hidden), dtype)
  return d_kernel, d_pre, None, dh, dc


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


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

  def executed_macs(self) -> jax.Array:
    """`macs_per_frame` on non-zero weights only (traced)."""
    return executed_macs(self.input) + executed_macs(self.recurrent)

  def inputs(self, x: jax.Array, ctx: Context = Context()) -> jax.Array:
    """Every frame's input gates, `[B, T, 4H]`: one matmul before the scan."""
    return self.input(x)

  def cell(self, carry: LSTMState, gates_in: jax.Array, ctx: Context = Context()):
    """One frame: `gates_in [B, 4H]` -> (new state, `h [B, H]`, aux {})."""
    h, c, _ = _gates(gates_in + self.recurrent(carry.h), carry.c)
    return LSTMState(h, c), h, {}

  def __call__(self, x: jax.Array, lengths: jax.Array, state: LSTMState | None = None,
               ctx: Context = Context()) -> tuple[jax.Array, LSTMState]:
    y, state, _ = scan_cell(self, x, lengths, state, ctx)
    return y, state
