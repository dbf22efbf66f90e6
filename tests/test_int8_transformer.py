"""Transformer and Conformer transducers on the int8 path: the jitted integer encoder and greedy
search equal the plain Python-integer reference bit for bit and token for token and follow the
float model; the fixed-point softmax is a softmax; calibration walks the encoder as the model
does."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.decoding import greedy_search
from asr.models import Transducer, TransducerConfig
from asr.models.conformer import ConformerConfig, TransformerConfig
from hardware import fixed_point as fp
from hardware import int8_reference as ref
from hardware.int8_transducer import calibrate, convert
from tests.helpers import randomize
from tests.test_int8_transducer import _edit_distance, _features, _int_greedy


def _model(encoder="transformer", seed=0):
  sizes = dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2, left_chunks=1, dropout=0.0)
  enc = ConformerConfig(conv_kernel=3, **sizes) if encoder == "conformer" else \
      TransformerConfig(**sizes)
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder=encoder, encoder_config=enc,
                         predictor="stateless", pred_embed=8, joint_dim=16)
  m = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.4)
  m.joint.enc_proj.kernel[...] = m.joint.enc_proj.kernel[...] * 4.0
  m.joint.out.kernel[...] = m.joint.out.kernel[...] * 4.0
  return m


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_integer_encoder_equals_the_reference_and_follows_the_float_model(encoder):
  model = _model(encoder)
  feats, lengths = _features(t=44)                      # lengths 44, 31, 17, 6: partial chunks
  scales = calibrate(model, [(feats, lengths)])
  ffn = "ffn" if encoder == "transformer" else "ffn2"
  assert {"encoder/residual", "encoder/blocks/1/attention/qkv/k",
          f"encoder/blocks/0/{ffn}/up/output", "encoder/subsampling/1/proj/output"} <= set(scales)
  im = convert(model, scales)
  x, xl = im.prepare(model.frontend(feats, lengths), lengths)
  assert x.shape[1] == 48                               # padded to whole 8-frame chunks
  tokens, token_lengths, _ = (np.asarray(a) for a in _int_greedy(im, x, xl, max_symbols=3,
                                                                  max_len=60))
  got = [tokens[i, : token_lengths[i]].tolist() for i in range(len(lengths))]
  assert got == ref.greedy(im, np.asarray(x), np.asarray(xl), 3)
  # Bit for bit, frame by frame, on every utterance (padding included).
  frames, frame_lengths = fp.integer_jit(lambda m, x, l: m.encode(x, l))(im, x, xl)
  for u in range(len(lengths)):
    want, n = ref.transformer_encoder(im.encoder, np.asarray(x)[u:u + 1], int(xl[u]))
    assert n == int(frame_lengths[u])
    np.testing.assert_array_equal(np.asarray(frames)[u], want[0])
  # The float model: frames within a tenth of their range, transcripts within 10% edits.
  enc = model.encode(feats, lengths)
  valid = np.arange(enc.frames.shape[1])[None, :] < np.asarray(enc.lengths)[:, None]
  err = np.abs(np.asarray(frames)[:, : enc.frames.shape[1]] * scales["joint/enc_proj"] / 127
               - np.asarray(enc.frames))[valid]
  assert err.max() < 0.1 * np.abs(np.asarray(enc.frames)).max()
  f_tokens, f_lengths = greedy_search(model, enc.frames, enc.lengths, max_symbols=3, max_len=60)
  floats = [np.asarray(f_tokens)[i, : int(f_lengths[i])].tolist() for i in range(len(lengths))]
  assert sum(map(len, floats)) > 10
  assert sum(_edit_distance(a, b) for a, b in zip(got, floats)) <= 0.1 * sum(map(len, floats))


def test_fixed_point_softmax_is_a_softmax_over_the_keys_it_sees():
  model = _model()
  scales = calibrate(model, [_features(t=40)])
  a = convert(model, scales).encoder.blocks[0].units["attention"]
  rng = np.random.default_rng(0)
  scores = rng.integers(-3000, 3000, size=(5, 12)).astype(np.int32)
  seen = rng.random((5, 12)) < 0.7
  seen[:, 0], seen[4] = True, False                     # the last row sees nothing
  p = np.asarray(fp.integer_jit(a.probabilities)(scores, seen))
  assert (p[~seen] == 0).all() and (p[4] == 0).all() and p.max() <= 255
  # The logits from first principles: the scores are products of rotated q and k, each int8 at
  # sqrt(2) times its calibrated scale, over sqrt(head size), as the float attention divides.
  s_q, s_k = (scales[f"encoder/blocks/0/attention/qkv/{part}"] / 127 for part in "qk")
  real = scores * (np.sqrt(2) * s_q) * (np.sqrt(2) * s_k) / np.sqrt(16 // 2)
  want = np.where(seen, np.exp(real - np.where(seen, real, -np.inf).max(-1, keepdims=True)), 0)
  want = want[:4] / want[:4].sum(-1, keepdims=True)
  np.testing.assert_allclose(p[:4] / 256, want, atol=3 / 256)
  assert (np.abs(p[:4].sum(-1) - 256) <= 12).all()    # rounding of up to 12 entries


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_calibration_of_a_padded_batch_equals_one_utterance_at_a_time(encoder):
  """Padding never enters a scale: every largest magnitude of a batch padded to one length is
  the largest over the utterances calibrated alone, each a whole number of streamed chunks (8
  feature frames) long, so with no padding at all. (A LayerNorm maps a padded frame to its
  bias: counted, the padded frames raise 3 of this Transformer's 26 maxima by 2-5% and 6 of
  the Conformer's 42 by up to 12%.)"""
  model = _model(encoder)
  feats, _ = _features(t=48)
  lengths = jnp.asarray([48, 40, 24, 8])
  batch = calibrate(model, [(feats, lengths)])
  alone = calibrate(model, [(feats[u:u + 1, :n], lengths[u:u + 1])
                            for u, n in enumerate(np.asarray(lengths))])
  assert set(batch) == set(alone)
  for name in batch:
    assert batch[name] == pytest.approx(alone[name], rel=1e-5), name


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_the_encoder_hands_calibration_its_residual_stream_after_every_unit(encoder):
  """What calibration observes (`Context.observe`) is the model's own pass: the stream after
  the subsampling, after each unit of each block (the stream before it plus the unit's scaled
  output) and after each block, which ends where the encoder's frames begin."""
  from asr.arrays import mask_padding
  from asr.models.context import Context
  model = _model(encoder)
  feats, lengths = _features(t=44)
  seen = {}
  enc = model.encode(feats, lengths, Context(observe=lambda name, x: seen.__setitem__(name, x)))
  block = model.encoder.blocks[0]
  units = [name for name, _ in block.layout]
  assert list(seen) == ["encoder/subsampling"] + [
      f"encoder/blocks/{i}{unit}" for i in range(2) for unit in [f"/{u}" for u in units] + [""]]
  n = np.asarray(enc.lengths)
  valid = np.arange(seen["encoder/subsampling"].shape[1])[None, :] < n[:, None]
  name, scale, unit = block.units()[-1]
  before = seen[f"encoder/blocks/0/{units[-2]}"]
  added = scale * (unit.forward(before) if name.startswith("ffn") else None)
  np.testing.assert_allclose(np.asarray(seen[f"encoder/blocks/0/{name}"] - before)[valid],
                             np.asarray(added)[valid], atol=1e-5)
  last = seen["encoder/blocks/1"]
  if model.encoder.final_norm is not None:
    last = mask_padding(model.encoder.final_norm(last), enc.lengths)
  np.testing.assert_allclose(np.asarray(last)[:, : enc.frames.shape[1]], enc.frames, atol=1e-6)


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_backend_accounting_counts_every_matrix(encoder):
  from hardware.int8_backend import compressed_bytes, model_work, weight_tensors
  model = _model(encoder)
  im = convert(model, calibrate(model, [_features(t=40)]))
  w = weight_tensors(im)
  ffn = "ffn" if encoder == "transformer" else "ffn2"
  assert {"encoder/subsampling/0/proj", "encoder/blocks/1/attention/qkv",
          f"encoder/blocks/1/{ffn}/down", "joint/out"} <= set(w)
  # Dense MACs per output frame against the float encoder's own count at a full window.
  enc = model.encoder
  keys = (enc.cfg.left_chunks + 1) * enc.cfg.chunk
  want = enc.subsampling_macs()
  for b in enc.blocks:
    for name, _, unit in b.units():
      want += unit.macs_per_frame(keys) if name == "attention" else unit.macs_per_frame()
  assert model_work(im).encoder(keys) == want
  assert model_work(im, executed=True).encoder(keys) < want   # some weights round to zero
  assert compressed_bytes(im) > sum(v.size for v in w.values())   # bitmaps, scales, tables


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_stage_by_stage_comparison_ends_where_both_encoders_end(encoder):
  from hardware.int8_backend import compare_layers
  model = _model(encoder)
  feats, lengths = _features(t=44)
  scales = calibrate(model, [(feats, lengths)])
  im = convert(model, scales)
  stages = compare_layers(model, im, feats, lengths)
  units = ([f"/{u}" for u in ("ffn1", "attention", "conv", "ffn2")] + [""]   # block norm
           if encoder == "conformer" else ["/attention", "/ffn"])
  assert [s[0] for s in stages] == (
      ["encoder/subsampling"] + [f"encoder/blocks/{i}{u}" for i in range(2) for u in units]
      + ([] if encoder == "conformer" else ["encoder/final_norm"]))
  _, float_out, int_out, n = stages[-1]
  enc = model.encode(feats, lengths)
  np.testing.assert_array_equal(n, np.asarray(enc.lengths))
  valid = np.arange(float_out.shape[1])[None, :] < n[:, None]
  keep = enc.frames.shape[1]
  np.testing.assert_allclose(float_out[:, :keep][valid[:, :keep]],
                             np.asarray(enc.frames)[valid[:, :keep]], atol=1e-5)
  x, xl = im.prepare(model.frontend(feats, lengths), lengths)
  frames, _ = fp.integer_jit(lambda m, x, l: m.encode(x, l))(im, x, xl)
  np.testing.assert_allclose(int_out[valid], np.asarray(frames)[valid] * scales["joint/enc_proj"]
                             / 127, rtol=1e-6)
  for name, f, q, _ in stages:        # each stage within a tenth of its float range
    assert np.abs(q - f)[valid].max() < 0.1 * np.abs(f[valid]).max(), name
