"""Greedy and beam search against per-utterance loops and brute-force enumeration; streaming."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.decoding import beam_search, greedy_search, init_greedy_state, streaming_greedy_step
from asr.models import Transducer, TransducerConfig


def _model(vocab=6, seed=0, blank_bias=0.0, sharpen=3.0, predictor="lstm", reduce=1):
  cfg = TransducerConfig(vocab=vocab, num_mels=8, stack=2, enc_hidden=16, enc_layers=2,
                         enc_layer_norm=True, enc_reduce=reduce,
                         predictor=predictor, pred_embed=8, pred_hidden=16, joint_dim=16)
  m = Transducer(cfg, rngs=nnx.Rngs(seed))
  m.joint.out.kernel[...] = m.joint.out.kernel[...] * sharpen  # decisive, emitting outputs
  m.joint.out.bias[...] = m.joint.out.bias[...].at[0].set(blank_bias)
  return m


def _encoded(m, b=4, t=40, seed=0):
  rng = np.random.default_rng(seed)
  feats = jnp.asarray(rng.standard_normal((b, t, 8)), jnp.float32)
  lengths = jnp.asarray(np.concatenate([[t], rng.integers(2, t + 1, b - 1)]), jnp.int32)
  return m.encode(feats, lengths)


_pred_step = nnx.jit(lambda m, state, token: m.predictor.step(state, token))
_joint_logits = nnx.jit(lambda m, frame, out: m.joint.single(
    m.joint.project_encoder(frame), m.joint.project_prediction(out)))


def _greedy_loop(m, frames, length, max_symbols):
  """One utterance, plain Python: the reference for the batched search."""
  state = m.predictor.init_state(1)
  out, state = _pred_step(m, state, jnp.zeros(1, jnp.int32))
  tokens = []
  for t in range(int(length)):
    for _ in range(max_symbols):
      k = int(jnp.argmax(_joint_logits(m, frames[None, t], out)[0]))
      if k == 0:
        break
      tokens.append(k)
      out, state = _pred_step(m, state, jnp.array([k]))
  return tokens


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_equals_per_utterance_loop(predictor, max_symbols):
  m = _model(predictor=predictor)
  enc = _encoded(m)
  tokens, lengths = greedy_search(m, enc.frames, enc.lengths, max_symbols=max_symbols)
  emitted = 0
  for i in range(enc.frames.shape[0]):
    ref = _greedy_loop(m, enc.frames[i], enc.lengths[i], max_symbols)
    assert list(np.asarray(tokens[i, : lengths[i]])) == ref
    assert not np.asarray(tokens[i, lengths[i]:]).any()
    emitted += len(ref)
  assert emitted > 10  # the test model really emits


@pytest.mark.parametrize("max_symbols", [1, 2, 3])
def test_beam_of_one_is_greedy(max_symbols):
  m = _model(seed=1)
  enc = _encoded(m, seed=1)
  g_tok, g_len = greedy_search(m, enc.frames, enc.lengths, max_symbols=max_symbols)
  b_tok, b_len, _ = beam_search(m, enc.frames, enc.lengths, beam=1, max_symbols=max_symbols)
  np.testing.assert_array_equal(np.asarray(b_len[:, 0]), np.asarray(g_len))
  np.testing.assert_array_equal(np.asarray(b_tok[:, 0]), np.asarray(g_tok))


def test_nbest_is_sorted_unique_and_scores_are_log_probabilities():
  m = _model(seed=2, blank_bias=1.0)
  enc = _encoded(m, seed=2)
  tokens, lengths, scores = beam_search(m, enc.frames, enc.lengths, beam=4, max_symbols=2)
  scores = np.asarray(scores)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  assert np.all(scores[:, 0] < 0)
  for i in range(scores.shape[0]):
    live = scores[i] > -1e29
    seqs = [tuple(np.asarray(tokens[i, j, : lengths[i, j]])) for j in range(4) if live[j]]
    assert len(set(seqs)) == len(seqs) >= 2


def _capped_alignment_logprob(m, frames, hyp, max_symbols):
  """log sum over all alignments of `hyp` with at most `max_symbols` labels per frame."""
  outs = {}  # prefix -> prediction output

  def out(prefix):
    if prefix not in outs:
      state = m.predictor.init_state(1)
      o, state = _pred_step(m, state, jnp.zeros(1, jnp.int32))
      for tok in prefix:
        o, state = _pred_step(m, state, jnp.array([tok]))
      outs[prefix] = o
    return outs[prefix]

  def logp(t, prefix):
    return np.asarray(jax.nn.log_softmax(_joint_logits(m, frames[None, t], out(prefix))[0]))
  t_max = frames.shape[0]
  total = []
  # counts[t] labels emitted at frame t, summing to len(hyp), each <= max_symbols.
  for counts in itertools.product(range(max_symbols + 1), repeat=t_max):
    if sum(counts) != len(hyp):
      continue
    score, u = 0.0, 0
    for t, c in enumerate(counts):
      for _ in range(c):
        score += logp(t, tuple(hyp[:u]))[hyp[u]]
        u += 1
      score += logp(t, tuple(hyp[:u]))[0]
    total.append(score)
  return np.logaddexp.reduce(total)


def test_exhaustive_beam_equals_brute_force_sums_over_alignments():
  # With a beam wide enough to hold every hypothesis, merging makes each score the exact sum
  # over that hypothesis's alignments (under the per-frame cap).
  m = _model(vocab=3, seed=3, sharpen=1.0)
  enc = _encoded(m, b=1, t=4, seed=3)  # 4 features, stack 2 -> 2 frames
  frames = enc.frames[0, : int(enc.lengths[0])]
  tokens, lengths, scores = beam_search(m, enc.frames, enc.lengths, beam=64, max_symbols=2)
  live = np.asarray(scores[0]) > -1e29
  assert live.sum() == 1 + 2 + 4 + 8 + 16  # every sequence of 0..4 labels over 2 symbols
  for j in np.flatnonzero(live):
    hyp = list(np.asarray(tokens[0, j, : lengths[0, j]]))
    ref = _capped_alignment_logprob(m, frames, hyp, 2)
    np.testing.assert_allclose(float(scores[0, j]), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reduce", [1, 2])
def test_streaming_encoder_and_greedy_equal_full_utterance(reduce):
  m = _model(seed=4, reduce=reduce)
  rng = np.random.default_rng(4)
  b, t = 3, 36
  feats = jnp.asarray(rng.standard_normal((b, t, 8)), jnp.float32)
  lengths = jnp.array([36, 23, 10], jnp.int32)
  enc = m.encode(feats, lengths)
  g_tok, g_len = greedy_search(m, enc.frames, enc.lengths, max_symbols=3, max_len=60)

  enc_state = m.encoder.init_state(b)
  dec_state = init_greedy_state(m, b, 60)
  chunks = []
  size = 6 * reduce  # 3 output frames per chunk (a multiple of stack x reduce features)
  for start in range(0, t, size):
    chunk_len = jnp.clip(lengths - start, 0, size)
    out, _ = m.encoder.step(enc_state, feats[:, start:start + size], chunk_len)
    chunks.append(np.asarray(out.frames))
    enc_state, dec_state = streaming_greedy_step(m, enc_state, dec_state,
                                                 feats[:, start:start + size], chunk_len,
                                                 max_symbols=3)
  streamed = np.concatenate(chunks, axis=1)
  for i in range(b):
    n = int(enc.lengths[i])
    np.testing.assert_allclose(streamed[i, :n], np.asarray(enc.frames[i, :n]), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(dec_state.lengths), np.asarray(g_len))
  np.testing.assert_array_equal(np.asarray(dec_state.tokens), np.asarray(g_tok))
