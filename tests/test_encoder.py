"""The LSTM encoder's time reduction against the layers run by hand, and its FLOP count."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import Transducer, TransducerConfig
from asr.models.encoder import LSTMEncoder


def test_time_reduction_equals_layers_run_by_hand_on_concatenated_pairs():
  enc = LSTMEncoder(num_mels=4, hidden=8, layers=3, stack=2, reduce=2, reduce_after=1,
                    rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.standard_normal((2, 14, 4)), jnp.float32)
  lengths = jnp.array([14, 9], jnp.int32)
  out = enc(feats, lengths)

  # By hand: stack pairs of features (7 frames; lengths 7 and 5), run layer 1, then join
  # consecutive output pairs (zero-padding the odd last frame) -> 4 frames, lengths 4 and 3.
  x = np.asarray(feats).reshape(2, 7, 8)
  y1, _ = enc.layers[0](jnp.asarray(x), jnp.array([7, 5]))
  y1 = np.concatenate([np.asarray(y1), np.zeros((2, 1, 8), np.float32)], axis=1)
  x2 = y1.reshape(2, 4, 16)
  y2, _ = enc.layers[1](jnp.asarray(x2), jnp.array([4, 3]))
  y3, _ = enc.layers[2](y2, jnp.array([4, 3]))

  np.testing.assert_array_equal(np.asarray(out.lengths), [4, 3])
  np.testing.assert_allclose(np.asarray(out.frames), np.asarray(y3), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.aux["pre_reduction_lengths"]), [7, 5])
  np.testing.assert_allclose(np.asarray(out.aux["pre_reduction"]), y1[:, :7], atol=1e-6)
  # Per output frame: layer 1 runs twice (input 8 -> 8), layers 2 (16 -> 8) and 3 (8 -> 8) once.
  macs = 2 * 4 * 8 * (8 + 8) + 4 * 8 * (16 + 8) + 4 * 8 * (8 + 8)
  assert enc.flops_per_frame() == 2 * macs
  np.testing.assert_array_equal(np.asarray(out.flops), [[2 * macs] * 4, [2 * macs] * 3 + [0]])


def test_ctc_runs_below_the_reduction_where_every_character_has_a_frame():
  cfg = TransducerConfig(vocab=5, num_mels=4, stack=1, enc_hidden=8, enc_layers=2,
                         enc_reduce=4, pred_embed=4, pred_hidden=8, joint_dim=8, ctc_weight=0.5)
  m = Transducer(cfg, rngs=nnx.Rngs(0))
  feats = jnp.asarray(np.random.default_rng(1).standard_normal((1, 8, 4)), jnp.float32)
  labels = jnp.array([[1, 2, 3, 4, 1, 2]], jnp.int32)
  out = m.losses(feats, jnp.array([8]), labels, jnp.array([6]))
  # 8 frames before the reduction hold 6 labels; the 2 frames after it could not (CTC = inf).
  assert np.isfinite(float(out["ctc"][0])) and float(out["ctc"][0]) < 1e4
  assert np.isfinite(float(out["rnnt"][0]))
  assert out["frame_lengths"].tolist() == [2]


def test_reduction_must_leave_layers_on_both_sides():
  with pytest.raises(ValueError, match="reduce_after=2"):
    LSTMEncoder(num_mels=4, hidden=8, layers=2, reduce=2, reduce_after=2, rngs=nnx.Rngs(0))
