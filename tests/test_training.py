"""Training: the loss falls, a killed run resumes exactly, guards trip, configs are checked."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.rnnt import get_config


def _tiny_config(data_dir, **train):
  c = get_config("tiny")
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
  losses = [r["train/rnnt_per_label"] for r in records if "train/rnnt_per_label" in r]
  assert len(losses) == 4
  assert losses[-1] < 0.6 * losses[0], losses
  # The run wrote what a user looks for: evaluation with the standard names, wandb offline files.
  assert {"wer", "cer", "flops_per_frame", "rtf", "per_accent", "per_speaker"} <= set(summary)
  assert summary["backend"] == "float" and summary["num_utterances"] == 40
  assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_killed_run_resumes_to_the_same_parameters(tiny_data_dir, tmp_path):
  from asr.training.loop import load_for_inference, train
  kw = dict(num_steps=24, log_every=8, eval_every=1000, checkpoint_every=8)
  train(_tiny_config(tiny_data_dir, **kw), tmp_path / "straight")
  # "Kill" after 13 steps (checkpoint at 8, five steps lost), then start again to the end.
  stopped = train(_tiny_config(tiny_data_dir, **kw), tmp_path / "killed", stop_after=13)
  assert stopped == {"stopped_at": 13}
  train(_tiny_config(tiny_data_dir, **kw), tmp_path / "killed")
  _, _, p_straight, s1 = load_for_inference(tmp_path / "straight")
  _, _, p_resumed, s2 = load_for_inference(tmp_path / "killed")
  assert s1 == s2 == 24
  for a, b in zip(jax.tree.leaves(p_straight), jax.tree.leaves(p_resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _step_setup(batch_size=4):
  from flax import nnx
  from asr.training import train_step as ts
  from asr.training.loop import build_model
  c = get_config("tiny")
  model = build_model(c)
  graphdef, _ = nnx.split(model)
  tx = ts.make_optimizer(ts.learning_rate_schedule(1e-3, 2, 10), 0.0, 5.0)
  state = ts.init_train_state(model, tx, 0)
  step = ts.make_train_step(graphdef, tx, ts.StepConfig(ctc_weight=0.3))
  rng = np.random.default_rng(0)
  batch = {"audio": (rng.standard_normal((batch_size, 16000)) * 3000).astype(np.int16),
           "audio_lengths": np.array([16000, 12000, 9000, 0][:batch_size], np.int32),
           "labels": rng.integers(1, 29, (batch_size, 12)).astype(np.int32),
           "label_lengths": np.array([12, 7, 3, 0][:batch_size], np.int32)}
  return state, step, batch


def test_non_finite_batch_skips_the_update_and_the_guard_stops_after_k():
  from asr.training.train_step import NonFiniteGuard
  state, step, batch = _step_setup()
  bad = dict(batch, audio=batch["audio"].astype(np.float32))
  bad["audio"][0, 100] = np.nan
  new, metrics = jax.jit(step)(state, bad)
  assert int(metrics["nonfinite"]) == 1
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(new["step"]) == 1
  good, metrics = jax.jit(step)(state, batch)
  assert int(metrics["nonfinite"]) == 0
  guard = NonFiniteGuard(limit=3)
  guard.update(True, 1, ["a"])
  guard.update(False, 2, ["b"])  # a finite step resets the run
  guard.update(True, 3, ["c"])
  guard.update(True, 4, ["d"])
  with pytest.raises(FloatingPointError, match="step 5: .* 3 steps in a row.*holds e"):
    guard.update(True, 5, ["e"])


def test_compile_guard_trips_on_a_shape_outside_the_buckets():
  from asr.training.train_step import CompileGuard
  guard = CompileGuard(limit=2)

  @jax.jit
  def f(x):
    guard.traced()
    return x * 2
  f(jnp.zeros(3))
  f(jnp.zeros(3))
  f(jnp.zeros(4))
  with pytest.raises(RuntimeError, match="compiled 3 times, more than the 2"):
    f(jnp.zeros(5))


def test_unknown_config_key_fails_and_names_it(tmp_path):
  cmd = [sys.executable, "-m", "experiments.train", "--config",
         "experiments/configs/rnnt.py:tiny", "--workdir", str(tmp_path),
         "--config.model.enc_hiden=32"]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(
      os.path.dirname(__file__)), timeout=300)
  assert out.returncode != 0
  assert "enc_hiden" in out.stderr


SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    sys_path = {root!r}
    import sys; sys.path.insert(0, sys_path)
    from tests.test_training import _step_setup
    assert len(jax.devices()) == 4
    state, step, batch = _step_setup()
    single_state, single_metrics = jax.jit(step)(state, batch)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    sharded = jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep))
    state2 = _step_setup()[0]  # a fresh copy: the first state may be donated by jit
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
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = tmp_path / "sharded.py"
  script.write_text(SHARDED.format(root=root))
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600, cwd=root)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "max param difference" in out.stdout
