"""Matrix factorization: the truncated SVD exact at the matrix's rank and at the Eckart-Young
error below it, ranks chosen by hand-checked rules, and the surgery on a real model: FLOPs
counted from the factors, the full rank reproducing the trained model, training through it, and
a factorized run loading and resuming after the run it was factorized from is gone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from compression import factorization as FZ
from experiments.configs.rnnt import get_config


def test_svd_factors_are_exact_at_the_rank_and_at_the_eckart_young_error_below():
  rng = np.random.default_rng(0)
  low = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 20))
  u, v = FZ.svd_factors(low, 5)
  assert u.shape == (30, 5) and v.shape == (5, 20)
  np.testing.assert_allclose(u @ v, low, atol=1e-4)
  full = rng.standard_normal((30, 20))
  s = np.linalg.svd(full, compute_uv=False)
  for r in (1, 7, 19):
    u, v = FZ.svd_factors(full, r)
    assert np.linalg.norm(full - u @ v) == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-4)


def test_ranks_by_hand():
  w = np.diag([4.0, 2.0, 1.0, 1.0])   # squared singular values 16, 4, 1, 1 of 22
  assert FZ.rank_for(w, None, None, 16 / 22) == 1
  assert FZ.rank_for(w, None, None, 0.8) == 2
  assert FZ.rank_for(w, None, None, 21 / 22) == 3 and FZ.rank_for(w, None, None, 1.0) == 4
  assert FZ.rank_for(np.zeros((240, 256)), None, 0.5, None) == 61   # 0.5 * 240*256 / 496
  assert FZ.rank_for(np.zeros((4, 9)), 7, None, None) == 4
  with pytest.raises(ValueError, match="exactly one of rank, macs_ratio, energy"):
    FZ.Factorize(rank=3, macs_ratio=0.5)
  with pytest.raises(ValueError, match="energy chooses ranks from trained weights"):
    FZ.Factorize(energy=0.9)


def _config(**surgery):
  c = get_config("tiny")
  if surgery:
    c.surgery.factorize = dict(factory="compression.factorization:factorize", **surgery)
  return c


def test_the_surgery_counts_flops_from_the_factors_and_trains():
  from asr.training.loop import build_model
  from asr.training import transforms as T
  from tests.helpers import tiny_step
  dense = build_model(_config())
  model = build_model(_config(macs_ratio=0.5, include="^encoder/"))
  layer = model.encoder.layers[0]
  assert isinstance(layer.input, FZ.LowRankDense) and isinstance(layer.recurrent,
                                                                  FZ.LowRankDense)
  assert isinstance(model.joint.out, nnx.Module) and not isinstance(model.joint.out,
                                                                    FZ.LowRankDense)
  r_in, r_rec = layer.input.rank, layer.recurrent.rank
  assert (r_in, r_rec) == (61, 25)   # floor(0.5 * m n / (m + n)) of 240 x 256 and 64 x 256
  # By hand: tiny's encoder is one LSTM (240 stacked inputs, 64 units, no time reduction), so a
  # frame costs 2 x (240 x 256 + 64 x 256) dense and 2 x r (m + n) per matrix factorized.
  assert dense.encoder.flops_per_frame() == 2 * (240 * 256 + 64 * 256)
  assert model.encoder.flops_per_frame() == 2 * (r_in * (240 + 256) + r_rec * (64 + 256))
  # The factors are ordinary Dense kernels: pruning selects them like any other.
  prune = T.build_transforms({"p": {"factory": "compression.sparsity:gradual_magnitude_pruning",
                                    "target": 0.5, "begin_step": 0, "end_step": 2}})
  names = prune[0][1].select.names(nnx.state(model, nnx.Param))
  assert "encoder/layers/0/input/u/kernel" in names and "encoder/layers/0/input/v/kernel" in names
  c = _config(macs_ratio=0.5, include="^encoder/")
  _, state, step, batch, _ = tiny_step(c, prune)
  step = jax.jit(step)
  losses = []
  for _ in range(4):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_from_a_trained_run_the_factors_are_its_truncated_svd_and_a_misfit_is_named(
    tiny_trained_run):
  from asr.training.loop import build_model, load_for_inference
  _, graphdef, variables, _ = load_for_inference(tiny_trained_run)
  trained = nnx.merge(graphdef, *variables)
  # energy 1.0 keeps every singular value: nothing to save, so every layer stays dense and the
  # model is the trained one, loaded whole.
  same = build_model(_config(energy=1.0, svd_from=str(tiny_trained_run)))
  rng = np.random.default_rng(0)
  x, lengths = jnp.asarray(rng.standard_normal((2, 60, 80)), jnp.float32), jnp.array([60, 41])
  np.testing.assert_allclose(same.encode(x, lengths).frames, trained.encode(x, lengths).frames,
                             atol=1e-6)
  model = build_model(_config(rank=16, svd_from=str(tiny_trained_run), include="^encoder/"))
  for name in ("input", "recurrent"):
    w = np.asarray(getattr(trained.encoder.layers[0], name).kernel[...], np.float64)
    a, s, bt = np.linalg.svd(w, full_matrices=False)
    best = (a[:, :16] * s[:16]) @ bt[:16]
    layer = getattr(model.encoder.layers[0], name)
    got = np.asarray(layer.u.kernel[...]) @ np.asarray(layer.v.kernel[...])
    np.testing.assert_allclose(got, best, atol=1e-4, err_msg=name)
  np.testing.assert_array_equal(model.joint.out.kernel[...], trained.joint.out.kernel[...])
  np.testing.assert_array_equal(model.encoder.layers[0].input.v.bias[...],
                                trained.encoder.layers[0].input.bias[...])
  c = _config(rank=8, svd_from=str(tiny_trained_run))
  c.model.lstm.hidden = 32
  with pytest.raises(ValueError, match="is not this model before factorization"):
    build_model(c)


def test_a_run_factorized_from_another_loads_and_resumes_without_that_run(
    tiny_trained_run, tiny_data_dir, tmp_path):
  import shutil
  from asr.training.loop import load_for_inference, train
  base = tmp_path / "base"
  shutil.copytree(tiny_trained_run, base)
  c = _config(energy=0.5, svd_from=str(base), include="^encoder/")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 2, 1000, 1
  run = tmp_path / "factorized"
  train(c, run, stop_after=1)   # as if killed after step 1
  _, graphdef, variables, _ = load_for_inference(run)
  shutil.rmtree(base)   # ranks chosen from its singular values; it is gone now
  _, graphdef_again, variables_again, _ = load_for_inference(run)
  assert graphdef_again == graphdef
  ranks = [m.rank for _, m in nnx.merge(graphdef, *variables).iter_modules()
           if isinstance(m, FZ.LowRankDense)]
  assert len(ranks) == 2 and all(0 < r < 64 for r in ranks)   # input and recurrent
  for a, b in zip(jax.tree.leaves(variables_again), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  train(c, run)   # resumed: the same model, rebuilt without it
  assert load_for_inference(run)[1] == graphdef
  assert load_for_inference(run)[3] == 2
