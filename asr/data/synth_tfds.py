"""TFDS builder for the synthetic corpus (`synth_speech/tiny`, `/small`, `/full`).

Builds offline into any data dir: `tfds.builder("synth_speech/small", data_dir=D).download_and_prepare()`
or `asr-data build --size small --data-dir D`. The example schema is `asr.data.schema.FEATURES`,
shared with LibriSpeech once mapped by `asr.data.sources`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from asr.data import synth_corpus
from asr.data.synth_corpus import SAMPLE_RATE, SPLITS, get_spec


def features() -> tfds.features.FeaturesDict:
  """The corpus schema; LibriSpeech examples are mapped onto the same keys."""
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      # Raw int16 bytes: 2 bytes a sample (the default int64 varints take up to 10) and no codec.
      # (tfds's Audio feature cannot hold a variable-length BYTES tensor; the rate is in metadata).
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                    encoding=tfds.features.Encoding.BYTES),
      "text": tfds.features.Text(),
      "speaker": tfds.features.Text(),
      "accent": tfds.features.Text(),
      "variant": tfds.features.Text(),
      "whisper": tfds.features.Scalar(dtype=np.bool_),
      # The acoustic condition (since 1.1.0): the added noise's kind ("" for none) and SNR
      # (0 for none), and whether the speech was reverberated.
      "noise": tfds.features.Text(),
      "snr_db": tfds.features.Scalar(dtype=np.float32),
      "reverb": tfds.features.Scalar(dtype=np.bool_),
      "intent": tfds.features.Text(),
      "entities": tfds.features.Sequence(tfds.features.Text()),
      "bias_phrases": tfds.features.Sequence(tfds.features.Text()),
  })


@dataclasses.dataclass(kw_only=True)
class SynthSpeechConfig(tfds.core.BuilderConfig):
  size: str = "tiny"
  seed: int = 0


def make_config(size: str, seed: int = 0) -> SynthSpeechConfig:
  """The config for a size and seed; seed 0 is the registered `synth_speech/<size>`."""
  get_spec(size)  # validates the size
  name = size if seed == 0 else f"{size}_seed{seed}"
  return SynthSpeechConfig(name=name, size=size, seed=seed,
                           description=f"{size} synthetic corpus, seed {seed}")


def builder(size: str = "tiny", seed: int = 0, data_dir: str | None = None,
            workers: int | None = None) -> "SynthSpeech":
  """The builder for a size and seed (registered configs by name, others as custom configs) in
  `data_dir` (default: `asr.data.sources.default_data_dir()`, as every reader uses); `workers`
  generation processes (default: all cores; the bytes do not depend on it)."""
  from asr.data.sources import default_data_dir
  get_spec(size)
  config = size if seed == 0 else make_config(size, seed)
  return SynthSpeech(config=config, data_dir=data_dir or default_data_dir(), workers=workers)


def ensure_built(size: str = "tiny", seed: int = 0, data_dir: str | None = None,
                 workers: int | None = None, echo=print) -> tuple["SynthSpeech", bool]:
  """(builder, whether this call built it): builds the corpus unless it is there. Several
  processes may call this at once (a sweep's parallel runs): one builds under a file lock, the
  others wait for it and then read the finished corpus."""
  b = builder(size, seed, data_dir, workers)
  if b.is_prepared():
    return b, False
  lock_dir = pathlib.Path(b.data_dir).parent  # <data_dir>/synth_speech/<config>
  lock_dir.mkdir(parents=True, exist_ok=True)
  with open(lock_dir / ".build.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    b = builder(size, seed, data_dir, workers)  # a fresh look: another process may have built it
    if b.is_prepared():
      return b, False
    echo(f"building synth_speech/{b.builder_config.name} in {b.data_dir} (once) ...")
    b.download_and_prepare()
    return b, True


class SynthSpeech(tfds.core.GeneratorBasedBuilder):
  """Multi-speaker synthetic English speech made locally with eSpeak NG."""

  VERSION = tfds.core.Version("1.2.1")
  RELEASE_NOTES = {"1.0.0": "First release: 8 accents, continuous voice design, noise and reverb.",
                   "1.1.0": "Records each utterance's noise kind, SNR and reverberation (same "
                            "audio as 1.0.0).",
                   "1.2.0": "Adds test_handwritten: sentences written by hand outside the "
                            "generator, by speakers of their own (other splits unchanged).",
                   "1.2.1": "The same bytes as 1.2.0's first release. Code that still called "
                            "itself 1.2.0 drew one more random number for every training "
                            "utterance (for the *_words corpora's mix), so its train split "
                            "differed; the version moves so that no such build is reused."}
  BUILDER_CONFIGS = [make_config(size) for size in synth_corpus.SPECS]

  def __init__(self, *, workers: int | None = None, **kwargs):
    # How many processes generate it is not part of the dataset's identity (not in its config).
    self._workers = workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(),
        supervised_keys=("audio", "text"),
        homepage="https://github.com/espeak-ng/espeak-ng",
        metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    cfg = self.builder_config
    spec = get_spec(cfg.size, cfg.seed)
    from tqdm.auto import tqdm
    # TFDS's own bar counts examples without a total; this one knows the split size (ETA).
    for example in tqdm(synth_corpus.generate_split(spec, split, workers=self._workers),
                        total=spec.utterances[split], desc=f"synthesizing {split}",
                        unit="utt", leave=False):
      yield example["id"], example
