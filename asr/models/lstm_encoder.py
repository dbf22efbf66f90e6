"""The LSTM encoder family (`model.encoder = "lstm"`): frame stacking, a stack of LSTMs with
optional LayerNorm and dropout, and an optional time reduction inside the stack.

Time reduction: after the first `reduce_after` layers, `reduce` consecutive outputs are
concatenated into one frame (He et al., 2019, "Streaming end-to-end speech recognition for
mobile devices"), so the upper layers, the joint and the loss run at a lower frame rate. The
frames before the reduction are kept in `aux["pre_reduction"]` (with
`aux["pre_reduction_lengths"]`): a CTC loss needs at least one frame per character, which 30 ms
frames give the synthetic corpus (22.4 characters/s at its 99th percentile) and 60 ms frames do
not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask, mask_padding
from asr.models.context import Context
from asr.features import FeatureConfig, stack_frames
from asr.models.encoder import EncoderOutput, register_encoder
from asr.models.lstm import LSTM, LSTMState, scan_cell


@dataclasses.dataclass(frozen=True)
class LSTMEncoderConfig:
  hidden: int = 256
  layers: int = 2
  stack: int = 3            # input frames concatenated into one (3 x 10 ms -> 30 ms)
  layer_norm: bool = False  # LayerNorm after each LSTM (per frame, so still causal)
  reduce: int = 1           # time reduction factor inside the stack (2: 30 ms -> 60 ms)
  reduce_after: int = 1     # ... after this many LSTM layers
  dropout: float = 0.0      # on each LSTM's output but the last, in training


@register_encoder("lstm", LSTMEncoderConfig)
class LSTMEncoder(nnx.Module):
  """Streaming: `step` takes chunks whose length is a multiple of `stack * reduce` (the last
  chunk of an utterance may be shorter); the output equals the full-utterance output.

  Besides `flops`, `aux["flops_executed"] [B, T']` counts each frame's work on non-zero weights
  only: what a processor that skips zeros spends on a pruned model."""

  layer_class = LSTM        # the layer of the stack: an LSTM, or a subclass with its own cell

  def __init__(self, num_mels: int, cfg: LSTMEncoderConfig, *,
               input_frame_seconds: float = FeatureConfig().hop_seconds, rngs: nnx.Rngs):
    if cfg.reduce > 1 and not 1 <= cfg.reduce_after < cfg.layers:
      raise ValueError(f"model.lstm.reduce_after={cfg.reduce_after} must leave layers on both "
                       f"sides of the time reduction (1 <= reduce_after < layers={cfg.layers})")
    if not 0.0 <= cfg.dropout < 1.0:
      raise ValueError(f"model.lstm.dropout={cfg.dropout} must be in [0, 1)")
    self.cfg = cfg
    self.stack, self.hidden, self.reduce = cfg.stack, cfg.hidden, cfg.reduce
    self.reduce_after = cfg.reduce_after if cfg.reduce > 1 else 0
    self.input_frame_seconds = input_frame_seconds
    self.frame_seconds = input_frame_seconds * cfg.stack * cfg.reduce
    dims = [num_mels * cfg.stack] + [cfg.hidden] * cfg.layers
    in_dims = [d * (cfg.reduce if i == self.reduce_after and i > 0 else 1)
               for i, d in enumerate(dims[:-1])]
    self.layers = nnx.List([self.layer_class(a, b, rngs=rngs)
                            for a, b in zip(in_dims, dims[1:])])
    self.norms = nnx.List([nnx.LayerNorm(cfg.hidden, rngs=rngs) for _ in range(cfg.layers)]
                          if cfg.layer_norm else [])

  @property
  def out_dim(self) -> int:
    return self.hidden

  @property
  def stream_multiple(self) -> int:
    """Input frames a streamed chunk is a multiple of."""
    return self.stack * self.reduce

  def per_output_frame(self, layer_cost) -> object:
    """`layer_cost(layer)` summed over the stack per output frame: the layers below the time
    reduction run `reduce` times."""
    return sum(layer_cost(layer) * (self.reduce if i < self.reduce_after else 1)
               for i, layer in enumerate(self.layers))

  def flops_per_frame(self) -> int:
    """Per output frame: two matmuls per LSTM layer, the layers below the time reduction run
    `reduce` times (gates and LayerNorm are O(hidden) and left out)."""
    return 2 * self.per_output_frame(lambda layer: layer.macs_per_frame())

  def init_state(self, batch: int) -> list[LSTMState]:
    return [layer.init_state(batch) for layer in self.layers]

  def step(self, state: list[LSTMState], features: jax.Array, lengths: jax.Array,
           ctx: Context = Context()) -> tuple[EncoderOutput, list[LSTMState]]:
    """`features [B, C, F]` (normalized), `lengths [B]` -> this chunk's output, new state."""
    x, lengths = stack_frames(features, lengths, self.stack)
    x, lengths, new_state, aux = self.run_layers(state, x, lengths, ctx)
    valid = length_mask(lengths, x.shape[1])
    flops = jnp.where(valid, float(self.flops_per_frame()), 0.0)
    executed = 2 * self.per_output_frame(lambda layer: layer.executed_macs())
    aux["flops_executed"] = jnp.where(valid, executed.astype(jnp.float32), 0.0)
    return EncoderOutput(x, lengths, flops, self.frame_seconds, aux), new_state

  def run_layers(self, state: list, x: jax.Array, lengths: jax.Array, ctx: Context,
                 cell_inputs=None) -> tuple[jax.Array, jax.Array, list, dict]:
    """The stack over stacked frames `x [B, T, D]` -> (frames `[B, T', H]`, their lengths, the
    layers' new states, aux). `cell_inputs(layer, x, ctx)`: each layer's per-frame cell
    inputs where the caller makes them (a routed stack binds each frame's routing to them);
    default the layer's own `inputs`."""
    new_state, aux = [], {}
    dropout = ctx.train and self.cfg.dropout > 0 and ctx.rng is not None
    cells = []
    for i, (layer, s) in enumerate(zip(self.layers, state)):
      if i and i == self.reduce_after:
        aux = {"pre_reduction": x, "pre_reduction_lengths": lengths}
        x, lengths = stack_frames(x, lengths, self.reduce)
      # Layer i's frames run with ctx.fold(i, t); its dropout draws from ctx.key(i) itself.
      layer_ctx = ctx.fold(i)
      inputs = None if cell_inputs is None else cell_inputs(layer, x, layer_ctx)
      with jax.named_scope(f"lstm{i}"):    # names the layer in profiles
        x, s, cell_aux = scan_cell(layer, x, lengths, s, layer_ctx, inputs)
      cells.append(cell_aux)
      if self.norms:
        # LayerNorm maps a zero (padded) frame to its bias: mask it again, or padding would
        # enter the next time reduction and the result would depend on the bucket.
        x = mask_padding(self.norms[i](x), lengths)
      if dropout and i < len(self.layers) - 1:
        keep = jax.random.bernoulli(ctx.key(i), 1 - self.cfg.dropout, x.shape)
        x = jnp.where(keep, x / (1 - self.cfg.dropout), 0.0)
      new_state.append(s)
    if any(cells):    # what the layers' cells report per frame (a routed cell's choices)
      aux["cells"] = cells
    return x, lengths, new_state, aux

  def __call__(self, features: jax.Array, lengths: jax.Array,
               ctx: Context = Context()) -> EncoderOutput:
    out, _ = self.step(self.init_state(features.shape[0]), features, lengths, ctx)
    return out
