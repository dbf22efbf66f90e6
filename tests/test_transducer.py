"""The transducer as a whole: padding never changes a result, encode once / score many, the
prediction network's two forms agree, compute is counted by hand, the dense-layer seam."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr import features as F
from asr.decoding import greedy_search
from asr.models import ConformerConfig, LSTMEncoderConfig, Transducer, TransducerConfig
from asr.models.dense import Dense, intercept_dense
from asr.models.prediction import LSTMPredictor, StatelessPredictor
from tests.helpers import randomize


def _model(seed=0, normalization="causal", predictor="lstm", reduce=2, num_mels=80,
           encoder="lstm"):
  encoder_config = (ConformerConfig(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2,
                                    left_chunks=2, conv_kernel=3) if encoder == "conformer" else
                    LSTMEncoderConfig(hidden=16, layers=2, stack=3, layer_norm=True, reduce=reduce))
  cfg = TransducerConfig(
      vocab=7, num_mels=num_mels, normalization=normalization, norm_prior_frames=20.0,
      encoder=encoder, encoder_config=encoder_config,
      predictor=predictor, pred_embed=8, pred_hidden=16, joint_dim=16, ctc_head=True)
  m = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed=seed)
  m.frontend.set_statistics(np.full(num_mels, -6.0), np.full(num_mels, 2.0))
  return m


@pytest.mark.parametrize("normalization,encoder", [("causal", "lstm"), ("utterance", "lstm"),
                                                    ("causal", "conformer")])
def test_one_utterance_in_two_buckets_gives_the_same_frames_loss_and_tokens(normalization,
                                                                           encoder):
  m = _model(normalization=normalization, encoder=encoder)
  rng = np.random.default_rng(0)
  n = 14_000  # 86 feature frames: 29 stacked, so the last 60 ms frame is a partial pair
  audio = (rng.standard_normal(n) * 2000).astype(np.int16)
  labels, label_lengths = jnp.array([[1, 2, 3, 4, 5, 6, 1, 2]]), jnp.array([8])
  @nnx.jit
  def run(m, padded):
    feats, lengths = F.log_mel(padded, jnp.array([n]))
    enc = m.encode(feats, lengths)
    tokens, token_lengths = greedy_search(m, enc.frames, enc.lengths, max_symbols=3, max_len=60)
    return enc, m.score(enc, labels, label_lengths), tokens, token_lengths
  results = []
  for bucket in (n, 32_000):
    padded = np.zeros((1, bucket), np.int16)
    padded[0, :n] = audio
    padded[0, n:] = rng.integers(-3000, 3000, bucket - n)  # junk, not silence
    enc, nll, tokens, token_lengths = run(m, jnp.asarray(padded))
    t = int(enc.lengths[0])
    results.append((np.asarray(enc.frames[0, :t]), np.asarray(enc.flops[0, :t]),
                    float(nll["rnnt"][0]), float(nll["ctc"][0]),
                    list(np.asarray(tokens[0, : int(token_lengths[0])]))))
    assert not np.any(np.asarray(enc.frames[0, t:]))
  (f1, fl1, r1, c1, t1), (f2, fl2, r2, c2, t2) = results
  np.testing.assert_allclose(f1, f2, atol=1e-5)
  np.testing.assert_array_equal(fl1, fl2)
  assert r1 == pytest.approx(r2, rel=1e-5) and c1 == pytest.approx(c2, rel=1e-5)
  assert t1 == t2 and len(t1) > 3


def test_k_hypotheses_scored_against_one_encoder_pass_equal_separate_passes():
  m = _model(seed=1)
  rng = np.random.default_rng(1)
  feats = jnp.asarray(rng.normal(-6, 2, (2, 48, 80)), jnp.float32)
  lengths = jnp.array([48, 30])
  labels = jnp.asarray(rng.integers(1, 7, (2, 3, 5)), jnp.int32)
  label_lengths = jnp.array([[5, 2, 0], [4, 4, 1]])
  score = nnx.jit(lambda m, labels, lengths_: m.score(m.encode(feats, lengths), labels, lengths_))
  nll = score(m, labels, label_lengths)
  assert nll["rnnt"].shape == nll["ctc"].shape == (2, 3)
  for k in range(3):
    single = score(m, labels[:, k], label_lengths[:, k])
    for name in ("rnnt", "ctc"):
      np.testing.assert_allclose(np.asarray(nll[name][:, k]), np.asarray(single[name]),
                                 rtol=1e-5)


@pytest.mark.parametrize("cls", [LSTMPredictor, StatelessPredictor])
def test_prediction_network_call_equals_its_steps_token_by_token(cls):
  p = randomize(cls(9, 6, 10, rngs=nnx.Rngs(0)), seed=2)
  labels = jnp.asarray(np.random.default_rng(2).integers(1, 9, (3, 7)), jnp.int32)
  full = np.asarray(p(labels))                           # [B, U+1, H]
  state = p.init_state(3)
  out, state = p.step(state, jnp.zeros(3, jnp.int32))   # the start token
  steps = [np.asarray(out)]
  for u in range(7):
    out, state = p.step(state, labels[:, u])
    steps.append(np.asarray(out))
  np.testing.assert_allclose(full, np.stack(steps, axis=1), atol=1e-5)


def test_decoding_flops_by_hand():
  # Joint 16 wide over 7 symbols, encoder output 16, stateless predictor (2 x 8 -> 16).
  m = _model(predictor="stateless")
  per_frame = 2 * 16 * 16 + 2 * 16 * 7          # project the frame; the blank's distribution
  per_token = 2 * 16 * 16 + 2 * 16 * 16 + 2 * 16 * 7  # predictor; project; one distribution
  got = m.decoding_flops(jnp.array([10, 3]), jnp.array([4, 0]))
  np.testing.assert_allclose(np.asarray(got), [10 * per_frame + 4 * per_token, 3 * per_frame])


def test_every_weight_matrix_is_a_dense_layer_that_an_interceptor_sees():
  m = _model(seed=3)
  dense = [node for _, node in nnx.iter_graph(m) if isinstance(node, Dense)]
  # LSTM input and recurrent x 2 encoder layers, predictor 2, joint 3, CTC head 1.
  assert len(dense) == 2 * 2 + 2 + 3 + 1
  feats = jnp.asarray(np.random.default_rng(3).normal(-6, 2, (1, 24, 80)), jnp.float32)
  lengths = jnp.array([24])
  seen = {}

  def record(layer, x, apply):
    seen.setdefault(id(layer), x)
    return apply(x)
  plain = m.encode(feats, lengths).frames
  with intercept_dense(record):
    recorded = m.encode(feats, lengths).frames
  np.testing.assert_array_equal(np.asarray(recorded), np.asarray(plain))
  assert len(seen) == 4  # the encoder's four matrices
  stacked, _ = F.stack_frames(m.frontend(feats, lengths), lengths, 3)
  np.testing.assert_allclose(np.asarray(seen[id(m.encoder.layers[0].input)]),
                             np.asarray(stacked), atol=1e-6)

  def fake_quantize(layer, x, apply):  # 8-bit activations, as a QAT transform would
    scale = jnp.max(jnp.abs(x)) / 127 + 1e-12
    return apply(jnp.round(x / scale) * scale)
  with intercept_dense(fake_quantize):
    quantized = m.encode(feats, lengths).frames
  assert 0 < float(jnp.max(jnp.abs(plain - quantized))) < 0.25
