"""Training runs: the loss falls, a run killed at any moment resumes to the same parameters and
final report, changed configs and checkpoints are refused by name, guards trip on the real
step, weights load from another run, the sharded step equals the single-device step."""

import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from experiments.configs.rnnt import get_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config(data_dir, config="rnnt", encoder=None, **train):
  c = importlib.import_module(f"experiments.configs.{config}").get_config("tiny")
  c.model.encoder = encoder or c.model.encoder
  c.data.data_dir = data_dir
  c.wandb.mode = "offline"
  for k, v in train.items():
    setattr(c.train, k, v)
  return c


def test_tiny_loss_falls_within_a_few_dozen_steps(tiny_data_dir, tmp_path):
  from asr.training.loop import train
  c = _tiny_config(tiny_data_dir, num_steps=40, log_every=10, eval_every=40, checkpoint_every=40)
  summary = train(c, tmp_path / "run")
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss/rnnt"] for r in records if "train/loss/rnnt" in r]
  assert len(losses) == 4
  assert losses[-1] < 0.6 * losses[0], losses
  # The run wrote what a user looks for: evaluation with the standard names, wandb offline files.
  assert {"wer", "cer", "flops_per_frame", "flops_per_second", "rtf", "per_accent",
          "per_speaker"} <= set(summary)
  assert summary["backend"] == "float" and summary["num_utterances"] == 40
  final = json.loads((tmp_path / "run" / "final.json").read_text())
  assert final["flops_per_second"] == summary["flops_per_second"] > 0
  assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_the_tiny_config_of_each_attention_family_trains_and_evaluates(tiny_data_dir, tmp_path,
                                                                       encoder):
  # One bucket, so one compilation of the step and one of the recognizer: the families' tiny
  # configs as a user runs them (experiments/configs/{conformer,transformer}.py:tiny), fewer
  # steps.
  from asr.training.loop import train
  c = _tiny_config(tiny_data_dir, encoder, num_steps=30, log_every=10,
                   eval_every=30, checkpoint_every=30, eval_max_batches=1)
  assert c.model.encoder == encoder
  c.data.bucket_seconds = (6.0,)
  summary = train(c, tmp_path / "run")
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss/rnnt"] for r in records if "train/loss/rnnt" in r]
  assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
  assert all(r["train/flops_per_second"] > 0 for r in records if "train/loss" in r)
  assert json.loads((tmp_path / "run" / "final.json").read_text())["wer"] == summary["wer"]
  assert summary["num_utterances"] == 32


def test_word_pieces_with_fresh_audio_train_and_asr_eval_decodes_with_the_runs_tokenizer(
    tiny_data_dir, tmp_path):
  """A word-piece run (tokenizer trained at the start, stored in the workdir) on fresh audio
  (epochs after the first synthesized while training): the loss falls, the run's tokenizer is
  the stored one (a copy elsewhere has none), and `asr-eval` reproduces the run's own final
  evaluation. (This tiny model emits nothing yet at step 40; that asr-eval decodes pieces as
  the run did is checked on a real run: BENCHMARKS.md, "Word pieces".)"""
  from asr.tokenizer import SentencePieceTokenizer
  from asr.training.loop import TOKENIZER_FILE, run_tokenizer, train
  from experiments import evaluate as eval_cli
  c = _tiny_config(tiny_data_dir, num_steps=40, log_every=10, eval_every=40,
                   checkpoint_every=40, eval_max_batches=1)
  c.data.bucket_seconds = (6.0,)
  c.data.tokenizer, c.model.vocab, c.data.max_chars_per_second = "wordpiece", 96, 12.0
  c.data.fresh_audio_workers = 1  # 240 training utterances: steps 16-40 are fresh audio
  summary = train(c, tmp_path / "run")
  stored = SentencePieceTokenizer(tmp_path / "run" / TOKENIZER_FILE)
  tokenizer = run_tokenizer(c, tmp_path / "run")
  assert isinstance(tokenizer, SentencePieceTokenizer) and tokenizer.vocab_size == 96
  text = "play music by the pink hospitals"
  np.testing.assert_array_equal(tokenizer.encode(text), stored.encode(text))
  assert len(tokenizer.encode(text)) < len(text)  # pieces, not characters
  with pytest.raises(FileNotFoundError, match="word-piece model is stored there"):
    run_tokenizer(c, tmp_path / "elsewhere")
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss/rnnt"] for r in records if "train/loss/rnnt" in r]
  assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
  out = tmp_path / "dev.json"
  assert eval_cli.main(["--workdir", str(tmp_path / "run"), "--split", "dev", "--max-batches",
                        "1", "--json", str(out)]) == 0
  assert json.loads(out.read_text())["wer"] == summary["wer"]
  hyps = lambda path: [l.split("\t")[5] for l in path.read_text().splitlines()[1:]]
  during = hyps(tmp_path / "run" / "eval" / "step_40.hyps.tsv")
  assert hyps(out.with_suffix(".hyps.tsv")) == during


def test_a_vocabulary_that_does_not_fit_the_model_or_an_unknown_tokenizer_is_named(
    tiny_data_dir, tmp_path):
  from asr.training.loop import train
  c = _tiny_config(tiny_data_dir, num_steps=2)
  c.model.vocab = 64
  with pytest.raises(ValueError, match="model.vocab=64 but the chars tokenizer has 29 ids"):
    train(c, tmp_path / "run")
  c.data.tokenizer = "bytes"
  with pytest.raises(ValueError, match="must be 'chars' or 'wordpiece', got 'bytes'"):
    train(c, tmp_path / "run2")


# ---- a real kill -9 at three moments, then the real CLI ----

KILL_ARGS = ["--config.train.num_steps=12", "--config.train.log_every=2",
             "--config.train.checkpoint_every=4", "--config.train.eval_every=1000",
             "--config.data.bucket_seconds=(6.0,)", "--config.wandb.mode=disabled"]

# Runs the trainer with the same config as `asr-train ... KILL_ARGS` and SIGKILLs itself at a
# chosen moment: after dispatching a given step (its computation in flight), inside Orbax's
# commit of a checkpoint (its files written to the temporary folder, not renamed), or inside
# the final evaluation.
KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    moment, workdir, data_dir = sys.argv[1:4]
    from absl import app
    from ml_collections import config_flags
    # config_flags reads the overrides from sys.argv when the flag is defined.
    sys.argv = ["killer", "--config", "experiments/configs/rnnt.py:tiny",
                "--config.data.data_dir=" + data_dir] + {args!r}
    config = config_flags.DEFINE_config_file("config", None)

    def main(_):
      from asr.training import loop
      die = lambda *_, **__: os.kill(os.getpid(), signal.SIGKILL)
      if moment.startswith("step:"):
        after, calls = int(moment[5:]), []
        original = loop.Trainer._device_batch
        def counted(self, batch):
          calls.append(1)
          if len(calls) > after:
            die()
          return original(self, batch)
        loop.Trainer._device_batch = counted
      elif moment == "checkpoint":
        from orbax.checkpoint._src.path import atomicity
        async def finalize(self, *args, **kwargs):
          die()
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
      elif moment == "final_eval":
        loop.evaluate = die
      loop.train(config.value, workdir)
      print("not killed")

    app.run(main)
""")


def _run(args, **kw):
  return subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT,
                        timeout=600, **kw)


def test_runs_killed_mid_step_mid_checkpoint_and_mid_evaluation_resume_to_the_same_run(
    tiny_data_dir, tmp_path):
  from asr.training.loop import load_for_inference
  cli = ["-m", "experiments.train", "--config", "experiments/configs/rnnt.py:tiny",
         f"--config.data.data_dir={tiny_data_dir}"] + KILL_ARGS
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  out = _run(cli + ["--workdir", str(straight)])
  assert out.returncode == 0, out.stderr[-3000:]
  killer = tmp_path / "killer.py"
  killer.write_text(KILLER.format(root=str(ROOT), args=KILL_ARGS))
  ckpts = lambda: sorted(int(p.name) for p in (killed / "checkpoints").iterdir()
                         if p.name.isdigit())
  # 1. mid-step: step 7 dispatched, the newest checkpoint is step 4.
  out = _run([str(killer), "step:7", str(killed), tiny_data_dir])
  assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
  assert ckpts() == [4]
  # 2. resumed from 4, killed while committing step 8: the temporary folder is left behind.
  out = _run([str(killer), "checkpoint", str(killed), tiny_data_dir])
  assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
  assert ckpts() == [4] and list((killed / "checkpoints").glob("*tmp*"))
  # 3. resumed from 4 again, trains to 12 and is killed during the final evaluation.
  out = _run([str(killer), "final_eval", str(killed), tiny_data_dir])
  assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
  assert ckpts()[-1] == 12 and not (killed / "final.json").exists()
  # 4. asr-train again: evaluates the restored step 12 and finishes.
  out = _run(cli + ["--workdir", str(killed)])
  assert out.returncode == 0, out.stderr[-3000:]
  assert not list((killed / "checkpoints").glob("*tmp*"))

  assert (json.loads((killed / "final.json").read_text())
          == json.loads((straight / "final.json").read_text()))
  _, _, (p1, s1), _ = load_for_inference(straight)
  _, _, (p2, s2), _ = load_for_inference(killed)
  for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Every step logged once, with the values of the uninterrupted run.
  def train_log(w):
    return [(r["step"], r["train/loss"], r["train/grad_norm"])
            for r in map(json.loads, (w / "metrics.jsonl").read_text().splitlines())
            if "train/loss" in r]
  assert train_log(killed) == train_log(straight) and len(train_log(straight)) == 6


def test_a_changed_config_on_resume_is_refused_naming_the_keys(tiny_data_dir, tmp_path):
  from asr.training.loop import Trainer
  c = _tiny_config(tiny_data_dir)
  c.wandb.mode = "disabled"
  first = Trainer(c, tmp_path / "run")
  first.save(2, [], 0.0)  # as a run killed after its step-2 checkpoint leaves it
  first.close()
  c.optim.peak_lr = 1e-2
  c.model.lstm.hidden = 32
  with pytest.raises(ValueError, match=r"model.lstm.hidden: 64 -> 32; optim.peak_lr: 0.003 -> "
                                       r"0.01"):
    Trainer(c, tmp_path / "run")
  c.optim.peak_lr, c.model.lstm.hidden = 3e-3, 64
  c.data.data_dir = tiny_data_dir + "/"  # where the data lives may change
  Trainer(c, tmp_path / "run").close()


def test_the_compile_guard_trips_on_the_real_step_for_a_shape_outside_the_buckets(
    tiny_data_dir, tmp_path):
  from asr.training.loop import Trainer
  c = _tiny_config(tiny_data_dir)
  c.wandb.mode = "disabled"
  c.data.bucket_seconds = (2.5, 6.0)
  trainer = Trainer(c, tmp_path / "run")
  try:
    rng = np.random.default_rng(0)

    def batch(seconds):
      n = int(seconds * 16000)
      return {"audio": (rng.standard_normal((16, n)) * 3000).astype(np.int16),
              "audio_lengths": np.full(16, n, np.int32),
              "labels": rng.integers(1, 29, (16, 64)).astype(np.int32),
              "label_lengths": np.full(16, 10, np.int32)}
    for seconds in (2.5, 6.0, 2.5):  # the bucket shapes, the first one twice
      trainer.state, _ = trainer.train_step(trainer.state, trainer._device_batch(batch(seconds)))
    assert trainer.guard.count == 2
    with pytest.raises(RuntimeError, match="compiled 3 times, more than the 2 bucket shapes"):
      trainer.train_step(trainer.state, trainer._device_batch(batch(3.0)))
  finally:
    trainer.close()


def test_init_from_loads_all_or_a_subset_and_names_a_misfit(tiny_data_dir, tmp_path):
  from asr.training.checkpoint import tree_paths
  from asr.training.loop import Trainer, load_for_inference
  c = _tiny_config(tiny_data_dir)
  c.wandb.mode = "disabled"
  teacher_run = Trainer(c, tmp_path / "teacher")
  teacher_run.save(1, [], 0.0)
  teacher_run.close()
  _, _, (teacher, stats), _ = load_for_inference(tmp_path / "teacher")
  c.seed = 1
  c.init_from, c.init_from_keys = str(tmp_path / "teacher"), "params/encoder/"
  student = Trainer(c, tmp_path / "student")
  try:
    params = dict(tree_paths(jax.device_get(student.state["params"])))
    for path, value in tree_paths(teacher):
      same = np.array_equal(params[path], np.asarray(value))
      if path.startswith("encoder/"):
        assert same, path
      elif "kernel" in path or "embedding" in path:  # drawn from the student's own seed
        assert not same, path
  finally:
    student.close()
  c.model.lstm.hidden = 32
  c.init_from_keys = ""
  with pytest.raises(ValueError, match="params/encoder/layers/0/input/kernel/value: checkpoint "
                                       r"\(240, 256\), this model \(240, 128\)"):
    Trainer(c, tmp_path / "misfit")


def test_evaluation_of_part_of_a_split_stops_its_reader(tiny_source):
  import threading
  from flax import nnx
  from asr.data.pipeline import Batches, PipelineConfig
  from asr.tokenizer import CharTokenizer
  from asr.training.evaluate import evaluate
  from asr.training.loop import build_model
  from asr.training.train_step import split_model
  model = build_model(get_config("tiny"))
  graphdef, params, rest = split_model(model)
  before = threading.active_count()
  batches = Batches.from_source(tiny_source, "dev", CharTokenizer(), PipelineConfig(batch_size=4),
                                shuffle=False, num_epochs=1, features=None)
  summary, _ = evaluate(graphdef, (params, rest), batches, CharTokenizer(), max_batches=1)
  assert summary["num_utterances"] <= 4
  assert batches._thread is None and threading.active_count() == before


def test_sparsity_counts_zeros_in_weight_matrices_only():
  from asr.training.loop import weight_sparsity
  params = {"kernel": np.array([[0.0, 1.0], [0.0, 2.0]]), "bias": np.zeros(2),
            "scale": np.zeros(4), "embed": np.ones((2, 2))}
  assert weight_sparsity(params) == 2 / 8


@pytest.mark.parametrize("variant", ["small", "base"])
def test_the_transformer_recipes_are_the_commands_their_benchmarks_ran(variant):
  # BENCHMARKS.md, "The Transformer over an hour" (conformer.py:small and these flags) and
  # "The `base` Transformer over an hour and a quarter" (the old transformer.py:base, which was
  # conformer.py:base with the Transformer encoder, and these flags).
  from experiments.configs import conformer, transformer
  ran = conformer.get_config(variant)
  flags = {"small": {"model.encoder": "transformer", "model.transformer.dropout": 0.0,
                     "data.dataset": "synth_speech/full", "train.num_steps": 4800,
                     "train.eval_every": 800, "train.eval_max_batches": 4,
                     "train.checkpoint_every": 800, "optim.warmup_steps": 400},
           "base": {"model.encoder": "transformer", "model.transformer.dropout": 0.0,
                    "augment.enabled": False, "train.num_steps": 2400,
                    "train.eval_every": 400, "train.eval_max_batches": 4,
                    "train.checkpoint_every": 400, "optim.warmup_steps": 400}}[variant]
  for key, value in flags.items():
    *path, leaf = key.split(".")
    node = ran
    for name in path:
      node = node[name]
    assert node[leaf] != value, key  # each flag changed something
    node[leaf] = value
  assert transformer.get_config(variant).to_dict() == ran.to_dict()


def test_unknown_config_key_fails_and_names_it(tmp_path):
  out = _run(["-m", "experiments.train", "--config", "experiments/configs/rnnt.py:tiny",
              "--workdir", str(tmp_path), "--config.model.lstm.hiden=32"])
  assert out.returncode != 0
  assert "hiden" in out.stderr


SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4")
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import sys; sys.path.insert(0, {root!r})
    from tests.helpers import tiny_step as _setup
    assert len(jax.devices()) == 4
    _, state, step, batch, _ = _setup()
    single_state, single_metrics = jax.jit(step)(state, batch)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sharded = jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep))
    state2 = _setup()[1]  # a fresh copy: the first state may be donated by jit
    batch_sh = {{k: jax.device_put(v, data) for k, v in batch.items()}}
    multi_state, multi_metrics = sharded(jax.device_put(state2, rep), batch_sh)
    assert len(batch_sh["audio"].sharding.device_set) == 4
    err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(jax.tree.leaves(single_state), jax.tree.leaves(multi_state)))
    lerr = abs(float(single_metrics["loss"]) - float(multi_metrics["loss"]))
    print("max param difference", err, "loss difference", lerr)
    assert err < 1e-5 and lerr < 1e-5
""")


def test_four_device_sharded_step_equals_single_device_step(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(SHARDED.format(root=str(ROOT)))
  out = _run([str(script)])
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "max param difference" in out.stdout
