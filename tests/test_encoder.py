"""The LSTM encoder family: its LSTM against a NumPy cell, its time reduction against its layers
run by hand, its FLOP count against the matrix products the program executes, the factory."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import LSTMEncoder, LSTMEncoderConfig, Transducer, TransducerConfig
from asr.models.encoder import encoder_config
from asr.models.context import Context
from asr.models.dense import intercept_dense, set_matmul_dtype
from asr.models.lstm import LSTM, LSTMState, scan_cell
from tests.helpers import matmul_flops, numpy_lstm, randomize


def test_lstm_layer_equals_a_numpy_cell_and_holds_state_past_each_length():
  layer = randomize(LSTM(5, 6, rngs=nnx.Rngs(0)), seed=1)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 9, 5)).astype(np.float32)
  lengths = np.array([9, 4, 1])
  y, state = layer(jnp.asarray(x), jnp.asarray(lengths))
  ref_y, ref_h, ref_c = numpy_lstm(x.astype(np.float64), lengths,
                                   np.asarray(layer.input.kernel[...], np.float64),
                                   np.asarray(layer.input.bias[...], np.float64),
                                   np.asarray(layer.recurrent.kernel[...], np.float64))
  np.testing.assert_allclose(np.asarray(y), ref_y, atol=1e-5)
  np.testing.assert_allclose(np.asarray(state.h), ref_h, atol=1e-5)
  np.testing.assert_allclose(np.asarray(state.c), ref_c, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_recurrence_gradients_equal_autodiff_of_the_cells_scan(dtype):
  """The plain LSTM's fused backward pass (`lstm_recurrence`) against autodiff of the cell's
  own scan (an interceptor makes `scan_cell` take the generic path): the gradients of the
  parameters, the input and the initial state, under cotangents on every output frame and on
  the final state, with frames past each length and a held state."""
  layer = randomize(LSTM(5, 6, rngs=nnx.Rngs(0)), seed=1)
  set_matmul_dtype(layer, dtype)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 9, 5)), jnp.float32)
  lengths = jnp.array([9, 4, 0])
  state = LSTMState(*(jnp.asarray(rng.standard_normal((3, 6)), jnp.float32) for _ in range(2)))
  dy, dh, dc = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in [(3, 9, 6), (3, 6),
                                                                         (3, 6)])
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(params, x, state, generic):
    model = nnx.merge(graphdef, params, rest)
    with intercept_dense(lambda layer, v, apply: apply(v)) if generic else contextlib.nullcontext():
      y, final, _ = scan_cell(model, x, lengths, state)
    return jnp.vdot(y, dy) + jnp.vdot(final.h, dh) + jnp.vdot(final.c, dc)
  fused = jax.grad(loss, argnums=(0, 1, 2))(params, x, state, False)
  generic = jax.grad(loss, argnums=(0, 1, 2))(params, x, state, True)
  tol = 1e-5 if dtype == "float32" else 2e-2
  for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(generic)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol,
                               atol=tol * float(jnp.max(jnp.abs(want))))
  # The utterance of length 0 holds its state: its gradient is the final state's cotangent.
  np.testing.assert_allclose(np.asarray(fused[2].h[2]), np.asarray(dh[2]), rtol=1e-6)


class _NoisyCell(LSTM):
  """The plain cell, reporting per frame a uniform draw from the key it was handed."""

  def cell(self, carry, gates_in, ctx=Context()):
    new, h, _ = super().cell(carry, gates_in, ctx)
    return new, h, {"draw": jax.random.uniform(ctx.key(), (h.shape[0],))}


def test_a_cell_subclass_runs_in_the_encoder_with_a_key_per_layer_and_frame():
  """The seam a routed cell uses: the encoder runs any cell class unchanged, hands frame t of
  layer i the key ctx.fold(i, t) and returns each frame's aux, `[B, T_i]` per layer."""
  cfg = LSTMEncoderConfig(hidden=6, layers=2, stack=1, reduce=2, reduce_after=1)
  plain = randomize(LSTMEncoder(4, cfg, rngs=nnx.Rngs(0)))
  noisy = randomize(LSTMEncoder(4, cfg, rngs=nnx.Rngs(0)))
  noisy.layers = nnx.List([randomize(_NoisyCell(4, 6, rngs=nnx.Rngs(0))),
                           randomize(_NoisyCell(12, 6, rngs=nnx.Rngs(1)))])
  plain.layers = nnx.List([randomize(LSTM(4, 6, rngs=nnx.Rngs(0))),
                           randomize(LSTM(12, 6, rngs=nnx.Rngs(1)))])
  feats = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 4)), jnp.float32)
  lengths = jnp.array([8, 5])
  key = jax.random.key(3)
  out = noisy(feats, lengths, Context(rng=key))
  np.testing.assert_allclose(np.asarray(out.frames),
                             np.asarray(plain(feats, lengths, Context(rng=key)).frames), atol=1e-6)
  draws = [np.asarray(c["draw"]) for c in out.aux["cells"]]
  assert [d.shape for d in draws] == [(2, 8), (2, 4)]
  for i, d in enumerate(draws):
    for t in range(d.shape[1]):
      expected = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, i), t), (2,))
      np.testing.assert_array_equal(d[:, t], np.asarray(expected))
  assert "cells" not in plain(feats, lengths).aux


def test_time_reduction_equals_layers_run_by_hand_on_concatenated_pairs():
  cfg = LSTMEncoderConfig(hidden=8, layers=3, stack=2, reduce=2, reduce_after=1)
  enc = randomize(LSTMEncoder(4, cfg, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.standard_normal((2, 14, 4)), jnp.float32)
  lengths = jnp.array([14, 9], jnp.int32)
  out = enc(feats, lengths)

  # By hand: stack pairs of features (7 frames; lengths 7 and 5), run layer 1, then join
  # consecutive output pairs (zero-padding the odd last frame) -> 4 frames, lengths 4 and 3.
  x = np.array(feats)
  x[1, 9:] = 0.0  # past the second utterance's 9 frames: not its audio
  x = x.reshape(2, 7, 8)
  y1, _ = enc.layers[0](jnp.asarray(x), jnp.array([7, 5]))
  y1 = np.concatenate([np.asarray(y1), np.zeros((2, 1, 8), np.float32)], axis=1)
  x2 = y1.reshape(2, 4, 16)
  y2, _ = enc.layers[1](jnp.asarray(x2), jnp.array([4, 3]))
  y3, _ = enc.layers[2](y2, jnp.array([4, 3]))

  np.testing.assert_array_equal(np.asarray(out.lengths), [4, 3])
  np.testing.assert_allclose(np.asarray(out.frames), np.asarray(y3), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.aux["pre_reduction_lengths"]), [7, 5])
  np.testing.assert_allclose(np.asarray(out.aux["pre_reduction"]), y1[:, :7], atol=1e-5)
  assert out.frame_seconds == pytest.approx(0.01 * 2 * 2)


@pytest.mark.parametrize("reduce", [1, 2, 3])
def test_flops_per_frame_equal_the_matrix_products_the_encoder_executes(reduce):
  cfg = LSTMEncoderConfig(hidden=8, layers=3, stack=2, reduce=reduce, reduce_after=1,
                          layer_norm=True)
  enc = LSTMEncoder(5, cfg, rngs=nnx.Rngs(0))
  out_frames = 4
  feats = jnp.ones((1, out_frames * 2 * reduce, 5))
  counted = matmul_flops(lambda f: enc(f, jnp.array([f.shape[1]])).frames, feats)
  assert enc.flops_per_frame() == counted / out_frames
  out = enc(feats, jnp.array([feats.shape[1] - 1]))  # a partial last frame still counts whole
  np.testing.assert_array_equal(np.asarray(out.flops), [[counted / out_frames] * out_frames])


def test_compute_per_second_of_audio_by_hand_for_two_reductions():
  # 4 mels stacked in pairs, two LSTMs of 8. Per 20 ms frame without reduction: two layers of
  # 4 * 8 * (8 + 8) multiply-accumulates. With reduction 2 (40 ms frames), the first layer
  # runs twice per frame and the second sees 16 inputs: 2 * 512 + 4 * 8 * (16 + 8).
  plain = LSTMEncoder(4, LSTMEncoderConfig(hidden=8, layers=2, stack=2), rngs=nnx.Rngs(0))
  reduced = LSTMEncoder(4, LSTMEncoderConfig(hidden=8, layers=2, stack=2, reduce=2),
                        rngs=nnx.Rngs(0))
  assert plain.flops_per_frame() == 2 * (512 + 512) == 2048
  assert reduced.flops_per_frame() == 2 * (2 * 512 + 768) == 3584
  # Dearer per frame, cheaper per second of audio: 102,400 against 89,600 FLOP/s.
  assert plain.flops_per_frame() / plain.frame_seconds == pytest.approx(102_400)
  assert reduced.flops_per_frame() / reduced.frame_seconds == pytest.approx(89_600)


def test_ctc_runs_below_the_reduction_where_every_character_has_a_frame():
  cfg = TransducerConfig(vocab=5, num_mels=4, encoder_config=LSTMEncoderConfig(
      hidden=8, layers=2, stack=1, reduce=4), pred_embed=4, pred_hidden=8, joint_dim=8,
                         ctc_head=True, normalization="global")
  m = Transducer(cfg, rngs=nnx.Rngs(0))
  feats = jnp.asarray(np.random.default_rng(1).standard_normal((1, 8, 4)), jnp.float32)
  labels = jnp.array([[1, 2, 3, 4, 1, 2]], jnp.int32)
  enc = m.encode(feats, jnp.array([8]))
  nll = m.score(enc, labels, jnp.array([6]))
  # 8 frames before the reduction hold 6 labels; the 2 frames after it could not (CTC = inf).
  assert np.isfinite(float(nll["ctc"][0])) and float(nll["ctc"][0]) < 1e4
  assert np.isfinite(float(nll["rnnt"][0]))
  assert enc.lengths.tolist() == [2]


def test_reduction_must_leave_layers_on_both_sides():
  with pytest.raises(ValueError, match="reduce_after=2"):
    LSTMEncoder(4, LSTMEncoderConfig(hidden=8, layers=2, reduce=2, reduce_after=2),
                rngs=nnx.Rngs(0))


def test_the_factory_names_an_unknown_family_or_option():
  with pytest.raises(ValueError, match="unknown encoder family .lstn.*known: amnet, conformer, lstm, "
                                       "transformer"):
    encoder_config("lstn", {})
  with pytest.raises(ValueError, match="model.lstm has no option.*'hiden'.*takes.*hidden"):
    encoder_config("lstm", {"hiden": 3})
  assert encoder_config("lstm", {"hidden": 3}) == LSTMEncoderConfig(hidden=3)


def test_ctc_rows_whose_frames_cannot_hold_their_labels_score_zero_and_are_counted():
  from asr.models import ConformerConfig
  from asr.training import objective
  cfg = TransducerConfig(vocab=5, num_mels=4, encoder="conformer", encoder_config=ConformerConfig(
      dim=8, layers=1, heads=2, ffn_mult=1, chunk=1, left_chunks=1, conv_kernel=2),
      pred_embed=4, pred_hidden=8, joint_dim=8, ctc_head=True, normalization="global")
  m = Transducer(cfg, rngs=nnx.Rngs(0))
  feats = jnp.asarray(np.random.default_rng(1).standard_normal((4, 12, 4)), jnp.float32)
  # 12, 12, 12 and 8 feature frames: 3, 3, 3 and 2 frames of 40 ms. 3 frames hold [1, 2, 3]
  # and [1, 1] (a blank between the repeats), not [1, 1, 2]; 2 frames do not hold [3, 3].
  labels = jnp.array([[1, 2, 3], [1, 1, 0], [1, 1, 2], [3, 3, 0]], jnp.int32)
  label_lengths = jnp.array([3, 2, 3, 2])
  enc, nll = nnx.jit(lambda m: (lambda e: (e, m.score(e, labels, label_lengths)))(
      m.encode(feats, jnp.array([12, 12, 12, 8]))))(m)
  assert np.asarray(nll["ctc_feasible"]).tolist() == [True, True, False, False]
  ctc = np.asarray(nll["ctc"])
  assert (ctc[:2] > 0).all() and np.isfinite(ctc[:2]).all() and (ctc[2:] == 0).all()
  x = objective.LossInputs(model=m, params=None, batch={"label_lengths": label_lengths},
                           encoded=enc, nll=nll, is_real=jnp.array([True, True, True, False]),
                           num_labels=jnp.float32(8), schedules={}, rng=None)
  value, metrics = objective.ctc_term(x)
  assert float(value) == pytest.approx((ctc[0] + ctc[1]) / 5, rel=1e-6)
  assert int(metrics["infeasible"]) == 1   # the fourth row is batch padding
