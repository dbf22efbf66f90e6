"""Penalties on the encoder's per-frame cost, as loss terms (`asr.training.objective`), for
encoders whose compute follows the input (`asr.models.amnet`):

- `compute`: the average-compute regulariser of prior work on conditional computation: the
  batch's expected encoder FLOPs per second of audio, over a budget, `relu(F / budget - 1)`.
  Below the budget it is zero, so the accuracy terms spend what the budget allows and the
  average settles at it: the knob that matches one run's average compute to another's. With
  `hinge=False` it is `F / budget` at any F, the budget the ungated model's compute: the
  compute-amortized Transformer's `lambda * E[F]` relative to it (Xie et al., "Compute Cost
  Amortized Transformer for Streaming ASR", Interspeech 2022), `lambda` the term's weight.
- `latency`: AmNet's latency penalty `L_amr` (Macoskey et al., "Amortized Neural Networks for
  Low-Latency Speech Recognition", Interspeech 2021): the expected user-perceived latency at
  the end of each utterance (seconds, mean over the batch), through the differentiable backlog
  recursion (`asr.losses.latency.backlog_latency`) of each frame's expected cost under the soft
  routing. Its gradient reaches only the frames whose work is still queued when the audio ends:
  cheap routing is asked for where a backlog would outlast the utterance, not where the
  processor has slack, which an average-compute penalty cannot tell apart.

A frame's cost is the encoder's `flops [B, T']` (the routing's expectation in training), or
with `zero_skipping` its `aux["flops_executed"]` (non-zero weights only: a processor whose
kernels skip zeros, where a pruned branch is cheaper), plus for `latency` the joint's and
prediction network's work (`Transducer.decoding_flops`, the utterance's labels spread evenly
over its frames) as the simulator (`hardware.latency`) charges it. The processor's speed is the
option `flops_per_second`, copied from its profile (`hardware/profiles.py`) by the config: `asr`
imports no `hardware`.

  c.imports = ["asr.losses.cost"]
  c.loss.latency = dict(weight=1.0, flops_per_second=36e6, zero_skipping=True)
  c.loss.compute = dict(weight=1.0, budget_flops_per_second=30e6, zero_skipping=True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from asr.arrays import length_mask
from asr.losses.latency import backlog_latency
from asr.training.objective import LossInputs, LossTerm, register_loss_term


def frame_flops(x: LossInputs, zero_skipping: bool) -> jax.Array:
  """The encoder's FLOPs per output frame `[B, T']`: all weights, or non-zero ones only."""
  if not zero_skipping:
    return x.encoded.flops
  if "flops_executed" not in x.encoded.aux:
    raise ValueError("zero_skipping: this encoder reports no aux['flops_executed'] (its work "
                     "on non-zero weights)")
  return x.encoded.aux["flops_executed"]


def _audio_seconds(x: LossInputs) -> jax.Array:
  return x.batch["audio_lengths"] / x.model.cfg.features.sample_rate


@register_loss_term("compute")
class ComputeTerm(LossTerm):
  """`relu(F / budget - 1)` (`hinge=False`: `F / budget`), F the batch's encoder FLOPs per
  second of audio."""

  def __init__(self, *, budget_flops_per_second: float, zero_skipping: bool = False,
               hinge: bool = True):
    if budget_flops_per_second <= 0:
      raise ValueError(f"loss.compute: budget_flops_per_second={budget_flops_per_second} must "
                       "be positive")
    self.budget, self.zero_skipping = float(budget_flops_per_second), bool(zero_skipping)
    self.hinge = bool(hinge)

  def __call__(self, x: LossInputs, state) -> tuple[jax.Array, dict]:
    flops = jnp.sum(jnp.where(x.is_real[:, None], frame_flops(x, self.zero_skipping), 0.0))
    seconds = jnp.sum(jnp.where(x.is_real, _audio_seconds(x), 0.0))
    per_second = flops / jnp.maximum(seconds, 1e-9)
    ratio = per_second / self.budget
    return (jax.nn.relu(ratio - 1.0) if self.hinge else ratio), {"flops_per_second": per_second}


@register_loss_term("latency")
class LatencyTerm(LossTerm):
  """The batch's mean end-of-utterance latency (seconds) on a processor of `flops_per_second`,
  frames released one hop apart (a frame-by-frame encoder)."""

  def __init__(self, *, flops_per_second: float, zero_skipping: bool = False,
               decoding: bool = True):
    if flops_per_second <= 0:
      raise ValueError(f"loss.latency: flops_per_second={flops_per_second} must be positive")
    self.flops_per_second, self.zero_skipping = float(flops_per_second), bool(zero_skipping)
    self.decoding = bool(decoding)

  def __call__(self, x: LossInputs, state) -> tuple[jax.Array, dict]:
    enc = x.encoded
    flops = frame_flops(x, self.zero_skipping)
    if self.decoding:
      valid = length_mask(enc.lengths, flops.shape[1]).astype(flops.dtype)
      per_frame = x.batch["label_lengths"] / jnp.maximum(enc.lengths, 1)
      flops = flops + x.model.decoding_flops(valid, valid * per_frame[:, None])
    latency = backlog_latency(flops / self.flops_per_second, enc.lengths, enc.frame_seconds,
                              audio_seconds=_audio_seconds(x))
    real = x.is_real
    mean = jnp.sum(jnp.where(real, latency, 0.0)) / jnp.maximum(jnp.sum(real), 1)
    return mean, {"max_ms": 1000 * jnp.max(jnp.where(real, latency, 0.0))}
