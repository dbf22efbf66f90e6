"""Multi-host training for real: two processes on localhost under `jax.distributed`, each with
one CPU device and half of each batch, against one process with two devices and whole batches.
Every host must take the same bucket at every step, or their arrays would not join."""

import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

HOST = textwrap.dedent("""
    import os, sys
    process, processes, port, workdir, data_dir, out = sys.argv[1:7]
    process, processes = int(process), int(processes)
    if processes == 1:  # the reference: one process with two devices
      os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import numpy as np
    if processes > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(f"localhost:{{port}}", num_processes=processes,
                                 process_id=process)
    assert len(jax.devices()) == 2
    sys.path.insert(0, {root!r})
    from experiments.configs.rnnt import get_config
    from asr.training.checkpoint import tree_paths
    from asr.training.loop import Trainer, to_host
    c = get_config("tiny")
    c.data.data_dir, c.wandb.mode = data_dir, "disabled"
    c.data.batch_size = 16 // processes   # per host: the global batch is 16 either way
    c.data.bucket_seconds = (2.5, 6.0)    # two shapes to agree on, two compilations
    c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 8, 2, 2
    c.train.eval_every = 1000
    trainer = Trainer(c, workdir)
    try:
      trainer.run(stop_after=4)  # 4 steps, 2 checkpoints; no evaluation to wait for
      shapes = trainer.guard.count
      params = dict(tree_paths(to_host(trainer.state["params"])))
    finally:
      trainer.close()
    np.savez(out, compiled=shapes, **{{k.replace("/", "."): v for k, v in params.items()}})
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one_process_on_the_whole_batch(tiny_data_dir, tmp_path):
  script = tmp_path / "host.py"
  script.write_text(HOST.format(root=str(ROOT)))
  port = str(_free_port())
  run = lambda i, n, w: subprocess.Popen(
      [sys.executable, str(script), str(i), str(n), port, str(tmp_path / w), tiny_data_dir,
       str(tmp_path / f"{w}{i}.npz")], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  hosts = [run(0, 2, "two"), run(1, 2, "two")]
  outs = [p.communicate(timeout=600) for p in hosts]
  for p, (_, err) in zip(hosts, outs):
    assert p.returncode == 0, err[-4000:]
  single = run(0, 1, "one")
  _, err = single.communicate(timeout=600)
  assert single.returncode == 0, err[-4000:]

  first, second, alone = (np.load(tmp_path / n) for n in ("two0.npz", "two1.npz", "one0.npz"))
  assert set(first.files) == set(alone.files) and len(alone.files) > 10
  assert int(first["compiled"]) > 1  # several buckets were met, and the hosts agreed on each
  for k in alone.files:
    np.testing.assert_array_equal(first[k], second[k])
    np.testing.assert_array_equal(first[k], alone[k])
  # Both processes wrote their checkpoints together, and the first the run's metrics.
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["2", "4"]
  assert (tmp_path / "two" / "metrics.jsonl").read_text().count('"step"') == 2
