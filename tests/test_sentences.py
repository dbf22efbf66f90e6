import numpy as np

from asr.data.sentences import INTENTS, bias_phrases, sample_sentence
from asr.data.text import normalize


def test_sentences_are_normalized_and_entities_occur_in_text():
  rng = np.random.default_rng(1)
  intents = set()
  for _ in range(2000):
    s = sample_sentence(rng)
    intents.add(s.intent)
    assert s.text and normalize(s.text) == s.text
    assert len(s.entities) == len(s.entity_kinds)
    for e in s.entities:
      assert e in s.text
  assert intents == set(INTENTS)


def test_vocabulary_is_in_the_low_thousands():
  rng = np.random.default_rng(2)
  words = set()
  for _ in range(20000):
    words.update(sample_sentence(rng).text.split())
  assert 1500 <= len(words) <= 5000, len(words)


def test_same_seed_same_sentences():
  a = [sample_sentence(np.random.default_rng([3, i])) for i in range(50)]
  b = [sample_sentence(np.random.default_rng([3, i])) for i in range(50)]
  assert a == b


def test_bias_phrases_hold_true_entities_and_distractors():
  rng = np.random.default_rng(4)
  checked = 0
  for _ in range(500):
    s = sample_sentence(rng)
    phrases = bias_phrases(s, rng, num_distractors=4)
    true = {e for e, k in zip(s.entities, s.entity_kinds)
            if k in ("contact", "device", "song", "artist", "city", "item")}
    assert true <= set(phrases)
    assert len(set(phrases) - true) == 4
    assert len(set(phrases)) == len(phrases)
    checked += bool(true)
  assert checked > 100
