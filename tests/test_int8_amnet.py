"""The amortized branching encoder on the int8 path (`hardware.int8_amnet`): the jitted integer
encoder, its arbitrator, backlog and routes, equal the plain Python-integer reference bit for
bit, with a pruned and with a factored cheap branch; the recognizer counts each frame's branch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import Transducer, TransducerConfig
from asr.models.amnet import AmNetConfig
from hardware import fixed_point as fp
from hardware import int8_reference as ref
from hardware.int8_amnet import IntAmNetEncoder
from hardware.int8_lstm import quantize_features
from hardware.int8_transducer import calibrate, convert
from tests.helpers import randomize


def _model(cheap: str, seed=0):
  # A processor of 3 MFLOP/s: the full branch (about 0.14 MFLOPs a 40 ms frame) runs behind
  # real time, so the backlog builds and turns decisions.
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder="amnet", encoder_config=AmNetConfig(
      hidden=16, layers=2, stack=2, layer_norm=True, reduce=2, reduce_after=1,
      arbitrator_hidden=8, backlog_flops_per_second=3e6, backlog_zero_skipping=True),
                         predictor="stateless", pred_embed=8, pred_hidden=16, joint_dim=16)
  m = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.4)
  m.joint.enc_proj.kernel[...] = m.joint.enc_proj.kernel[...] * 4.0
  m.joint.out.kernel[...] = m.joint.out.kernel[...] * 2.0
  m.encoder.arbitrator.backlog_weight[...] = jnp.array([-0.5, 0.5])
  for layer in m.encoder.layers:
    for name in ("cheap_input", "cheap_recurrent"):
      dense = getattr(layer, name)
      if cheap == "pruned":                  # 80% of the weights zero
        w = np.asarray(dense.kernel[...])
        dense.kernel[...] = jnp.where(np.abs(w) >= np.quantile(np.abs(w), 0.8), w, 0.0)
  if cheap == "factored":
    from compression.factorization import factorize
    factorize(rank=3, include="/cheap_")(m)
  return m


def _features(seed=0, b=4, t=48):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((b, t, 8)) * 2 - 3, jnp.float32),
          jnp.asarray([t, 31, 17, 6]))


@pytest.mark.parametrize("cheap", ["pruned", "factored"])
def test_integer_amnet_equals_the_reference_bit_for_bit(cheap):
  model = _model(cheap)
  feats, lengths = _features()
  scales = calibrate(model, [(feats, lengths)])
  if cheap == "factored":   # the inner products of the factors, calibrated
    assert {"encoder/layers/0/cheap_input/v", "encoder/layers/1/cheap_recurrent/v"} <= set(scales)
  im = convert(model, scales)
  assert isinstance(im.encoder, IntAmNetEncoder)
  x, xl = quantize_features(model.frontend(feats, lengths), lengths, 2, im.in_scale)
  frames, frame_lengths, route = fp.integer_jit(lambda e, x, l: e.routed_encode(x, l))(
      im.encoder, x, xl)
  frames, route = np.asarray(frames), np.asarray(route)
  both = 0
  for u in range(len(lengths)):
    want, want_route = ref.amnet_encoder(im.encoder, np.asarray(x)[u:u + 1, : int(xl[u])])
    n = int(frame_lengths[u])
    np.testing.assert_array_equal(frames[u, :n], want[0], err_msg=f"utterance {u}")
    assert route[u, :n].tolist() == want_route
    assert (frames[u, n:] == 0).all() and (route[u, n:] == 0).all()
    both += 0 < sum(want_route) < len(want_route)
  assert both >= 2                                # utterances that used both branches
  # The same transcripts as the reference's greedy search over the whole model.
  tokens, token_lengths, _ = fp.integer_jit(
      lambda m, x, l: __import__("hardware.int8_transducer", fromlist=["greedy"]).greedy(
          m, *m.encoder.routed_encode(x, l)[:2], 3, 80))(im, x, xl)
  got = [np.asarray(tokens)[i, : int(token_lengths[i])].tolist() for i in range(len(lengths))]
  assert got == ref.greedy(im, np.asarray(x), np.asarray(xl), 3)
  # The float model's hard routes, mostly the same frames (the integer logits round).
  enc = model.encode(feats, lengths)
  valid = np.arange(route.shape[1])[None, :] < np.asarray(enc.lengths)[:, None]
  agree = (np.asarray(enc.aux["fast"])[valid] == route[valid]).mean()
  assert agree > 0.8, agree


def test_the_int8_recognizer_counts_each_frames_branch(tmp_path):
  from hardware.int8_backend import compressed_bytes, model_work, weight_tensors
  from tests.helpers import int8_recognition
  from hardware.weight_format import packed_bytes
  recognize, out = int8_recognition(_model("factored"))
  enc = recognize.model.encoder
  full, cheap = enc.branch_macs()
  arbitrator = enc.arbitrator.macs()
  valid = np.arange(out["flops"].shape[1])[None, :] < out["frame_lengths"][:, None]
  per_frame = out["flops"][valid] / 2
  assert set(np.unique(per_frame)) <= {full + arbitrator, cheap + arbitrator}
  fast = int(np.sum(per_frame == cheap + arbitrator))
  assert out["fast_frames"].sum() == fast
  # Every weight of both branches and the arbitrator is packed.
  tensors = weight_tensors(recognize.model)
  assert {"encoder/layers/0/input", "encoder/layers/1/recurrent", "encoder/layers/0/cheap/input/u",
          "encoder/layers/1/cheap/recurrent/v", "encoder/arbitrator/hidden",
          "encoder/arbitrator/out"} <= set(tensors)
  assert compressed_bytes(recognize.model, group=1) > sum(packed_bytes(w, group=1)
                                                         for w in tensors.values())
  assert model_work(recognize.model).encoder_frame == full + arbitrator


def test_stage_errors_compare_both_encoders_on_the_integer_routes():
  from hardware.int8_backend import stage_errors
  model = _model("factored")
  feats, lengths = _features()
  im = convert(model, calibrate(model, [(feats, lengths)]))
  errors = stage_errors(model, im, feats, lengths)
  assert list(errors) == ["input", "layer 0 LSTM", "layer 0 norm", "layer 1 LSTM", "layer 1 norm"]
  # Measured 0.6-2.6% (the factored cheap branch included): 8-bit steps, not a wrong scale.
  assert all(np.isfinite(e) and e < 0.06 for e in errors.values()), errors
