"""A trained transducer in integer form, and greedy search run as the int8 processor would.

`convert(model, scales)` turns an `asr.models.Transducer` into an `IntTransducer` of
`hardware.int8_layers`; `scales` are the int8 scales of the activations that are not bounded by
construction, from `calibrate` (the largest magnitude seen at each layer's input on a few
training batches, over valid frames only). This module is the container; each encoder family
converts in its own module, registered by the family's name (`hardware.int8_families`):
`hardware.int8_lstm`, `hardware.int8_transformer` (Transformer and Conformer). What runs where:

- the front end (log-mel features, causal normalization) stays float, on the device's DSP;
  the normalized features enter the processor as int8 at a calibrated scale (stacked, for an
  LSTM encoder; padded to a whole streamed chunk, for a Transformer);
- the encoder: its family's integer layers;
- the joint: the encoder and prediction projections to Q3.12, their sum's tanh by table
  (Q0.15, then Q0.7 int8), the output layer to logits in Q7.8 int16 (a common scale for every
  output, so the argmax of the integers is the argmax of the logits);
- the prediction network: an int8 embedding table (one scale), then the LSTM layer, or the
  stateless network's projection and tanh table;
- greedy and beam search: `asr.decoding`'s own, through `DecodingView` (greedy takes the argmax
  of the integer logits; beam search scores their log-softmax in float).

Layers this executor cannot run (a factorized layer, say) fail `convert` with their name.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr.arrays import length_mask
from asr.decoding.beam import beam_decode
from asr.decoding.greedy import greedy_decode
from asr.models.context import Context
from asr.models.dense import Dense, intercept_dense
from hardware import fixed_point as fp
from hardware import int8_amnet, int8_lstm, int8_transformer  # noqa: F401  (register them)
from hardware.int8_families import int8_family
from hardware.int8_layers import (GATE_FRAC, H_FRAC, IntDense, dense_arrays,
                                  quantize_activation_scale, scan_int_cell, tanh_to_int8)

LOGIT_FRAC = 8     # logits in Q7.8 int16


def dense_names(model) -> dict[int, str]:
  """`{id(layer): name}` of every `Dense` of the model; anything else that holds a kernel is
  refused by `convert`."""
  return {id(node): "/".join(str(p) for p in path)
          for path, node in nnx.iter_graph(model) if isinstance(node, Dense)}


def calibrate(model, feature_batches) -> dict[str, float]:
  """The largest input magnitude of each dense layer called outside a scan (the LSTM input
  matrices, every product of a Transformer, the joint's encoder projection), over
  `feature_batches` of `(log-mel [B, T, F], lengths [B])`, run through the float model:
  `{layer name: max |x|}` over valid frames only, so the scales do not depend on how the
  batches were padded (a LayerNorm maps a padded frame to its bias, which can be the largest
  value of a tensor). The encoder's family adds what its integer form needs (a Transformer:
  `<name>/output`, the product before SiLU; `<qkv>/q`, `/k`, `/v`), and `encoder/residual` is
  the residual stream's, which the float encoder's blocks hand to the call context's `observe`
  after every unit. Layers that carry a trained range (`act_range`, activation-quantized
  training) give that range instead."""
  family = int8_family(model.cfg.encoder)
  graphdef, variables = nnx.split(model)

  @jax.jit
  def maxima(variables, feats, lengths) -> dict[str, jax.Array]:
    """`{name: max |x| over valid frames}` of one batch: the model's pass, compiled once per
    batch shape (run op by op, each new shape compiled every operation anew: 3x slower)."""
    model = nnx.merge(graphdef, variables)
    names = dense_names(model)
    out: dict[str, jax.Array] = {}
    valid = {frames: length_mask(at_rate, frames) for frames, at_rate
             in family.stage_lengths(model.encoder, feats.shape[1], lengths).items()}

    def note(name, values):
      if values.shape[1] not in valid:
        raise ValueError(f"calibration: {name} has {values.shape[1]} frames, a frame rate of "
                         f"none of the encoder's stages ({sorted(valid)})")
      top = jnp.max(jnp.where(valid[values.shape[1]][..., None], jnp.abs(values), 0.0))
      out[name] = jnp.maximum(out[name], top) if name in out else top

    def observe(layer, x, apply):
      y = apply(x)
      # A product over frames, `[B, T, D]`; one inside a scan sees a frame, `[B, D]` (an LSTM's
      # recurrent matrix, whose input is bounded by construction): no range needed.
      if x.ndim == 3:
        name = names[id(layer)]
        note(name, x)
        family.note_output(name, y, note)
      return y

    ctx = Context(observe=lambda name, x: note("encoder/residual", x))
    with intercept_dense(observe):
      encoded = model.encode(feats, lengths, ctx)
      if family.note_encoded is not None:
        family.note_encoded(model.encoder, encoded, note)
      t = encoded.frames.shape[1]
      valid[t] = length_mask(encoded.lengths, t)    # the frames the encoder hands the joint
      model.joint.project_encoder(encoded.frames)
    return out

  seen: dict[str, float] = {}
  for feats, lengths in feature_batches:
    for name, top in maxima(variables, jnp.asarray(feats), jnp.asarray(lengths)).items():
      seen[name] = max(seen.get(name, 0.0), float(top))
  # A model trained with its activations on an 8-bit grid (`compression.quantization`'s
  # `act_range`, a moving average of the largest input) runs on the grid it trained with.
  for path, node in nnx.iter_graph(model):
    name = "/".join(str(p) for p in path)
    trained = getattr(node, "act_range", None)
    if (name in seen and trained is not None and not getattr(node, "bounded", False)
        and float(trained[...]) > 0):                     # 0: never seen in training
      seen[name] = float(trained[...])
  return seen


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntTransducer:
  in_scale: float = dataclasses.field(metadata=dict(static=True))
  predictor_kind: str = dataclasses.field(metadata=dict(static=True))
  context: int = dataclasses.field(metadata=dict(static=True))
  encoder: object                 # IntLSTMEncoder or IntTransformerEncoder
  enc_proj: IntDense
  embed: jax.Array                # [V, E] int8
  pred: object                    # an integer cell (lstm) or IntDense (stateless, to Q3.12)
  pred_proj: IntDense             # Q0.7 -> Q3.12
  out: IntDense                   # Q0.7 -> logits Q7.8 int16

  # ---- encoder ----

  def prepare(self, features: jax.Array, lengths: jax.Array):
    """Normalized float log-mels `[B, T, F]` -> the encoder's int8 input, lengths."""
    return self.encoder.prepare(features, lengths, self.in_scale)

  def encode(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The encoder's int8 input (`prepare`) -> int8 encoder frames `[B, T'', H]` at the
    enc_proj's input scale, and their lengths."""
    return self.encoder.encode(x, lengths)

  # ---- prediction network and joint ----

  def init_pred(self, batch: int):
    if self.predictor_kind == "lstm":
      return self.pred.init_state(batch)
    return jnp.zeros((batch, self.context), jnp.int32)

  def pred_step(self, state, tokens: jax.Array):
    """One token per row -> (the prediction network's output `[B, P]` Q0.7, new state)."""
    if self.predictor_kind == "lstm":
      x = jnp.take(self.embed, tokens, axis=0)[:, None, :]
      y, state, _ = scan_int_cell(self.pred, x, jnp.ones(tokens.shape[0], jnp.int32), state)
      return y[:, 0], state
    state = jnp.concatenate([state[:, 1:], tokens[:, None]], axis=1)
    e = jnp.take(self.embed, state, axis=0).reshape(tokens.shape[0], -1)
    return tanh_to_int8(self.pred.apply(e)), state

  def logits(self, enc_p: jax.Array, pred_p: jax.Array) -> jax.Array:
    """Projected (Q3.12) encoder frame and prediction -> logits `[..., V]` Q7.8."""
    return self.out.apply(tanh_to_int8(fp.saturate(enc_p + pred_p, 16)))


class DecodingView:
  """An `IntTransducer` behind the float transducer's decoding interface, so
  `asr.decoding`'s greedy and beam searches run it unchanged: every projection and the joint
  are integer; `joint.single` hands the search the Q7.8 logits as reals (their argmax is the
  integers' argmax; beam search's log-softmax and scores run in float, on the host side of the
  processor)."""

  def __init__(self, model: IntTransducer):
    self.joint, self.predictor = _JointView(model), _PredictorView(model)


class _JointView:
  def __init__(self, m):
    self.m = m

  def project_encoder(self, frames):
    return self.m.enc_proj.apply(frames)

  def project_prediction(self, out):
    return self.m.pred_proj.apply(out)

  def single(self, enc_p, pred_p):
    return self.m.logits(enc_p, pred_p).astype(jnp.float32) * 2.0 ** -LOGIT_FRAC


class _PredictorView:
  def __init__(self, m):
    self.m = m

  def init_state(self, batch: int):
    return self.m.init_pred(batch)

  def step(self, state, tokens):
    return self.m.pred_step(state, tokens)


def convert(model, scales: dict[str, float]) -> IntTransducer:
  """The float `model` in integers, with the calibrated input `scales` (`calibrate`)."""
  cfg = model.cfg
  encoder, in_scale, s_enc = int8_family(cfg.encoder).convert_encoder(model.encoder, scales)
  q316 = 2.0 ** -GATE_FRAC
  j = model.joint
  enc_proj = IntDense.from_float(*dense_arrays(j.enc_proj, "joint/enc_proj"), s_enc, q316, 16,
                                 name="joint/enc_proj")
  pred_proj = IntDense.from_float(*dense_arrays(j.pred_proj, "joint/pred_proj"),
                                  2.0 ** -H_FRAC, q316, 16, name="joint/pred_proj")
  out = IntDense.from_float(*dense_arrays(j.out, "joint/out"), 2.0 ** -H_FRAC,
                            2.0 ** -LOGIT_FRAC, 16, name="joint/out")
  p = model.predictor
  table = np.asarray(p.embed.embedding[...])
  s_e = quantize_activation_scale(np.abs(table).max())
  embed = np.clip(np.round(table / s_e), -127, 127).astype(np.int8)
  if cfg.predictor == "lstm":
    # The prediction network's layer is the encoder's LSTM class: the same cell converter.
    pred = int8_lstm.int_cell(p.lstm, "predictor/lstm", s_e)
    context = 0
  else:
    pred = IntDense.from_float(*dense_arrays(p.proj, "predictor/proj"), s_e, q316, out_bits=16,
                               name="predictor/proj")
    context = p.context
  return IntTransducer(in_scale, cfg.predictor, context, encoder, enc_proj, embed, pred,
                       pred_proj, out)


def greedy(model: IntTransducer, frames: jax.Array, frame_lengths: jax.Array,
           max_symbols: int, max_len: int):
  """Greedy search over int8 encoder frames -> tokens `[B, L]`, lengths `[B]`, labels emitted
  per frame `[B, T]` (`asr.decoding.greedy_decode` on the integer model)."""
  return greedy_decode(DecodingView(model), frames, frame_lengths, max_symbols, max_len)


def beam(model: IntTransducer, frames: jax.Array, frame_lengths: jax.Array, beam: int,
         max_symbols: int, max_len: int):
  """Beam search over int8 encoder frames -> n-best tokens `[B, K, L]`, lengths `[B, K]`,
  scores `[B, K]` (`asr.decoding.beam_decode` on the integer model)."""
  return beam_decode(DecodingView(model), frames, frame_lengths, beam=beam,
                     max_symbols=max_symbols, max_len=max_len)
