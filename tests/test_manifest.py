"""A corpus of one's own: a JSON-lines manifest of audio files and transcripts built into TFDS
(`asr.data.manifest`), read, trained on and evaluated like the synthetic corpus; every kind of
bad row named by its line, or skipped and counted."""

import json

import numpy as np
import pytest
import soundfile

from asr.data import cli, manifest
from asr.data.sources import open_source
from asr.data.text import normalize

TEXTS = ["Turn on 5 lights, please!", "What does Zoë want?"]   # digits, punctuation, accents


@pytest.fixture(scope="module")
def recordings(tiny_source, tmp_path_factory):
  """Eight eSpeak NG utterances of the tiny corpus as files: WAV and FLAC, with transcripts
  (two written with capitals, digits and punctuation), -> (folder, [(path, int16, text)])."""
  folder = tmp_path_factory.mktemp("recordings")
  clips = []
  for i, ex in zip(range(8), tiny_source.examples("dev")):
    suffix = "flac" if i % 2 else "wav"
    path = folder / ("speaker_a" if i < 4 else "speaker_b") / f"clip{i}.{suffix}"
    path.parent.mkdir(exist_ok=True)
    soundfile.write(path, ex["audio"], 16000, subtype="PCM_16")
    text = TEXTS[i] if i < len(TEXTS) else ex["text"]
    path.with_suffix(".txt").write_text(text + "\n")
    clips.append((path, np.asarray(ex["audio"]), text))
  return folder, clips


def _rows(clips, splits=("train",) * 6 + ("dev",) * 2):
  return [{"audio": str(path.relative_to(path.parents[1])), "text": text, "split": split,
           "speaker": path.parent.name, "duration": len(audio) / 16000}
          for (path, audio, text), split in zip(clips, splits)]


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def test_a_manifest_builds_into_the_corpus_schema_with_the_same_audio(recordings, tmp_path):
  folder, clips = recordings
  m = _write(folder / "all.jsonl", _rows(clips))
  manifest.build(m, "mine", str(tmp_path))
  source = open_source("manifest/mine", str(tmp_path))
  assert source.splits == {"train": 6, "dev": 2}
  got = {ex["id"]: ex for split in ("train", "dev") for ex in source.examples(split)}
  assert len(got) == 8
  for line, (path, audio, text) in enumerate(clips, 1):
    ex = got[f"{'train' if line <= 6 else 'dev'}-{line:06d}"]
    np.testing.assert_array_equal(ex["audio"], audio)       # 16-bit PCM back, bit for bit
    assert ex["text"] == normalize(text) and ex["speaker"] == path.parent.name
    assert ex["noise"] == "unrecorded" and ex["accent"] == ""
  assert got["train-000001"]["text"] == "turn on five lights please"


BAD = {
    "not JSON": ('{"audio": "x.wav", ', "not JSON"),
    "no text": ({"audio": "speaker_a/clip0.wav"}, "no 'text'"),
    "missing file": ({"audio": "nowhere.wav", "text": "hello"}, "does not exist"),
    "unreadable": ({"audio": "../garbage.wav", "text": "hello"}, "unreadable audio"),
    "empty text": ({"audio": "speaker_a/clip0.wav", "text": "?!"}, "empty once normalized"),
    "foreign letters": ({"audio": "speaker_a/clip0.wav", "text": "привет мир"},
                        "outside the vocabulary"),
    "duration": ({"audio": "speaker_a/clip0.wav", "text": "hello", "duration": 60.0},
                 "lasts"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_row_is_named_by_its_line_and_problem(recordings, tmp_path, kind):
  folder, clips = recordings
  (folder.parent / "garbage.wav").write_bytes(b"RIFF not really a wave file")   # not a pair
  row, problem = BAD[kind]
  m = _write(folder / f"bad_{kind.replace(' ', '_')}.jsonl", [_rows(clips)[0], row])
  with pytest.raises(manifest.ManifestError, match=f"{m.name}:2: .*{problem}"):
    manifest.build(m, "bad", str(tmp_path))     # before anything is written


def test_skip_bad_leaves_bad_rows_out_and_counts_them(recordings, tmp_path, capsys):
  folder, clips = recordings
  (folder.parent / "garbage.wav").write_bytes(b"RIFF not really a wave file")   # not a pair
  rows = _rows(clips) + [r for r, _ in BAD.values()]
  m = _write(folder / "mixed.jsonl", rows)
  args = ["build", "--corpus", "manifest", "--manifest", str(m), "--name", "mixed",
          "--data-dir", str(tmp_path)]
  assert cli.main(args) == 1
  assert "mixed.jsonl:9: not JSON" in capsys.readouterr().err
  assert cli.main(args + ["--skip-bad"]) == 0
  assert f"skipped {len(BAD)} bad rows" in capsys.readouterr().out
  source = open_source("manifest/mixed", str(tmp_path))
  assert source.splits == {"train": 6, "dev": 2}
  assert sum(source.builder.info.metadata["skipped"].values()) == len(BAD)


def test_a_folder_of_audio_and_transcripts_becomes_a_manifest(recordings, tmp_path, capsys):
  folder, clips = recordings
  out = tmp_path / "folder.jsonl"
  assert cli.main(["manifest", "--folder", str(folder), "--out", str(out), "--split", "dev"]) == 0
  rows, skipped = manifest.read_manifest(out)
  assert len(rows) == 8 and not skipped
  assert {r.speaker for r in rows} == {"speaker_a", "speaker_b"}
  assert {r.split for r in rows} == {"dev"}
  orphan = folder / "speaker_b" / "orphan.wav"
  orphan.write_bytes((folder / "speaker_a" / "clip0.wav").read_bytes())
  try:
    with pytest.raises(manifest.ManifestError, match="orphan.wav"):
      manifest.write_folder_manifest(folder, out)
  finally:
    orphan.unlink()


def test_a_run_trains_and_evaluates_on_a_manifest_corpus(recordings, tmp_path):
  from asr.training.loop import train
  from experiments import evaluate
  from experiments.configs.rnnt import get_config
  folder, clips = recordings
  manifest.build(_write(folder / "run.jsonl", _rows(clips)), "run", str(tmp_path / "data"))
  c = get_config("tiny")
  c.data.dataset, c.data.data_dir = "manifest/run", str(tmp_path / "data")
  c.wandb.mode = "disabled"
  c.data.bucket_seconds = (6.0,)
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 2, 1000, 2
  train(c, tmp_path / "run")
  assert evaluate.main(["--workdir", str(tmp_path / "run"), "--split", "dev"]) == 0
  summary = json.loads((tmp_path / "run" / "eval" / "dev_greedy.json").read_text())
  assert summary["num_utterances"] == 2
