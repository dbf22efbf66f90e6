"""The embedded synthetic English corpus: sentences x speakers x acoustics, a pure function of a seed.

Utterance `i` of split `s` is generated from `numpy.random.default_rng([seed, s, i])` alone, so a
corpus is identical whatever the number of worker processes and whichever order they finish in.
Splits: `train`, `dev` and `test` use disjoint speakers of the seen accents (dev/test voices are
never heard in training); `test_accent` uses an accent absent from the other splits;
`test_handwritten` is sentences written by hand outside the generator (`asr.data.handwritten`)
spoken by speakers of its own (seen accents, new voices): a model that learned the generator's
templates instead of speech fails there.
Indices past a split's end are further utterances of the same speakers: new sentences for
evaluation (`asr-eval --diagnose`), then a fresh-audio training stream (`fresh_epoch`).

This module does not import TensorFlow: the TFDS builder (`asr.data.synth_tfds`) drives it, and
its worker processes stay light.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import multiprocessing
import os
import tempfile
from typing import Iterator

import numpy as np

from asr.data import acoustics
from asr.data.espeak import ESPEAK_SAMPLE_RATE, Synthesizer, VoiceBank
from asr.data.handwritten import HANDWRITTEN
from asr.data.sentences import Sentence, bias_phrases, sample_sentence, sample_word_sequence
from asr.data.voices import HELD_OUT_ACCENT, SEEN_ACCENTS, Speaker, make_speakers

SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test", "test_accent", "test_handwritten")
_SPLIT_CODES = {s: i + 1 for i, s in enumerate(SPLITS)}


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
  """Sizes of one corpus variant. Speakers are per seen accent (7 of them) except `test_accent`."""
  name: str
  utterances: dict            # split -> number of utterances
  speakers_per_accent: dict   # split -> speakers per accent
  seed: int = 0
  whisper_prob: float = 0.04
  reverb_prob: float = 0.5
  clean_prob: float = 0.1     # share with no added noise
  snr_db: tuple = (10.0, 30.0)
  speed: tuple = (0.9, 1.1)   # tempo+pitch perturbation range on top of the speaker's rate
  # Share of training sentences that are word sequences of general English
  # (`sentences.sample_word_sequence`) instead of the generator's requests and grammar. The
  # `*_words` corpora set it; their evaluation splits are the same utterances as their base's.
  train_word_sequences: float = 0.0

  def speakers(self, split: str) -> list[Speaker]:
    langs = [HELD_OUT_ACCENT] if split == "test_accent" else list(SEEN_ACCENTS)
    return [spk for lang in langs
            for spk in make_speakers(self.seed, split, lang, self.speakers_per_accent[split])]


SPECS = {
    "tiny": CorpusSpec(
        "tiny", utterances={"train": 240, "dev": 40, "test": 40, "test_accent": 30,
                            "test_handwritten": 24},
        speakers_per_accent={"train": 6, "dev": 1, "test": 1, "test_accent": 4,
                             "test_handwritten": 1}),
    "small": CorpusSpec(
        "small", utterances={"train": 9600, "dev": 400, "test": 600, "test_accent": 400,
                             "test_handwritten": 2 * len(HANDWRITTEN)},
        speakers_per_accent={"train": 100, "dev": 8, "test": 12, "test_accent": 24,
                             "test_handwritten": 6}),
    "full": CorpusSpec(
        "full", utterances={"train": 100_000, "dev": 2000, "test": 3000, "test_accent": 2000,
                            "test_handwritten": 4 * len(HANDWRITTEN)},
        speakers_per_accent={"train": 600, "dev": 20, "test": 30, "test_accent": 60,
                             "test_handwritten": 12}),
}


# The same corpora with 30% of training sentences drawn from 20,000 words of general English:
# training text beyond the generator, for models judged on sentences it never makes
# (`test_handwritten`). At the demo's budget they cost held-out-speaker WER (BENCHMARKS.md).
SPECS.update({f"{size}_words": dataclasses.replace(SPECS[size], name=f"{size}_words",
                                                   train_word_sequences=0.3)
              for size in ("tiny", "small", "full")})


def get_spec(size: str, seed: int = 0) -> CorpusSpec:
  if size not in SPECS:
    raise ValueError(f"unknown corpus size {size!r}; choose one of {sorted(SPECS)}")
  return dataclasses.replace(SPECS[size], seed=seed)


def _rng_and_speaker(spec: CorpusSpec, split: str, index: int, speakers: list[Speaker]):
  """The utterance's generator and its speaker (the generator's first draw)."""
  rng = np.random.default_rng([spec.seed, _SPLIT_CODES[split], index])
  return rng, speakers[int(rng.integers(len(speakers)))]


def generate_utterance(spec: CorpusSpec, split: str, index: int, speakers: list[Speaker],
                       synth: Synthesizer) -> dict:
  """One example of the corpus schema (see `asr.data.schema`), audio as int16 at 16 kHz."""
  rng, speaker = _rng_and_speaker(spec, split, index, speakers)
  if split == "test_handwritten":  # each sentence in turn, by a different voice each round
    sentence = Sentence(HANDWRITTEN[index % len(HANDWRITTEN)], (), (), "handwritten")
  elif (split == "train" and spec.train_word_sequences > 0
        and rng.random() < spec.train_word_sequences):
    # Only corpora that mix word sequences draw for it: a draw here in every corpus shifts
    # every later draw of every training utterance (it did, unnoticed, until version 1.2.1).
    sentence = sample_word_sequence(rng)
  else:
    sentence = sample_sentence(rng)
  whisper = bool(rng.random() < spec.whisper_prob)
  rate = speaker.rate_wpm * rng.uniform(0.9, 1.1)
  audio = synth.synthesize(sentence.text, speaker.voice(whisper), int(rate),
                           noise_seed=int(rng.integers(2**31)))
  if audio.size == 0:
    raise RuntimeError(f"eSpeak NG produced no audio for {split}-{index}: {sentence.text!r}")

  speed = rng.uniform(*spec.speed)
  audio = acoustics.resample(audio, ESPEAK_SAMPLE_RATE, SAMPLE_RATE / speed)
  lead, trail = (int(rng.uniform(0.05, 0.4) * SAMPLE_RATE) for _ in range(2))
  audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)])
  reverb = bool(rng.random() < spec.reverb_prob)
  if reverb:
    rir = acoustics.room_impulse_response(rng, SAMPLE_RATE, rng.uniform(0.15, 0.7),
                                          rng.uniform(0.0, 12.0))
    audio = acoustics.reverberate(audio, rir)
  kind, snr_db = "", 0.0   # no added noise
  if rng.random() >= spec.clean_prob:
    kind = acoustics.NOISE_KINDS[int(rng.integers(len(acoustics.NOISE_KINDS)))]
    noise = acoustics.make_noise(rng, len(audio), SAMPLE_RATE, kind)
    snr_db = float(rng.uniform(*spec.snr_db))
    audio = acoustics.add_noise(audio, noise, snr_db)
  audio = acoustics.set_peak(audio, rng.uniform(-20.0, -1.0))
  return {
      "id": f"{split}-{index:06d}",
      "audio": acoustics.to_int16(audio),
      "text": sentence.text,
      "speaker": speaker.speaker_id,
      "accent": speaker.accent,
      "variant": speaker.variant,
      "whisper": whisper,
      "noise": kind,
      "snr_db": snr_db,
      "reverb": reverb,
      "intent": sentence.intent,
      "entities": list(sentence.entities),
      "bias_phrases": list(bias_phrases(sentence, rng)),
  }


# ---- parallel generation ----
# eSpeak NG carries state from one utterance to the next (glottal phase, echo and noise buffers)
# that neither re-initialization nor srand() resets; only a fresh process does. So utterances are
# made in fixed chunks, each by a fresh process: the bytes depend on the seed, never on the worker
# count or on which worker finished first.
CHUNK = 64


def _work_chunk(args) -> list[dict]:
  spec, split, start, stop = args
  speakers = spec.speakers(split)
  # A voice bank with only this chunk's speakers: eSpeak NG lists every voice file it finds in
  # a fixed-size table (a few hundred entries), and a fuller folder hides its language voices.
  variants = {}
  for i in range(start, stop):
    variants.update(_rng_and_speaker(spec, split, i, speakers)[1].variant_files())
  with tempfile.TemporaryDirectory(prefix="asr_voices_") as tmp:
    synth = Synthesizer(VoiceBank(tmp, variants).data_path)
    return [generate_utterance(spec, split, i, speakers, synth) for i in range(start, stop)]


def generate_split(spec: CorpusSpec, split: str, workers: int | None = None,
                   start: int = 0, stop: int | None = None,
                   lookahead: int | None = None) -> Iterator[dict]:
  """Yields utterances `start..stop-1` of `split` in index order, generated by `workers` processes.

  `lookahead` bounds the chunks (of `CHUNK` utterances) generated ahead of the consumer (None:
  all of them at once, for a build); a slow consumer then holds the workers back instead of
  collecting a whole range of audio in memory.
  """
  size = spec.utterances[split]
  stop = size if stop is None else stop
  workers = workers or os.cpu_count() or 1
  # Chunk boundaries are fixed (eSpeak's carried state makes an utterance depend on where its
  # chunk starts): multiples of CHUNK up to the corpus's size, then every CHUNK from the size on.
  # Indices past the corpus are the same speakers' further utterances (new sentences, same
  # voices); the corpus itself never depends on them.
  bounds = [(a, min(a + CHUNK, size)) for a in range(0, size, CHUNK)]
  bounds += [(a, a + CHUNK) for a in range(size, max(stop, size), CHUNK)]
  jobs = [(spec, split, a, b) for a, b in bounds if a < stop and b > start]
  # 'forkserver': the parent may have imported TensorFlow, whose threads do not survive a fork;
  # the server imports this module once (NumPy, SciPy: a second) and forks a fresh child for
  # each chunk in milliseconds.
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload([__name__])
  with ctx.Pool(max(1, min(workers, len(jobs))), maxtasksperchild=1) as pool:
    if lookahead is None:
      chunks = pool.imap(_work_chunk, jobs)
    else:
      chunks = _bounded(pool, jobs, max(1, lookahead))
    for chunk in chunks:
      for example in chunk:
        index = int(example["id"].rsplit("-", 1)[1])
        if start <= index < stop:
          yield example


def _bounded(pool, jobs: list, lookahead: int) -> Iterator[list[dict]]:
  """`pool.imap(_work_chunk, jobs)` with at most `lookahead` chunks submitted and not yet taken."""
  pending: collections.deque = collections.deque()
  jobs = iter(jobs)
  for job in itertools.islice(jobs, lookahead):
    pending.append(pool.apply_async(_work_chunk, (job,)))
  while pending:
    chunk = pending.popleft().get()
    for job in itertools.islice(jobs, 1):
      pending.append(pool.apply_async(_work_chunk, (job,)))
    yield chunk


# ---- fresh audio: every training epoch after the first is new utterances ----
# Indices past a split's end are further utterances of its speakers. The first
# `NEW_SENTENCES_RESERVED` of them are kept for evaluation (new sentences by the training
# speakers, `asr-eval --diagnose`); fresh training audio starts after them, so a model trained on
# fresh audio has never heard what that evaluation plays it.
NEW_SENTENCES_RESERVED = 1024 * CHUNK


def fresh_range(spec: CorpusSpec, split: str, epoch: int) -> tuple[int, int]:
  """Utterance indices `[start, stop)` of fresh epoch `epoch >= 1`: the split's size rounded up
  to whole chunks, past the corpus and the reserved evaluation utterances."""
  if epoch < 1:
    raise ValueError(f"epoch 0 is the built corpus; fresh epochs start at 1, got {epoch}")
  size = spec.utterances[split]
  per_epoch = -(-size // CHUNK) * CHUNK
  start = size + NEW_SENTENCES_RESERVED + (epoch - 1) * per_epoch
  return start, start + per_epoch


def fresh_epoch(spec: CorpusSpec, split: str, epoch: int, workers: int = 2) -> Iterator[dict]:
  """Epoch `epoch >= 1` of a fresh-audio stream: `size` (rounded up to whole chunks) utterances
  never played before, synthesized now by `workers` background processes a few chunks ahead of
  the consumer. Each index draws its speaker, sentence and acoustics at random, so index order
  needs no shuffle. A pure function of (seed, split, epoch)."""
  start, stop = fresh_range(spec, split, epoch)
  return generate_split(spec, split, workers, start, stop, lookahead=workers + 1)
