"""Weight quantization: the grid by hand, fake quantization on the grid with straight-through
gradients, the regulariser zero on the grid and largest halfway with its gradient towards the
nearest grid point, hard quantization and PTQ inside the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asr.training import train_step as ts
from asr.training import transforms as T
from compression import quantization as Q
from tests.helpers import tiny_step


def test_the_grid_by_hand():
  w = jnp.array([[0.5, -0.1], [-1.0, 0.04], [0.26, 0.0]])
  q, scale = Q.quantize(w, bits=3)   # qmax 3: steps 1/3 and 0.1/3 per column
  np.testing.assert_allclose(scale, [1.0 / 3, 0.1 / 3], rtol=1e-6)
  np.testing.assert_array_equal(q, [[2, -3], [-3, 1], [1, 0]])   # 1.5 rounds to even: 2
  np.testing.assert_array_equal(Q.quantize(jnp.zeros((2, 2)), 8)[0], 0)   # a zero channel
  with pytest.raises(ValueError, match="bits=1 must be between 2 and 16"):
    Q.qmax(1)


@pytest.mark.parametrize("bits", [8, 4])
def test_fake_quantization_lands_on_the_grid_and_passes_gradients_straight_through(bits):
  w = jax.random.normal(jax.random.key(0), (32, 16))
  wq = Q.fake_quantize(w, bits)
  steps = np.asarray(wq / Q.channel_scales(w, bits))
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
  assert np.abs(np.round(steps)).max() == Q.qmax(bits)
  assert np.abs(np.asarray(wq - w)).max() <= np.asarray(Q.channel_scales(w, bits)).max() / 2 + 1e-6
  c = jax.random.normal(jax.random.key(1), w.shape)
  grad = jax.grad(lambda w: jnp.sum(Q.fake_quantize(w, bits) * c))(w)
  np.testing.assert_array_equal(grad, c)


def test_the_regulariser_is_zero_on_the_grid_largest_halfway_and_descends_to_the_nearest_point():
  bits, scale = 4, 0.1   # a column whose largest weight is 0.7 = qmax * 0.1
  column = lambda v: jnp.array([[0.7], [v]])
  on_grid = [Q.grid_penalty(column(k * scale), bits) for k in range(-7, 8)]
  np.testing.assert_allclose(on_grid, 0.0, atol=1e-6)
  halfway = Q.grid_penalty(column(0.25), bits)
  assert float(halfway) == pytest.approx(0.5, abs=1e-6)   # mean of 0 (the 0.7) and 1
  grid = np.linspace(-0.69, 0.69, 139)
  values = np.array([float(Q.grid_penalty(column(v), bits)) for v in grid])
  assert values.max() <= 0.5 + 1e-6
  grads = np.array([float(jax.grad(lambda v: Q.grid_penalty(column(v), bits))(jnp.float32(v)))
                    for v in grid])
  nearest = np.round(grid / scale) * scale
  # Away from the grid points and from the kinks halfway between them (where the nearest
  # point is ambiguous), descent (-grad) moves each weight towards its nearest grid point.
  smooth = (np.abs(grid - nearest) > 1e-3) & (np.abs(np.abs(grid - nearest) - scale / 2) > 1e-3)
  assert smooth.sum() > 100
  assert np.all(np.sign(-grads[smooth]) == np.sign(nearest - grid)[smooth])
  # Against finite differences.
  fd = [(float(Q.grid_penalty(column(v + 1e-3), bits)) - float(Q.grid_penalty(column(v - 1e-3),
                                                                                bits))) / 2e-3
        for v in grid[smooth]]
  np.testing.assert_allclose(grads[smooth], fd, rtol=2e-2, atol=1e-2)


def _on_grid(params, select, bits):
  for name, w in select.items(params):
    steps = np.asarray(w) / np.asarray(Q.channel_scales(w, bits))
    if not np.allclose(steps, np.round(steps), atol=1e-3):
      return False
  return True


def test_regularised_qat_logs_its_term_and_snaps_weights_onto_the_grid_every_n_steps():
  c, *_ = tiny_step()
  c.loss.quant_reg = 0.5
  transforms = T.build_transforms({"quant": {
      "factory": "compression.quantization:regularised_quantization", "bits": 4, "every": 3}})
  _, state, step, batch, _ = tiny_step(c, transforms)
  select = transforms[0][1].select
  step = jax.jit(step)
  for s in range(1, 7):
    state, m = step(state, batch)
    assert _on_grid(state["params"], select, 4) == (s % 3 == 0), s
    assert float(m["weight/quant_reg"]) == 0.5
    # The term measures the weights this step starts from: zero right after a hard quantization.
    if s == 4:
      assert float(m["loss/quant_reg"]) == pytest.approx(0.0, abs=1e-4)
    else:
      assert 1e-3 < float(m["loss/quant_reg"]) < 1


def test_hard_quantization_also_lands_on_the_runs_last_step():
  t = Q.RegularisedQuantization(bits=4, every=4, last_step=6)
  w = {"k": {"kernel": jax.random.normal(jax.random.key(0), (8, 5))}}
  snapped = [s + 1 for s in range(8) if _on_grid(t.update(w, {}, s, {})[0], t.select, 4)]
  assert snapped == [4, 6, 8]   # every 4 steps done, and the 6th (the last)


def test_the_penalty_term_without_its_transform_is_named():
  from experiments.configs.rnnt import get_config
  c = get_config("tiny")
  c.loss.quant_reg = 1.0
  _, state, step, batch, _ = tiny_step(c)
  with pytest.raises(ValueError, match="loss.quant_reg needs a transform"):
    jax.eval_shape(step, state, batch)   # raised as the step is traced


def test_straight_through_qat_trains_on_the_grid_and_ptq_rounds_only_the_final_model():
  qat = T.build_transforms({"q": {"factory": "compression.quantization:fake_quantized_weights",
                                  "bits": 8}})
  _, state, step, batch, schedules = tiny_step(transforms=qat)
  state, m = jax.jit(step)(state, batch)
  assert np.isfinite(float(m["loss"]))
  select = qat[0][1].select
  assert not _on_grid(state["params"], select, 8)   # the float weights train freely
  seen, _ = ts.inference_variables(state, qat, schedules)
  assert _on_grid(seen, select, 8)                  # the model sees them on the grid
  # PTQ: the same transform from the run's last step only.
  ptq = T.build_transforms({"q": {"factory": "compression.quantization:fake_quantized_weights",
                                  "bits": 8, "begin_step": 3}})
  _, state, step, batch, schedules = tiny_step(transforms=ptq)
  step = jax.jit(step)
  for _ in range(2):
    state, _ = step(state, batch)
  assert not _on_grid(ts.inference_variables(state, ptq, schedules)[0], select, 8)
  state, _ = step(state, batch)
  assert _on_grid(ts.inference_variables(state, ptq, schedules)[0], select, 8)


def test_activation_fake_quantization_clips_rounds_and_passes_gradients_inside_the_range():
  x = jnp.array([-3.0, -0.99, -0.26, 0.0, 0.4, 0.99, 2.5])
  y = Q.fake_quantize_tensor(x, jnp.float32(1.0), 3)     # grid step 1/3 on [-1, 1]
  np.testing.assert_allclose(y, [-1.0, -1.0, -1 / 3, 0.0, 1 / 3, 1.0, 1.0], atol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(Q.fake_quantize_tensor(x, jnp.float32(1.0), 3)))(x)
  np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(Q.fake_quantize_tensor(x, jnp.float32(0.0), 8), x)  # no range


def _act_model():
  from asr.training.loop import build_model
  from experiments.configs.compression import get_config
  return build_model(get_config("tiny,act8"))


def test_activation_ranges_follow_a_moving_average_of_training_inputs_only():
  from flax import nnx
  from asr.models.context import Context
  from asr.models.dense import Dense, intercept_dense
  model = _act_model()
  layers = {"/".join(map(str, p)): m for p, m in nnx.iter_graph(model)
            if isinstance(m, Q.ActivationQuantizedDense)}
  assert set(layers) == {"encoder/layers/0/input", "encoder/layers/0/recurrent",
                         "joint/enc_proj", "joint/pred_proj", "joint/out", "predictor/proj"}
  assert not any(type(m) is Dense for _, m in nnx.iter_graph(model) if m is not model.ctc_head)
  assert layers["joint/out"].bounded and layers["encoder/layers/0/recurrent"].bounded
  # The parameters keep their names: a dense checkpoint fits the quantized model.
  from asr.training.loop import build_model
  from experiments.configs.rnnt import get_config
  plain = jax.tree.map(jnp.shape, nnx.state(build_model(get_config("tiny")), nnx.Param))
  assert jax.tree.map(jnp.shape, nnx.state(model, nnx.Param)) == plain

  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.standard_normal((2, 60, 80)), jnp.float32)
  lengths = jnp.array([60, 33])
  seen = {}
  name = "encoder/layers/0/input"   # called outside the LSTM's scan: its input is concrete

  def record(layer, x, apply):
    if layer is layers[name]:
      seen.setdefault(id(layer), []).append(float(jnp.max(jnp.abs(x))))
    return apply(x)
  training = Context(train=True, statistics=True)
  with intercept_dense(record):
    model.encode(feats, lengths, training)
  first = float(layers[name].act_range[...])
  # The first observation is the range; the input's largest magnitude lands on its edge.
  assert first > 0 and seen[id(layers[name])][-1] == pytest.approx(first, rel=1e-6)
  model.encode(feats * 5.0, lengths)     # an inference pass: ranges stay
  assert float(layers[name].act_range[...]) == first
  assert float(layers["encoder/layers/0/recurrent"].act_range[...]) == 1.0
  # Decoding runs the joint and the prediction network outside the model's own passes (as a
  # loss term that decodes in the training step does): it never writes their ranges.
  from asr.decoding import beam_search
  enc = model.encode(feats, lengths, training)
  joint = {k: float(layers[k].act_range[...]) for k in ("joint/enc_proj", "joint/pred_proj")}
  beam_search(model, enc.frames * 3.0, enc.lengths, beam=2, max_symbols=2, max_len=40)
  assert {k: float(layers[k].act_range[...]) for k in joint} == joint
  with intercept_dense(record):
    model.encode(feats * 0.5, lengths, training)   # a moving average with momentum 0.99
  second_max = seen[id(layers[name])][-1]  # the quantized input's max, within half a step
  step = first / 127
  assert float(layers[name].act_range[...]) == pytest.approx(
      0.99 * first + 0.01 * second_max, abs=0.01 * step)


def test_the_training_step_keeps_activation_ranges_in_the_state():
  from experiments.configs.compression import get_config
  from asr.training.checkpoint import tree_paths
  c = get_config("tiny,act8")
  _, state, step, batch, _ = tiny_step(c)
  ranges = lambda s: {p: float(x) for p, x in tree_paths(s["model_state"]) if "act_range" in p}
  before = ranges(state)
  assert len(before) == 6 and sum(v == 0 for v in before.values()) == 4
  state, m = jax.jit(step)(state, batch)
  after = ranges(state)
  assert np.isfinite(float(m["loss"])) and all(v > 0 for v in after.values())
  assert all(after[p] == 1.0 for p in after if p.split("/")[-3] in ("recurrent", "out"))
