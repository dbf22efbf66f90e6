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
A branching encoder's frames cost their branch (and `fast_frames` counts the cheap ones), a
gated one's their open units (`open_frames`: the share of open unit gates, summed over frames).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr import features as F
from hardware import fixed_point as fp
from hardware.int8_amnet import IntAmNetEncoder
from hardware.int8_layers import IntDense, IntLayerNorm, IntLowRankLSTM, IntLSTM, scan_int_cell
from hardware.int8_layers import weight_macs as _macs
from hardware.int8_lstm import IntLSTMEncoder, quantize_features
from hardware.int8_transducer import IntTransducer, calibrate, convert, greedy
from hardware.int8_transformer import IntActDense, IntConvModule
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


def model_work(m: IntTransducer, executed: bool = False) -> Work:
  """Dense MACs (`executed=False`) or those on non-zero weights only, the encoder's as its
  units count them (`macs`). A Transformer's attention scores and weighted values cost
  `2 x dim` MACs a visible key (`attention_key`), as the float model counts them, never skipped
  (their operands are activations)."""
  out = _macs(m.out.kernel, executed)
  if m.predictor_kind == "lstm":
    pred = _macs(m.pred.w_in, executed) + _macs(m.pred.w_rec, executed)
  else:
    pred = _macs(m.pred.kernel, executed)
  return Work(m.encoder.macs(executed), _macs(m.enc_proj.kernel, executed) + out,
              pred + _macs(m.pred_proj.kernel, executed) + out, m.encoder.macs_per_key)


def _encoder_layers(enc) -> dict[str, object]:
  """The encoder's integer layers by name: `IntDense`, `IntActDense` (`.dense` holds the
  product), `IntLSTM`, `IntLayerNorm`, and a Conformer's depthwise kernels (int8 `[K, D]`)."""
  if isinstance(enc, IntAmNetEncoder):
    out = {}
    for i, layer in enumerate(enc.layers):
      out[f"encoder/layers/{i}"], out[f"encoder/layers/{i}/cheap"] = layer.full, layer.cheap
    out.update({f"encoder/norms/{i}": n for i, n in enumerate(enc.norms)})
    out.update({"encoder/arbitrator/hidden": enc.arbitrator.hidden,
                "encoder/arbitrator/out": enc.arbitrator.out})
    return out
  if isinstance(enc, IntLSTMEncoder):
    out = {f"encoder/layers/{i}": layer for i, layer in enumerate(enc.layers)}
    out.update({f"encoder/norms/{i}": n for i, n in enumerate(enc.norms)})
    return out
  out = {f"encoder/subsampling/{i}/proj": layer.proj for i, layer in enumerate(enc.subsampling)}
  for block in enc.blocks:
    for unit_name in block.layout:
      for key, layer in block.units[unit_name].layers().items():
        out[f"{block.where}/{unit_name}/{key}"] = layer
    if block.norm is not None:
      out[f"{block.where}/norm"] = block.norm
  if enc.final_norm is not None:
    out["encoder/final_norm"] = enc.final_norm
  if enc.arbitrator is not None:   # gated units' arbitrators
    out["encoder/arbitrator/hidden"] = enc.arbitrator
    for block in enc.blocks:
      out.update({f"{block.where}/arbitrator/{k}": layer
                  for k, layer in block.arbitrator.layers().items()})
  return out


def weight_tensors(m: IntTransducer) -> dict[str, np.ndarray]:
  """Every int8 weight matrix of the integer model, by name (the embedding table included)."""
  out = {}
  for name, layer in _encoder_layers(m.encoder).items():
    if isinstance(layer, (IntLSTM, IntLowRankLSTM)):
      out.update({f"{name}/{k}": w for k, w in layer.weights().items()})
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
    if isinstance(layer, (IntLSTM, IntLowRankLSTM)):
      biases.extend(layer.biases())
    elif isinstance(layer, IntDense):
      biases.append(layer.bias)
    elif isinstance(layer, IntActDense):
      biases.append(layer.dense.bias)
      total += int(np.asarray(layer.table).size) * layer.out_bits // 8
    elif isinstance(layer, IntLayerNorm):
      total += 8 * int(np.asarray(layer.gamma).size)
  for unit in (u for b in getattr(m.encoder, "blocks", ()) for u in b.units.values()):
    if isinstance(unit, IntConvModule):  # the depthwise biases; its SiLU table (4,096 int8)
      biases.append(unit.depthwise_bias)
      total += int(np.asarray(unit.silu).size)
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
    out = {}
    if hasattr(im.encoder, "routed_encode"):   # a branching encoder: each frame's branch too
      frames, frame_lengths, out["route"] = im.encoder.routed_encode(x, lengths)
    elif getattr(im.encoder, "arbitrator", None) is not None:   # gated units: their gates too
      frames, frame_lengths, out["gates"] = im.encoder.gated_encode(x, lengths)
    else:
      frames, frame_lengths = im.encode(x, lengths)
    max_len = frames.shape[1] * max_symbols
    out |= {"frame_lengths": frame_lengths,
           "valid": jnp.arange(frames.shape[1])[None, :] < frame_lengths[:, None],
           "keys": im.encoder.visible_keys(frame_lengths, frames.shape[1])}
    if decoder == "greedy":
      out["tokens"], out["lengths"], out["emitted"] = greedy(im, frames, frame_lengths,
                                                             max_symbols, max_len)
    else:
      out["tokens"], out["lengths"], out["scores"] = beam_search(
          im, frames, frame_lengths, beam, max_symbols, max_len)
    return out

  def work(per_frame: Work, valid, encoder, emitted, hypotheses: int = 1):
    """Each frame's MACs: the encoder's `[B, T']` and the decoding of its hypotheses."""
    return hypotheses * (valid * per_frame.decode_frame + emitted * per_frame.token) + encoder

  def recognize(variables, audio, audio_lengths):
    x, lengths = front(variables, audio, audio_lengths)
    out = jax.device_get(back(int_model, x, lengths))
    frame_lengths, valid, keys = out["frame_lengths"], out.pop("valid"), out.pop("keys")
    if "route" in out:     # a branching encoder's frames cost their branch
      route = out.pop("route")
      enc_dense, enc_executed = (np.asarray(int_model.encoder.frame_macs(route, valid, e))
                                 for e in (False, True))
      out["fast_frames"] = (route * valid).sum(axis=1)
    elif "gates" in out:   # a gated encoder's frames cost their open units
      gates = out.pop("gates")
      enc_dense, enc_executed = (np.asarray(int_model.encoder.frame_macs(gates, keys, valid, e))
                                 for e in (False, True))
      out["open_frames"] = (gates.mean(axis=(2, 3)) * valid).sum(axis=1)
    else:
      enc_dense, enc_executed = valid * dense.encoder(keys), valid * executed.encoder(keys)
    if decoder == "greedy":
      best, emitted, hypotheses = out["lengths"], out.pop("emitted"), 1
    else:   # as the float recognizer: the best hypothesis's labels spread over its frames
      best, hypotheses = out["lengths"][:, 0], beam
      emitted = valid * (best / np.maximum(frame_lengths, 1))[:, None]
    out.update(flops=2.0 * enc_dense,
               decoding_flops=2.0 * (frame_lengths * dense.decode_frame + best * dense.token),
               frame_flops=2.0 * work(dense, valid, enc_dense, emitted, hypotheses),
               frame_macs_executed=1.0 * work(executed, valid, enc_executed, emitted,
                                              hypotheses))
    return out

  recognize.model = int_model
  return recognize


_apply = fp.integer_jit(lambda layer, *args: layer.apply(*args))
_scan = fp.integer_jit(lambda cell, x, lengths: scan_int_cell(cell, x, lengths)[0])
_scan_routed = fp.integer_jit(lambda cell, x, lengths, route: scan_int_cell(
    cell, x, lengths, inputs=cell.inputs(x, route))[0])
_routes = fp.integer_jit(lambda enc, x, lengths: enc.route(x.astype(jnp.int8), lengths))


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
  # A branching encoder's layers run both sides on the integer arbitrator's routes.
  routes = (_routes(int_model.encoder, xi, n) if isinstance(int_model.encoder, IntAmNetEncoder)
            else None)
  for i, (layer, int_layer) in enumerate(zip(enc.layers, int_model.encoder.layers)):
    if i and i == enc.reduce_after and enc.reduce > 1:
      xf, _ = stack_frames(xf, n, enc.reduce)
      xi, n = stack_frames(xi, n, enc.reduce)
    if routes is None:
      xf, _ = layer(xf.astype(jnp.float32), n)
      xi = _scan(int_layer, xi.astype(jnp.int8), n)     # stack_frames makes it float
    else:
      route = routes if xi.shape[1] == routes.shape[1] else jnp.repeat(
          routes, enc.reduce, axis=1)[:, :xi.shape[1]]
      xf, _ = layer(xf.astype(jnp.float32), n, route=jax.nn.one_hot(route, 2))
      xi = _scan_routed(int_layer, xi.astype(jnp.int8), n, route)
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
  """`compare_layers` of a Transformer or Conformer encoder: the float residual stream as the
  float blocks hand it to `observe`, beside the integer encoder's taps of the same names (each
  side one compiled function returning every stage: the names are fixed when it is traced)."""
  from asr.models.context import Context
  features, lengths = jnp.asarray(features), jnp.asarray(lengths)
  graphdef, variables = nnx.split(model)

  @jax.jit
  def float_stages(variables, features, lengths):
    model = nnx.merge(graphdef, variables)
    floats = {}
    encoded = model.encode(features, lengths,
                           Context(observe=lambda name, v: floats.__setitem__(name, v)))
    t = floats["encoder/subsampling"].shape[1]    # the encoder's output, at the taps' frames
    floats["encoder/final_norm"] = jnp.pad(encoded.frames,
                                           ((0, 0), (0, t - encoded.frames.shape[1]), (0, 0)))
    return floats, model.frontend(features, lengths)

  floats, normalized = float_stages(variables, features, lengths)
  names_scales = []                  # (stage, scale) of each tap, in order: fixed when traced

  @fp.integer_jit
  def int_stages(int_model, x, xl):
    values = []

    def tap(name, v, scale):
      names_scales.append((name, scale))
      values.append(v)
    _, n = int_model.encoder.encode(x, xl, tap=tap)
    return values, n

  x, xl = int_model.prepare(normalized, lengths)
  values, n = int_stages(int_model, x, xl)
  return [(name, np.asarray(floats[name], np.float32),
           (np.asarray(v, np.float64) * scale).astype(np.float32), np.asarray(n))
          for (name, scale), v in zip(names_scales, values)]
