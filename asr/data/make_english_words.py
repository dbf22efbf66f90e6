"""Writes `asr/data/english_words.txt`, the general English vocabulary of the synthetic corpus's
word-sequence sentences (`asr.data.sentences`), from the `wordfreq` package's English list.

  pip install wordfreq==3.1.1 && python -m asr.data.make_english_words

Run once by a maintainer; the list is committed, so building the corpus needs neither `wordfreq`
nor a network, and the corpus stays a pure function of its seed and the repository. The list is
wordfreq's 20,000 most frequent English words (Speer, 2022, "rspeer/wordfreq v3.0",
doi:10.5281/zenodo.7199437; word lists CC-BY-SA 4.0) that the corpus alphabet can write,
most frequent first, without profanity, slurs or sexual words (a reviewer reads transcripts in
notebooks) and without tokens that are not words read aloud (abbreviations with no vowel are
spelled letter by letter by eSpeak NG, so their audio would not be their transcript).
"""

from __future__ import annotations

import pathlib
import re

NUM_WORDS = 20_000
OUT = pathlib.Path(__file__).with_name("english_words.txt")
_WORD = re.compile(r"[a-z]+('[a-z]+)?")
# Removed by exact match, with their inflections listed (the list is what wordfreq 3.1.1's top
# 40,000 holds; prefix matching would also drop "analysis", "cocktail", "dickens", ...).
_BLOCKED = frozenset("""
  shit shits shitty shitting shite fuck fucks fucked fucking fuckin fucker fuckers bitch bitches
  dick dicks cock cocks cocky pussy cunt cunts whore whores slut sluts twat nigga nigger fag
  faggot retard retarded asshole assholes bastard bastards porn porno pornography rape rapes
  raped raping rapist sex sexy sexual sexually sexuality sexes naked nude penis vagina vaginal
  boob boobs tit tits anal cum horny dildo wank wanker ass asses badass jackass dumbass bullshit
  motherfucker goddamn damn damned scumbag dyke homo hoe hoes
""".split())


def is_spoken_word(word: str) -> bool:
  """A token of the corpus alphabet that eSpeak NG reads as a word (not spelled out)."""
  return (bool(_WORD.fullmatch(word)) and bool(re.search("[aeiouy]", word))
          and (len(word) > 1 or word in ("a", "i")))


def main() -> None:
  import wordfreq  # pylint: disable=import-outside-toplevel
  words = [w for w in wordfreq.top_n_list("en", 4 * NUM_WORDS)
           if is_spoken_word(w) and w not in _BLOCKED][:NUM_WORDS]
  if len(words) < NUM_WORDS:
    raise SystemExit(f"wordfreq gave only {len(words)} usable words, {NUM_WORDS} wanted")
  header = ("# wordfreq 3.1.1 English top words, most frequent first (CC-BY-SA 4.0, "
            "doi:10.5281/zenodo.7199437); made by python -m asr.data.make_english_words\n")
  OUT.write_text(header + "\n".join(words) + "\n")
  print(f"wrote {len(words)} words to {OUT}")


if __name__ == "__main__":
  main()
