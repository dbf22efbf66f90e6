"""The amortized branching encoder (`asr.models.amnet`) in integers: the arbitrator, the backlog
it reads, and the routed LSTM layers, hard routing per output frame. Registered as the `amnet`
family of `hardware.int8_families`; `hardware.int8_reference.amnet_encoder` computes the same
with Python integers.

- The arbitrator: the output frame's int8 stacked features (the encoder's input scale) through
  its hidden product to Q3.12, tanh by table to Q0.7, its output product to logits in Q7.8
  int16 (`LOGIT_FRAC`), plus the backlog's part: `backlog_weight` in Q7.8 times the queued
  frames in Q24.8, rounded.
- The backlog is the processor's own count of work, in MACs (int64): `d_t = max(d_{t-1} -
  M_hop, 0) + cost_t`, `M_hop` the MACs the processor does in one output frame's hop
  (`backlog_flops_per_second` of the float encoder), `cost_t` the frame's branch and the
  arbitrator (MACs on non-zero weights where the float encoder's backlog assumes zero
  skipping). Queued frames `((d_{t-1} - M_hop)^+ << 8) // M_hop`.
- The cheap branch chosen where its logit is larger (ties: the full branch, as `argmax`).
  Each layer computes both cells and keeps the chosen one's state (the same arithmetic as
  running only it); the work counted is the chosen branch's (`frame_macs`).
- A cheap branch pruned is an `IntLSTM` with zeros; factored (`LowRankDense`) an
  `IntLowRankLSTM`, its inner products `x @ U` and `h @ U'` at scales calibrated on the float
  model (`h @ U'` from the states the float cells report, `note_encoded`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from asr.arrays import length_mask
from hardware import fixed_point as fp
from hardware.int8_families import register_int8_family
from hardware.int8_layers import (GATE_FRAC, H_FRAC, IntDense, IntLayerNorm, IntLowRankLSTM,
                                  IntLSTM, calibrated_scale, dense_arrays, scan_int_cell,
                                  tanh_to_int8)
from hardware.int8_lstm import IntLSTMEncoder, _stack, stage_lengths

LOGIT_FRAC = 8      # the arbitrator's logits, Q7.8 int16
QUEUE_FRAC = 8      # queued frames, Q24.8


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntRoutedLSTM:
  """`asr.models.amnet.RoutedLSTM` in integers: two integer LSTM layers sharing one state; a
  frame's input carries its route (1: cheap)."""
  full: IntLSTM
  cheap: object               # IntLSTM (pruned) or IntLowRankLSTM (factored)

  @property
  def hidden(self) -> int:
    return self.full.hidden

  def init_state(self, batch: int):
    return self.full.init_state(batch)

  def inputs(self, x: jax.Array, route: jax.Array):
    """int8 `x [B, T, D]`, `route [B, T]` -> both layers' input gates and the route."""
    return self.full.inputs(x), self.cheap.inputs(x), route

  def cell(self, carry, inputs_t):
    g_full, g_cheap, route = inputs_t
    full, h_full, _ = self.full.cell(carry, g_full)
    cheap, h_cheap, _ = self.cheap.cell(carry, g_cheap)
    pick = lambda c, f: jnp.where(route[:, None] == 1, c, f)
    return jax.tree.map(pick, cheap, full), pick(h_cheap, h_full), {}

  def branch_macs(self, executed: bool = False) -> tuple[int, int]:
    return self.full.macs(executed), self.cheap.macs(executed)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntArbitrator:
  hidden: IntDense            # stacked features -> Q3.12
  out: IntDense               # Q0.7 -> logits Q7.8
  backlog_weight: jax.Array   # [2] int64, Q7.8 per queued frame

  def frame_logits(self, feats: jax.Array) -> jax.Array:
    """int8 stacked features `[B, T, D]` -> the frames' logits `[B, T, 2]` (Q7.8)."""
    return self.out.apply(tanh_to_int8(self.hidden.apply(feats)))

  def macs(self) -> int:
    """As the float arbitrator counts them: both products and the backlog's two."""
    return int(np.prod(self.hidden.kernel.shape) + np.prod(self.out.kernel.shape)) + 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntAmNetEncoder(IntLSTMEncoder):
  """`asr.models.amnet.AmNetEncoder` in integers: `IntLSTMEncoder`'s stack of `IntRoutedLSTM`
  layers, routed per output frame by an `IntArbitrator` that reads the backlog."""
  arbitrator: IntArbitrator = None
  macs_per_hop: int = dataclasses.field(default=0, metadata=dict(static=True))   # 0: none
  # What the backlog charges a frame routed to the full and to the cheap branch (MACs, the
  # arbitrator's included; on non-zero weights where the float encoder assumes zero skipping).
  costs: tuple = dataclasses.field(default=(0, 0), metadata=dict(static=True))

  def branch_macs(self, executed: bool = False) -> tuple[int, int]:
    """MACs per output frame of the full and the cheap stack (`executed`: non-zero weights)."""
    per = [layer.branch_macs(executed) for layer in self.layers]
    reps = [self.reduce if i < self.reduce_after and self.reduce > 1 else 1
            for i in range(len(self.layers))]
    return tuple(sum(p[k] * r for p, r in zip(per, reps)) for k in (0, 1))

  def macs(self, executed: bool = False) -> int:
    """The most an output frame costs: the full branch and the arbitrator."""
    return self.branch_macs(executed)[0] + self.arbitrator.macs()

  def frame_macs(self, route: jax.Array, valid: jax.Array, executed: bool = False):
    """MACs of each output frame `[B, T]`: its branch (`route` 1: cheap) and the arbitrator,
    zero where not `valid`."""
    full, cheap = self.branch_macs(executed)
    return jnp.where(valid, jnp.where(route == 1, cheap, full) + self.arbitrator.macs(), 0)

  def route(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """int8 stacked features `[B, T, D]` -> each output frame's route `[B, T']` (int32, 1
    where the cheap branch runs)."""
    feats, out_lengths = _stack(x, lengths, self.reduce) if self.reduce > 1 else (x, lengths)
    valid = length_mask(out_lengths, feats.shape[1])
    base = self.arbitrator.frame_logits(feats.astype(jnp.int8)).astype(jnp.int64)
    costs = jnp.asarray(self.costs, jnp.int64)
    hop, weight = self.macs_per_hop, self.arbitrator.backlog_weight.astype(jnp.int64)

    def frame(d, per_frame):
      base_t, valid_t = per_frame
      if hop:
        queued = jnp.maximum(d - hop, 0)
        frames = (queued << QUEUE_FRAC) // hop
        logits = base_t + fp.rounding_shift(weight[None, :] * frames[:, None], QUEUE_FRAC)
      else:
        queued, logits = d, base_t
      route = (logits[:, 1] > logits[:, 0]).astype(jnp.int32)
      d = jnp.where(valid_t, queued + costs[route], d) if hop else d
      return d, jnp.where(valid_t, route, 0)

    d0 = jnp.zeros(x.shape[0], jnp.int64)
    _, route = jax.lax.scan(frame, d0, (base.swapaxes(0, 1), valid.swapaxes(0, 1)))
    return route.swapaxes(0, 1)

  def encode(self, features: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    frames, lengths, _ = self.routed_encode(features, lengths)
    return frames, lengths

  def routed_encode(self, features: jax.Array, lengths: jax.Array):
    """As `encode`, and each output frame's route `[B, T']` (1: cheap)."""
    route = self.route(features, lengths)
    x = features
    at_layer0 = jnp.repeat(route, max(self.reduce, 1), axis=1)[:, :x.shape[1]]
    for i, layer in enumerate(self.layers):
      if i and i == self.reduce_after and self.reduce > 1:
        x, lengths = _stack(x, lengths, self.reduce)
      r = route if x.shape[1] == route.shape[1] else at_layer0
      x, _, _ = scan_int_cell(layer, x, lengths, inputs=layer.inputs(x, r))
      if self.norms:
        x = jnp.where(length_mask(lengths, x.shape[1])[..., None], self.norms[i].apply(x), 0)
    return x, lengths, route


def _factored(layer) -> bool:
  """A factored layer (`x @ u @ v`: `compression.factorization.LowRankDense`)."""
  return hasattr(layer, "u") and hasattr(layer, "v")


def _branch(routed, name: str, in_scale: float, scales: dict[str, float]):
  """The cheap version of a routed float layer in integers: an `IntLSTM` (dense or pruned)
  or an `IntLowRankLSTM` (both its matrices factored)."""
  inp, rec = routed.cheap_input, routed.cheap_recurrent
  if not _factored(inp) and not _factored(rec):
    k_in, b_in = dense_arrays(inp, f"{name}/cheap_input")
    return IntLSTM.from_float(k_in, b_in, dense_arrays(rec, f"{name}/cheap_recurrent")[0],
                              in_scale, name=f"{name}/cheap")
  if not (_factored(inp) and _factored(rec)):
    raise ValueError(f"{name}: the int8 executor runs a cheap branch whose input and recurrent "
                     "matrices are both factored or neither")
  u, _ = dense_arrays(inp.u, f"{name}/cheap_input/u")
  v, b = dense_arrays(inp.v, f"{name}/cheap_input/v")
  ru, _ = dense_arrays(rec.u, f"{name}/cheap_recurrent/u")
  rv, _ = dense_arrays(rec.v, f"{name}/cheap_recurrent/v")
  return IntLowRankLSTM.from_factors(
      u, v, b, ru, rv, in_scale, calibrated_scale(scales, f"{name}/cheap_input/v"),
      calibrated_scale(scales, f"{name}/cheap_recurrent/v"), name=f"{name}/cheap")


def convert_encoder(enc, scales: dict[str, float]) -> tuple[IntAmNetEncoder, float, float]:
  """A float `AmNetEncoder` in integers (as `hardware.int8_lstm.convert_encoder`)."""
  in_scale = calibrated_scale(scales, "encoder/layers/0/input")
  out_scale = calibrated_scale(scales, "joint/enc_proj") if enc.norms else 2.0 ** -H_FRAC
  layers, norms = [], []
  for i, layer in enumerate(enc.layers):
    name = f"encoder/layers/{i}"
    s_x = in_scale if i == 0 else (calibrated_scale(scales, f"{name}/input") if enc.norms
                                   else 2.0 ** -H_FRAC)
    k_in, b_in = dense_arrays(layer.input, f"{name}/input")
    full = IntLSTM.from_float(k_in, b_in, dense_arrays(layer.recurrent, f"{name}/recurrent")[0],
                              s_x, name=name)
    layers.append(IntRoutedLSTM(full, _branch(layer, name, s_x, scales)))
    if enc.norms:
      nxt = f"encoder/layers/{i + 1}/input" if i + 1 < len(enc.layers) else "joint/enc_proj"
      norm = enc.norms[i]
      norms.append(IntLayerNorm.from_float(np.asarray(norm.scale[...]),
                                           np.asarray(norm.bias[...]),
                                           calibrated_scale(scales, nxt)))
  a = enc.arbitrator
  arbitrator = IntArbitrator(
      IntDense.from_float(*dense_arrays(a.hidden, "encoder/arbitrator/hidden"), in_scale,
                          2.0 ** -GATE_FRAC, 16, name="encoder/arbitrator/hidden"),
      IntDense.from_float(*dense_arrays(a.out, "encoder/arbitrator/out"), 2.0 ** -H_FRAC,
                          2.0 ** -LOGIT_FRAC, 16, name="encoder/arbitrator/out"),
      np.round(np.asarray(a.backlog_weight[...], np.float64) * 2 ** LOGIT_FRAC).astype(np.int64))
  cfg = enc.cfg
  hop = int(round(cfg.backlog_flops_per_second * enc.frame_seconds / 2))
  int_enc = IntAmNetEncoder(layers, norms, enc.stack, enc.reduce, enc.reduce_after, arbitrator,
                            hop)
  costs = tuple(m + arbitrator.macs() for m in int_enc.branch_macs(cfg.backlog_zero_skipping))
  return dataclasses.replace(int_enc, costs=costs), in_scale, out_scale


def note_output(name: str, y: jax.Array, note) -> None:
  """Nothing: the products' inputs are what the integer form needs."""


def note_encoded(enc, encoded, note) -> None:
  """The inner products inside the scan that calibration cannot see (a factored cheap
  recurrent matrix's `h @ U'`), from the states each routed cell reports reading."""
  for i, (layer, cells) in enumerate(zip(enc.layers, encoded.aux.get("cells", []))):
    if _factored(layer.cheap_recurrent) and "recurrent_input" in cells:
      h = cells["recurrent_input"]
      note(f"encoder/layers/{i}/cheap_recurrent/v", h @ layer.cheap_recurrent.u.kernel[...])


register_int8_family("amnet", stage_lengths=stage_lengths, note_output=note_output,
                     convert_encoder=convert_encoder, note_encoded=note_encoded)
