"""The amortized branching encoder (`model.encoder = "amnet"`): an LSTM stack in two versions,
full and cheap, and a small arbitrator that sends each frame to one of them (Macoskey, Strimel,
Su and Rastrow, "Amortized Neural Networks for Low-Latency Speech Recognition", Interspeech
2021).

Design (the paper leaves it open for a recurrent encoder; ours):

- Branches share the recurrent state. Every layer is a `RoutedLSTM`: the full layer's matrices
  (`input`, `recurrent`: the paths of a plain `asr.models.lstm.LSTM`, so a trained LSTM's
  weights load into it unchanged) and a cheap version of them (`cheap_input`,
  `cheap_recurrent`: the same shapes, to be pruned by `compression.sparsity` or replaced by
  factors by `compression.factorization`), both reading and writing one `(h, c)`. With hard
  routing exactly one cell runs per frame and the state always advances, whichever ran.
- One decision per output frame, for the whole stack: below a time reduction both input frames
  of an output frame go to the branch chosen for it. The arbitrator sees the output frame's
  stacked features (`stack * reduce` feature frames) and the backlog: the seconds of work still
  queued on the processor when the frame arrives, `relu(d_{t-1} - hop)` in the recursion of
  `asr.losses.latency`, estimated from the costs of the frames routed before it on a processor
  of `backlog_flops_per_second` (0: no backlog input). Its logits are
  `out(tanh(hidden(features))) + backlog_weight * backlog / hop`.
- Training mixes the branches' new states per frame by Gumbel-softmax weights
  `softmax((logits + s g) / temperature)`, the Gumbel noise `g` from the step's key (folded
  apart from dropout's), the temperature the schedule `arbitrator_temperature` (or the config's
  constant), the noise's scale `s` the schedule `arbitrator_noise` (default 1); annealed from
  about 70/30 splits to 99.99/0.01, the mixture becomes the routing. Noise at a low temperature
  samples a route per frame, where evaluation takes the argmax: an arbitrator that is not sure
  (0.7 for the cheap branch) is sampled full 30% of the time in training and never in
  evaluation, so annealing the noise away too makes the last steps train the routes evaluation
  takes. Without
  `ctx.train` (evaluation, streaming) the routing is hard: the arbitrator's argmax, one-hot, so
  the output is the chosen branch's exactly. (Both branches are computed and one is kept: an
  emulation; the cost below charges the chosen one only.)

Cost: `flops [B, T']` is each frame's branch, weighted by its routing (one-hot at inference:
the chosen branch), plus the arbitrator's; `aux["flops_executed"]` the same on non-zero
weights only, what a processor that skips zeros spends (a pruned cheap branch is cheaper only
there). Also in `aux`: `routing [B, T', 2]` (full, cheap), `route_logits`, `backlog` (seconds)
and `fast [B, T']` (the cheap branch's weight: its mean over valid frames is the
`fast_fraction` evaluation reports).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from asr.arrays import length_mask
from asr.features import FeatureConfig, stack_frames
from asr.models.context import Context
from asr.models.dense import Dense, executed_macs
from asr.models.encoder import EncoderOutput, register_encoder
from asr.models.lstm import LSTM, LSTMState, _forget_gate_bias, _gates, scan_cell
from asr.models.lstm_encoder import LSTMEncoder, LSTMEncoderConfig

ROUTES = ("learned", "full", "cheap")
FULL, CHEAP = 0, 1
# The key the Gumbel noise draws from: ctx.key(ROUTING_KEY), far from the layers' dropout keys
# (ctx.key(i) for layer i).
ROUTING_KEY = 1 << 16


@dataclasses.dataclass(frozen=True)
class AmNetConfig(LSTMEncoderConfig):
  arbitrator_hidden: int = 32        # the arbitrator's hidden units
  temperature: float = 1.0           # Gumbel-softmax temperature without a schedule
  # The processor the arbitrator's backlog estimate assumes (0: no backlog input), and whether
  # it skips zero weights (a pruned cheap branch then costs its non-zero weights).
  backlog_flops_per_second: float = 0.0
  backlog_zero_skipping: bool = False
  route: str = "learned"             # or "full" / "cheap": every frame to one branch


class RoutedLSTM(LSTM):
  """An LSTM layer in two versions sharing one state: the full one (`input`, `recurrent`) and
  a cheap one (`cheap_input`, `cheap_recurrent`). Its per-frame input carries the frame's
  routing weights `[B, 2]` (full, cheap); the new state is their mixture of the two cells'
  (one-hot weights: the chosen cell's, exactly)."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    super().__init__(in_dim, hidden, rngs=rngs)
    self.cheap_input = Dense(in_dim, 4 * hidden, bias_init=_forget_gate_bias, rngs=rngs)
    self.cheap_recurrent = Dense(hidden, 4 * hidden, use_bias=False, input_bound=1.0,
                                 kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

  def branch_macs(self) -> tuple[int, int]:
    """Multiply-accumulates per frame of the full and of the cheap cell."""
    return (self.input.macs() + self.recurrent.macs(),
            self.cheap_input.macs() + self.cheap_recurrent.macs())

  def branch_executed_macs(self) -> tuple[jax.Array, jax.Array]:
    """`branch_macs` on non-zero weights only (traced)."""
    return (executed_macs(self.input) + executed_macs(self.recurrent),
            executed_macs(self.cheap_input) + executed_macs(self.cheap_recurrent))

  def inputs(self, x: jax.Array, route: jax.Array, ctx: Context = Context()):
    """`x [B, T, D]`, routing weights `route [B, T, 2]` -> every frame's input gates of both
    versions `[B, T, 4H]` and its weights: one product each before the scan."""
    return self.input(x), self.cheap_input(x), route

  def __call__(self, x: jax.Array, lengths: jax.Array, state: LSTMState | None = None,
               ctx: Context = Context(), route: jax.Array | None = None):
    """`x [B, T, D]`, `lengths [B]`, `route [B, T, 2]` (each frame's weights) -> `y [B, T, H]`,
    new state."""
    if route is None:
      raise ValueError("a RoutedLSTM runs each frame on its routing weights: give route "
                       "[B, T, 2] (full, cheap)")
    y, state, _ = scan_cell(self, x, lengths, state, ctx, self.inputs(x, route, ctx))
    return y, state

  def cell(self, carry: LSTMState, inputs_t, ctx: Context = Context()):
    """One frame: (full gates, cheap gates `[B, 4H]`, weights `[B, 2]`) -> (new state, h,
    aux: `recurrent_input`, the state h both recurrent products read, so an integer
    executor can calibrate what a factored recurrent matrix makes of it)."""
    g_full, g_cheap, w = inputs_t
    h_f, c_f, _ = _gates(g_full + self.recurrent(carry.h), carry.c)
    h_c, c_c, _ = _gates(g_cheap + self.cheap_recurrent(carry.h), carry.c)
    w_f, w_c = w[:, FULL:FULL + 1], w[:, CHEAP:CHEAP + 1]
    h = w_f * h_f + w_c * h_c
    return LSTMState(h, w_f * c_f + w_c * c_c), h, {"recurrent_input": carry.h}


class Arbitrator(nnx.Module):
  """Per output frame: stacked features `[B, T, D]` -> the frame's part of the routing logits
  `[B, T, 2]` (`out(tanh(hidden(x)))`); the backlog's part is `backlog_weight [2]` times the
  queued work in frames."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.hidden = Dense(in_dim, hidden, rngs=rngs)
    self.out = Dense(hidden, 2, rngs=rngs)
    self.backlog_weight = nnx.Param(jnp.zeros((2,)))

  def macs(self) -> int:
    """Multiply-accumulates per output frame (the backlog's two products included)."""
    return self.hidden.macs() + self.out.macs() + 2

  def frame_logits(self, x: jax.Array) -> jax.Array:
    return self.out(jnp.tanh(self.hidden(x)))


@register_encoder("amnet", AmNetConfig)
class AmNetEncoder(LSTMEncoder):
  """`LSTMEncoder`'s stack of `RoutedLSTM` layers and an `Arbitrator`. Streams like it; the
  state also carries the backlog estimate, so a streamed utterance routes as a whole one."""

  layer_class = RoutedLSTM

  def __init__(self, num_mels: int, cfg: AmNetConfig, *,
               input_frame_seconds: float = FeatureConfig().hop_seconds, rngs: nnx.Rngs):
    if cfg.route not in ROUTES:
      raise ValueError(f"model.amnet.route={cfg.route!r} is not one of {', '.join(ROUTES)}")
    if cfg.temperature <= 0 or cfg.backlog_flops_per_second < 0:
      raise ValueError(f"model.amnet: temperature ({cfg.temperature}) must be positive and "
                       f"backlog_flops_per_second ({cfg.backlog_flops_per_second}) at least 0")
    super().__init__(num_mels, cfg, input_frame_seconds=input_frame_seconds, rngs=rngs)
    self.arbitrator = Arbitrator(num_mels * cfg.stack * cfg.reduce, cfg.arbitrator_hidden,
                                 rngs=rngs)

  def branch_flops(self) -> jax.Array:
    """FLOPs per output frame of the full and of the cheap stack, `[2]` (dense counts)."""
    return jnp.asarray([2.0 * self.per_output_frame(lambda l: l.branch_macs()[k])
                        for k in (FULL, CHEAP)])

  def branch_flops_executed(self) -> jax.Array:
    """`branch_flops` on non-zero weights only, `[2]` (traced)."""
    return jnp.stack([2.0 * self.per_output_frame(lambda l: l.branch_executed_macs()[k])
                      for k in (FULL, CHEAP)])

  def arbitrator_flops(self) -> float:
    return 2.0 * self.arbitrator.macs()

  def flops_per_frame(self) -> int:
    """The full branch's and the arbitrator's: the most a frame costs."""
    return int(self.branch_flops()[FULL]) + int(self.arbitrator_flops())

  def init_state(self, batch: int) -> dict:
    return {"backlog": jnp.zeros((batch,)), "layers": super().init_state(batch)}

  def route(self, x: jax.Array, lengths: jax.Array, backlog: jax.Array, ctx: Context):
    """Stacked frames `x [B, T, D]` -> (routing weights `[B, T', 2]` per output frame, the
    logits, the backlog each frame met (seconds), the backlog after the last frame `[B]`)."""
    cfg = self.cfg
    feats, out_lengths = stack_frames(x, lengths, self.reduce)
    valid = length_mask(out_lengths, feats.shape[1])
    base = self.arbitrator.frame_logits(feats)                              # [B, T', 2]
    soft = ctx.train and ctx.rng is not None and cfg.route == "learned"
    if soft:
      temperature = ctx.schedules.get("arbitrator_temperature", cfg.temperature)
      noise = jax.random.gumbel(ctx.key(ROUTING_KEY), base.shape) * ctx.schedules.get(
          "arbitrator_noise", 1.0)
    else:
      temperature, noise = 1.0, jnp.zeros_like(base)
    forced = {"full": FULL, "cheap": CHEAP}.get(cfg.route)
    costs = (self.branch_flops_executed() if cfg.backlog_zero_skipping
             else self.branch_flops())
    fps, hop = cfg.backlog_flops_per_second, self.frame_seconds
    weight = self.arbitrator.backlog_weight[...]

    def frame(d, per_frame):
      base_t, noise_t, valid_t = per_frame
      queued = jax.nn.relu(d - hop) if fps else jnp.zeros_like(d)
      logits = base_t + weight * (queued / hop)[:, None]
      if forced is not None:
        w = jnp.zeros_like(logits).at[:, forced].set(1.0)
      elif soft:
        w = jax.nn.softmax((logits + noise_t) / temperature, axis=-1)
      else:
        w = jax.nn.one_hot(jnp.argmax(logits, axis=-1), 2, dtype=logits.dtype)
      w = jnp.where(valid_t[:, None], w, 0.0)
      if fps:
        cost = (w @ costs + self.arbitrator_flops()) / fps
        d = jnp.where(valid_t, queued + cost, d)
      return d, (w, logits, queued)

    time_major = jax.tree.map(lambda v: v.swapaxes(0, 1), (base, noise, valid))
    backlog, (w, logits, queued) = jax.lax.scan(frame, backlog, time_major)
    swap = lambda v: v.swapaxes(0, 1)
    return swap(w), swap(logits), swap(queued), backlog

  def step(self, state: dict, features: jax.Array, lengths: jax.Array,
           ctx: Context = Context()) -> tuple[EncoderOutput, dict]:
    """`features [B, C, F]` (normalized), `lengths [B]` -> this chunk's output, new state."""
    x, lengths = stack_frames(features, lengths, self.stack)
    with jax.named_scope("arbitrator"):
      w, logits, queued, backlog = self.route(x, lengths, state["backlog"], ctx)
    # Each layer's frames take their output frame's weights: below the time reduction, both
    # input frames of an output frame.
    at_rate = {w.shape[1]: w,
               x.shape[1]: jnp.repeat(w, self.reduce, axis=1)[:, :x.shape[1]]}
    x, lengths, layers, aux = self.run_layers(
        state["layers"], x, lengths, ctx,
        cell_inputs=lambda layer, y, c: layer.inputs(y, at_rate[y.shape[1]], c))
    arbitrator = self.arbitrator_flops() * length_mask(lengths, x.shape[1])
    dense, executed = self.branch_flops(), self.branch_flops_executed()
    aux.update(routing=w, route_logits=logits, backlog=queued, fast=w[..., CHEAP],
               flops_executed=w @ executed + arbitrator)
    out = EncoderOutput(x, lengths, w @ dense + arbitrator, self.frame_seconds, aux)
    return out, {"backlog": backlog, "layers": layers}
