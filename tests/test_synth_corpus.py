"""The embedded corpus: determinism, speaker-disjoint splits, metadata, audio sanity."""

import hashlib

import numpy as np
import pytest

from asr.data import acoustics, synth_corpus
from asr.data.synth_corpus import SAMPLE_RATE, get_spec
from asr.data.voices import ACCENTS, HELD_OUT_ACCENT


@pytest.fixture(scope="module")
def tiny_examples(tiny_source):
  return {split: list(tiny_source.examples(split)) for split in tiny_source.splits}


def _digest(examples):
  h = hashlib.sha256()
  for ex in sorted(examples, key=lambda e: e["id"]):
    h.update(ex["id"].encode() + ex["text"].encode() + np.asarray(ex["audio"]).tobytes())
  return h.hexdigest()


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny_examples):
  spec = get_spec("tiny")
  # Rebuilt from scratch with one worker (the fixture used all cores), across a chunk boundary.
  again = list(synth_corpus.generate_split(spec, "dev", workers=1, start=0, stop=40))
  built = tiny_examples["dev"]
  assert _digest(again) == _digest(built)


# Digests of every split of `synth_speech/tiny` as built by corpus version 1.2.1 (ids, texts and
# audio). A figure measured on the corpus is only reproducible if the corpus is: a change to the
# generator (a draw added, a template edited, another eSpeak NG or SciPy) changes these, and must
# come with a new `SynthSpeech.VERSION` so that no older build on disk is read as the new one.
GOLDEN_TINY = {
    "train": "7562742aadd300bff2d07650ad4c0829528b3a8337816c7df54388a36d2118eb",
    "dev": "b75d13db7ad4b130b6299d240faec9303515309b888c938d5cb1534a4e807d1b",
    "test": "fc79c2880f6e25d766f48ad853db9092f76a87bc108a2c0b904cb939606d2ffc",
    "test_accent": "c6261f57dfa7fd81653cff7022388a31f91916aa08359cf2e8716b443aa58830",
    "test_handwritten": "e8a9b39cf981a14b71849d33383b8b2784ec5b5e58c206ddbef1ca85b993caa2",
}


def test_the_corpus_is_the_bytes_its_version_names(tiny_examples):
  from asr.data.synth_tfds import SynthSpeech
  changed = sorted(s for s, d in GOLDEN_TINY.items() if _digest(tiny_examples[s]) != d)
  assert not changed, (
      f"synth_speech/tiny's {changed} differ from the bytes of corpus version "
      f"{SynthSpeech.VERSION}: if the generator changed on purpose, bump SynthSpeech.VERSION, "
      "say why in its RELEASE_NOTES and update GOLDEN_TINY; otherwise the change is a bug "
      "(or the installed eSpeak NG / SciPy differ from the lock's)")
  assert str(SynthSpeech.VERSION) == "1.2.1"  # the version these digests were taken from


def test_another_seed_gives_other_audio():
  a = next(synth_corpus.generate_split(get_spec("tiny", 0), "dev", workers=1, stop=1))
  b = next(synth_corpus.generate_split(get_spec("tiny", 1), "dev", workers=1, stop=1))
  assert a["text"] != b["text"] or not np.array_equal(a["audio"], b["audio"])


def test_split_sizes(tiny_source):
  assert tiny_source.splits == get_spec("tiny").utterances


def test_no_speaker_shared_between_splits(tiny_examples):
  speakers = {split: {ex["speaker"] for ex in exs} for split, exs in tiny_examples.items()}
  splits = list(speakers)
  for i, a in enumerate(splits):
    for b in splits[i + 1:]:
      assert not speakers[a] & speakers[b], (a, b)
  # The voice designs themselves differ too, not only the names.
  spec = get_spec("tiny")
  designs = {s: {spk.variant_text for spk in spec.speakers(s)} for s in spec.utterances}
  assert not designs["train"] & (designs["dev"] | designs["test"])


def test_held_out_accent_appears_only_in_its_split(tiny_examples):
  held_out = ACCENTS[HELD_OUT_ACCENT]
  assert {ex["accent"] for ex in tiny_examples["test_accent"]} == {held_out}
  for split in ("train", "dev", "test", "test_handwritten"):
    accents = {ex["accent"] for ex in tiny_examples[split]}
    assert held_out not in accents
  assert len({ex["accent"] for ex in tiny_examples["train"]}) == len(ACCENTS) - 1


def test_metadata_is_complete(tiny_examples):
  whispers = 0
  for exs in tiny_examples.values():
    for ex in exs:
      for key in ("id", "text", "speaker", "accent", "variant", "intent"):
        assert isinstance(ex[key], str) and ex[key], (ex["id"], key)
      assert isinstance(ex["whisper"], bool)
      whispers += ex["whisper"]
      assert all(e in ex["text"] for e in ex["entities"])
      assert isinstance(ex["bias_phrases"], list) and len(ex["bias_phrases"]) >= 4
  assert whispers > 0  # a few per cent of utterances are whispered


def test_the_recorded_condition_is_the_one_generated(tiny_examples):
  spec = get_spec("tiny")
  exs = [ex for split in tiny_examples.values() for ex in split]
  low, high = spec.snr_db
  for ex in exs:
    noisy = ex["noise"] in acoustics.NOISE_KINDS and low <= ex["snr_db"] <= high
    assert noisy or (ex["noise"] == "" and ex["snr_db"] == 0.0), ex["id"]
  # Shares near the spec's probabilities (350 utterances: loose bounds).
  assert 0.02 < np.mean([ex["noise"] == "" for ex in exs]) < 0.25         # clean_prob 0.1
  assert 0.35 < np.mean([ex["reverb"] for ex in exs]) < 0.65               # reverb_prob 0.5
  # The audio agrees with the record: speech with no added noise keeps near-silent samples (its
  # 5th percentile of |amplitude| far below the peak); noise at a low SNR raises that floor.
  quiet = lambda ex: np.percentile(np.abs(np.asarray(ex["audio"], np.float64)), 5) / max(
      np.abs(np.asarray(ex["audio"], np.float64)).max(), 1)
  clean = [quiet(ex) for ex in exs if ex["noise"] == "" and not ex["reverb"]]
  noisy = [quiet(ex) for ex in exs if ex["noise"] and ex["snr_db"] < 15]
  assert clean and noisy and np.median(clean) < np.median(noisy)


def test_utterances_past_the_corpus_are_new_sentences_by_its_speakers(tiny_examples):
  spec = get_spec("tiny")
  past = list(synth_corpus.generate_split(spec, "train", workers=1, start=240, stop=243))
  assert [ex["id"] for ex in past] == ["train-000240", "train-000241", "train-000242"]
  assert {ex["speaker"] for ex in past} <= {ex["speaker"] for ex in tiny_examples["train"]}
  again = list(synth_corpus.generate_split(spec, "train", workers=2, start=241, stop=242))
  assert _digest(again) == _digest(past[1:2])  # deterministic, whatever the range asked


def test_audio_is_not_silent_and_durations_are_in_bounds(tiny_examples):
  for exs in tiny_examples.values():
    for ex in exs:
      audio = np.asarray(ex["audio"], np.float64) / 32768
      assert ex["audio"].dtype == np.int16
      seconds = len(audio) / SAMPLE_RATE
      assert 0.5 < seconds < 12.0, (ex["id"], seconds)
      rms = np.sqrt(np.mean(audio**2))
      assert rms > 1e-3, (ex["id"], rms)
      # Speech stands above the noise (SNR >= 10 dB): the loudest tenth of the 25 ms frames is
      # at least 6 dB above the quietest tenth.
      frames = audio[: len(audio) // 400 * 400].reshape(-1, 400)
      energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
      assert np.percentile(energy_db, 90) - np.percentile(energy_db, 10) > 6, ex["id"]


def test_audio_is_band_limited_by_the_resampler():
  # eSpeak NG speaks at 22.05 kHz; a proper anti-aliasing filter leaves little energy folded
  # into the top of the 16 kHz band (noise is added after resampling, so compare clean speech).
  from asr.data import acoustics
  from asr.data.espeak import ESPEAK_SAMPLE_RATE, Synthesizer
  synth = Synthesizer()
  raw = synth.synthesize("she sells sea shells by the sea shore", "en-us", 175)
  out = acoustics.resample(raw, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)
  assert abs(len(out) - len(raw) * SAMPLE_RATE / ESPEAK_SAMPLE_RATE) <= 1
  spectrum = np.abs(np.fft.rfft(out)) ** 2
  freqs = np.fft.rfftfreq(len(out), 1 / SAMPLE_RATE)
  assert spectrum[freqs > 7900].sum() / spectrum.sum() < 1e-3


def test_unknown_size_is_named():
  with pytest.raises(ValueError, match="huge"):
    get_spec("huge")


def test_fast_record_reader_equals_tfds_decoding(tiny_source):
  fast = {ex["id"]: ex for ex in tiny_source.examples("test")}
  reference = {}
  for columns in tiny_source._tfds_groups("test", None):  # TFDS's own decoders
    for i in range(len(columns["id"])):
      reference[columns["id"][i]] = {k: col[i] for k, col in columns.items()}
  assert fast.keys() == reference.keys()
  for uid, ex in fast.items():
    ref = reference[uid]
    assert set(ex) == set(ref)
    for key in ex:
      if key == "audio":
        np.testing.assert_array_equal(ex[key], ref[key])
      else:
        assert ex[key] == ref[key], (uid, key)


def test_processes_building_the_same_corpus_at_once_build_it_once(tmp_path):
  # A local sweep's parallel runs all find the corpus missing; one builds, the others wait.
  import subprocess
  import sys
  code = ("import sys; from asr.data import synth_tfds; "
          "b, built = synth_tfds.ensure_built('tiny', data_dir=sys.argv[1], workers=1, "
          "echo=lambda m: None); print('BUILT' if built else 'WAITED', b.is_prepared())")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
  results = sorted(out.strip().splitlines()[-1] for out, _ in outs)
  assert results == ["BUILT True", "WAITED True"]


def test_handwritten_split_speaks_the_hand_written_sentences_the_generator_never_makes(
    tiny_examples):
  from asr.data.handwritten import HANDWRITTEN
  from asr.data.sentences import sample_sentence
  from asr.data.text import normalize
  exs = sorted(tiny_examples["test_handwritten"], key=lambda ex: ex["id"])
  assert [ex["text"] for ex in exs] == list(HANDWRITTEN[:len(exs)])
  assert all(normalize(t) == t for t in HANDWRITTEN) and len(set(HANDWRITTEN)) == len(HANDWRITTEN)
  rng = np.random.default_rng(0)
  generated = {sample_sentence(rng).text for _ in range(20_000)}
  assert not generated & set(HANDWRITTEN)
  assert len({ex["speaker"] for ex in exs}) > 1  # new voices (disjointness: the test above)


def test_words_corpora_mix_word_sequences_of_general_english_into_training_only(tiny_examples):
  from asr.data import sentences
  from asr.data.make_english_words import _BLOCKED, is_spoken_word
  words = sentences.english_words()
  assert len(words) == len(set(words)) == 20_000
  assert all(is_spoken_word(w) and w not in _BLOCKED for w in words)
  vocab = set(words)
  spec = get_spec("tiny_words")
  train = list(synth_corpus.generate_split(spec, "train", workers=1, stop=120))
  sequences = [ex for ex in train if ex["intent"] == "words"]
  # 120 draws at p = 0.3: 36 expected, standard deviation 5.
  assert 0.15 < len(sequences) / len(train) < 0.45
  assert all(set(ex["text"].split()) <= vocab and not ex["entities"] for ex in sequences)
  # The base corpus has none, and the words corpus's evaluation splits are the base's utterances.
  assert all(ex["intent"] != "words" for exs in tiny_examples.values() for ex in exs)
  dev = list(synth_corpus.generate_split(spec, "dev", workers=1, stop=20))
  assert _digest(dev) == _digest(sorted(tiny_examples["dev"], key=lambda e: e["id"])[:20])
  # Ranks are drawn in proportion to rank**-0.7: the share of the 100 most frequent words among
  # 120,000 draws against the sum over ranks (standard deviation of the share about 0.0012).
  rng = np.random.default_rng(0)
  drawn = [w for _ in range(20_000) for w in sentences.sample_word_sequence(rng).text.split()]
  p = np.arange(1, len(words) + 1, dtype=np.float64) ** -0.7
  top = set(words[:100])
  assert abs(np.mean([w in top for w in drawn]) - p[:100].sum() / p.sum()) < 0.01
  assert {len(sentences.sample_word_sequence(rng).text.split()) for _ in range(500)} == set(
      range(2, 11))


def test_a_run_without_a_data_dir_finds_and_builds_its_corpus_in_asr_data_dir(
    tiny_data_dir, monkeypatch):
  # Building and reading must agree on the folder: a run with data.data_dir="" once looked for
  # (and built) its corpus under ~/tensorflow_datasets while it read from $ASR_DATA_DIR.
  from asr.data import synth_tfds
  from asr.training.loop import open_dataset
  from experiments.configs.rnnt import get_config

  def no_build(self, *args, **kwargs):
    raise AssertionError(f"built again in {self.data_dir}")
  monkeypatch.setattr(synth_tfds.SynthSpeech, "download_and_prepare", no_build)
  monkeypatch.setenv("ASR_DATA_DIR", tiny_data_dir)
  c = get_config("tiny")
  assert c.data.data_dir == ""
  assert open_dataset(c).splits["train"] > 0
  assert synth_tfds.builder("tiny").data_dir.startswith(tiny_data_dir)
