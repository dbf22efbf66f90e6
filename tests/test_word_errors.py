"""The device's word-level edit distance against jiwer and a plain dynamic program."""

import jax
import jiwer
import numpy as np
import pytest

from asr.losses.word_errors import WordTable, edit_distance, word_errors
from asr.tokenizer import CharTokenizer, SentencePieceTokenizer

WORDS = ["a", "cat", "sat", "on", "the", "mat", "cats", "at", "hat"]


def _levenshtein(a, b):
  d = np.arange(len(b) + 1)
  for i, x in enumerate(a, 1):
    prev, d = d, np.empty_like(d)
    d[0] = i
    for j, y in enumerate(b, 1):
      d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (x != y))
  return int(d[-1])


def _pairs(rng, n):
  """Reference and hypothesis texts: a hypothesis edits its reference's words at random, may
  be empty, and may carry stray spaces (a transducer can emit them)."""
  pairs = []
  for _ in range(n):
    ref = list(rng.choice(WORDS, rng.integers(1, 7)))
    hyp = [w for w in ref if rng.random() > 0.2]
    for _ in range(rng.integers(0, 3)):
      hyp.insert(rng.integers(0, len(hyp) + 1), rng.choice(WORDS))
    hyp = [rng.choice(WORDS) if rng.random() < 0.2 else w for w in hyp]
    text = " ".join(hyp)
    if rng.random() < 0.3:
      text = " " + text.replace(" ", "  ", 1) + " "
    pairs.append((" ".join(ref), text if hyp else ""))
  return pairs


def _batch(encoded, width):
  ids = np.zeros((len(encoded), width), np.int32)
  for i, e in enumerate(encoded):
    ids[i, :len(e)] = e
    ids[i, len(e):] = np.random.default_rng(i).integers(1, 5, width - len(e))  # padding junk
  return ids, np.array([len(e) for e in encoded], np.int32)


def _jiwer_errors(ref, hyp):
  out = jiwer.process_words(ref, hyp)
  return out.substitutions + out.deletions + out.insertions


def _check(tokenizer, pairs, encode=None):
  encode = encode or tokenizer.encode
  refs, ref_lengths = _batch([tokenizer.encode(r) for r, _ in pairs], 48)
  hyps, hyp_lengths = _batch([encode(h) for _, h in pairs], 64)
  errors, counts = jax.jit(lambda *a: word_errors(*a, WordTable.from_pieces(
      tokenizer.pieces())))(hyps, hyp_lengths, refs, ref_lengths)
  want = [_jiwer_errors(r, h) if h.strip() else len(r.split()) for r, h in pairs]
  np.testing.assert_array_equal(np.asarray(errors), want)
  np.testing.assert_array_equal(np.asarray(counts), [len(r.split()) for r, _ in pairs])


def test_character_word_errors_equal_jiwers():
  _check(CharTokenizer(), _pairs(np.random.default_rng(0), 200))


def test_word_piece_word_errors_equal_jiwers_however_the_words_are_spelled(tmp_path):
  """A word spelled by other pieces (one character at a time) is the same word."""
  from asr.data.sentences import sample_sentence
  rng = np.random.default_rng(1)
  tok = SentencePieceTokenizer.train([sample_sentence(rng).text for _ in range(500)] + WORDS * 20,
                                     tmp_path / "spm", vocab_size=120)
  pieces = tok.pieces()
  marker, single = pieces.index("\u2581"), {p: i for i, p in enumerate(pieces)}

  def spelled(text):  # "▁" then one piece per character for every word
    return np.array([i for w in text.split() for i in [marker] + [single[c] for c in w]],
                    np.int32)
  pairs = _pairs(rng, 100)
  _check(tok, pairs)
  _check(tok, pairs, encode=spelled)


def test_edit_distance_equals_the_dynamic_program_on_random_sequences():
  rng = np.random.default_rng(2)
  n = 300
  ref = rng.integers(0, 4, (n, 9))
  hyp = rng.integers(0, 4, (n, 12))
  ref_len, hyp_len = rng.integers(0, 10, n), rng.integers(0, 13, n)
  got = jax.jit(edit_distance)(ref, ref_len, hyp, hyp_len)
  want = [_levenshtein(r[:a], h[:b]) for r, a, h, b in zip(ref, ref_len, hyp, hyp_len)]
  np.testing.assert_array_equal(np.asarray(got), want)


def test_a_piece_spanning_two_words_is_refused_by_name():
  with pytest.raises(ValueError, match=r"token 2 \('a b'\) spans a word boundary"):
    WordTable.from_pieces(["", "a", "a b"])
