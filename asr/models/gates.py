"""Per-frame gates on the residual units of the streaming Transformer and Conformer
(`model.transformer.gates`): a compute-amortized Transformer (Xie, Huang, Strimel, Rastrow and
others, "Compute Cost Amortized Transformer for Streaming ASR", Interspeech 2022,
arXiv 2207.02393).

Small arbitrators look at the audio and switch each sub-block (attention, feed-forward, a
Conformer's convolution module) on or off per output frame. A closed gate makes that unit's
output zero for the frame, so the residual stream carries the frame on unchanged, and the
frame does not pay for the unit (`asr.models.blocks`: what it still pays, the keys and values
other frames attend to, is counted there).

Design (the paper leaves the estimator and the arbitrator's size open; ours):

- One arbitrator trunk per encoder, `GateTrunk`: the output frame's stacked log-mels
  (`subsample_factor` feature frames, the audio the frame covers) through `Dense` and tanh to
  `gate_hidden` units, computed once; per block a `GateHead`: a `Dense` from the trunk to one
  logit per unit of the block, plus, with `gate_block_input`, one from the block's input (a
  parameter-free LayerNorm of the residual stream). The head's kernels start at zero and its
  bias at `gate_bias_init` (open), so a gated model fine-tuned from a trained ungated one
  starts as that model.
- Training gates are Gumbel-sigmoid ("binary concrete") samples,
  `sigmoid((logit + s * logistic noise) / temperature)`, with the AmNet encoder's schedules
  (`arbitrator_temperature`, annealed towards hard gates; `arbitrator_noise`, the noise's
  scale `s`) and the noise from `ctx.key(GATE_KEY)` of the block's context, apart from
  dropout's keys. `gate_estimator="straight_through"` uses the hard sample `logit + s * noise
  > 0` forward and the Gumbel-sigmoid's gradient backward, so training runs the gates
  evaluation runs.
- Without `ctx.train` (evaluation, streaming, the int8 path) gates are hard: `logit > 0`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asr.models.context import Context
from asr.models.dense import Dense

ESTIMATORS = ("gumbel", "straight_through")
# Gate noise draws from the block's ctx.key(GATE_KEY), far from its units' keys
# (ctx.fold(j) for unit j, `asr.models.blocks.SUB_BLOCKS`).
GATE_KEY = 1 << 16


class GateTrunk(nnx.Module):
  """Stacked features `[B, T', F * s]` -> the arbitrators' shared hidden layer
  `tanh(hidden(x))`, `[B, T', H]`."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.hidden = Dense(in_dim, hidden, rngs=rngs)

  def macs(self) -> int:
    return self.hidden.macs()

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.tanh(self.hidden(x))


class GateHead(nnx.Module):
  """One block's arbitrator: the trunk's `[B, T, H]` (and, with `block_input`, the block's
  input `[B, T, D]`) -> one logit per unit, `[B, T, units]`."""

  def __init__(self, hidden: int, dim: int, units: int, *, block_input: bool,
               bias_init: float, rngs: nnx.Rngs):
    zeros = nnx.initializers.zeros
    self.out = Dense(hidden, units, kernel_init=zeros,
                     bias_init=nnx.initializers.constant(bias_init), rngs=rngs)
    self.from_input = (Dense(dim, units, use_bias=False, kernel_init=zeros, rngs=rngs)
                       if block_input else None)
    self.norm = (nnx.LayerNorm(dim, use_scale=False, use_bias=False, rngs=rngs)
                 if block_input else None)

  def macs(self) -> int:
    return self.out.macs() + (0 if self.from_input is None else self.from_input.macs())

  def __call__(self, trunk: jax.Array, x: jax.Array) -> jax.Array:
    logits = self.out(trunk)
    if self.from_input is not None:
      logits = logits + self.from_input(self.norm(x))
    return logits


def shift_gate_threshold(model: nnx.Module, threshold: float) -> int:
  """Moves every hard gate of `model` from `logit > 0` to `logit > threshold`, in place, by
  subtracting `threshold` from each arbitrator head's bias; returns the number of heads.

  One trained model then gives a trade-off: a negative threshold opens more sub-blocks (more
  compute, nearer the ungated model's WER; a large one, every gate), a positive one closes
  more. Being a change of weights, the evaluation, the streamed `step` and the int8 path (whose
  Q7.8 logits saturate at +-128, far beyond any useful threshold) all see it."""
  heads = [m for _, m in nnx.iter_graph(model) if isinstance(m, GateHead)]
  for head in heads:
    head.out.bias[...] = head.out.bias[...] - threshold
  return len(heads)


def gate_values(logits: jax.Array, ctx: Context, estimator: str = "gumbel") -> jax.Array:
  """Gate logits `[B, T, U]` -> gates in [0, 1] of the same shape: hard (`logit > 0`) unless
  `ctx.train` with a key, then Gumbel-sigmoid samples (or straight-through hard ones)."""
  if not (ctx.train and ctx.rng is not None):
    return (logits > 0).astype(logits.dtype)
  temperature = ctx.schedules.get("arbitrator_temperature", 1.0)
  noisy = logits + ctx.schedules.get("arbitrator_noise", 1.0) * jax.random.logistic(
      ctx.key(GATE_KEY), logits.shape, logits.dtype)
  soft = jax.nn.sigmoid(noisy / temperature)
  if estimator == "straight_through":
    return (noisy > 0).astype(soft.dtype) + (soft - jax.lax.stop_gradient(soft))  # exactly 0/1
  return soft
