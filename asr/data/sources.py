"""Datasets by name, read through TFDS and mapped onto one example schema.

`open_source("synth_speech/small", data_dir)` or `open_source("librispeech", data_dir)` gives a
`Source` whose `examples(split, ...)` yields NumPy dicts with the keys of
`asr.data.synth_tfds.features()`: `id, audio (int16 [S]), text, speaker, accent, variant,
whisper, intent, entities, bias_phrases`. LibriSpeech has no accents, intents or entities: those
are empty; `variant` holds its chapter id.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

DEFAULT_DATA_DIR = os.environ.get("ASR_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
SYNTH = "synth_speech"
LIBRISPEECH = "librispeech"


class DatasetNotBuiltError(FileNotFoundError):
  pass


def _tfds():
  import tensorflow_datasets as tfds  # deferred: importing TensorFlow takes seconds
  return tfds


@dataclasses.dataclass
class Source:
  name: str
  builder: object       # tfds.core.DatasetBuilder
  sample_rate: int

  @property
  def splits(self) -> dict[str, int]:
    return {name: info.num_examples for name, info in self.builder.info.splits.items()}

  def examples(self, split: str, *, shuffle_seed: int | None = None, shuffle_buffer: int = 1024,
               shard_index: int = 0, num_shards: int = 1) -> Iterator[dict]:
    """Every example of this host's shard of `split` once, shuffled by `shuffle_seed` if given."""
    import tensorflow as tf
    tfds = _tfds()
    if self.splits and split not in self.splits:
      raise ValueError(f"{self.name} has no split {split!r}; it has {sorted(self.splits)}")
    tfds_split = tfds.even_splits(split, n=num_shards)[shard_index] if num_shards > 1 else split
    shuffle = shuffle_seed is not None
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    ds = self.builder.as_dataset(split=tfds_split, shuffle_files=shuffle, read_config=read_config)
    if self.name == LIBRISPEECH:
      ds = ds.map(_librispeech_to_common, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
      ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    for ex in tfds.as_numpy(ds):
      yield {k: _decode(v) for k, v in ex.items()}


def _decode(value):
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [v.decode("utf-8", errors="replace") for v in value]
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def _librispeech_to_common(ex):
  import tensorflow as tf
  speaker = tf.strings.as_string(ex["speaker_id"])
  return {
      "id": ex["id"],
      "audio": tf.cast(ex["speech"], tf.int16),
      # LibriSpeech transcripts are upper-case letters, apostrophes and spaces.
      "text": tf.strings.lower(ex["text"]),
      "speaker": tf.strings.join(["librispeech-", speaker]),
      "accent": tf.constant(""),
      "variant": tf.strings.as_string(ex["chapter_id"]),
      "whisper": tf.constant(False),
      "intent": tf.constant(""),
      "entities": tf.constant([], tf.string),
      "bias_phrases": tf.constant([], tf.string),
  }


def open_source(name: str, data_dir: str | None = None, *, download: bool = False) -> Source:
  """`name` is `synth_speech/<size>[_seed<N>]` or `librispeech`.

  The data must be built already, unless `download` asks TFDS to fetch and prepare LibriSpeech
  (about 60 GB; the synthetic corpus is built, never downloaded, by `asr-data build`).
  """
  tfds = _tfds()
  data_dir = data_dir or DEFAULT_DATA_DIR
  if name.startswith(SYNTH):
    from asr.data import synth_tfds  # registers the builder
    config = name.partition("/")[2] or "tiny"
    size, _, seed = config.partition("_seed")
    builder = synth_tfds.builder(size, int(seed or 0), data_dir=data_dir)
    hint = f"asr-data build --corpus synth --size {size} --data-dir {data_dir}"
    if seed:
      hint += f" --seed {seed}"
  elif name == LIBRISPEECH:
    builder = tfds.builder(LIBRISPEECH, data_dir=data_dir)
    hint = (f"tfds build librispeech --data_dir {data_dir}, or open_source(..., download=True) "
            "(about 60 GB), or place a prepared copy there")
  else:
    raise ValueError(f"unknown dataset {name!r}: use '{SYNTH}/tiny|small|full' or '{LIBRISPEECH}'")
  if download and name == LIBRISPEECH:
    builder.download_and_prepare()
  elif not builder.is_prepared():
    raise DatasetNotBuiltError(f"{name} is not built in {data_dir}; build it with: {hint}")
  rate = (builder.info.metadata or {}).get("sample_rate", 16000)
  return Source(name, builder, int(rate))
