"""A trained LSTM transducer in integer form, and greedy search run as the int8 processor would.

`convert(model, scales)` turns an `asr.models.Transducer` (LSTM encoder, LSTM or stateless
prediction network) into an `IntTransducer` of `hardware.int8_layers`; `scales` are the int8
scales of the activations that are not bounded by construction, from `calibrate` (the largest
magnitude seen at each layer's input on a few training batches). What runs where:

- the front end (log-mel features, causal normalization) stays float, on the device's DSP;
  the normalized, stacked features enter the processor as int8 at a calibrated scale;
- the encoder: integer LSTM layers, integer layer norms (into the next layer's calibrated
  scale), frame stacking and time reduction (moving int8 values);
- the joint: the encoder and prediction projections to Q3.12, their sum's tanh by table
  (Q0.15, then Q0.7 int8), the output layer to logits in Q7.8 int16 (a common scale for every
  output, so the argmax of the integers is the argmax of the logits);
- the prediction network: an int8 embedding table (one scale), then the LSTM layer, or the
  stateless network's projection and tanh table;
- greedy and beam search: `asr.decoding`'s own, through `DecodingView` (greedy takes the argmax
  of the integer logits; beam search scores their log-softmax in float).

A Transformer encoder runs as `hardware.int8_transformer` describes (integer products, fixed-point
softmax and layer norm, SiLU by table); its input is the normalized features as int8, padded to
a whole streamed chunk. Layers this executor cannot run (a factorized layer, a Conformer's
convolution module) fail `convert` with their name.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr.arrays import mask_padding
from asr.decoding.beam import beam_decode
from asr.decoding.greedy import greedy_decode
from asr.models.dense import Dense, intercept_dense
from hardware import fixed_point as fp
from hardware.int8_layers import (ACT_FRAC, GATE_FRAC, H_FRAC, TANH, IntDense, IntLayerNorm,
                                  IntLSTM, quantize, quantize_activation_scale, table_index)
from hardware.int8_transformer import convert_encoder

LOGIT_FRAC = 8     # logits in Q7.8 int16


def _kernel(layer, name: str):
  """A dense layer's (kernel, bias); any other layer in its place is refused by name."""
  if not isinstance(layer, Dense):
    raise ValueError(f"the int8 executor cannot run layer {name!r} ({type(layer).__name__}): "
                     "it runs dense layers")
  return np.asarray(layer.kernel[...]), None if layer.bias is None else np.asarray(layer.bias[...])


def dense_names(model) -> dict[int, str]:
  """`{id(layer): name}` of every `Dense` of the model; anything else that holds a kernel is
  refused by `convert`."""
  return {id(node): "/".join(str(p) for p in path)
          for path, node in nnx.iter_graph(model) if isinstance(node, Dense)}


def calibrate(model, feature_batches) -> dict[str, float]:
  """The largest input magnitude of each dense layer called outside a scan (the LSTM input
  matrices, every product of a Transformer, the joint's encoder projection), over
  `feature_batches` of `(log-mel [B, T, F], lengths [B])`, run eagerly through the float model:
  `{layer name: max |x|}` over valid frames (padding is zero, so it never raises a maximum).
  A Transformer adds what its integer form needs: `<name>/output` (the product before SiLU),
  `<qkv>/q`, `/k`, `/v`, and `encoder/residual` (between blocks). Layers that carry a trained
  range (`act_range`, activation-quantized training) give that range instead."""
  names = dense_names(model)
  seen: dict[str, float] = {}
  transformer = model.cfg.encoder in ("transformer", "conformer")

  def note(name, values):
    seen[name] = max(seen.get(name, 0.0), float(jnp.max(jnp.abs(values))))

  def observe(layer, x, apply):
    y = apply(x)
    if not isinstance(x, jax.core.Tracer):     # inside a scan (recurrent matrices): not needed
      name = names[id(layer)]
      note(name, x)
      if transformer and name.endswith("/qkv"):
        for part, values in zip("qkv", jnp.split(y, 3, axis=-1)):
          note(f"{name}/{part}", values)
      elif transformer and name.endswith("/pointwise_in"):     # a GLU's values, not its gates
        note(f"{name}/values", jnp.split(y, 2, axis=-1)[0])
      elif transformer and name.startswith("encoder/"):
        note(f"{name}/output", y)
    return y

  with intercept_dense(observe):
    for feats, lengths in feature_batches:
      feats, lengths = jnp.asarray(feats), jnp.asarray(lengths)
      if transformer:
        frames = _transformer_frames(model, feats, lengths, note)
      else:
        frames = model.encode(feats, lengths).frames
      model.joint.project_encoder(frames)
  # A model trained with its activations on an 8-bit grid (`compression.quantization`'s
  # `act_range`, a moving average of the largest input) runs on the grid it trained with.
  for path, node in nnx.iter_graph(model):
    name = "/".join(str(p) for p in path)
    trained = getattr(node, "act_range", None)
    if (name in seen and trained is not None and not getattr(node, "bounded", False)
        and float(trained[...]) > 0):                     # 0: never seen in training
      seen[name] = float(trained[...])
  return seen


def _transformer_frames(model, feats, lengths, note):
  """The float Transformer or Conformer encoder's frames on whole utterances, sub-block by
  sub-block (as `TransformerEncoder.step` and `Block.__call__` compose them), noting the
  residual stream's largest magnitude on valid frames after each sub-block."""
  enc = model.encoder
  x = model.frontend(feats, lengths)
  x = jnp.pad(x, ((0, 0), (0, -x.shape[1] % enc.stream_multiple), (0, 0)))
  state = enc.init_state(x.shape[0])
  for layer, cache in zip(enc.subsampling, state.subsample):
    x, lengths, _ = layer(cache, x, lengths)
  residual = lambda v: note("encoder/residual", mask_padding(v, lengths))
  residual(x)
  positions = jnp.broadcast_to(jnp.arange(x.shape[1])[None], x.shape[:2])
  for block, cache in zip(enc.blocks, state.layers):
    if block.conformer:
      x = x + 0.5 * block.ffn1(x)
      residual(x)
    y, _, _ = block.attention(x, lengths, positions, (cache.keys, cache.values, cache.valid))
    x = x + y
    residual(x)
    if block.conformer:
      x = x + block.conv(x, cache.conv)[0]
      residual(x)
      x = x + 0.5 * block.ffn2(x)
      residual(x)
      x = block.norm(x)
    else:
      x = x + block.ffn(x)
    x = mask_padding(x, lengths)
    residual(x)
  return x if enc.final_norm is None else mask_padding(enc.final_norm(x), lengths)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntLSTMEncoder:
  """`asr.models.lstm_encoder.LSTMEncoder` in integers: LSTM layers, layer norms, stacking."""
  layers: list                    # [IntLSTM]
  norms: list                     # [IntLayerNorm], or none
  stack: int = dataclasses.field(metadata=dict(static=True))
  reduce: int = dataclasses.field(metadata=dict(static=True))
  reduce_after: int = dataclasses.field(metadata=dict(static=True))

  def prepare(self, features: jax.Array, lengths: jax.Array, scale: float):
    """Normalized float log-mels `[B, T, F]` -> int8 stacked frames, lengths."""
    return quantize_features(features, lengths, self.stack, scale)

  def encode(self, features: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int8 stacked features `[B, T', F * stack]` (`prepare`) -> int8 encoder frames
    `[B, T'', H]` at the enc_proj's input scale, and their lengths."""
    x = features
    for i, layer in enumerate(self.layers):
      if i and i == self.reduce_after and self.reduce > 1:
        x, lengths = _stack(x, lengths, self.reduce)
      x, _ = layer.apply(x, lengths)
      if self.norms:
        x = self.norms[i].apply(x)
        x = mask_padding(x, lengths, 0)
    return x, lengths


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntTransducer:
  in_scale: float = dataclasses.field(metadata=dict(static=True))
  predictor_kind: str = dataclasses.field(metadata=dict(static=True))
  context: int = dataclasses.field(metadata=dict(static=True))
  encoder: object                 # IntLSTMEncoder or IntTransformerEncoder
  enc_proj: IntDense
  embed: jax.Array                # [V, E] int8
  pred: object                    # IntLSTM (lstm) or IntDense (stateless, to Q3.12)
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
      y, state = self.pred.apply(x, jnp.ones(tokens.shape[0], jnp.int32), state)
      return y[:, 0], state
    state = jnp.concatenate([state[:, 1:], tokens[:, None]], axis=1)
    e = jnp.take(self.embed, state, axis=0).reshape(tokens.shape[0], -1)
    return _tanh_to_int8(self.pred.apply(e)), state

  def logits(self, enc_p: jax.Array, pred_p: jax.Array) -> jax.Array:
    """Projected (Q3.12) encoder frame and prediction -> logits `[..., V]` Q7.8."""
    return self.out.apply(_tanh_to_int8(fp.saturate(enc_p + pred_p, 16)))


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


def _tanh_to_int8(g: jax.Array) -> jax.Array:
  """tanh of Q3.12 values by table, to Q0.7 int8."""
  return fp.saturate(fp.rounding_shift(fp.lookup(TANH, table_index(g)), ACT_FRAC - H_FRAC), 8)


def _stack(x, lengths, factor):
  b, t, f = x.shape
  x = mask_padding(x, lengths, 0)
  x = jnp.pad(x, ((0, 0), (0, -t % factor), (0, 0)))
  return x.reshape(b, -1, f * factor), (lengths + factor - 1) // factor


def convert(model, scales: dict[str, float]) -> IntTransducer:
  """The float `model` in integers, with the calibrated input `scales` (`calibrate`)."""
  enc, cfg = model.encoder, model.cfg
  if cfg.encoder == "lstm":
    in_scale = _scale(scales, "encoder/layers/0/input")
    s_enc = _scale(scales, "joint/enc_proj") if enc.norms else 2.0 ** -H_FRAC
    encoder = _convert_lstm(enc, scales, in_scale)
  elif cfg.encoder in ("transformer", "conformer"):
    in_scale = _scale(scales, "encoder/subsampling/0/proj")
    s_enc = _scale(scales, "joint/enc_proj")
    encoder = convert_encoder(enc, scales, s_enc, _kernel, _scale)
  else:
    raise ValueError(f"the int8 executor runs LSTM and Transformer encoders; this model's "
                     f"encoder is {cfg.encoder!r}")
  q316 = 2.0 ** -GATE_FRAC
  j = model.joint
  enc_proj = IntDense.from_float(*_kernel(j.enc_proj, "joint/enc_proj"), s_enc, q316, 16)
  pred_proj = IntDense.from_float(*_kernel(j.pred_proj, "joint/pred_proj"), 2.0 ** -H_FRAC,
                                  q316, 16)
  out = IntDense.from_float(*_kernel(j.out, "joint/out"), 2.0 ** -H_FRAC, 2.0 ** -LOGIT_FRAC,
                            16)
  p = model.predictor
  table = np.asarray(p.embed.embedding[...])
  s_e = quantize_activation_scale(np.abs(table).max())
  embed = np.clip(np.round(table / s_e), -127, 127).astype(np.int8)
  if cfg.predictor == "lstm":
    k_in, b_in = _kernel(p.lstm.input, "predictor/lstm/input")
    pred = IntLSTM.from_float(k_in, b_in, _kernel(p.lstm.recurrent, "predictor/lstm/recurrent")[0],
                              s_e)
    context = 0
  else:
    pred = IntDense.from_float(*_kernel(p.proj, "predictor/proj"), s_e, q316, out_bits=16)
    context = p.context
  return IntTransducer(in_scale, cfg.predictor, context, encoder, enc_proj, embed, pred,
                       pred_proj, out)


def _convert_lstm(enc, scales, in_scale: float) -> IntLSTMEncoder:
  layers, norms = [], []
  for i, layer in enumerate(enc.layers):
    s_x = in_scale if i == 0 else (_scale(scales, f"encoder/layers/{i}/input") if enc.norms
                                   else 2.0 ** -H_FRAC)
    name = f"encoder/layers/{i}"
    k_in, b_in = _kernel(layer.input, f"{name}/input")
    k_rec = _kernel(layer.recurrent, f"{name}/recurrent")[0]
    layers.append(IntLSTM.from_float(k_in, b_in, k_rec, s_x))
    if enc.norms:
      nxt = (f"encoder/layers/{i + 1}/input" if i + 1 < len(enc.layers) else "joint/enc_proj")
      norm = enc.norms[i]
      norms.append(IntLayerNorm.from_float(np.asarray(norm.scale[...]),
                                           np.asarray(norm.bias[...]), _scale(scales, nxt)))
  return IntLSTMEncoder(layers, norms, enc.stack, enc.reduce, enc.reduce_after)


def _scale(scales, name):
  if name not in scales:
    raise ValueError(f"no calibrated scale for {name}'s input: calibrate the model "
                     f"(hardware.int8_transducer.calibrate) on training batches first")
  return quantize_activation_scale(scales[name])


def quantize_features(features: jax.Array, lengths: jax.Array, stack: int, scale: float):
  """Normalized float log-mels `[B, T, F]` -> int8 stacked frames (the processor's input)."""
  from asr.features import stack_frames
  x, lengths = stack_frames(features, lengths, stack)
  return quantize(x, scale), lengths


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
