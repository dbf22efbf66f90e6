"""`asr-eval` and `asr-transcribe` on a briefly trained tiny run."""

import itertools
import json

import numpy as np
import pytest
import soundfile

from asr.data import conditions
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
  c.data.bucket_seconds = (6.0,)   # one shape: one compilation per decoder, every test split
  workdir = tmp_path_factory.mktemp("run")
  train(c, workdir)
  return workdir


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_eval_writes_summary_and_hypotheses(tiny_run, tiny_source, decoder, capsys):
  assert eval_cli.main(["--workdir", str(tiny_run), "--split", "test", "--decoder", decoder]) == 0
  summary = json.loads((tiny_run / "eval" / f"test_{decoder}.json").read_text())
  for key in ("wer", "cer", "num_utterances", "substitutions", "deletions", "insertions",
              "flops_per_frame", "flops_per_second", "rtf", "backend", "per_accent",
              "per_speaker", "per_condition"):
    assert key in summary, key
  assert summary["num_utterances"] == tiny_source.splits["test"]
  assert summary["backend"] == "float" and summary["step"] == 6
  assert summary["flops_per_frame"] > 0 and summary["rtf"] > 0
  # The model's size as a device holds it (compression.size; counted by hand in test_sparsity).
  assert summary["model_bytes_float32"] == 4 * summary["num_params"]
  assert summary["sparsity"] == 0.0 and summary["model_bytes_int8"] < summary["model_bytes_float32"]
  lines = (tiny_run / "eval" / f"test_{decoder}.hyps.tsv").read_text().splitlines()
  assert len(lines) == 1 + summary["num_utterances"]
  examples = {ex["id"]: ex for ex in tiny_source.examples("test")}
  errors, by_facet, latencies = 0, {}, []
  for line in lines[1:]:
    uid, _, _, cond, ref, _, word_errors, num_words, latency_ms = line.split("\t")
    latencies.append(float(latency_ms))
    assert examples[uid]["text"] == ref and int(num_words) == len(ref.split())
    assert cond == conditions.condition(examples[uid]) != ""
    errors += int(word_errors)
    for facet, value in conditions.facets(cond).items():
      e, n = by_facet.setdefault(facet, {}).get(value, (0, 0))
      by_facet[facet][value] = (e + int(word_errors), n + int(num_words))
  assert errors == summary["substitutions"] + summary["deletions"] + summary["insertions"]
  # WER per acoustic condition: word errors over reference words of each facet's value, counted
  # here from the per-utterance rows and the source's own fields.
  assert set(summary["per_condition"]) == {"noise", "snr", "reverb", "whisper"}
  for facet, values in by_facet.items():
    assert summary["per_condition"][facet] == pytest.approx(
        {v: e / n for v, (e, n) in values.items()})
  assert len(summary["per_condition"]["noise"]) >= 3  # the tiny test split mixes conditions
  # S + D + C = reference words, so S + D never exceed them.
  words = sum(len(ex["text"].split()) for ex in examples.values())
  assert summary["substitutions"] + summary["deletions"] <= words
  # Latency on the default profile (cpu650): the rows' latencies summarized; every utterance
  # waits at least for its last frame's work, the encoder's alone included.
  assert summary["profile"] == "cpu650"
  assert summary["latency_ms_p50"] == pytest.approx(np.percentile(latencies, 50), rel=1e-6)
  assert summary["latency_ms_max"] == pytest.approx(max(latencies), rel=1e-6)
  assert min(latencies) >= 1000 * summary["flops_per_frame"] / 650e6 * (1 - 1e-5)
  assert "WER" in capsys.readouterr().out
  # The transcripts: the same as the model decoding each utterance alone, padded otherwise.
  hyps = {line.split("\t")[0]: line.split("\t")[5] for line in lines[1:]}
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


def test_eval_on_the_int8_backend(tiny_run, tiny_source, capsys):
  assert eval_cli.main(["--workdir", str(tiny_run), "--split", "test", "--backend", "int8",
                        "--calibration-batches", "1"]) == 0
  summary = json.loads((tiny_run / "eval" / "test_greedy_int8.json").read_text())
  assert summary["backend"] == "int8" and summary["profile"] == "npu"
  assert summary["num_utterances"] == tiny_source.splits["test"]
  # The integer model's MACs are the float encoder's own count / 2.
  from flax import nnx
  from asr.training.loop import load_for_inference
  _, graphdef, variables, _ = load_for_inference(str(tiny_run))
  float_flops = nnx.merge(graphdef, *variables).encoder.flops_per_frame()
  assert 2 * summary["macs_per_frame_dense"] == pytest.approx(float_flops)
  assert summary["flops_per_frame"] == pytest.approx(float_flops)
  assert 0 < summary["macs_per_frame_executed"] <= summary["macs_per_frame_dense"]
  # Its weights as int8 in the compressed format: about a quarter of float32, and more than
  # one byte a non-zero weight.
  assert summary["num_weights"] * (1 - summary["sparsity"]) < summary["model_bytes"]
  assert summary["model_bytes"] < 0.35 * summary["model_bytes_float32"]
  assert summary["latency_ms_p50"] > 0
  # The tiny recipe's one LSTM layer and its norm, stage by stage: errors of 8-bit values.
  errors = summary["stage_errors"]
  assert list(errors) == ["input", "layer 0 LSTM", "layer 0 norm"]
  assert all(0 < e < 0.2 for e in errors.values()), errors
  lines = (tiny_run / "eval" / "test_greedy_int8.hyps.tsv").read_text().splitlines()
  assert len(lines) == 1 + summary["num_utterances"]
  assert "backend int8" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    eval_cli.main(["--workdir", str(tiny_run), "--backend", "int8", "--diagnose"])
  assert "one split at a time" in capsys.readouterr().err


def test_a_gate_threshold_on_a_run_without_gates_is_refused(tiny_run, capsys):
  with pytest.raises(SystemExit):
    eval_cli.main(["--workdir", str(tiny_run), "--split", "test", "--gate-threshold", "-1"])
  err = capsys.readouterr().err
  assert "--gate-threshold" in err and "has no gates" in err and str(tiny_run) in err


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


def test_diagnosis_separates_training_utterances_new_sentences_and_new_voices(tiny_run,
                                                                              tiny_source):
  assert eval_cli.main(["--workdir", str(tiny_run), "--diagnose", "--utterances", "6"]) == 0
  report = json.loads((tiny_run / "eval" / "diagnosis_greedy.json").read_text())
  assert report["step"] == 6 and list(report["sets"]) == [
      "train", "train_new_sentences", "test", "test_accent", "test_handwritten"]

  def ids_and_speakers(name):
    lines = (tiny_run / "eval" / f"diagnosis_{name}_greedy.hyps.tsv").read_text().splitlines()[1:]
    return {l.split("\t")[0] for l in lines}, {l.split("\t")[1] for l in lines}, \
        {l.split("\t")[4] for l in lines}
  train = list(tiny_source.examples("train"))
  for name in ("train", "test", "test_accent", "test_handwritten"):
    ids, _, _ = ids_and_speakers(name)
    first = [ex["id"] for ex in itertools.islice(tiny_source.examples(name), 6)]
    assert report["sets"][name]["num_utterances"] == 6 and ids == set(first), name
  # New sentences: indices past the built split (240 in tiny), spoken by its speakers.
  ids, speakers, texts = ids_and_speakers("train_new_sentences")
  assert ids == {f"train-{i:06d}" for i in range(240, 246)}
  assert speakers <= {ex["speaker"] for ex in train}
  assert len(texts - {ex["text"] for ex in train}) >= 4  # the generator can repeat a sentence
  assert "new sentences, training speakers" in report["sets"]["train_new_sentences"]["meaning"]


def test_a_run_evaluates_on_another_dataset_beside_its_own_results(tiny_run, tiny_data_dir):
  """`--dataset`: the other corpus's split is decoded (its transcripts, not the run's corpus's),
  the summary says which, and the run's own evaluation files are left alone."""
  from asr.data.sources import open_source
  other = "synth_speech/tiny_seed1"
  assert eval_cli.main(["--workdir", str(tiny_run), "--split", "dev", "--dataset", other]) == 0
  summary = json.loads((tiny_run / "eval" / "synth_speech_tiny_seed1_dev_greedy.json").read_text())
  assert summary["dataset"] == other and summary["num_utterances"] == 40
  lines = (tiny_run / "eval" / "synth_speech_tiny_seed1_dev_greedy.hyps.tsv").read_text()
  references = {l.split("\t")[4] for l in lines.splitlines()[1:]}
  assert references == {ex["text"] for ex in open_source(other, tiny_data_dir).examples("dev")}
  assert not (tiny_run / "eval" / "dev_greedy.json").exists()
  with pytest.raises(SystemExit):
    eval_cli.main(["--workdir", str(tiny_run), "--diagnose", "--dataset", other])
