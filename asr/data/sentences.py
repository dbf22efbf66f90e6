"""Sentence generator for the synthetic corpus: voice-assistant requests and plain English.

`sample_sentence(rng)` returns a `Sentence`: normalized text, the entity phrases it contains (slot
values: contacts, devices, songs, places, ...) with their kinds, and the intent. Requests are drawn
from many templates per intent, and a share of sentences comes from a small grammar over the
lexicon so that the corpus is not a handful of predictable templates (a model that memorizes
templates looks good on loss and bad on slots: see `asr/data/lexicon.py`).

`sample_word_sequence(rng)` draws words of general English (`english_words.txt`, 20,000 words)
instead: templates and lexicon together hold about 2,400 words and miss a third of the tokens of
everyday sentences written outside them (`asr/data/handwritten.py`: "could", "have", "please",
"water", ...), and a model trained only on them spells what it has not seen from the templates'
words. Word sequences teach the sounds of English words with no sentence structure to lean on.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np

from asr.data import lexicon as lx
from asr.data.handwritten import HANDWRITTEN
from asr.data.text import normalize, spell_number, spell_ordinal


@dataclasses.dataclass(frozen=True)
class Sentence:
  text: str
  entities: tuple[str, ...]
  entity_kinds: tuple[str, ...]
  intent: str


class _Builder:
  """Collects entity slots while a template is filled."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.entities: list[tuple[str, str]] = []

  def pick(self, options):
    return options[int(self.rng.integers(len(options)))]

  def slot(self, kind: str, value: str) -> str:
    self.entities.append((kind, value))
    return value

  # ---- slot values ----
  def contact(self) -> str:
    r = self.rng.random()
    name = self.pick(lx.FIRST_NAMES)
    if r < 0.5:
      name += " " + self.pick(lx.LAST_NAMES)
    return self.slot("contact", name)

  def device(self) -> str:
    r = self.rng.random()
    if r < 0.35:
      name = self.pick(lx.DEVICE_GIVEN_NAMES)
    elif r < 0.8:
      name = self.pick(lx.DEVICE_ROOMS) + " " + self.pick(lx.DEVICE_KINDS)
    else:
      name = self.pick(lx.FIRST_NAMES) + "'s " + self.pick(lx.DEVICE_KINDS)
    return self.slot("device", name)

  def song(self) -> str:
    w = self.rng.choice(len(lx.SONG_WORDS), 3, replace=False)
    a, b, c = (lx.SONG_WORDS[i] for i in w)
    form = int(self.rng.integers(5))
    title = [f"{a} {b}", f"the {a} of {b}", f"{a} {b} {c}", f"{a} in the {b}",
             f"{self.pick(lx.ADJECTIVES)} {a}"][form]
    return self.slot("song", title)

  def artist(self) -> str:
    if self.rng.random() < 0.5:
      name = self.pick(lx.FIRST_NAMES) + " " + self.pick(lx.LAST_NAMES)
    else:
      noun = self.pick(lx.NOUNS)
      name = f"the {self.pick(lx.ADJECTIVES)} {noun}s"
    return self.slot("artist", name)

  def city(self) -> str:
    return self.slot("city", self.pick(lx.CITIES))

  def item(self) -> str:
    return self.slot("item", self.pick(lx.GROCERIES))

  def time_of_day(self) -> str:
    hour = int(self.rng.integers(1, 13))
    minute = int(self.pick([0, 0, 5, 10, 15, 20, 30, 40, 45, 50, int(self.rng.integers(1, 60))]))
    if minute == 0:
      text = spell_number(hour) + self.pick([" o'clock", "", " a m", " p m"])
    elif minute < 10:
      text = f"{spell_number(hour)} oh {spell_number(minute)}"
    else:
      text = f"{spell_number(hour)} {spell_number(minute)}"
    if self.rng.random() < 0.3 and "m" not in text[-2:]:
      text += self.pick([" in the morning", " in the evening", " tonight", " a m", " p m"])
    return self.slot("time", text)

  def duration(self) -> str:
    n = int(self.pick([1, 2, 3, 5, 10, 15, 20, 25, 30, 45, 90, int(self.rng.integers(1, 100))]))
    unit = self.pick(["minute", "second", "hour"])
    text = f"{spell_number(n)} {unit}{'' if n == 1 else 's'}"
    if unit == "hour" and self.rng.random() < 0.3:
      text += f" and {spell_number(int(self.rng.integers(1, 60)))} minutes"
    return self.slot("duration", text)

  def number(self, lo=0, hi=100) -> str:
    return self.slot("number", spell_number(int(self.rng.integers(lo, hi))))

  def day(self) -> str:
    r = self.rng.random()
    if r < 0.4:
      text = self.pick(lx.WEEKDAYS)
    elif r < 0.6:
      text = self.pick(["today", "tomorrow", "tonight", "this weekend", "next week"])
    else:
      text = f"{self.pick(lx.MONTHS)} {spell_ordinal(int(self.rng.integers(1, 32)))}"
    return self.slot("date", text)


def _timer(b: _Builder) -> str:
  return b.pick([
      lambda: f"set a timer for {b.duration()}",
      lambda: f"start a {b.slot('label', b.pick(lx.TIMER_LABELS))} timer for {b.duration()}",
      lambda: f"cancel the {b.slot('label', b.pick(lx.TIMER_LABELS))} timer",
      lambda: f"how much time is left on the {b.slot('label', b.pick(lx.TIMER_LABELS))} timer",
      lambda: f"add {b.duration()} to my timer",
      lambda: f"wake me up at {b.time_of_day()}",
      lambda: f"set an alarm for {b.time_of_day()} on {b.day()}",
      lambda: f"turn off my {b.time_of_day()} alarm",
      lambda: f"remind me to buy {b.item()} at {b.time_of_day()}",
  ])()


def _call(b: _Builder) -> str:
  return b.pick([
      lambda: f"call {b.contact()}",
      lambda: f"call {b.contact()} on {b.pick(['mobile', 'speaker', 'her cell', 'his work phone', 'video'])}",
      lambda: f"phone {b.contact()}",
      lambda: f"start a video call with {b.contact()} and {b.contact()}",
      lambda: f"send a message to {b.contact()} saying {_plain(b, short=True)}",
      lambda: f"text {b.contact()} that I will be there at {b.time_of_day()}",
      lambda: f"tell {b.contact()} I'm running {b.number(2, 40)} minutes late",
      lambda: f"read my messages from {b.contact()}",
      lambda: f"did {b.contact()} call me {b.day()}",
  ])()


def _home(b: _Builder) -> str:
  return b.pick([
      lambda: f"turn on the {b.device()}",
      lambda: f"turn off the {b.device()}",
      lambda: f"switch {b.pick(['on', 'off'])} {b.device()}",
      lambda: f"dim the {b.device()} to {b.number(1, 100)} percent",
      lambda: f"set the {b.device()} to {b.number(55, 85)} degrees",
      lambda: f"is the {b.device()} still on",
      lambda: f"make the {b.device()} {b.pick(['brighter', 'warmer', 'cooler', 'quieter', 'louder'])}",
      lambda: f"turn the {b.device()} {b.pick(['up', 'down'])} at {b.time_of_day()}",
  ])()


def _music(b: _Builder) -> str:
  return b.pick([
      lambda: f"play {b.song()} by {b.artist()}",
      lambda: f"play {b.song()}",
      lambda: f"play some {b.slot('genre', b.pick(lx.GENRES))}",
      lambda: f"play music by {b.artist()}",
      lambda: f"add {b.song()} to my {b.slot('playlist', b.pick(lx.PLAYLISTS))} playlist",
      lambda: f"shuffle my {b.slot('playlist', b.pick(lx.PLAYLISTS))} playlist",
      lambda: f"who sings {b.song()}",
      lambda: f"turn the volume {b.pick(['up', 'down'])} to {b.number(1, 11)}",
      lambda: f"play the latest album from {b.artist()} on the {b.device()}",
  ])()


def _weather(b: _Builder) -> str:
  return b.pick([
      lambda: f"what's the weather in {b.city()}",
      lambda: f"what's the weather like in {b.city()} {b.day()}",
      lambda: f"will it rain in {b.city()} {b.day()}",
      lambda: f"how cold is it in {b.city()}",
      lambda: f"do I need an umbrella in {b.city()} {b.day()}",
      lambda: f"what time is it in {b.city()}",
      lambda: f"how far is {b.city()} from {b.city()}",
      lambda: f"when is sunset in {b.city()} on {b.day()}",
  ])()


def _lists(b: _Builder) -> str:
  lst = lambda: b.slot("list", b.pick(lx.LISTS))
  return b.pick([
      lambda: f"add {b.item()} to my {lst()} list",
      lambda: f"add {b.item()} and {b.item()} to the {lst()} list",
      lambda: f"remove {b.item()} from my {lst()} list",
      lambda: f"what's on my {lst()} list",
      lambda: f"put {b.item()} on the list",
      lambda: f"do we still need {b.item()}",
  ])()


def _question(b: _Builder) -> str:
  return b.pick([
      lambda: f"how tall is {b.slot('landmark', b.pick(lx.LANDMARKS))}",
      lambda: f"what is {b.number(2, 100)} times {b.number(2, 20)}",
      lambda: f"what is {b.number(10, 1000)} plus {b.number(10, 1000)}",
      lambda: f"how do you spell {b.slot('word', b.pick(lx.NOUNS + lx.ADJECTIVES))}",
      lambda: f"what does {b.slot('word', b.pick(lx.ADJECTIVES))} mean",
      lambda: f"how many days until {b.day()}",
      lambda: f"who is {b.contact()}",
      lambda: f"what's the population of {b.city()}",
      lambda: f"convert {b.number(1, 500)} {b.pick(['miles', 'pounds', 'cups', 'ounces'])} to {b.pick(['kilometers', 'kilograms', 'liters', 'grams'])}",
  ])()


def _plain(b: _Builder, short: bool = False) -> str:
  """A sentence from a small grammar over the lexicon (no slots: the words are the content)."""
  rng = b.rng

  def np_() -> str:
    det = b.pick(["the", "a", "my", "your", "her", "his", "our", "their", "this", "that"])
    adj = b.pick(lx.ADJECTIVES) + " " if rng.random() < 0.6 else ""
    noun = b.pick(lx.NOUNS)
    if det == "a" and (adj or noun)[0] in "aeiou":
      det = "an"
    return f"{det} {adj}{noun}"

  subject = np_() if rng.random() < 0.8 else b.pick(lx.FIRST_NAMES)
  tense = int(rng.integers(2))
  if rng.random() < 0.65:
    verb = b.pick(lx.VERBS)[tense]
    clause = f"{subject} {verb} {np_()}"
  else:
    verb = b.pick(lx.INTRANSITIVE)[tense]
    clause = f"{subject} {verb}"
  if not short and rng.random() < 0.6:
    clause += f" {b.pick(lx.PREPOSITIONS)} {np_()}"
  if rng.random() < 0.4:
    clause += " " + b.pick(lx.ADVERBS)
  if not short and rng.random() < 0.25:
    clause += f" {b.pick(['and', 'but', 'because', 'while', 'so'])} {np_()} {b.pick(lx.INTRANSITIVE)[tense]}"
  return clause


INTENTS = {
    "timer": _timer, "call": _call, "home": _home, "music": _music, "weather": _weather,
    "list": _lists, "question": _question, "plain": _plain,
}
# Assistant requests dominate, as in the product; plain sentences carry general vocabulary.
INTENT_WEIGHTS = {"timer": 0.12, "call": 0.12, "home": 0.12, "music": 0.12, "weather": 0.1,
                  "list": 0.1, "question": 0.1, "plain": 0.22}

_ENTITY_POOLS = {
    "contact": lambda b: b.contact(), "device": lambda b: b.device(), "song": lambda b: b.song(),
    "artist": lambda b: b.artist(), "city": lambda b: b.city(), "item": lambda b: b.item(),
}


def sample_sentence(rng: np.random.Generator) -> Sentence:
  names = list(INTENTS)
  p = np.array([INTENT_WEIGHTS[n] for n in names])
  intent = names[int(rng.choice(len(names), p=p / p.sum()))]
  b = _Builder(rng)
  text = normalize(INTENTS[intent](b))
  entities = tuple(dict.fromkeys(normalize(v) for _, v in b.entities))
  kinds = tuple(dict((normalize(v), k) for k, v in b.entities).values())
  return Sentence(text, entities, kinds, intent)


_HANDWRITTEN = frozenset(HANDWRITTEN)


@functools.cache
def english_words() -> tuple[str, ...]:
  """General English vocabulary, most frequent first (see `asr/data/make_english_words.py`)."""
  lines = pathlib.Path(__file__).with_name("english_words.txt").read_text().splitlines()
  return tuple(w for w in lines if w and not w.startswith("#"))


@functools.cache
def _rank_cdf(zipf: float) -> np.ndarray:
  p = np.arange(1, len(english_words()) + 1, dtype=np.float64) ** -zipf
  return np.cumsum(p / p.sum())


def sample_word_sequence(rng: np.random.Generator, words: tuple[int, int] = (2, 10),
                         zipf: float = 0.7) -> Sentence:
  """`words[0]`..`words[1]` words drawn independently with probability proportional to
  rank**-zipf. English word frequencies follow rank**-1; 0.7 flattens them so that rarer words
  are heard (the 20,000th word about 3 times in 200,000 draws) while the common ones still
  dominate, as in speech. Never one of the hand-written test sentences."""
  cdf, vocab = _rank_cdf(zipf), english_words()
  while True:
    n = int(rng.integers(words[0], words[1] + 1))
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), len(vocab) - 1)
    text = normalize(" ".join(vocab[r] for r in ranks))
    if text not in _HANDWRITTEN:
      return Sentence(text, (), (), "words")


def bias_phrases(sentence: Sentence, rng: np.random.Generator, num_distractors: int = 4) -> tuple[str, ...]:
  """The sentence's biasable entities plus distractors of the same kinds, shuffled.

  Context-biasing work boosts a list of phrases during search (contact names, device names);
  a list that holds only the truth would make biasing trivially right, so distractors are mixed in.
  """
  true = [e for e, k in zip(sentence.entities, sentence.entity_kinds) if k in _ENTITY_POOLS]
  kinds = [k for k in sentence.entity_kinds if k in _ENTITY_POOLS] or ["contact", "device"]
  b = _Builder(rng)
  distractors: list[str] = []
  for i in range(num_distractors * 4):
    if len(distractors) >= num_distractors:
      break
    phrase = normalize(_ENTITY_POOLS[kinds[i % len(kinds)]](b))
    if phrase not in true and phrase not in distractors:
      distractors.append(phrase)
  phrases = true + distractors
  order = rng.permutation(len(phrases))
  return tuple(phrases[i] for i in order)
