"""The LibriSpeech path, on TFDS's mock data (no download): same schema, same pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from asr.data.pipeline import Batches, PipelineConfig
from asr.data.sources import DatasetNotBuiltError, open_source
from asr.tokenizer import CharTokenizer

TEXTS = ["HE HOPED THERE WOULD BE STEW FOR DINNER", "STUFF IT INTO YOU", "", "NUMBER 9 TOO"]


def _realistic_mock(self, split, **kwargs):
  """LibriSpeech-shaped examples: upper-case transcripts, int16 speech at 16 kHz."""
  rng = np.random.default_rng(0)
  n = len(TEXTS)
  return tf.data.Dataset.from_tensor_slices({
      "speech": tf.ragged.constant(
          [(rng.standard_normal(16000 + 4000 * i) * 2000).astype(np.int16) for i in range(n)],
          dtype=tf.int16).to_tensor(),
      "text": TEXTS,
      "speaker_id": np.arange(n, dtype=np.int64) + 100,
      "chapter_id": np.arange(n, dtype=np.int64) + 7,
      "id": [f"100-7-{i:04d}" for i in range(n)],
  })


def test_unbuilt_librispeech_names_how_to_build_it(tmp_path):
  with pytest.raises(DatasetNotBuiltError, match="tfds build librispeech"):
    open_source("librispeech", str(tmp_path))


def test_librispeech_examples_have_the_corpus_schema(tmp_path, tiny_source):
  with tfds.testing.mock_data(num_examples=5):
    src = open_source("librispeech", str(tmp_path), download=True)
    assert src.name == "librispeech" and src.sample_rate == 16000
    examples = list(src.examples("dev_clean"))
  synth = next(tiny_source.examples("dev"))
  assert len(examples) == 5
  for ex in examples:
    assert set(ex) == set(synth)
    assert ex["audio"].dtype == np.int16 and ex["audio"].ndim == 1
    assert ex["speaker"].startswith("librispeech-")
    assert ex["text"] == ex["text"].lower()
    assert ex["entities"] == [] and ex["whisper"] is False


def test_random_mock_examples_are_all_counted_as_unusable(tmp_path):
  # TFDS's default mock audio is a few dozen samples: shorter than one analysis window.
  cfg = PipelineConfig(batch_size=4, on_bad_example="skip")
  with tfds.testing.mock_data(num_examples=6):
    src = open_source("librispeech", str(tmp_path), download=True)
    batches = Batches.from_source(src, "dev_clean", CharTokenizer(), cfg, seed=0, num_epochs=1)
    with pytest.raises(ValueError, match=r"no usable example among 6; skipped \{'too_short': 6\}"):
      next(batches)


def test_librispeech_through_the_pipeline(tmp_path):
  cfg = PipelineConfig(batch_size=2, on_bad_example="skip")
  tok = CharTokenizer()
  with tfds.testing.mock_data(as_dataset_fn=_realistic_mock):
    src = open_source("librispeech", str(tmp_path), download=True)
    batches = Batches.from_source(src, "train_clean100", tok, cfg, shuffle=False, num_epochs=1)
    got = {}
    for b in batches:
      for row, uid in enumerate(b["ids"]):
        if uid:
          got[uid] = tok.decode(b["labels"][row, : b["label_lengths"][row]])
          assert b["speakers"][row] == f"librispeech-{100 + int(uid[-1])}"
  assert got == {"100-7-0000": "he hoped there would be stew for dinner",
                 "100-7-0001": "stuff it into you"}
  # The empty transcript and the digit are counted, not lost.
  assert batches.problems.as_metrics() == {"skipped/empty_transcript": 1,
                                           "skipped/out_of_vocabulary": 1}
