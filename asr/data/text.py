"""Transcript normalization and number spelling shared by the corpus, the tokenizer and LibriSpeech.

Normalized text holds only lowercase ASCII letters, the apostrophe and single spaces: the
character vocabulary of `asr.tokenizer.CharTokenizer`.
"""

from __future__ import annotations

import re
import unicodedata

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                      "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def spell_number(n: int) -> str:
  """Cardinal English words for 0 <= n < 10**9, e.g. 2105 -> 'two thousand one hundred five'."""
  if not 0 <= n < 10**9:
    raise ValueError(f"spell_number supports 0 <= n < 1e9, got {n}")
  if n < 20:
    return _ONES[n]
  if n < 100:
    return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
  if n < 1000:
    rest = n % 100
    return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + spell_number(rest))
  for size, word in ((10**6, "million"), (10**3, "thousand")):
    if n >= size:
      rest = n % size
      return spell_number(n // size) + " " + word + ("" if rest == 0 else " " + spell_number(rest))
  raise AssertionError("unreachable")


def spell_ordinal(n: int) -> str:
  """Ordinal English words, e.g. 21 -> 'twenty first', 40 -> 'fortieth'."""
  words = spell_number(n).split()
  last = words[-1]
  if last in _ORDINAL_IRREGULAR:
    last = _ORDINAL_IRREGULAR[last]
  elif last.endswith("y"):
    last = last[:-1] + "ieth"
  else:
    last = last + "th"
  return " ".join(words[:-1] + [last])


def _spell_digits(digits: str) -> str:
  """A run of digits as words: a cardinal below a billion, else digit by digit (a long number
  is read out so: an account or phone number, '1000000000' -> 'one zero zero ...')."""
  n = int(digits)
  if n < 10**9:
    return spell_number(n)
  return " ".join(_ONES[int(d)] for d in digits)


def normalize(text: str) -> str:
  """Lowercase, spell digits, strip accents and punctuation, squeeze spaces.

  'Set a timer for 5 min!' -> 'set a timer for five min'. Hyphens and slashes become spaces;
  other characters outside `ALPHABET` are dropped (after accent stripping: 'Zoë' -> 'zoe').
  """
  text = unicodedata.normalize("NFKD", text)
  text = "".join(c for c in text if not unicodedata.combining(c))
  text = text.lower().replace("\u2019", "'")
  text = re.sub(r"\d+", lambda m: " " + _spell_digits(m.group()) + " ", text)
  text = re.sub(r"[-/_]", " ", text)
  text = re.sub(r"[^a-z' ]", "", text)
  # An apostrophe stays only between two letters ("don't"); quotes and runs of them go.
  text = re.sub(r"(?<![a-z])'+|'+(?![a-z])", " ", text)
  return re.sub(r"\s+", " ", text).strip()


def out_of_alphabet(text: str, alphabet: str = ALPHABET) -> list[str]:
  """The distinct characters of `text` that are not in `alphabet`, in order of appearance."""
  allowed = set(alphabet)
  return list(dict.fromkeys(c for c in text if c not in allowed))
