import hypothesis
import hypothesis.strategies as st
import pytest

from asr.data.text import ALPHABET, normalize, out_of_alphabet, spell_number, spell_ordinal


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"),
    (100, "one hundred"), (105, "one hundred five"), (999, "nine hundred ninety nine"),
    (1000, "one thousand"), (2105, "two thousand one hundred five"),
    (1_000_001, "one million one"), (31_400_000, "thirty one million four hundred thousand"),
])
def test_spell_number_hand_examples(n, words):
  assert spell_number(n) == words


@pytest.mark.parametrize("n, words", [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"),
                                      (12, "twelfth"), (20, "twentieth"), (21, "twenty first"),
                                      (40, "fortieth"), (108, "one hundred eighth")])
def test_spell_ordinal(n, words):
  assert spell_ordinal(n) == words


def test_spell_number_rejects_out_of_range():
  with pytest.raises(ValueError, match="spell_number"):
    spell_number(-1)


def test_normalize_examples():
  assert normalize("Set a Timer for 5 min!") == "set a timer for five min"
  assert normalize("Don't   stop, 'Zoë' — rock-n-roll") == "don't stop zoe rock n roll"
  assert normalize("  ") == ""
  # Past what a cardinal spells (found by the property test below): digit by digit.
  assert normalize("call 1000000000") == "call one zero zero zero zero zero zero zero zero zero"
  assert normalize("999999999") == spell_number(999_999_999)
  assert normalize("A'' 'quoted' rock'n'roll o''clock") == "a quoted rock'n'roll o clock"


@hypothesis.given(st.text(max_size=60))
def test_normalize_output_is_in_alphabet_and_idempotent(text):
  out = normalize(text)
  assert not out_of_alphabet(out)
  assert normalize(out) == out
  assert "  " not in out and out == out.strip()


def test_out_of_alphabet_lists_each_character_once():
  assert out_of_alphabet("héllo wörld é") == ["é", "ö"]
  assert out_of_alphabet(ALPHABET) == []
