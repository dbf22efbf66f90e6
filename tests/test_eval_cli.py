"""`asr-eval` and `asr-transcribe` on a briefly trained tiny run."""

import json

import pytest
import soundfile

from experiments import evaluate as eval_cli
from experiments import transcribe
from experiments.configs.rnnt import get_config


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory):
  from asr.training.loop import train
  c = get_config("tiny")
  c.data.data_dir = tiny_data_dir
  c.wandb.mode = "disabled"
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 6, 1000, 6
  workdir = tmp_path_factory.mktemp("run")
  train(c, workdir)
  return workdir


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_eval_writes_summary_and_hypotheses(tiny_run, tiny_source, decoder, capsys):
  assert eval_cli.main(["--workdir", str(tiny_run), "--split", "test", "--decoder", decoder]) == 0
  summary = json.loads((tiny_run / "eval" / f"test_{decoder}.json").read_text())
  for key in ("wer", "cer", "num_utterances", "substitutions", "deletions", "insertions",
              "flops_per_frame", "flops_per_second", "rtf", "backend", "per_accent",
              "per_speaker"):
    assert key in summary, key
  assert summary["num_utterances"] == tiny_source.splits["test"]
  assert summary["backend"] == "float" and summary["step"] == 6
  assert summary["flops_per_frame"] > 0 and summary["rtf"] > 0
  lines = (tiny_run / "eval" / f"test_{decoder}.hyps.tsv").read_text().splitlines()
  assert len(lines) == 1 + summary["num_utterances"]
  refs = {ex["id"]: ex["text"] for ex in tiny_source.examples("test")}
  errors = 0
  for line in lines[1:]:
    uid, _, _, ref, _, word_errors, num_words = line.split("\t")
    assert refs[uid] == ref and int(num_words) == len(ref.split())
    errors += int(word_errors)
  assert errors == summary["substitutions"] + summary["deletions"] + summary["insertions"]
  # S + D + C = reference words, so S + D never exceed them.
  assert summary["substitutions"] + summary["deletions"] <= sum(len(r.split()) for r in refs.values())
  assert "WER" in capsys.readouterr().out
  # The transcripts: the same as the model decoding each utterance alone, padded otherwise.
  hyps = {line.split("\t")[0]: line.split("\t")[4] for line in lines[1:]}
  alone = _decode_alone(tiny_run, tiny_source, decoder)
  assert hyps == alone and sum(len(h) for h in alone.values()) > 40


def _decode_alone(workdir, source, decoder):
  """Each test utterance by itself in a 7 s buffer, through the model's own calls."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from asr import features as F
  from asr.decoding import beam_search, greedy_search
  from asr.tokenizer import CharTokenizer
  from asr.training.loop import load_for_inference
  config, graphdef, variables, _ = load_for_inference(workdir)

  @jax.jit
  def decode(variables, audio, length):
    model = nnx.merge(graphdef, *variables)
    enc = model.encode(*F.log_mel(audio, length))
    if decoder == "greedy":
      return greedy_search(model, enc.frames, enc.lengths, max_symbols=config.train.max_symbols)
    tokens, lengths, _ = beam_search(model, enc.frames, enc.lengths, beam=4,
                                     max_symbols=config.train.max_symbols)
    return tokens[:, 0], lengths[:, 0]
  out = {}
  for ex in source.examples("test"):
    audio = np.zeros((1, 7 * 16000), np.int16)
    audio[0, : len(ex["audio"])] = ex["audio"]
    tokens, length = decode(variables, jnp.asarray(audio), jnp.array([len(ex["audio"])]))
    out[ex["id"]] = CharTokenizer().decode(np.asarray(tokens[0, : int(length[0])]))
  return out


def test_transcribe_reads_files_and_names_the_bad_one(tiny_run, tiny_source, tmp_path, capsys):
  ex = next(tiny_source.examples("test"))
  good = tmp_path / "good.flac"
  soundfile.write(good, ex["audio"], 16000)
  slow = tmp_path / "8k.wav"  # another rate: resampled on the way in
  soundfile.write(slow, ex["audio"][::2], 8000)
  bad = tmp_path / "bad.wav"
  bad.write_bytes(b"not audio at all")
  code = transcribe.main(["--workdir", str(tiny_run), str(good), str(bad), str(slow)])
  out, err = capsys.readouterr()
  assert code == 1
  lines = out.strip().splitlines()
  assert [l.split("\t")[0] for l in lines] == [str(good), str(slow)]
  assert "bad.wav: unreadable audio" in err
