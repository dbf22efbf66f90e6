"""The training step's seams: schedules follow the state's step (skips included), loss terms are
weighted and scheduled by name, parameter transforms act in the forward pass and after the
update, the non-finite guard counts in the state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asr.models.context import Context
from asr.training import schedules as S
from asr.training import train_step as ts
from asr.training import transforms as T
from experiments.configs.rnnt import get_config
from tests.helpers import tiny_step as _setup


def _nan(batch):
  bad = dict(batch, audio=batch["audio"].copy())
  bad["audio"][0, 100] = np.nan
  return bad


def test_schedule_kinds_by_hand_and_the_learning_rate_equals_optax():
  f = S.make_schedule("t", dict(kind="linear", start=1.0, end=3.0, begin_step=10, end_step=20))
  assert [float(f(s)) for s in (0, 10, 15, 20, 99)] == [1.0, 1.0, 2.0, 3.0, 3.0]
  f = S.make_schedule("t", dict(kind="exponential", start=1.0, end=0.01, begin_step=0,
                                end_step=10))
  assert float(f(5)) == pytest.approx(0.1, rel=1e-5)
  f = S.make_schedule("t", dict(kind="polynomial", start=0.0, end=0.8, begin_step=0,
                                end_step=10, power=3))
  assert float(f(5)) == pytest.approx(0.8 - 0.8 * 0.5**3, rel=1e-5)
  f = S.make_schedule("t", dict(kind="cosine", start=1.0, end=0.0, begin_step=0, end_step=10))
  assert float(f(5)) == pytest.approx(0.5, abs=1e-6)
  lr = S.make_schedule("lr", dict(kind="warmup_cosine", peak=3e-3, warmup_steps=100,
                                  end_step=1000, end_ratio=0.05))
  ref = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 100, 1000, end_value=3e-3 * 0.05)
  np.testing.assert_allclose([float(lr(s)) for s in range(0, 1200, 7)],
                             [float(ref(s)) for s in range(0, 1200, 7)], rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="schedules.t .linear. needs .*missing end_step"):
    S.make_schedule("t", dict(kind="linear", start=1.0, end=0.0, begin_step=0))
  with pytest.raises(ValueError, match="schedules.t: kind 'sigmoid'"):
    S.make_schedule("t", dict(kind="sigmoid"))


def test_after_skipped_steps_the_update_uses_the_learning_rate_of_the_state_step():
  c, state, step, batch, schedules = _setup()
  step = jax.jit(step)
  params = jax.tree.map(np.asarray, state["params"])
  for _ in range(3):  # three non-finite batches: skipped, but the step (and schedules) move
    state, metrics = step(state, _nan(batch))
    assert int(metrics["nonfinite"]) == 1
  assert int(state["step"]) == 3 and int(state["guard"]["in_a_row"]) == 3
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  new, metrics = step(state, batch)
  lr = float(schedules["learning_rate"](3))
  assert lr > 0 and float(metrics["learning_rate"]) == pytest.approx(lr)
  # The reference: optax's own AdamW at that rate, from a fresh optimizer state.
  grads = jax.jit(jax.grad(lambda p: _loss(c, p, state, batch)))(state["params"])
  ref_tx = optax.chain(optax.clip_by_global_norm(c.optim.clip_norm),
                       optax.adamw(lr, weight_decay=c.optim.weight_decay))
  updates, _ = ref_tx.update(grads, ref_tx.init(state["params"]), state["params"])
  expected = optax.apply_updates(state["params"], updates)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(new["params"]), jax.tree.leaves(state["params"])))
  assert moved > lr / 2  # a first Adam step moves weights by about the learning rate
  # (Adam's first direction is g / (|g| + eps): where |g| is tiny, the jitted step's and this
  # reference's rounding differ by a share of the rate.)
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=lr / 10)
  assert int(new["guard"]["in_a_row"]) == 0 and int(new["guard"]["total"]) == 3


def _loss(c, params, state, batch):
  """The step's objective on its own: the reference gradient."""
  from flax import nnx
  from asr import features as F
  from asr.training.loop import build_model
  model = nnx.merge(ts.split_model(build_model(c))[0], params, state["model_state"])
  feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"])
  nll = model.score(model.encode(feats, lengths, Context(train=True)), batch["labels"],
                    batch["label_lengths"])
  real = batch["audio_lengths"] > 0
  labels = jnp.sum(batch["label_lengths"] * real)
  per = {k: jnp.sum(jnp.where(real, v, 0.0)) / labels for k, v in nll.items()}
  return c.loss.rnnt * per["rnnt"] + c.loss.ctc * per["ctc"]


def test_the_guard_trips_after_the_limit_and_names_the_step_and_batches():
  _, state, step, batch, _ = _setup()
  step = jax.jit(step)
  state, _ = step(state, _nan(batch))
  state, _ = step(state, batch)  # a finite step resets the run
  for _ in range(2):
    state, _ = step(state, _nan(batch))
  ts.check_guard(jax.device_get(state["guard"]), 3, {})  # 2 in a row: below the limit
  state, _ = step(state, _nan(batch))
  guard = jax.device_get(state["guard"])
  assert int(guard["tripped_at"]) == 5 and int(guard["total"]) == 4
  with pytest.raises(FloatingPointError, match="step 5: .* 3 steps in a row.*hold x5"):
    ts.check_guard(guard, 3, {5: ["x5"], 4: [""]})


def test_loss_terms_are_weighted_and_a_weight_follows_its_schedule():
  import ml_collections
  c = get_config("tiny")
  c.schedules.ctc_weight = ml_collections.ConfigDict(dict(
      kind="linear", start=1.0, end=0.0, begin_step=0, end_step=4))
  _, state, step, batch, _ = _setup(c)
  step = jax.jit(step)
  for s in range(3):
    state, m = step(state, batch)
    w = c.loss.ctc * (1.0 - s / 4)
    assert float(m["weight/ctc"]) == pytest.approx(w) and float(m["schedule/ctc_weight"]) == \
        pytest.approx(1.0 - s / 4)
    assert float(m["loss"]) == pytest.approx(float(m["loss/rnnt"]) + w * float(m["loss/ctc"]),
                                             rel=1e-5)
  from asr.training.loop import loss_weights
  c.loss.wer_bonus = 1.0   # no module registers it
  with pytest.raises(ValueError, match=r"unknown term.*wer_bonus.*registered: ([a-z_]+, )*ctc, ([a-z_]+, )*rnnt"):
    loss_weights(c)


class _FixedMask:
  """A test transform: zeroes the first `fraction` of every kernel's rows, in the forward pass
  and after every update; its masks are its state."""

  def __init__(self, fraction):
    self.fraction = fraction

  def init(self, params):
    def mask(path, x):
      m = np.ones(x.shape, np.float32)
      if path[-2:] == ("kernel", "value") or (path and path[-1] == "kernel"):
        m[: int(x.shape[0] * self.fraction)] = 0
      return jnp.asarray(m)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: mask(tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in p), x),
        params)

  def apply(self, params, state, step, schedules):
    return jax.tree.map(lambda p, m: p * m, params, state)

  def update(self, params, state, step, schedules):
    return self.apply(params, state, step, schedules), state


def fixed_mask(fraction):
  return _FixedMask(fraction)


def test_a_transform_named_in_the_config_masks_the_forward_pass_and_keeps_pruned_weights_zero():
  transforms = T.build_transforms({"prune": {"factory": "tests.test_step:fixed_mask",
                                             "fraction": 0.5}})
  _, state, step, batch, _ = _setup(transforms=transforms)
  before = jax.tree.map(np.asarray, state["params"])
  step = jax.jit(step)
  for _ in range(3):
    state, _ = step(state, batch)
  masks = state["transforms"]["prune"]
  kernel = state["params"]["encoder"]["layers"][0]["input"]["kernel"][...]
  mask = masks["encoder"]["layers"][0]["input"]["kernel"][...]
  assert float(jnp.mean(mask)) == 0.5
  assert not np.any(np.asarray(kernel)[np.asarray(mask) == 0])   # pruned: exactly zero
  old = before["encoder"]["layers"][0]["input"]["kernel"][...]
  assert np.all(np.asarray(kernel)[np.asarray(mask) == 1] != old[np.asarray(mask) == 1])
  with pytest.raises(ValueError, match="transforms.prune.factory='tests.nowhere:f' cannot be"):
    T.build_transforms({"prune": {"factory": "tests.nowhere:f"}})
