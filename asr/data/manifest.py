"""A corpus from any folder of audio and transcripts: a JSON-lines manifest built into TFDS.

One JSON object a line, as NeMo's manifests (ESPnet's `wav.scp` + `text` and lhotse's
recordings + supervisions carry the same facts):

  {"audio": "clips/0001.flac", "text": "Turn the lights off.", "speaker": "anna", "split": "train"}

`audio` (a path; relative paths are from the manifest's folder) and `text` are required;
`speaker` (default "unknown"), `split` (default "train"; any name: `dev` and `test` are what the
trainer and `asr-eval` read by default), `duration` (seconds, checked against the file) and `id`
(default `<split>-<line>`) are optional. `asr-data build --corpus manifest --manifest M.jsonl
--name NAME` builds it as `manifest/NAME` with the synthetic corpus's example schema
(`asr.data.synth_tfds.features`): audio 16 kHz mono int16 (channels averaged, resampled as
`asr.data.audio_io` does), text normalized by the tokenizer's rules (`asr.data.text.normalize`),
the fields a manifest does not record empty (`noise` "unrecorded"). Then
`--config.data.dataset=manifest/NAME` trains and `asr-eval --dataset manifest/NAME` evaluates on it.

Every row is checked before anything is written. A bad row (not JSON, no `audio` or `text`, a
missing or unreadable file, text empty once normalized, letters outside the vocabulary, a
`duration` more than 10% and 0.1 s from the file's) stops the build with an error naming the
manifest's line and the problem, or, with `skip_bad`, is left out and counted by problem; the
counts are printed and kept in the dataset's metadata (`skipped`).
`write_folder_manifest(folder, out)` writes a manifest for a folder of `x.wav` + `x.txt` pairs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import unicodedata

import numpy as np
import tensorflow_datasets as tfds

from asr.data import synth_tfds
from asr.data.audio_io import AudioFileError, load_audio
from asr.data.text import ALPHABET, normalize

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class ManifestError(ValueError):
  """A bad manifest row; the message names the manifest, the line and the problem."""


@dataclasses.dataclass(frozen=True)
class Row:
  line: int
  audio: pathlib.Path
  text: str         # normalized
  speaker: str
  split: str
  id: str


class _BadRow(Exception):
  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind


def _parse_row(line: str, number: int, folder: pathlib.Path) -> Row:
  """The manifest's line `number` as a row; `_BadRow(kind, message)` if it is not usable."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise _BadRow("not JSON", f"not JSON ({e.msg})") from None
  if not isinstance(record, dict):
    raise _BadRow("not an object", "not a JSON object")
  for key in ("audio", "text"):
    if not isinstance(record.get(key), str):
      raise _BadRow("missing field", f"no {key!r} (a string)")
  path = pathlib.Path(record["audio"])
  path = path if path.is_absolute() else folder / path
  if not path.is_file():
    raise _BadRow("missing file", f"audio file {str(path)!r} does not exist")
  foreign = _foreign_letters(record["text"])
  if foreign:
    raise _BadRow("outside the vocabulary", f"letters outside the vocabulary "
                  f"({ALPHABET.strip()!r}): {''.join(foreign)!r} in {record['text']!r}")
  text = normalize(record["text"])
  if not text.strip():
    raise _BadRow("empty text", f"text {record['text']!r} is empty once normalized")
  import soundfile
  try:
    info = soundfile.info(os.fspath(path))
  except Exception as e:  # libsndfile names the format problem, not the file
    raise _BadRow("unreadable audio",
                  f"{path}: unreadable audio ({type(e).__name__}: {e})") from None
  if "duration" in record:
    try:
      stated = float(record["duration"])
    except (TypeError, ValueError):
      raise _BadRow("bad duration", f"duration {record['duration']!r} is not a number") from None
    if abs(info.duration - stated) > max(0.1, 0.1 * info.duration):
      raise _BadRow("duration mismatch", f"duration {stated:.2f} s, but {path.name} lasts "
                    f"{info.duration:.2f} s")
  split = str(record.get("split", "train"))
  return Row(number, path, text, str(record.get("speaker", "unknown")), split,
             str(record.get("id") or f"{split}-{number:06d}"))


def _foreign_letters(text: str) -> list[str]:
  """Letters `normalize` would drop: not in the alphabet once accents are stripped."""
  stripped = "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                     if not unicodedata.combining(c))
  return list(dict.fromkeys(c for c in stripped if c.isalpha() and c not in ALPHABET))


def read_manifest(path: os.PathLike, skip_bad: bool = False
                  ) -> tuple[list[Row], collections.Counter]:
  """(the good rows, `{problem: rows skipped}`). A bad row raises `ManifestError` naming
  `path:line` and the problem, unless `skip_bad` (then it is counted)."""
  path = pathlib.Path(path)
  rows, skipped, seen = [], collections.Counter(), set()
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = _parse_row(line, number, path.parent)
        if row.id in seen:
          raise _BadRow("duplicate id", f"id {row.id!r} appears twice")
      except _BadRow as bad:
        if not skip_bad:
          raise ManifestError(f"{path}:{number}: {bad}") from None
        skipped[bad.kind] += 1
        continue
      seen.add(row.id)
      rows.append(row)
  if not rows:
    raise ManifestError(f"{path}: no usable rows" + (f" (skipped: {dict(skipped)})"
                                                     if skipped else ""))
  return rows, skipped


def write_folder_manifest(folder: os.PathLike, out: os.PathLike, split: str = "train",
                          speaker: str | None = None) -> int:
  """Writes `out` for every audio file of `folder` (recursively) with a transcript beside it
  (`x.wav` and `x.txt`), paths relative to `out`'s folder; the speaker is the file's folder
  name unless given. Returns the rows written; an audio file without a transcript raises,
  naming it."""
  folder, out = pathlib.Path(folder), pathlib.Path(out)
  audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
  missing = [str(p) for p in audio if not p.with_suffix(".txt").is_file()]
  if missing:
    raise ManifestError(f"{len(missing)} audio files have no transcript beside them "
                        f"(x.wav needs x.txt), e.g. {missing[0]}")
  with open(out, "w", encoding="utf-8") as f:
    for p in audio:
      row = {"audio": os.path.relpath(p.resolve(), out.parent.resolve()),
             "text": p.with_suffix(".txt").read_text(encoding="utf-8").strip(),
             "speaker": speaker or p.parent.name, "split": split}
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return len(audio)


@dataclasses.dataclass(kw_only=True)
class ManifestConfig(tfds.core.BuilderConfig):
  manifest: str = ""
  skip_bad: bool = False


class Manifest(tfds.core.GeneratorBasedBuilder):
  """A user's speech from a JSON-lines manifest (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, **kwargs):
    self._rows: list[Row] | None = None       # read once, before TFDS asks for the info
    self._skipped: collections.Counter = collections.Counter()
    super().__init__(**kwargs)

  def rows(self) -> tuple[list[Row], collections.Counter]:
    if self._rows is None:
      self._rows, self._skipped = read_manifest(self.builder_config.manifest,
                                                self.builder_config.skip_bad)
    return self._rows, self._skipped

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = {"sample_rate": SAMPLE_RATE, "manifest": self.builder_config.manifest}
    if self.builder_config.manifest:            # building (not reading a prepared copy)
      metadata["skipped"] = dict(self.rows()[1])
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=synth_tfds.features(),
                                 supervised_keys=("audio", "text"),
                                 metadata=tfds.core.MetadataDict(metadata))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    rows = self.rows()[0]
    return {split: self._generate_examples([r for r in rows if r.split == split])
            for split in dict.fromkeys(r.split for r in rows)}

  def _generate_examples(self, rows):
    for row in rows:
      try:
        audio = load_audio(row.audio, SAMPLE_RATE)
      except AudioFileError as e:
        raise ManifestError(f"{self.builder_config.manifest}:{row.line}: {e}") from e
      # The inverse of reading 16-bit PCM as float (x / 32768), so such files come back bit
      # for bit (`acoustics.to_int16` scales by 32767, for synthesized float audio).
      pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
      yield row.id, {"id": row.id, "audio": pcm, "text": row.text, "speaker": row.speaker,
                     "accent": "", "variant": "", "whisper": False, "noise": "unrecorded",
                     "snr_db": 0.0, "reverb": False, "intent": "", "entities": [],
                     "bias_phrases": []}


def build(manifest: os.PathLike, name: str, data_dir: str, skip_bad: bool = False) -> Manifest:
  """Builds `manifest/<name>` in `data_dir` from `manifest` (again, if it was built before:
  the manifest's rows are the dataset)."""
  config = ManifestConfig(name=name, manifest=str(pathlib.Path(manifest).resolve()),
                          skip_bad=skip_bad, description=f"{name}: from {manifest}")
  builder = Manifest(config=config, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  return builder


def prepared(name: str, data_dir: str):
  """The read-only builder of a built `manifest/<name>` (its newest version), or None."""
  root = pathlib.Path(data_dir) / "manifest" / name
  versions = sorted((p for p in root.glob("*.*.*") if (p / "dataset_info.json").is_file()),
                    key=lambda p: tuple(int(x) for x in p.name.split(".")))
  return tfds.builder_from_directory(str(versions[-1])) if versions else None
