"""The streaming backlog: when each output frame's work is done on a single sequential processor,
and the latency a user feels at the end of an utterance. Differentiable, for training losses
(AmNet's latency penalty: Macoskey et al., "Amortized Neural Networks for Low-Latency Speech
Recognition", Interspeech 2021) and the device simulator (`hardware.latency`) alike.

Frames arrive as audio does: output frame `t` can start once every input frame it depends on has
arrived, `arrival_t` seconds after the utterance began (`arrival_times`: one hop per frame, or
whole attention chunks at once, never after the audio's end). One processor works through the
frames in order, each costing `cost_t` seconds:

  finish_t = max(finish_{t-1}, arrival_t) + cost_t

Written as the work still queued when frame `t` arrives, `d_t = finish_t - arrival_t` obeys the
backlog recursion `d_t = relu(d_{t-1} - (arrival_t - arrival_{t-1})) + cost_t` (`d_{-1} = 0`), and
the user-perceived latency is `d_{L-1}` plus the work after the last frame (the final decode)
when the last frame arrives at the audio's end. Every operation is a sum or a `relu`, so the
latency is differentiable in the costs almost everywhere: with costs that are expectations under
a soft routing (`expected_cost`), the gradient says which frames' routing would lower latency.
With hard routing the same function gives the hard simulator's value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def arrival_times(lengths: jax.Array, num_frames: int, hop: float, chunk: int = 1,
                  audio_seconds: jax.Array | None = None) -> jax.Array:
  """When each output frame can start, seconds from the utterance's start: `[B, T]`.

  `lengths [B]` valid frames of `hop` seconds each; frames are released in groups of `chunk`
  (an attention chunk: a frame waits for the last frame of its chunk), and never later than the
  audio's end, `audio_seconds [B]` (default `lengths * hop`). The last valid frame arrives at
  the audio's end exactly: only then is the utterance known to be over (a last frame that runs
  past the audio is flushed with padding then; samples too few for a frame still end the audio
  there). Frames past a length arrive with it, so padding (of cost zero) changes nothing.
  """
  t = jnp.arange(num_frames)
  group_end = ((t // chunk) + 1) * chunk * hop                                   # [T]
  end = lengths * hop if audio_seconds is None else audio_seconds
  end = jnp.asarray(end, jnp.float32)[:, None]                                   # [B, 1]
  last = t[None, :] >= jnp.asarray(lengths)[:, None] - 1
  return jnp.where(last, end, jnp.minimum(group_end[None, :], end))


def backlog(cost: jax.Array, arrival: jax.Array) -> jax.Array:
  """Work queued when each frame arrives, including its own, `d [B, T]` (seconds), by the
  backlog recursion: `cost [B, T]`, `arrival [B, T]` non-decreasing along T."""
  gaps = jnp.diff(arrival, axis=1, prepend=jnp.zeros_like(arrival[:, :1]))

  def frame(d, inputs):
    c, gap = inputs
    d = jax.nn.relu(d - gap) + c
    return d, d

  _, d = jax.lax.scan(frame, jnp.zeros(cost.shape[0], cost.dtype),
                      (cost.swapaxes(0, 1), gaps.astype(cost.dtype).swapaxes(0, 1)))
  return d.swapaxes(0, 1)


def backlog_latency(cost: jax.Array, lengths: jax.Array, hop: float, *, chunk: int = 1,
                    audio_seconds: jax.Array | None = None,
                    final_cost: jax.Array | float = 0.0) -> jax.Array:
  """User-perceived latency `[B]` (seconds): when the last valid frame's work (and then
  `final_cost [B]`, e.g. the end of the search) is done, minus when the audio ended.

  `cost [B, T]` seconds of work per output frame (zero past `lengths`); the other arguments as in
  `arrival_times`. An utterance of no frames has latency `final_cost`.
  """
  arrival = arrival_times(lengths, cost.shape[1], hop, chunk, audio_seconds)
  mask = jnp.arange(cost.shape[1])[None, :] < lengths[:, None]
  d = backlog(jnp.where(mask, cost, 0.0), arrival)
  last = jnp.maximum(lengths - 1, 0)
  take = lambda x: jnp.take_along_axis(x, last[:, None], axis=1)[:, 0]
  end = lengths * hop if audio_seconds is None else audio_seconds
  done = jnp.where(lengths > 0, take(arrival) + take(d), end)
  return done - end + final_cost


def expected_cost(probs: jax.Array, branch_cost: jax.Array) -> jax.Array:
  """Expected seconds of work per frame under a routing distribution: `probs [B, T, K]` over K
  branches of `branch_cost [K]` (or `[B, T, K]`) seconds -> `[B, T]`. One-hot `probs` give the
  routed branch's cost exactly."""
  return jnp.sum(probs * branch_cost, axis=-1)
