"""`asr-data build` and `asr-data show` on the tiny corpus."""

import re

import numpy as np
import soundfile

from asr.data import cli
from asr.data.synth_corpus import get_spec


def test_build_prints_utterances_hours_and_speakers_per_split(tiny_data_dir, capsys):
  assert cli.main(["build", "--size", "tiny", "--data-dir", tiny_data_dir]) == 0
  out = capsys.readouterr().out
  spec = get_spec("tiny")
  for split, n in spec.utterances.items():
    row = re.search(rf"^{split}\s+(\d+)\s+([\d.]+)\s+(\d+)$", out, re.M)
    assert row, out
    assert int(row.group(1)) == n
    assert 0 < float(row.group(2)) < n * 12 / 3600
    speakers = spec.speakers_per_accent[split] * (1 if split == "test_accent" else 7)
    assert int(row.group(3)) <= speakers


def test_show_prints_examples_and_writes_wavs(tiny_data_dir, tiny_source, tmp_path, capsys):
  wav_dir = tmp_path / "wavs"
  assert cli.main(["show", "--size", "tiny", "--data-dir", tiny_data_dir, "--split", "test",
                   "-n", "3", "--wav-dir", str(wav_dir)]) == 0
  out = capsys.readouterr().out
  examples = list(tiny_source.examples("test"))[:3]
  for ex in examples:
    assert ex["id"] in out and ex["text"] in out and ex["speaker"] in out
    audio, rate = soundfile.read(wav_dir / f"{ex['id']}.wav", dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(audio, ex["audio"])


def test_show_names_a_missing_corpus(tmp_path):
  import pytest
  from asr.data.sources import DatasetNotBuiltError
  with pytest.raises(DatasetNotBuiltError, match="asr-data build --corpus synth --size small"):
    cli.main(["show", "--size", "small", "--data-dir", str(tmp_path)])
