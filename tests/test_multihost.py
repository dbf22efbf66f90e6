"""Multi-host training for real: `asr-train` as two processes on localhost under
`jax.distributed`, each with one CPU device and half of each batch, against one process with two
devices and whole batches. Every host must take the same bucket at every step, or their arrays
would not join into one global batch."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one_process_on_the_whole_batch(tiny_data_dir, tmp_path):
  from asr.training.loop import load_for_inference

  def start(workdir, batch_size, *flags, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "--config",
         "experiments/configs/rnnt.py:tiny", "--workdir", str(workdir),
         f"--config.data.data_dir={tiny_data_dir}", "--config.wandb.mode=disabled",
         f"--config.data.batch_size={batch_size}",  # per host: the global batch is 16 either way
         "--config.data.bucket_seconds=(2.5, 6.0)",  # two shapes to agree on
         "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
         "--config.train.eval_max_batches=1", *flags],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

  port = _free_port()
  hosts = [start(tmp_path / "two", 8, f"--coordinator_address=localhost:{port}",
                 "--num_processes=2", f"--process_id={i}") for i in range(2)]
  for p in hosts:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  single = start(tmp_path / "one", 16,
                 env={"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
                      + " --xla_force_host_platform_device_count=2"})
  _, err = single.communicate(timeout=600)
  assert single.returncode == 0, err[-4000:]

  # The two hosts wrote their checkpoints together; they hold the one-process run's parameters.
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["2", "4"]
  _, _, two, _ = load_for_inference(tmp_path / "two")
  _, _, one, _ = load_for_inference(tmp_path / "one")
  assert len(jax.tree.leaves(one)) > 10
  for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The first host wrote the run's metrics and report, once.
  records = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train/loss" in r] == [4]
  assert json.loads((tmp_path / "two" / "final.json").read_text())["step"] == 4
