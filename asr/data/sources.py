"""Datasets by name, read through TFDS and mapped onto one example schema.

`open_source("synth_speech/small", data_dir)`, `open_source("manifest/NAME", data_dir)` (a
corpus built from a user's manifest, `asr.data.manifest`) or `open_source("librispeech",
data_dir)` gives a
`Source` whose `examples(split, ...)` yields NumPy dicts with the keys of
`asr.data.synth_tfds.features()`: `id, audio (int16 [S]), text, speaker, accent, variant,
whisper, noise, snr_db, reverb, intent, entities, bias_phrases`. LibriSpeech has no accents,
intents, entities or recorded conditions: those are empty (or False, 0; `noise` is
"unrecorded"); `variant` holds its chapter id.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

def default_data_dir() -> str:
  """Where data lives when a command is not told: `$ASR_DATA_DIR`, else TFDS's default
  `~/tensorflow_datasets` (read when called, so every part of a run agrees)."""
  return os.environ.get("ASR_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


SYNTH = "synth_speech"
LIBRISPEECH = "librispeech"
MANIFEST = "manifest"       # manifest/<name>: a user's corpus (asr.data.manifest)


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

  def examples(self, split: str, *, shuffle_seed: int | None = None,
               shuffle_buffer: int = 1024) -> Iterator[dict]:
    """Every example of `split` once, shuffled by `shuffle_seed` if given.

    Files are read in an order drawn from the seed, then examples pass a shuffle buffer of
    `shuffle_buffer` seeded likewise: the order is a pure function of the seed.
    """
    tfds = _tfds()
    if self.splits and split not in self.splits:
      raise ValueError(f"{self.name} has no split {split!r}; it has {sorted(self.splits)}")
    shuffle = shuffle_seed is not None
    if self.name.startswith((SYNTH, MANIFEST)):      # the synthetic corpus's records
      groups = self._synth_groups(split, shuffle_seed)
    else:
      groups = self._tfds_groups(split, shuffle_seed)

    def unbatched():
      for columns in groups:
        for i in range(len(columns["id"])):
          yield {k: col[i] for k, col in columns.items()}
    if not shuffle:
      yield from unbatched()
      return
    # The example-level shuffle buffer lives in Python: it moves references, where tf.data's
    # shuffle copies every waveform into its buffer.
    rng = np.random.default_rng(shuffle_seed)
    buffer: list = []
    for ex in unbatched():
      if len(buffer) < shuffle_buffer:
        buffer.append(ex)
        continue
      i = int(rng.integers(shuffle_buffer))
      buffer[i], ex = ex, buffer[i]
      yield ex
    rng.shuffle(buffer)
    yield from buffer

  def _tfds_groups(self, tfds_split, shuffle_seed) -> Iterator[dict]:
    """Any TFDS dataset: `as_dataset` (its own decoders), crossed into Python 64 at a time."""
    import tensorflow as tf
    tfds = _tfds()
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
    ds = self.builder.as_dataset(split=tfds_split, shuffle_files=shuffle_seed is not None,
                                 read_config=read_config)
    if self.name == LIBRISPEECH:
      ds = ds.map(_librispeech_to_common, num_parallel_calls=tf.data.AUTOTUNE)
    # TensorFlow's per-element iterator overhead (tens of microseconds a field) would otherwise
    # bound the whole pipeline.
    for group in ds.ragged_batch(_READ_BATCH).prefetch(2):
      yield {k: _column(v) for k, v in group.items()}

  def _synth_groups(self, tfds_split, shuffle_seed) -> Iterator[dict]:
    """The synthetic corpus's own records, parsed 64 at a time by `tf.io.parse_example`:
    several times faster than TFDS's per-example decoding, which bounded the pipeline."""
    import tensorflow as tf
    instructions = list(self.builder.info.splits[tfds_split].file_instructions)
    if shuffle_seed is not None:
      order = np.random.default_rng(shuffle_seed).permutation(len(instructions))
      instructions = [instructions[i] for i in order]
    # Interleave 4 files at a time (their records are already shuffled when TFDS writes them).
    ds = tf.data.Dataset.from_tensor_slices((
        [str(fi.filename) for fi in instructions],
        np.array([fi.skip for fi in instructions], np.int64),
        np.array([fi.take for fi in instructions], np.int64))).interleave(
            lambda f, skip, take: tf.data.TFRecordDataset(f).skip(skip).take(take),
            cycle_length=min(4, len(instructions)), block_length=8,
            num_parallel_calls=min(2, len(instructions)),
            deterministic=True)
    string, int64 = tf.io.FixedLenFeature([], tf.string), tf.io.FixedLenFeature([], tf.int64)
    spec = {k: string for k in ("id", "audio", "text", "speaker", "accent", "variant", "intent",
                                "noise")}
    spec.update(whisper=int64, reverb=int64, snr_db=tf.io.FixedLenFeature([], tf.float32),
                entities=tf.io.VarLenFeature(tf.string),
                bias_phrases=tf.io.VarLenFeature(tf.string))
    ds = ds.batch(_READ_BATCH).map(lambda r: tf.io.parse_example(r, spec),
                                   num_parallel_calls=2, deterministic=True).prefetch(2)
    for group in ds:
      columns = {}
      for k, v in group.items():
        if isinstance(v, tf.SparseTensor):
          rows = v.indices.numpy()[:, 0]
          values = [s.decode() for s in v.values.numpy()]
          lists = [[] for _ in range(int(v.dense_shape[0]))]
          for r, value in zip(rows, values):
            lists[r].append(value)
          columns[k] = lists
        elif k == "audio":
          columns[k] = [np.frombuffer(b, np.int16) for b in v.numpy()]
        elif k in ("whisper", "reverb"):
          columns[k] = [bool(x) for x in v.numpy()]
        elif k == "snr_db":
          columns[k] = [float(x) for x in v.numpy()]
        else:
          columns[k] = [b.decode("utf-8", errors="replace") for b in v.numpy()]
      yield columns


_READ_BATCH = 64


def _column(value) -> list:
  """One field of a ragged batch as a list of per-example Python/NumPy values."""
  import tensorflow as tf
  if isinstance(value, tf.RaggedTensor):
    flat, splits = value.flat_values.numpy(), value.row_splits.numpy()
    rows = np.split(flat, splits[1:-1])
    if flat.dtype == object:
      return [[s.decode("utf-8", errors="replace") for s in row] for row in rows]
    return rows
  array = value.numpy()
  if array.dtype == object and array.ndim > 1:  # a uniform batch of string lists
    return [[s.decode("utf-8", errors="replace") for s in row] for row in array]
  if array.dtype == object:
    return [s.decode("utf-8", errors="replace") for s in array]
  if array.dtype == np.bool_:
    return [bool(x) for x in array]
  return list(array)


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
      "noise": tf.constant("unrecorded"),   # asr.data.conditions.UNRECORDED
      "snr_db": tf.constant(0.0),
      "reverb": tf.constant(False),
      "intent": tf.constant(""),
      "entities": tf.constant([], tf.string),
      "bias_phrases": tf.constant([], tf.string),
  }


def synth_size_and_seed(name: str) -> tuple[str, int]:
  """`synth_speech/small_seed3` -> ("small", 3); `synth_speech` -> ("tiny", 0)."""
  config = name.partition("/")[2] or "tiny"
  size, _, seed = config.partition("_seed")
  return size, int(seed or 0)


def new_sentences(name: str, split: str, count: int) -> Iterator[dict]:
  """`count` utterances of a synthetic corpus's `split` past its end: the split's speakers
  saying sentences the built corpus does not hold (generated now, deterministically)."""
  from asr.data import synth_corpus
  if not name.startswith(SYNTH):
    raise ValueError(f"{name} is not generated, so it has no utterances past its end")
  if count > synth_corpus.NEW_SENTENCES_RESERVED:
    raise ValueError(f"at most {synth_corpus.NEW_SENTENCES_RESERVED} new sentences are kept "
                     f"apart from fresh training audio; asked for {count}")
  spec = synth_corpus.get_spec(*synth_size_and_seed(name))
  start = spec.utterances[split]
  return synth_corpus.generate_split(spec, split, start=start, stop=start + count)


def fresh_epoch(name: str, split: str, epoch: int, workers: int) -> Iterator[dict]:
  """Epoch `epoch >= 1` of a synthetic corpus's fresh-audio stream: as many new utterances of
  `split`'s speakers as the split holds, synthesized now (`asr.data.synth_corpus.fresh_epoch`)."""
  from asr.data import synth_corpus
  if not name.startswith(SYNTH):
    raise ValueError(f"{name} is not generated, so it cannot make fresh audio "
                     "(data.fresh_audio_workers is for synth_speech corpora)")
  spec = synth_corpus.get_spec(*synth_size_and_seed(name))
  return synth_corpus.fresh_epoch(spec, split, epoch, workers)


def open_source(name: str, data_dir: str | None = None, *, download: bool = False) -> Source:
  """`name` is `synth_speech/<size>[_seed<N>]` or `librispeech`.

  The data must be built already, unless `download` asks TFDS to fetch and prepare LibriSpeech
  (about 60 GB; the synthetic corpus is built, never downloaded, by `asr-data build`).
  """
  tfds = _tfds()
  data_dir = data_dir or default_data_dir()
  if name.startswith(SYNTH):
    from asr.data import synth_tfds  # registers the builder
    size, seed = synth_size_and_seed(name)
    builder = synth_tfds.builder(size, seed, data_dir=data_dir)
    hint = f"asr-data build --corpus synth --size {size} --data-dir {data_dir}"
    if seed:
      hint += f" --seed {seed}"
  elif name.startswith(MANIFEST + "/"):
    from asr.data import manifest
    builder = manifest.prepared(name.partition("/")[2], data_dir)
    if builder is None:
      raise DatasetNotBuiltError(
          f"{name} is not built in {data_dir}; build it with: asr-data build --corpus manifest "
          f"--manifest M.jsonl --name {name.partition('/')[2]} --data-dir {data_dir}")
    return Source(name, builder, int(builder.info.metadata["sample_rate"]))
  elif name == LIBRISPEECH:
    builder = tfds.builder(LIBRISPEECH, data_dir=data_dir)
    hint = (f"tfds build librispeech --data_dir {data_dir}, or open_source(..., download=True) "
            "(about 60 GB), or place a prepared copy there")
  else:
    raise ValueError(f"unknown dataset {name!r}: use '{SYNTH}/tiny|small|full', "
                     f"'{MANIFEST}/<name>' or '{LIBRISPEECH}'")
  if download and name == LIBRISPEECH:
    builder.download_and_prepare()
  elif not builder.is_prepared():
    raise DatasetNotBuiltError(f"{name} is not built in {data_dir}; build it with: {hint}")
  rate = (builder.info.metadata or {}).get("sample_rate", 16000)
  return Source(name, builder, int(rate))
