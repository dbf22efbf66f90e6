"""The amortized branching encoder (`asr.models.amnet`), its cost terms (`asr.losses.cost`), the
warm start of its branches from a trained LSTM, and its recipe (`experiments/configs/amnet.py`)."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models.amnet import AmNetConfig, AmNetEncoder
from asr.models.context import Context
from asr.models.lstm_encoder import LSTMEncoder, LSTMEncoderConfig

SMALL = dict(hidden=8, layers=2, stack=3, layer_norm=True, reduce=2, reduce_after=1)


def _features(batch=3, frames=40, mels=6, seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), (batch, frames, mels))
  return x, jnp.array([frames, 31, 7][:batch])


def _valid(out):
  return np.arange(out.frames.shape[1])[None, :] < np.asarray(out.lengths)[:, None]


def test_temperature_schedule_anneals_soft_splits_to_hard_ones():
  from asr.training.schedules import make_schedule
  from experiments.configs.amnet import get_config
  c = get_config("amnet_factorized_lamr")
  spec = c.schedules.arbitrator_temperature.to_dict()
  fn = make_schedule("arbitrator_temperature", spec)
  end = spec["end_step"]
  assert end == int(0.6 * c.train.num_steps)
  for step in (0, end // 4, end // 2, end, 2 * end):
    expected = spec["start"] * (spec["end"] / spec["start"]) ** min(step / end, 1.0)
    np.testing.assert_allclose(float(fn(step)), expected, rtol=1e-6)
  # Logits one apart: about 70/30 at the start, 99.99/0.01 once annealed.
  split = lambda t: float(jax.nn.softmax(jnp.array([1.0, 0.0]) / t)[0])
  assert 0.7 < split(float(fn(0))) < 0.75 and split(float(fn(end))) > 0.9999


def test_hard_routing_is_the_arbitrators_argmax_and_streams_as_a_whole():
  # A processor slow enough that the backlog builds up and changes the decisions.
  cfg = AmNetConfig(**SMALL, backlog_flops_per_second=5e4)
  enc = AmNetEncoder(6, cfg, rngs=nnx.Rngs(0))
  enc.arbitrator.backlog_weight[...] = jnp.array([-1.0, 1.0])
  x, lengths = _features()
  out = enc(x, lengths)
  valid = _valid(out)
  w, logits = np.asarray(out.aux["routing"]), np.asarray(out.aux["route_logits"])
  np.testing.assert_array_equal(w[valid], np.eye(2)[np.argmax(logits, -1)][valid])
  assert (w[~valid] == 0).all() and (np.asarray(out.aux["backlog"])[valid] > 0).any()
  assert 0 < w[valid][:, 1].mean() < 1                     # both branches are used
  # Streamed in chunks of 12 feature frames (two output frames): the same frames and routes.
  state, chunks = enc.init_state(3), []
  for s in range(0, 48, 12):
    step_out, state = enc.step(state, x[:, s:s + 12], jnp.clip(lengths - s, 0, 12))
    chunks.append(step_out)
  t = out.frames.shape[1]
  for key, whole in (("frames", out.frames), ("routing", out.aux["routing"]),
                     ("flops", out.flops)):
    parts = [c.aux[key] if key == "routing" else getattr(c, key) for c in chunks]
    np.testing.assert_allclose(np.concatenate(parts, 1)[:, :t][valid], np.asarray(whole)[valid],
                               atol=1e-6, err_msg=key)


def test_every_frame_to_the_full_branch_is_the_single_lstm_encoder():
  am = AmNetEncoder(6, AmNetConfig(**SMALL, route="full"), rngs=nnx.Rngs(0))
  lstm = LSTMEncoder(6, LSTMEncoderConfig(**SMALL), rngs=nnx.Rngs(1))
  # The single encoder with the full branch's parameters, by path.
  ours = dict(nnx.to_flat_state(nnx.state(am, nnx.Param)))
  nnx.update(lstm, nnx.from_flat_state({k: ours[k] for k, _ in
                                        nnx.to_flat_state(nnx.state(lstm, nnx.Param))}))
  x, lengths = _features()
  a, b = am(x, lengths), lstm(x, lengths)
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.lengths, b.lengths)
  np.testing.assert_array_equal(np.asarray(a.aux["fast"]), 0.0)


def test_frame_flops_are_the_chosen_branch_and_the_arbitrator_by_hand():
  from compression.factorization import factorize
  # 3 mels x stack 1; layers of 4 units (4H = 16); the time reduction of 2 after layer 0.
  cfg = AmNetConfig(hidden=4, layers=2, stack=1, reduce=2, reduce_after=1,
                    arbitrator_hidden=2, backlog_flops_per_second=0.0)
  enc = AmNetEncoder(3, cfg, rngs=nnx.Rngs(0))
  factorize(rank=1, include="/cheap_")(enc)                 # cheap matrices: rank-1 factors
  full = 2 * (3 * 16 + 4 * 16) + (8 * 16 + 4 * 16)        # layer 0 twice a frame, layer 1
  cheap = 2 * ((3 + 16) + (4 + 16)) + ((8 + 16) + (4 + 16))
  arbitrator = 6 * 2 + 2 * 2 + 2                            # hidden, out, backlog weights
  np.testing.assert_array_equal(enc.branch_flops(), [2 * full, 2 * cheap])
  # Routes: by the sign of the arbitrator's logit gap, made to differ per frame.
  enc.arbitrator.out.kernel[...] = jnp.array([[1.0, -1.0], [0.0, 0.0]])
  x, lengths = _features(mels=3)
  out = enc(x, lengths)
  valid, fast = _valid(out), np.asarray(out.aux["fast"]) == 1
  assert fast[valid].any() and (~fast[valid]).any()
  expected = np.where(fast, 2 * cheap, 2 * full) + 2 * arbitrator
  np.testing.assert_array_equal(np.asarray(out.flops), np.where(valid, expected, 0))
  # Zero weights cost nothing on a processor that skips them (`flops_executed`).
  layer = enc.layers[1]
  layer.cheap_recurrent.v.kernel[...] = layer.cheap_recurrent.v.kernel[...].at[0, :10].set(0.0)
  out = enc(x, lengths)
  executed = np.where(fast, 2 * (cheap - 10), 2 * full) + 2 * arbitrator
  np.testing.assert_array_equal(np.asarray(out.aux["flops_executed"]),
                                np.where(valid, executed, 0))


def _inputs(flops, lengths, hop, audio_seconds, labels):
  """A `LossInputs` of the cost terms' needs: the encoder's per-frame FLOPs and a model."""
  from asr.models.encoder import EncoderOutput
  from asr.training.objective import LossInputs
  b = flops.shape[0]
  model = types.SimpleNamespace(cfg=types.SimpleNamespace(
      features=types.SimpleNamespace(sample_rate=16000)),
      decoding_flops=lambda frames, tokens: 1000.0 * frames + 500.0 * tokens)
  enc = EncoderOutput(jnp.zeros((b, flops.shape[1], 1)), jnp.asarray(lengths), flops, hop)
  batch = {"audio_lengths": jnp.asarray(audio_seconds) * 16000,
           "label_lengths": jnp.asarray(labels)}
  return LossInputs(model=model, params=None, batch=batch, encoded=enc, nll={},
                    is_real=jnp.ones(b, bool), num_labels=1.0, schedules={}, rng=None)


def test_latency_penalty_is_the_simulators_latency_and_punishes_slow_frames_at_the_end():
  from asr.losses.cost import LatencyTerm
  from hardware.latency import simulate
  hop, fps, slow, fast = 0.06, 1e6, 1e5, 2e4     # a full frame costs 0.1 s, a cheap one 0.02
  full_first = np.array([[slow] * 5 + [fast] * 15])
  full_last = full_first[:, ::-1].copy()
  term = LatencyTerm(flops_per_second=fps)
  args = ([20], hop, [20 * hop - 0.01], [10])
  early, _ = term(_inputs(jnp.asarray(full_first), *args), {})
  late, _ = term(_inputs(jnp.asarray(full_last), *args), {})
  assert float(late) > float(early) + 0.1
  # The same as the simulator's latency of the same work (decoding spread over the frames).
  for flops, value in ((full_first, early), (full_last, late)):
    cost = (flops + 1000.0 + 500.0 * 10 / 20) / fps
    sim = simulate(jnp.asarray(cost), jnp.array([20]), hop,
                   audio_seconds=jnp.array([20 * hop - 0.01])).latency
    np.testing.assert_allclose(float(value), float(sim[0]), rtol=1e-5)


def test_latency_penalty_gradient_matches_central_differences():
  from asr.losses.cost import LatencyTerm
  from asr.losses.latency import expected_cost
  hop, fps = 0.06, 1e6
  branch = jnp.array([9e4, 1.5e4])                 # full over a hop, cheap under it
  term = LatencyTerm(flops_per_second=fps, decoding=False)
  lengths, audio = [12, 9], [12 * hop, 9 * hop - 0.02]

  def penalty(logits):
    flops = expected_cost(jax.nn.softmax(logits, -1), branch)
    flops = jnp.where(jnp.arange(12)[None, :] < jnp.array(lengths)[:, None], flops, 0.0)
    return term(_inputs(flops, lengths, hop, audio, [3, 3]), {})[0]

  logits = jax.random.normal(jax.random.PRNGKey(2), (2, 12, 2))
  grad = np.asarray(jax.grad(penalty)(logits))
  eps, rng = 1e-2, np.random.default_rng(0)
  for _ in range(6):
    i, t, k = rng.integers(2), rng.integers(lengths[1]), rng.integers(2)
    bump = jnp.zeros_like(logits).at[i, t, k].set(eps)
    numeric = (float(penalty(logits + bump)) - float(penalty(logits - bump))) / (2 * eps)
    np.testing.assert_allclose(grad[i, t, k], numeric, rtol=2e-2, atol=1e-5)
  assert np.abs(grad).max() > 0


def test_compute_penalty_is_flops_per_second_over_the_budget():
  from asr.losses.cost import ComputeTerm
  flops = jnp.array([[3e5, 1e5, 0.0], [2e5, 2e5, 2e5]])
  x = _inputs(flops, [2, 3], 0.06, [0.1, 0.2], [1, 1])
  per_second = (4e5 + 6e5) / 0.3
  value, metrics = ComputeTerm(budget_flops_per_second=2e6)(x, {})
  np.testing.assert_allclose(float(value), per_second / 2e6 - 1, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["flops_per_second"]), per_second, rtol=1e-6)
  assert float(ComputeTerm(budget_flops_per_second=4e6)(x, {})[0]) == 0.0
  # Without the hinge (the compute-amortized Transformer's lambda * E[F] / F_ungated): F/budget
  # below the budget too.
  linear = ComputeTerm(budget_flops_per_second=4e6, hinge=False)(x, {})[0]
  np.testing.assert_allclose(float(linear), per_second / 4e6, rtol=1e-6)


def _amnet_tiny(tiny_data_dir, run, **changes):
  from experiments.configs.amnet import ARBITRATOR, CHEAP_FROM_FULL, get_config
  c = get_config("tiny,amnet_sparse_lamr")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.init_from, c.init_from_keys, c.init_from_rename = str(run), ARBITRATOR, CHEAP_FROM_FULL
  for k, v in changes.items():
    setattr(c.model.amnet, k, v)
  return c


def test_warm_start_copies_the_trained_layers_into_both_branches_and_names_a_misfit(
    tiny_trained_run, tiny_data_dir, tmp_path):
  from asr.training.checkpoint import tree_paths
  from asr.training.loop import Trainer, load_for_inference
  _, _, (trained, stats), _ = load_for_inference(tiny_trained_run)
  trained = dict(tree_paths(trained))
  trainer = Trainer(_amnet_tiny(tiny_data_dir, tiny_trained_run), tmp_path / "amnet")
  try:
    ours = dict(tree_paths(jax.device_get(trainer.state["params"])))
  finally:
    trainer.close()
  for path, value in ours.items():
    source = path.replace("/cheap_input/", "/input/").replace("/cheap_recurrent/", "/recurrent/")
    if "arbitrator" in path:
      assert source not in trained
    else:
      np.testing.assert_array_equal(value, trained[source], err_msg=path)
  assert any("/cheap_input/" in p for p in ours)
  with pytest.raises(ValueError, match=r"encoder/layers/0/cheap_input/kernel/value \(from "
                                       r"params/encoder/layers/0/input/kernel/value\): "
                                       r"checkpoint \(240, 256\), this model \(240, 128\)"):
    Trainer(_amnet_tiny(tiny_data_dir, tiny_trained_run, hidden=32), tmp_path / "misfit")
  c = _amnet_tiny(tiny_data_dir, tiny_trained_run)
  c.init_from_keys = ""                  # the arbitrator too: the checkpoint has none
  with pytest.raises(ValueError, match="params/encoder/arbitrator/hidden/kernel/value is not "
                                       "in the checkpoint"):
    Trainer(c, tmp_path / "no_arbitrator")


def test_factorized_cheap_branch_starts_as_the_svd_of_the_trained_layer(tiny_trained_run):
  from asr.training.loop import build_model, load_for_inference
  from experiments.configs.amnet import get_config
  c = get_config("tiny,amnet_factorized_lamr")
  c.surgery.factorize.svd_from = str(tiny_trained_run)
  model = build_model(c)
  _, graphdef, variables, _ = load_for_inference(tiny_trained_run)
  trained = nnx.merge(graphdef, *variables).encoder.layers[0]
  layer = model.encoder.layers[0]
  for name in ("input", "recurrent"):
    w = np.asarray(getattr(trained, name).kernel[...], np.float64)
    np.testing.assert_array_equal(getattr(layer, name).kernel[...], w.astype(np.float32))
    cheap = getattr(layer, f"cheap_{name}")
    r = cheap.rank
    a, s, bt = np.linalg.svd(w, full_matrices=False)
    np.testing.assert_allclose(np.asarray(cheap.u.kernel[...]) @ np.asarray(cheap.v.kernel[...]),
                               (a[:, :r] * s[:r]) @ bt[:r], atol=1e-4, err_msg=name)
    assert r * sum(w.shape) <= 0.25 * w.size            # CHEAP_MACS_RATIO of the MACs


def test_tiny_amnet_trains_and_reports_fast_fraction_and_latency(tiny_data_dir, tmp_path):
  from asr.training.loop import train
  from experiments.configs.amnet import get_config
  from experiments.evaluate import latency_for
  c = get_config("tiny,amnet_sparse_lamr")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)          # one shape: one compilation of the step
  c.train.num_steps = c.train.eval_every = c.train.checkpoint_every = 20
  train(c, tmp_path / "run", latency=latency_for(c.train.latency_profile))
  final = json.loads((tmp_path / "run" / "final.json").read_text())
  assert 0 < final["fast_fraction"] < 1 and final["latency_ms_p90"] > 0
  # Zeros skipped: the pruned cheap branch costs less than its dense count.
  assert final["flops_per_frame_executed"] < final["flops_per_frame"]
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if "train/loss/latency" in r]
  assert train_records and all(np.isfinite(r["train/loss"]) for r in train_records)
  assert all(0 <= r["train/fast_fraction"] <= 1 for r in train_records)
