"""Error rates: hand-worked examples, and per-utterance errors that sum to the corpus counts."""

import random

import pytest

from asr.training.metrics import error_rates, grouped_wer, utterance_word_errors


def test_hand_worked_error_rates_and_per_utterance_errors():
  refs = ["turn on the light", "set a timer", "hello world"]
  hyps = ["turn off the light please", "set a timer", "world"]
  # 1: "on" -> "off" (S), "please" (I); 2: exact; 3: "hello" deleted (D).
  s = error_rates(refs, hyps)
  assert (s["substitutions"], s["deletions"], s["insertions"]) == (1, 1, 1)
  assert s["wer"] == pytest.approx(3 / 9)
  assert utterance_word_errors(refs, hyps) == [2, 0, 1]
  assert grouped_wer(refs, hyps, ["a", "b", "a"]) == {"a": pytest.approx(3 / 6), "b": 0.0}


def test_per_utterance_errors_sum_to_the_corpus_counts():
  rng = random.Random(0)
  words = "a b c d e f".split()
  for _ in range(20):
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(6)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 8))) for _ in range(6)]
    s = error_rates(refs, hyps)
    assert sum(utterance_word_errors(refs, hyps)) == (s["substitutions"] + s["deletions"]
                                                     + s["insertions"])
