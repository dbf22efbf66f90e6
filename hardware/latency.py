"""The streaming latency simulator: arrival, queueing and completion of every frame of every
utterance on one sequential processor, and the latency a user feels.

Output frame `t` arrives when its audio has (`asr.losses.latency.arrival_times`: one hop a
frame, or a whole attention chunk at once), waits for the frames before it, and costs `cost_t`
seconds (`frame_costs`: the encoder's work on the frame plus the decoder's, on a device
profile). Completion `finish_t = max(finish_{t-1}, arrival_t) + cost_t`; the user-perceived
latency is the last frame's completion, plus the work after it (`final_cost`), minus the audio's
end. Mean, p50, p90 and max over a dataset by `latency_summary` (`asr.training.metrics`).

The simulator is the closed form of that recursion, vectorized over utterances and frames:
with `C_t` the cumulative cost, `finish_t = C_t + max_{s <= t} (arrival_s - C_{s-1})` (a
cumulative max), so 10,000 utterances take one jitted call. Its differentiable twin, the
backlog recursion that training losses use, is `asr.losses.latency.backlog_latency`; the tests
hold both to a frame-by-frame event simulation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from asr.losses.latency import arrival_times
from asr.training.metrics import latency_summary  # noqa: F401  (the summary's one home)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Timeline:
  """Seconds from each utterance's start."""
  arrival: jax.Array   # [B, T] when frame t's audio is all there
  start: jax.Array     # [B, T] when the processor starts it
  finish: jax.Array    # [B, T] when it is done
  backlog: jax.Array   # [B, T] work queued when it arrives, its own included (finish - arrival)
  latency: jax.Array   # [B] last completion (+ final cost) minus the audio's end


@functools.partial(jax.jit, static_argnames=("chunk",))
def simulate(cost: jax.Array, lengths: jax.Array, hop: float, *, chunk: int = 1,
             audio_seconds: jax.Array | None = None,
             final_cost: jax.Array | float = 0.0) -> Timeline:
  """`cost [B, T]` seconds of work per output frame, `lengths [B]` valid frames, frames of `hop`
  seconds released in groups of `chunk`, the audio ending at `audio_seconds [B]` (default
  `lengths * hop`), `final_cost [B]` seconds of work after the last frame -> the `Timeline`.
  Costs past a length are ignored; an utterance of no frames has latency `final_cost`."""
  t = cost.shape[1]
  mask = jnp.arange(t)[None, :] < lengths[:, None]
  cost = jnp.where(mask, cost, 0.0).astype(jnp.float32)
  arrival = arrival_times(lengths, t, hop, chunk, audio_seconds)
  done = jnp.cumsum(cost, axis=1)                       # C_t
  before = done - cost                                  # C_{t-1}
  finish = done + jax.lax.cummax(arrival - before, axis=1)
  start = finish - cost
  last = jnp.maximum(lengths - 1, 0)[:, None]
  end = lengths * hop if audio_seconds is None else audio_seconds
  last_done = jnp.where(lengths > 0, jnp.take_along_axis(finish, last, axis=1)[:, 0], end)
  latency = last_done - end + final_cost
  return Timeline(arrival, start, finish, finish - arrival, latency)


def frame_costs(profile, frame_flops, *, frame_macs_executed=None, chunk: int = 1,
                weight_bytes_per_chunk: int = 0):
  """Seconds of work per output frame on `profile`: `frame_flops [B, T]` (2 a MAC, the whole
  work of each frame: encoder, joint, prediction network), `frame_macs_executed [B, T]` the
  MACs left when zero weights are skipped (default: all), and `weight_bytes_per_chunk` fetched
  from off-chip memory before each chunk of `chunk` frames (charged to its first frame)."""
  macs = np.asarray(frame_flops, np.float64) / 2
  fetch = np.zeros(macs.shape[-1])
  fetch[::chunk] = weight_bytes_per_chunk
  return np.asarray(profile.seconds(macs, frame_macs_executed, fetch[None, :] * (macs > 0)),
                    np.float32)


def streaming_latency(profile, frame_seconds: float, chunk: int = 1,
                      weight_bytes_per_chunk: int = 0):
  """The `latency` callback `asr.training.evaluate.evaluate` takes: `(out, audio_seconds [B])
  -> seconds [B]` from a recognizer's output (`frame_flops [B, T]`, `frame_lengths [B]`, and
  `frame_macs_executed [B, T]` where zeros were skipped), simulated on `profile` for frames of
  `frame_seconds` released in groups of `chunk`."""
  def latency(out, audio_seconds):
    cost = frame_costs(profile, out["frame_flops"],
                       frame_macs_executed=out.get("frame_macs_executed"), chunk=chunk,
                       weight_bytes_per_chunk=weight_bytes_per_chunk)
    return simulate(jnp.asarray(cost), jnp.asarray(out["frame_lengths"]), frame_seconds,
                    chunk=chunk, audio_seconds=jnp.asarray(audio_seconds, jnp.float32)).latency
  return latency


def encoder_chunk(encoder) -> int:
  """Output frames an encoder releases at once: its streaming chunk (`stream_multiple` input
  frames) in output frames; 1 for a frame-by-frame encoder."""
  return max(1, round(encoder.stream_multiple * encoder.input_frame_seconds
                      / encoder.frame_seconds))
