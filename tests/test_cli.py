"""`asr-data build` and `asr-data show` on the tiny corpus; every tool's help."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
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


def test_every_option_of_every_tool_says_what_it_does(monkeypatch, capsys):
  # Each argparse tool (and asr-data's subcommands) asked for --help: every option it defines
  # must carry a help string.
  import argparse
  from experiments import demo, evaluate, report, sweep, transcribe
  bare = []
  add = argparse.ArgumentParser.add_argument

  def recording(self, *names, **kwargs):
    if not kwargs.get("help") and "-h" not in names:
      bare.append((self.prog, names))
    return add(self, *names, **kwargs)
  monkeypatch.setattr(argparse.ArgumentParser, "add_argument", recording)
  for main, argv in [(cli.main, ["build", "--help"]), (cli.main, ["show", "--help"]),
                     (evaluate.main, ["--help"]), (transcribe.main, ["--help"]),
                     (sweep.main, ["--help"]), (report.main, ["--help"]),
                     (demo.main, ["--help"])]:
    with pytest.raises(SystemExit) as done:
      main(argv)
    assert done.value.code == 0
  assert bare == []
  assert "test_accent" in capsys.readouterr().out      # the splits are named


def test_asr_train_help_shows_its_usage_and_flags():
  # absl prints the flags of the module argv[0] names: under the console script, its wrapper's
  # (none) unless asr-train registers its own. (absl's --help exits with status 1.)
  script = pathlib.Path(sys.executable).parent / "asr-train"
  out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                       env={**os.environ, "ASR_HUGE_PAGES": "0"})
  text = out.stdout + out.stderr
  assert "--config: config file" in text and "--workdir: run directory" in text
  assert "Trains (or resumes) the run in W" in text
