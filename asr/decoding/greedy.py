"""Batched greedy RNN-T search under `jit`, and its streaming form.

At each encoder frame the joint is asked up to `max_symbols` times: a non-blank argmax is
emitted and the prediction network advances; a blank (or the cap) moves to the next frame.
RNN-T models emit in bursts, so the cap must allow several symbols a frame (a cap of 2 was
seen to truncate words; research notes, section 8).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GreedyState:
  """Decoder state carried across frames (and across streamed chunks)."""
  pred_state: object        # the prediction network's state
  pred_proj: jax.Array      # [B, J] projected prediction output for the last emitted token
  tokens: jax.Array         # [B, L] emitted tokens, 0-padded
  lengths: jax.Array        # [B]


def init_greedy_state(model, batch: int, max_len: int) -> GreedyState:
  state = model.predictor.init_state(batch)
  out, state = model.predictor.step(state, jnp.zeros(batch, jnp.int32))  # the start token
  return GreedyState(state, model.joint.project_prediction(out),
                     jnp.zeros((batch, max_len), jnp.int32), jnp.zeros(batch, jnp.int32))


def _select(mask, new, old):
  return jax.tree.map(lambda a, b: jnp.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b),
                      new, old)


def greedy_frames(model, st: GreedyState, enc_proj: jax.Array, frame_lengths: jax.Array,
                  max_symbols: int) -> GreedyState:
  """Runs greedy search over projected frames `enc_proj [B, T, J]` from state `st`."""
  max_len = st.tokens.shape[1]
  positions = jnp.arange(max_len)[None, :]

  def frame(st, inputs):
    e, valid = inputs  # [B, J], [B]

    def symbol(carry, _):
      st, active = carry
      k = jnp.argmax(model.joint.single(e, st.pred_proj), axis=-1).astype(jnp.int32)
      emit = active & (k != 0) & (st.lengths < max_len)
      tokens = jnp.where(emit[:, None] & (positions == st.lengths[:, None]), k[:, None], st.tokens)
      out, pred_state = model.predictor.step(st.pred_state, k)
      st = GreedyState(_select(emit, pred_state, st.pred_state),
                       _select(emit, model.joint.project_prediction(out), st.pred_proj),
                       tokens, st.lengths + emit)
      return (st, emit), None

    (st, _), _ = jax.lax.scan(symbol, (st, valid), None, length=max_symbols)
    return st, None

  valid = jnp.arange(enc_proj.shape[1])[:, None] < frame_lengths[None, :]  # [T, B]
  st, _ = jax.lax.scan(frame, st, (enc_proj.swapaxes(0, 1), valid))
  return st


@functools.partial(nnx.jit, static_argnames=("max_symbols", "max_len"))
def greedy_search(model, frames: jax.Array, frame_lengths: jax.Array, *, max_symbols: int = 4,
                  max_len: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Encoder `frames [B, T, H]`, `frame_lengths [B]` -> tokens `[B, L]` (0-padded), lengths `[B]`.

  `L = max_len` or `T * max_symbols`.
  """
  b, t = frames.shape[:2]
  st = init_greedy_state(model, b, max_len or t * max_symbols)
  st = greedy_frames(model, st, model.joint.project_encoder(frames), frame_lengths, max_symbols)
  return st.tokens, st.lengths


@functools.partial(nnx.jit, static_argnames=("max_symbols",))
def streaming_greedy_step(model, enc_state, dec_state: GreedyState, features: jax.Array,
                          lengths: jax.Array, *, max_symbols: int = 4):
  """One chunk of streaming recognition: features `[B, C, F]` (C a multiple of the encoder's
  frame stacking) through the encoder's `step` and greedy search, carrying both states."""
  out, enc_state = model.encoder.step(enc_state, features, lengths)
  dec_state = greedy_frames(model, dec_state, model.joint.project_encoder(out.frames),
                            out.lengths, max_symbols)
  return enc_state, dec_state
