"""Batched greedy RNN-T search under `jit`, and its streaming form (raw audio in, tokens out).

At each encoder frame the joint is asked up to `max_symbols` times: a non-blank argmax is
emitted and the prediction network advances; a blank (or the cap) moves to the next frame.
RNN-T models emit in bursts, so the cap must allow several symbols a frame (a cap of 2 frames
per 30 ms frame truncated words of a 1.6 M-parameter LSTM RNN-T on the synthetic corpus).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from asr import features as F
from asr.arrays import length_mask, tree_where


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


def greedy_frames(model, st: GreedyState, enc_proj: jax.Array, frame_lengths: jax.Array,
                  max_symbols: int) -> tuple[GreedyState, jax.Array]:
  """Runs greedy search over projected frames `enc_proj [B, T, J]` from state `st` -> the new
  state and the labels emitted at each frame `[B, T]` (the alignment latency simulation
  charges the prediction network's work to)."""
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
      st = GreedyState(tree_where(emit, pred_state, st.pred_state),
                       tree_where(emit, model.joint.project_prediction(out), st.pred_proj),
                       tokens, st.lengths + emit)
      return (st, emit), None

    before = st.lengths
    (st, _), _ = jax.lax.scan(symbol, (st, valid), None, length=max_symbols)
    return st, st.lengths - before

  valid = length_mask(frame_lengths, enc_proj.shape[1]).T  # [T, B]
  st, emitted = jax.lax.scan(frame, st, (enc_proj.swapaxes(0, 1), valid))
  return st, emitted.swapaxes(0, 1)


@functools.partial(nnx.jit, static_argnames=("max_symbols", "max_len"))
def greedy_search(model, frames: jax.Array, frame_lengths: jax.Array, *, max_symbols: int = 4,
                  max_len: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Encoder `frames [B, T, H]`, `frame_lengths [B]` -> tokens `[B, L]` (0-padded), lengths `[B]`.

  `L = max_len` or `T * max_symbols`.
  """
  tokens, lengths, _ = greedy_decode(model, frames, frame_lengths, max_symbols, max_len)
  return tokens, lengths


@functools.partial(nnx.jit, static_argnames=("max_symbols", "max_len"))
def greedy_search_aligned(model, frames: jax.Array, frame_lengths: jax.Array, *,
                          max_symbols: int = 4, max_len: int | None = None
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`greedy_search`, and the labels emitted at each frame `[B, T]` (they sum to lengths)."""
  return greedy_decode(model, frames, frame_lengths, max_symbols, max_len)


def greedy_decode(model, frames: jax.Array, frame_lengths: jax.Array, max_symbols: int = 4,
                  max_len: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`greedy_search_aligned`, not jitted, on any `model` with the transducer's decoding
  interface: `joint.project_encoder`, `joint.project_prediction`, `joint.single` (logits whose
  argmax is taken), `predictor.init_state` and `predictor.step` (the int8 processor's model,
  `hardware.int8_transducer`, decodes through it)."""
  b, t = frames.shape[:2]
  st = init_greedy_state(model, b, max_len or t * max_symbols)
  st, emitted = greedy_frames(model, st, model.joint.project_encoder(frames), frame_lengths,
                              max_symbols)
  return st.tokens, st.lengths, emitted


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class StreamingState:
  """Everything a streaming recognizer carries between audio chunks."""
  audio: object             # stream_log_mel's state: None before the first chunk
  model: object             # the transducer's stream state (normalizer, encoder)
  decoder: GreedyState


def init_streaming(model, batch: int, max_len: int) -> StreamingState:
  return StreamingState(None, model.init_stream(batch), init_greedy_state(model, batch, max_len))


@functools.partial(nnx.jit, static_argnames=("max_symbols",))
def streaming_greedy_step(model, state: StreamingState, audio: jax.Array,
                          audio_lengths: jax.Array, *, max_symbols: int = 4) -> StreamingState:
  """One chunk of streaming recognition from raw audio `[B, S]` (int16 or float), `[B]` real
  samples (0 once an utterance has ended): features, normalization, encoder and greedy search,
  all carried across chunks. Size chunks with `F.stream_chunk_samples(n)`, `n` a multiple of
  `model.encoder.stream_multiple`; the tokens equal full-utterance greedy search."""
  feats, lengths, audio_state = F.stream_log_mel(state.audio, audio, audio_lengths,
                                                 model.cfg.features)
  out, model_state = model.stream_step(state.model, feats, lengths)
  decoder, _ = greedy_frames(model, state.decoder, model.joint.project_encoder(out.frames),
                          out.lengths, max_symbols)
  return StreamingState(audio_state, model_state, decoder)
