"""Evaluating a trained transducer as the int8 processor runs it: calibration from training
audio, conversion, a recognizer that `asr.training.evaluate.evaluate` drives like the float one,
the work it does (MACs dense and with zero weights skipped) and the bytes of its weights in the
compressed format.

  recognize = int8_recognizer(graphdef, variables, calibration_batches, max_symbols)
  summary, rows = evaluate(graphdef, variables, batches, tokenizer, recognize=recognize, ...)

The recognizer (greedy or beam search) returns what the float one does (tokens, lengths,
scores for beam search, frame lengths, per-frame `flops` and `frame_flops`, `decoding_flops`),
counted as 2 x the MACs of the integer model (equal to the float model's count: a Transformer's
attention over the keys each frame sees), and `frame_macs_executed [B, T']`: the MACs on
non-zero weights, what a processor that skips zeros spends (`hardware.profiles.NPUProfile`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr import features as F
from hardware import fixed_point as fp
from hardware.int8_layers import IntDense, IntLayerNorm, IntLSTM
from hardware.int8_lstm import IntLSTMEncoder, quantize_features
from hardware.int8_transducer import IntTransducer, calibrate, convert, greedy
from hardware.int8_transformer import IntActDense
from hardware.int8_transducer import beam as beam_search
from hardware.weight_format import packed_bytes


@dataclasses.dataclass(frozen=True)
class Work:
  """MACs of the integer model: per encoder output frame (`encoder_frame`, plus
  `attention_key` for each key the frame attends to, summed over a Transformer's blocks), per
  decoded frame (the joint's encoder projection and one output distribution) and per emitted
  label (the prediction network, its projection and one more distribution)."""
  encoder_frame: int
  decode_frame: int
  token: int
  attention_key: int = 0

  def encoder(self, keys):
    """MACs of an encoder frame that attends to `keys` keys (an array, or a number)."""
    return self.encoder_frame + self.attention_key * keys


def _macs(w, executed: bool) -> int:
  return int(np.count_nonzero(np.asarray(w))) if executed else int(np.asarray(w).size)


def model_work(m: IntTransducer, executed: bool = False) -> Work:
  """Dense MACs (`executed=False`) or those on non-zero weights only. A Transformer's
  attention scores and weighted values cost `2 x dim` MACs a visible key (`attention_key`), as
  the float model counts them, never skipped (their operands are activations)."""
  out = _macs(m.out.kernel, executed)
  if m.predictor_kind == "lstm":
    pred = _macs(m.pred.w_in, executed) + _macs(m.pred.w_rec, executed)
  else:
    pred = _macs(m.pred.kernel, executed)
  per_key = sum(2 * b.attention.out.kernel.shape[0] for b in getattr(m.encoder, "blocks", ()))
  return Work(_encoder_macs(m.encoder, executed), _macs(m.enc_proj.kernel, executed) + out,
              pred + _macs(m.pred_proj.kernel, executed) + out, per_key)


def _encoder_macs(enc, executed: bool) -> int:
  """MACs per encoder output frame on weights (a Transformer's attention over its keys is
  `Work.attention_key`'s)."""
  if isinstance(enc, IntLSTMEncoder):
    total = 0
    for i, layer in enumerate(enc.layers):
      per = _macs(layer.w_in, executed) + _macs(layer.w_rec, executed)
      total += per * (enc.reduce if i < enc.reduce_after and enc.reduce > 1 else 1)
    return total
  total, per_output = 0, 1
  for layer in reversed(enc.subsampling):
    total += _macs(layer.proj.dense.kernel, executed) * per_output
    per_output *= layer.stride
  for name, layer in _encoder_layers(enc).items():
    if isinstance(layer, (IntDense, IntActDense)) and not name.startswith("encoder/subsampling"):
      total += _macs(getattr(layer, "dense", layer).kernel, executed)
    elif name.endswith("/depthwise"):
      total += _macs(layer, executed)
  return total


def _encoder_layers(enc) -> dict[str, object]:
  """The encoder's integer layers by name: `IntDense`, `IntActDense` (`.dense` holds the
  product), `IntLSTM`, `IntLayerNorm`, and a Conformer's depthwise kernels (int8 `[K, D]`)."""
  if isinstance(enc, IntLSTMEncoder):
    out = {f"encoder/layers/{i}": layer for i, layer in enumerate(enc.layers)}
    out.update({f"encoder/norms/{i}": n for i, n in enumerate(enc.norms)})
    return out
  out = {f"encoder/subsampling/{i}/proj": layer.proj for i, layer in enumerate(enc.subsampling)}
  for i, block in enumerate(enc.blocks):
    a, name = block.attention, f"encoder/blocks/{i}"
    out.update({f"{name}/attention/norm": a.norm, f"{name}/attention/qkv": a.qkv,
                f"{name}/attention/out": a.out})
    conformer = block.conv is not None
    for key, ffn in ((f"{name}/ffn1", block.ffn1),
                     (f"{name}/ffn2" if conformer else f"{name}/ffn", block.ffn)):
      if ffn is not None:
        out.update({f"{key}/norm": ffn.norm, f"{key}/up": ffn.up, f"{key}/down": ffn.down})
    if conformer:
      c = block.conv
      out.update({f"{name}/conv/norm": c.norm, f"{name}/conv/values": c.values,
                  f"{name}/conv/gates": c.gates, f"{name}/conv/depthwise": c.depthwise,
                  f"{name}/conv/depth_norm": c.depth_norm, f"{name}/conv/pointwise_out": c.out,
                  f"{name}/norm": block.norm})
  if enc.final_norm is not None:
    out["encoder/final_norm"] = enc.final_norm
  return out


def weight_tensors(m: IntTransducer) -> dict[str, np.ndarray]:
  """Every int8 weight matrix of the integer model, by name (the embedding table included)."""
  out = {}
  for name, layer in _encoder_layers(m.encoder).items():
    if isinstance(layer, IntLSTM):
      out[f"{name}/input"], out[f"{name}/recurrent"] = layer.w_in, layer.w_rec
    elif isinstance(layer, (IntDense, IntActDense)):
      out[name] = getattr(layer, "dense", layer).kernel
    elif name.endswith("/depthwise"):
      out[name] = layer
  out["joint/enc_proj"], out["joint/pred_proj"] = m.enc_proj.kernel, m.pred_proj.kernel
  out["joint/out"], out["predictor/embed"] = m.out.kernel, m.embed
  if m.predictor_kind == "lstm":
    out["predictor/lstm/input"], out["predictor/lstm/recurrent"] = m.pred.w_in, m.pred.w_rec
  else:
    out["predictor/proj"] = m.pred.kernel
  return {k: np.asarray(v) for k, v in out.items()}


GROUPS = (1, 2, 4)   # weights per presence bit the format may use for a model


def weight_group(m: IntTransducer, block: int = 64) -> int:
  """The presence-bit group (`hardware.weight_format`) that packs this model's weights
  smallest: 1 for unstructured sparsity, the block width for block-sparse weights."""
  weights = weight_tensors(m).values()
  return min(GROUPS, key=lambda g: sum(packed_bytes(w, block=block, group=g) for w in weights))


def compressed_bytes(m: IntTransducer, block: int = 64, group: int | None = None) -> int:
  """The integer model's weights in `hardware.weight_format` (int8 values, presence bitmaps
  with one bit per `group` weights, `weight_group`'s by default; one float32 scale per output
  channel), plus its biases (int32), layer norms (2 x int32 a unit) and a Transformer's
  per-layer SiLU tables (4,096 entries of its output's width), as the processor receives
  them."""
  group = weight_group(m, block) if group is None else group
  total = sum(packed_bytes(w, block=block, group=group) for w in weight_tensors(m).values())
  biases = [m.enc_proj.bias, m.out.bias, m.pred_proj.bias]
  biases += [m.pred.b_in] if m.predictor_kind == "lstm" else [m.pred.bias]
  for layer in _encoder_layers(m.encoder).values():
    if isinstance(layer, IntLSTM):
      biases.append(layer.b_in)
    elif isinstance(layer, IntDense):
      biases.append(layer.bias)
    elif isinstance(layer, IntActDense):
      biases.append(layer.dense.bias)
      total += int(np.asarray(layer.table).size) * layer.out_bits // 8
    elif isinstance(layer, IntLayerNorm):
      total += 8 * int(np.asarray(layer.gamma).size)
  for block in getattr(m.encoder, "blocks", ()):
    if block.conv is not None:   # the depthwise biases; the SiLU table (4,096 int8 entries)
      biases.append(block.conv.depthwise_bias)
      total += int(np.asarray(block.conv.silu).size)
  total += 4 * sum(int(np.asarray(b).size) for b in biases)
  return int(total)


def int8_recognizer(graphdef, variables, calibration, *, decoder: str = "greedy",
                    beam: int = 4, max_symbols: int = 4):
  """`recognize(variables, audio [B, S], audio_lengths [B]) -> dict` running the int8 model
  made from `nnx.merge(graphdef, *variables)` with scales calibrated on `calibration` (audio
  batches: dicts with `audio`, `audio_lengths`), decoding greedily or with a beam (the same
  dict as `asr.training.evaluate.make_recognizer`'s). Also returns the integer model as
  `recognize.model`."""
  if decoder not in ("greedy", "beam"):
    raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")
  model = nnx.merge(graphdef, *variables)
  log_mel = jax.jit(lambda audio, n: F.log_mel(audio, n, model.cfg.features))
  int_model = convert(model, calibrate(
      model, (log_mel(jnp.asarray(b["audio"]), jnp.asarray(b["audio_lengths"]))
              for b in calibration)))
  dense, executed = model_work(int_model), model_work(int_model, executed=True)

  @jax.jit
  def front(variables, audio, audio_lengths):
    m = nnx.merge(graphdef, *variables)
    feats, lengths = log_mel(audio, audio_lengths)
    return int_model.prepare(m.frontend(feats, lengths), lengths)

  @fp.integer_jit
  def back(im, x, lengths):
    frames, frame_lengths = im.encode(x, lengths)
    max_len = frames.shape[1] * max_symbols
    out = {"frame_lengths": frame_lengths,
           "valid": jnp.arange(frames.shape[1])[None, :] < frame_lengths[:, None],
           "keys": im.encoder.visible_keys(frame_lengths, frames.shape[1])}
    if decoder == "greedy":
      out["tokens"], out["lengths"], out["emitted"] = greedy(im, frames, frame_lengths,
                                                             max_symbols, max_len)
    else:
      out["tokens"], out["lengths"], out["scores"] = beam_search(
          im, frames, frame_lengths, beam, max_symbols, max_len)
    return out

  def work(per_frame: Work, valid, keys, emitted, hypotheses: int = 1):
    return hypotheses * (valid * per_frame.decode_frame + emitted * per_frame.token) + (
        valid * per_frame.encoder(keys))

  def recognize(variables, audio, audio_lengths):
    x, lengths = front(variables, audio, audio_lengths)
    out = jax.device_get(back(int_model, x, lengths))
    frame_lengths, valid, keys = out["frame_lengths"], out.pop("valid"), out.pop("keys")
    if decoder == "greedy":
      best, emitted, hypotheses = out["lengths"], out.pop("emitted"), 1
    else:   # as the float recognizer: the best hypothesis's labels spread over its frames
      best, hypotheses = out["lengths"][:, 0], beam
      emitted = valid * (best / np.maximum(frame_lengths, 1))[:, None]
    out.update(flops=2.0 * valid * dense.encoder(keys),
               decoding_flops=2.0 * (frame_lengths * dense.decode_frame + best * dense.token),
               frame_flops=2.0 * work(dense, valid, keys, emitted, hypotheses),
               frame_macs_executed=1.0 * work(executed, valid, keys, emitted, hypotheses))
    return out

  recognize.model = int_model
  return recognize


_apply = fp.integer_jit(lambda layer, *args: layer.apply(*args))


def compare_layers(model, int_model: IntTransducer, features, lengths) -> list[tuple]:
  """The float and the int8 encoder side by side on the same log-mel `features [B, T, F]`,
  each fed its own outputs: `[(stage, float output [B, T', H], int8 output as reals
  [B, T', H], lengths [B])]` for the stacked input and every LSTM layer and layer norm (LSTM
  encoders), or the residual stream after the subsampling and after every sub-block, and the
  output frames (Transformer and Conformer encoders: T' of the input padded to whole streamed
  chunks)."""
  from asr.features import stack_frames
  from hardware.int8_layers import H_FRAC
  enc = model.encoder
  if not isinstance(int_model.encoder, IntLSTMEncoder):
    return _compare_transformer(model, int_model, features, lengths)
  x = model.frontend(jnp.asarray(features), jnp.asarray(lengths))
  xf, n = stack_frames(x, jnp.asarray(lengths), enc.stack)
  xi, _ = quantize_features(x, jnp.asarray(lengths), enc.stack, int_model.in_scale)
  stages = [("input", xf, xi * int_model.in_scale, n)]
  for i, (layer, int_layer) in enumerate(zip(enc.layers, int_model.encoder.layers)):
    if i and i == enc.reduce_after and enc.reduce > 1:
      xf, _ = stack_frames(xf, n, enc.reduce)
      xi, n = stack_frames(xi, n, enc.reduce)
    xf, _ = layer(xf.astype(jnp.float32), n)
    xi, _ = _apply(int_layer, xi.astype(jnp.int8), n)     # stack_frames makes it float
    stages.append((f"layer {i} LSTM", xf, xi * 2.0 ** -H_FRAC, n))
    if enc.norms:
      xf = enc.norms[i](xf)
      norm = int_model.encoder.norms[i]
      xi = _apply(norm, xi)
      stages.append((f"layer {i} norm", xf, xi * norm.out_scale, n))
  return [(name, np.asarray(f, np.float32), np.asarray(q, np.float32), np.asarray(k))
          for name, f, q, k in stages]


def stage_errors(model, int_model: IntTransducer, features, lengths) -> dict[str, float]:
  """`{stage: RMS(int8 - float) / RMS(float)}` over valid frames, for `compare_layers`'
  stages: where the integer encoder's error enters and how it grows."""
  out = {}
  for name, f, q, n in compare_layers(model, int_model, features, lengths):
    valid = np.arange(f.shape[1])[None, :] < n[:, None]
    out[name] = float(np.sqrt(np.mean((q - f)[valid] ** 2) / np.mean(f[valid] ** 2)))
  return out


def _compare_transformer(model, int_model: IntTransducer, features, lengths) -> list[tuple]:
  """`compare_layers` of a Transformer or Conformer encoder: the float residual stream as
  `hardware.int8_transformer.float_frames` notes it, beside the integer encoder's (run eagerly:
  a diagnostic, and its stage names are Python values)."""
  from hardware.int8_transformer import float_frames
  features, lengths = jnp.asarray(features), jnp.asarray(lengths)
  floats = []
  frames = float_frames(model, features, lengths,
                        lambda name, v: floats.append(v) if name == "encoder/residual" else 0)
  if model.encoder.final_norm is not None:
    floats.append(frames)
  ints = []
  x, xl = int_model.prepare(model.frontend(features, lengths), lengths)
  with jax.enable_x64(True):
    _, n = int_model.encoder.encode(x, xl, tap=lambda name, v, scale: ints.append(
        (name, np.asarray(v, np.float64) * scale)))
  assert len(ints) == len(floats), (len(ints), len(floats))
  return [(name, np.asarray(f, np.float32), q.astype(np.float32), np.asarray(n))
          for (name, q), f in zip(ints, floats)]
