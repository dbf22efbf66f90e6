"""The LSTM transducer on the int8 path: the jitted integer encoder and greedy search equal the
plain Python-integer reference token for token, and follow the float model they come from;
layers the executor cannot run, and a missing calibration, are named."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.decoding import beam_search, greedy_search
from asr.models import LSTMEncoderConfig, Transducer, TransducerConfig
from asr.models.lstm import LSTM
from hardware import fixed_point as fp
from hardware import int8_lstm
from hardware import int8_reference as ref
from hardware.int8_lstm import quantize_features
from hardware.int8_transducer import beam, calibrate, convert, greedy
from tests.helpers import randomize


def _model(predictor, seed=0):
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder_config=LSTMEncoderConfig(
      hidden=16, layers=2, stack=2, layer_norm=True, reduce=2, reduce_after=1),
                         predictor=predictor, pred_embed=8, pred_hidden=16, joint_dim=16)
  m = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.4)
  # Outputs led by the audio: a strong encoder projection, a decisive output layer.
  m.joint.enc_proj.kernel[...] = m.joint.enc_proj.kernel[...] * 4.0
  m.joint.out.kernel[...] = m.joint.out.kernel[...] * 2.0
  return m


def _features(seed=0, b=4, t=48):
  rng = np.random.default_rng(seed)
  feats = jnp.asarray(rng.standard_normal((b, t, 8)) * 2 - 3, jnp.float32)
  lengths = jnp.asarray([t, 31, 17, 6])
  return feats, lengths


@fp.integer_jit(static_argnames=("max_symbols", "max_len"))
def _int_greedy(model, x, lengths, max_symbols, max_len):
  frames, frame_lengths = model.encode(x, lengths)
  return greedy(model, frames, frame_lengths, max_symbols, max_len)


@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
def test_integer_greedy_equals_the_reference_and_follows_the_float_model(predictor):
  model = _model(predictor)
  feats, lengths = _features()
  scales = calibrate(model, [(feats, lengths)])
  assert set(scales) == {"encoder/layers/0/input", "encoder/layers/1/input", "joint/enc_proj"}
  im = convert(model, scales)
  x, xl = quantize_features(model.frontend(feats, lengths), lengths, 2, im.in_scale)
  tokens, token_lengths, emitted = _int_greedy(im, x, xl, max_symbols=3, max_len=80)
  tokens, token_lengths = np.asarray(tokens), np.asarray(token_lengths)
  got = [tokens[i, : token_lengths[i]].tolist() for i in range(len(lengths))]
  assert got == ref.greedy(im, np.asarray(x), np.asarray(xl), 3)
  np.testing.assert_array_equal(np.asarray(emitted).sum(axis=1), token_lengths)
  # The float model on the same features: the same transcripts, give or take a token.
  enc = model.encode(feats, lengths)
  f_tokens, f_lengths = greedy_search(model, enc.frames, enc.lengths, max_symbols=3, max_len=80)
  floats = [np.asarray(f_tokens)[i, : int(f_lengths[i])].tolist() for i in range(len(lengths))]
  assert sum(map(len, floats)) > 10                            # the test model really emits
  errors = sum(_edit_distance(a, b) for a, b in zip(got, floats))
  assert errors <= 0.1 * sum(map(len, floats)), (got, floats)
  # The integer encoder's frames against the float encoder's (layer norm output, int8).
  frames, _ = fp.integer_jit(lambda m, x, l: m.encode(x, l))(im, x, xl)
  s_enc = scales["joint/enc_proj"] / 127
  err = np.abs(np.asarray(frames) * s_enc - np.asarray(enc.frames))
  assert err.max() < 0.1 * np.abs(np.asarray(enc.frames)).max()


def _edit_distance(a, b):
  d = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, d[0] = d[0], i
    for j, y in enumerate(b, 1):
      prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
  return d[len(b)]


def test_calibration_of_a_padded_batch_equals_one_utterance_at_a_time():
  """As for the Transformer (`test_int8_transformer`): a padded batch's scales are the largest
  over its utterances calibrated alone, each a whole number of stacked and reduced frames (4
  feature frames) long, so unpadded."""
  model = _model("lstm")
  feats, _ = _features()
  lengths = jnp.asarray([48, 32, 16, 4])
  batch = calibrate(model, [(feats, lengths)])
  alone = calibrate(model, [(feats[u:u + 1, :n], lengths[u:u + 1])
                            for u, n in enumerate(np.asarray(lengths))])
  assert set(batch) == set(alone) == {"encoder/layers/0/input", "encoder/layers/1/input",
                                      "joint/enc_proj"}
  for name in batch:
    assert batch[name] == pytest.approx(alone[name], rel=1e-5), name


def test_layers_it_cannot_run_and_a_missing_calibration_are_named():
  model = _model("stateless")
  feats, lengths = _features()
  scales = calibrate(model, [(feats, lengths)])
  with pytest.raises(ValueError, match="no calibrated scale for joint/enc_proj's input: "
                                       "calibrate"):
    convert(model, {k: v for k, v in scales.items() if k != "joint/enc_proj"})
  model.joint.enc_proj = nnx.Linear(16, 16, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cannot run layer 'joint/enc_proj' \\(Linear\\)"):
    convert(model, scales)


class _OtherCell(LSTM):
  """A cell class of its own (the plain cell's arithmetic): the int8 path needs its converter."""


def test_a_cell_class_runs_on_the_int8_path_once_its_converter_is_registered():
  model = _model("lstm")
  feats, lengths = _features()
  scales = calibrate(model, [(feats, lengths)])
  plain = convert(model, scales)
  layer = model.encoder.layers[1]
  other = _OtherCell(layer.input.kernel.shape[0], layer.hidden, rngs=nnx.Rngs(0))
  nnx.update(other, nnx.state(layer))
  model.encoder.layers[1] = other
  with pytest.raises(ValueError, match="encoder/layers/1: the int8 path cannot run a _OtherCell "
                                       "layer.*register_int_cell"):
    convert(model, scales)
  try:
    int8_lstm.register_int_cell(_OtherCell)(int8_lstm.CELL_CONVERTERS[LSTM])
    im = convert(model, scales)
  finally:
    del int8_lstm.CELL_CONVERTERS[_OtherCell]
  x, xl = quantize_features(model.frontend(feats, lengths), lengths, 2, im.in_scale)
  got, want = _int_greedy(im, x, xl, 3, 80), _int_greedy(plain, x, xl, 3, 80)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_model_trained_with_quantized_activations_keeps_its_ranges():
  from compression.quantization import quantize_activations
  model = _model("stateless")
  feats, lengths = _features()
  quantize_activations(bits=8)(model)
  model.encoder.layers[0].input.act_range[...] = jnp.asarray(3.25)
  model.joint.enc_proj.act_range[...] = jnp.asarray(1.5)
  scales = calibrate(model, [(feats, lengths)])
  assert scales["encoder/layers/0/input"] == 3.25 and scales["joint/enc_proj"] == 1.5
  # A range never trained (0) is observed instead.
  assert float(model.encoder.layers[1].input.act_range[...]) == 0
  assert scales["encoder/layers/1/input"] > 0.5
  assert convert(model, scales).in_scale == pytest.approx(3.25 / 127)


def test_layer_by_layer_comparison_ends_where_both_encoders_end():
  from hardware.int8_backend import compare_layers
  model = _model("stateless")
  feats, lengths = _features()
  scales = calibrate(model, [(feats, lengths)])
  im = convert(model, scales)
  stages = compare_layers(model, im, feats, lengths)
  assert [s[0] for s in stages] == ["input", "layer 0 LSTM", "layer 0 norm", "layer 1 LSTM",
                                    "layer 1 norm"]
  name, float_out, int_out, n = stages[-1]
  enc = model.encode(feats, lengths)
  np.testing.assert_array_equal(n, np.asarray(enc.lengths))
  valid = np.arange(float_out.shape[1])[None, :] < n[:, None]
  np.testing.assert_allclose(float_out[valid], np.asarray(enc.frames)[valid], atol=1e-5)
  x, xl = quantize_features(model.frontend(feats, lengths), lengths, 2, im.in_scale)
  frames, _ = fp.integer_jit(lambda m, x, l: m.encode(x, l))(im, x, xl)
  np.testing.assert_allclose(int_out[valid], np.asarray(frames)[valid] * scales["joint/enc_proj"]
                             / 127, rtol=1e-6)


@fp.integer_jit(static_argnames=("k",))
def _int_beam(model, x, lengths, k):
  frames, frame_lengths = model.encode(x, lengths)
  return beam(model, frames, frame_lengths, k, 3, 80)


def test_integer_beam_search_of_one_is_integer_greedy_and_follows_the_float_beam():
  model = _model("lstm")   # the greedy test covers both predictors; the searches share them
  feats, lengths = _features()
  im = convert(model, calibrate(model, [(feats, lengths)]))
  x, xl = quantize_features(model.frontend(feats, lengths), lengths, 2, im.in_scale)
  g_tokens, g_lengths, _ = _int_greedy(im, x, xl, max_symbols=3, max_len=80)
  b_tokens, b_lengths, _ = _int_beam(im, x, xl, k=1)
  np.testing.assert_array_equal(np.asarray(b_lengths)[:, 0], np.asarray(g_lengths))
  np.testing.assert_array_equal(np.asarray(b_tokens)[:, 0], np.asarray(g_tokens))
  tokens, token_lengths, scores = (np.asarray(a) for a in _int_beam(im, x, xl, k=4))
  assert (np.diff(scores, axis=1) <= 0).all()                   # n-best sorted
  enc = model.encode(feats, lengths)
  f_tokens, f_lengths, _ = beam_search(model, enc.frames, enc.lengths, beam=4, max_symbols=3,
                                       max_len=80)
  got = [tokens[i, 0, : token_lengths[i, 0]].tolist() for i in range(len(lengths))]
  floats = [np.asarray(f_tokens)[i, 0, : int(f_lengths[i, 0])].tolist()
            for i in range(len(lengths))]
  errors = sum(_edit_distance(a, b) for a, b in zip(got, floats))
  assert errors <= 0.1 * sum(map(len, floats)) and sum(map(len, floats)) > 10


def test_block_sparse_weights_pack_with_a_bit_per_block():
  from asr.models.dense import Dense
  from hardware.int8_backend import compressed_bytes, weight_group
  model = _model("lstm")
  feats, lengths = _features()
  rng = np.random.default_rng(0)
  for _, layer in nnx.iter_graph(model):
    if isinstance(layer, Dense):     # half of the 1 x 4 blocks of every matrix cut
      k = np.asarray(layer.kernel[...])
      keep = np.repeat(rng.random((k.shape[0], -(-k.shape[1] // 4))) < 0.5, 4, axis=1)
      layer.kernel[...] = jnp.asarray(k * keep[:, : k.shape[1]])
  im = convert(model, calibrate(model, [(feats, lengths)]))
  assert weight_group(im) == 4
  assert compressed_bytes(im) == compressed_bytes(im, group=4) < compressed_bytes(im, group=1)
  # Unstructured zeros: one bit a weight packs smaller.
  model = _model("lstm")
  for _, layer in nnx.iter_graph(model):
    if isinstance(layer, Dense):
      k = np.asarray(layer.kernel[...])
      layer.kernel[...] = jnp.asarray(k * (rng.random(k.shape) < 0.5))
  im = convert(model, calibrate(model, [(feats, lengths)]))
  assert weight_group(im) == 1
