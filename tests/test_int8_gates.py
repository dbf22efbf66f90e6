"""Gated residual units (`asr.models.gates`) on the int8 path: the jitted integer encoder's frames
and gates equal the Python-integer reference bit for bit, its gates follow the float model's,
and each frame's MACs are what the float model charges the same gates."""

import numpy as np
from flax import nnx

from asr.models import Transducer, TransducerConfig
from asr.models.conformer import ConformerConfig, TransformerConfig
from hardware import fixed_point as fp
from hardware import int8_reference as ref
from hardware.int8_backend import compressed_bytes, model_work, weight_tensors
from hardware.int8_transducer import calibrate, convert
from tests.helpers import int8_recognition, randomize
from tests.test_int8_transducer import _features


def _gated_model(encoder, seed=0):
  sizes = dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2, left_chunks=1, dropout=0.0,
               gates=True, gate_hidden=8, gate_block_input=True)
  enc = ConformerConfig(conv_kernel=3, **sizes) if encoder == "conformer" else \
      TransformerConfig(**sizes)
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder=encoder, encoder_config=enc,
                         predictor="stateless", pred_embed=8, joint_dim=16)
  model = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.4)
  feats, lengths = _features(t=44)
  for i, block in enumerate(model.encoder.blocks):  # each unit open on about half the frames
    enc = model.encode(feats, lengths)
    valid = np.arange(enc.frames.shape[1])[None, :] < np.asarray(enc.lengths)[:, None]
    logits = [np.asarray(enc.aux["units"][i][name]["gate_logit"])[valid]
              for name, _ in block.layout]
    bias = block.arbitrator.out.bias
    bias[...] = bias[...] - np.median(np.stack(logits, -1), axis=0) + 0.01
  return model


def test_gated_integer_encoder_equals_the_reference_and_charges_the_float_models_macs():
  # A Conformer: every kind of unit (attention, feed-forward, convolution) gated.
  model = _gated_model("conformer")
  feats, lengths = _features(t=44)                      # lengths 44, 31, 17, 6
  scales = calibrate(model, [(feats, lengths)])
  assert {"encoder/arbitrator/hidden", "encoder/blocks/1/arbitrator/from_input"} <= set(scales)
  im = convert(model, scales)
  x, xl = im.prepare(model.frontend(feats, lengths), lengths)
  frames, frame_lengths, gates = (np.asarray(a) for a in fp.integer_jit(
      lambda m, x, l: m.encoder.gated_encode(x, l))(im, x, xl))
  for u in range(len(lengths)):
    want_gates = []
    want, n = ref.transformer_encoder(im.encoder, np.asarray(x)[u:u + 1], int(xl[u]),
                                      want_gates)
    assert n == int(frame_lengths[u])
    np.testing.assert_array_equal(frames[u], want[0])
    np.testing.assert_array_equal(gates[u], np.stack(want_gates, axis=1))

  enc = model.encode(feats, lengths)
  t = enc.frames.shape[1]
  valid = np.arange(t)[None, :] < np.asarray(enc.lengths)[:, None]
  float_gates = np.stack([np.stack([np.asarray(a[name]["gate"]) for name, _ in
                                    model.encoder.cfg.layout], -1)
                          for a in enc.aux["units"]], 2) > 0.5          # [B, T, blocks, units]
  opened = float_gates[valid]
  assert 0.2 < opened.mean() < 0.8                     # a mixture of open and closed units
  # Logits near 0 may round either way: nine gates in ten agree (half the logits lie within
  # about one unit of the threshold here).
  assert (gates[:, :t] == float_gates)[valid].mean() >= 0.9
  agree = (gates[:, :t] == float_gates).all(axis=(2, 3)) & valid
  assert agree.sum() >= 0.5 * valid.sum()
  # Where every gate agrees, the processor's MACs are the float model's FLOPs / 2.
  keys = np.asarray(im.encoder.visible_keys(frame_lengths, frames.shape[1]))
  macs = np.asarray(im.encoder.frame_macs(gates, keys, np.arange(frames.shape[1])[None, :]
                                          < frame_lengths[:, None]))
  np.testing.assert_array_equal(2 * macs[:, :t][agree], np.asarray(enc.flops)[agree])
  # The arbitrators' weights are packed and counted with the rest.
  tensors = weight_tensors(im)
  assert {"encoder/arbitrator/hidden", "encoder/blocks/0/arbitrator/out",
          "encoder/blocks/1/arbitrator/from_input"} <= set(tensors)
  assert compressed_bytes(im) > sum(w.size for w in tensors.values())   # plus scales, biases
  assert model_work(im).encoder_frame > 0


def test_the_int8_recognizer_charges_each_frame_its_open_units():
  recognize, out = int8_recognition(_gated_model("conformer"))
  enc = recognize.model.encoder
  valid = np.arange(out["flops"].shape[1])[None, :] < out["frame_lengths"][:, None]
  keys = np.asarray(enc.visible_keys(out["frame_lengths"], valid.shape[1]))
  shape = valid.shape + (len(enc.blocks), len(enc.blocks[0].layout))
  every = enc.frame_macs(np.ones(shape, bool), keys, valid)      # every unit open
  none = enc.frame_macs(np.zeros(shape, bool), keys, valid)      # every unit closed
  per_frame = out["flops"] / 2
  assert (none[valid] <= per_frame[valid]).all() and (per_frame[valid] <= every[valid]).all()
  assert (per_frame[valid] < every[valid]).any() and (per_frame[valid] > none[valid]).any()
  share = out["open_frames"].sum() / valid.sum()      # the share of open unit gates
  assert 0 < share < 1
