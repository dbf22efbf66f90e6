"""Greedy and beam search against per-utterance loops and brute-force enumeration; streaming."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr import features as F
from asr.arrays import is_live
from asr.decoding import (beam_search, greedy_search, greedy_search_aligned, init_streaming,
                          streaming_greedy_step)
from asr.models import ConformerConfig, LSTMEncoderConfig, Transducer, TransducerConfig
from tests.helpers import randomize


def _model(vocab=6, seed=0, blank_bias=0.0, sharpen=3.0, predictor="lstm", reduce=1,
           num_mels=8, stack=2):
  cfg = TransducerConfig(vocab=vocab, num_mels=num_mels, encoder_config=LSTMEncoderConfig(
      hidden=16, layers=2, stack=stack, layer_norm=True, reduce=reduce),
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


def _greedy_loop(m, frames, length, max_symbols, alignment=False):
  """One utterance, plain Python: the reference for the batched search (and, with
  `alignment`, the number of labels emitted at each frame)."""
  state = m.predictor.init_state(1)
  out, state = _pred_step(m, state, jnp.zeros(1, jnp.int32))
  tokens, per_frame = [], []
  for t in range(int(length)):
    per_frame.append(0)
    for _ in range(max_symbols):
      k = int(jnp.argmax(_joint_logits(m, frames[None, t], out)[0]))
      if k == 0:
        break
      tokens.append(k)
      per_frame[-1] += 1
      out, state = _pred_step(m, state, jnp.array([k]))
  return (tokens, per_frame) if alignment else tokens


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


def test_greedy_alignment_counts_the_labels_of_each_frame():
  m = _model()
  enc = _encoded(m)
  tokens, lengths, emitted = greedy_search_aligned(m, enc.frames, enc.lengths, max_symbols=3)
  for i in range(enc.frames.shape[0]):
    ref, per_frame = _greedy_loop(m, enc.frames[i], enc.lengths[i], 3, alignment=True)
    assert list(np.asarray(tokens[i, : lengths[i]])) == ref
    n = int(enc.lengths[i])
    assert list(np.asarray(emitted[i, :n])) == per_frame and not np.asarray(emitted[i, n:]).any()
  assert int(np.asarray(emitted).max()) >= 2  # some frame emits a burst


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
    live = is_live(scores[i])
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
  live = is_live(np.asarray(scores[0]))
  assert live.sum() == 1 + 2 + 4 + 8 + 16  # every sequence of 0..4 labels over 2 symbols
  for j in np.flatnonzero(live):
    hyp = list(np.asarray(tokens[0, j, : lengths[0, j]]))
    ref = _capped_alignment_logprob(m, frames, hyp, 2)
    np.testing.assert_allclose(float(scores[0, j]), ref, rtol=1e-4, atol=1e-4)


def _conformer(seed):
  cfg = TransducerConfig(vocab=6, num_mels=80, encoder="conformer", encoder_config=ConformerConfig(
      dim=16, layers=2, heads=2, ffn_mult=2, chunk=2, left_chunks=2, conv_kernel=3),
      pred_embed=8, pred_hidden=16, joint_dim=16)
  return Transducer(cfg, rngs=nnx.Rngs(seed))


# The LSTM with a time reduction (stacking and reduction both streamed) and the Conformer.
@pytest.mark.parametrize("encoder", ["lstm-reduce2", "conformer"])
def test_streaming_from_raw_audio_equals_the_full_utterance(encoder):
  # Random parameters (LayerNorm biases included) and training statistics: a fresh model's
  # zeros would hide padding and normalization mistakes.
  m = (_conformer(4) if encoder == "conformer" else
       _model(seed=4, reduce=2 if encoder.endswith("2") else 1, num_mels=80, stack=3))
  m = randomize(m, seed=4, scale=0.3)
  m.frontend.set_statistics(np.linspace(-8, -4, 80), np.linspace(1.5, 3, 80))
  m.joint.out.kernel[...] = m.joint.out.kernel[...] * 4  # decisive, emitting outputs
  rng = np.random.default_rng(4)
  lengths = np.array([20_000, 11_337, 4_000])
  audio = (rng.standard_normal((3, 20_000)) * 2000).astype(np.int16)
  feats, feat_lengths = F.log_mel(jnp.asarray(audio), jnp.asarray(lengths))
  enc = m.encode(feats, feat_lengths)
  g_tok, g_len = greedy_search(m, enc.frames, enc.lengths, max_symbols=3, max_len=120)
  assert int(g_len.min()) > 2  # the test model really emits

  multiple = m.encoder.stream_multiple  # feature frames per chunk: 3 (6) for the LSTM, 8
  first, rest = F.stream_chunk_samples(2 * multiple)
  state, start = init_streaming(m, 3, 120), 0
  while start < audio.shape[1]:
    size = first if start == 0 else rest
    chunk = np.zeros((3, size), np.int16)
    piece = audio[:, start:start + size]
    chunk[:, :piece.shape[1]] = piece
    state = streaming_greedy_step(m, state, jnp.asarray(chunk),
                                  jnp.asarray(np.clip(lengths - start, 0, size)), max_symbols=3)
    start += size
  np.testing.assert_array_equal(np.asarray(state.decoder.lengths), np.asarray(g_len))
  np.testing.assert_array_equal(np.asarray(state.decoder.tokens), np.asarray(g_tok))
  # The encoder's streamed frames, too (its step on the normalizer's streamed output).
  stream_step = nnx.jit(lambda m, s, f, n: m.stream_step(s, f, n))
  model_state, frames, size = m.init_stream(3), [], 4 * multiple
  padded = jnp.pad(feats, ((0, 0), (0, -feats.shape[1] % size), (0, 0)))
  for start in range(0, padded.shape[1], size):
    chunk_lengths = jnp.clip(feat_lengths - start, 0, size)
    out, model_state = stream_step(m, model_state, padded[:, start:start + size], chunk_lengths)
    frames.append(np.asarray(out.frames))
  streamed = np.concatenate(frames, axis=1)
  for i in range(3):
    n = int(enc.lengths[i])
    np.testing.assert_allclose(streamed[i, :n], np.asarray(enc.frames[i, :n]), atol=1e-4)
