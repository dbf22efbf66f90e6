import numpy as np
import pytest

from asr.tokenizer import CharTokenizer, OutOfVocabularyError, SentencePieceTokenizer


def test_char_tokenizer_roundtrip_and_blank_is_zero():
  tok = CharTokenizer()
  assert tok.vocab_size == 29
  ids = tok.encode("don't stop")
  assert ids.dtype == np.int32 and ids.min() >= 1
  assert ids[0] == tok.alphabet.index("d") + 1
  assert tok.decode(ids) == "don't stop"
  assert tok.decode(np.concatenate([[0], ids, [0, 0]])) == "don't stop"


def test_char_tokenizer_names_unknown_characters():
  tok = CharTokenizer()
  with pytest.raises(OutOfVocabularyError, match="'é!'"):
    tok.encode("café!")
  assert tok.unknown_characters("Hi") == ["H"]


def test_sentencepiece_reserves_blank_and_roundtrips(tmp_path):
  rng = np.random.default_rng(0)
  from asr.data.sentences import sample_sentence
  texts = [sample_sentence(rng).text for _ in range(2000)]
  tok = SentencePieceTokenizer.train(texts, tmp_path / "spm", vocab_size=200)
  assert tok.vocab_size >= 100
  for t in texts[:50]:
    ids = tok.encode(t)
    assert ids.min() >= 1
    assert tok.decode(ids) == t
  assert tok.decode([0, *tok.encode("call mary"), 0]) == "call mary"
  # Reloading from the file gives the same ids.
  again = SentencePieceTokenizer(tmp_path / "spm.model")
  np.testing.assert_array_equal(again.encode(texts[0]), tok.encode(texts[0]))


def test_word_pieces_round_trip_every_character_of_the_alphabet_and_the_corpus(tmp_path):
  """Trained on text that lacks some characters, every alphabet character still encodes (no
  unknown piece) and decodes back; every training text round-trips."""
  from asr.data.sentences import sample_sentence
  from asr.data.text import ALPHABET
  rng = np.random.default_rng(1)
  texts = [sample_sentence(rng).text for _ in range(500)]
  texts = [t.replace("'", "").replace("q", "k").replace("z", "s") for t in texts]
  tok = SentencePieceTokenizer.train(texts, tmp_path / "spm", vocab_size=120)
  for t in texts:
    assert tok.decode(tok.encode(t)) == t
  for c in ALPHABET.replace(" ", ""):
    text = f"a{c}b {c} x{c}"
    ids = tok.encode(text)
    assert ids.min() >= 1 and tok.decode(ids) == text, c
