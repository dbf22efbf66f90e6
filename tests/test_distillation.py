"""Teacher-student distillation: the lattice KL against NumPy on every cell (full and collapsed
forms) and the CTC heads' KL on every frame, both zero when the student is the teacher, and the
terms in the real training step with a teacher loaded from a run's checkpoint; a teacher of
another vocabulary or frame rate, and a student without a CTC head, are named."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from asr import features as F
from compression import distillation as D
from experiments.configs.rnnt import get_config
from tests.helpers import randomize, tiny_step


def _model(seed, **model):
  from asr.training.loop import build_model
  c = get_config("tiny")
  for k, v in model.items():
    if isinstance(v, dict):
      c.model[k].update(v)
    else:
      setattr(c.model, k, v)
  c.seed = seed
  return randomize(build_model(c), seed=seed)


def _inputs(*models):
  """Each model's encoding of one batch of features, and that batch's labels."""
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.standard_normal((3, 40, 80)).astype(np.float32))
  lengths = jnp.array([40, 25, 9])
  labels = jnp.asarray(rng.integers(1, 29, (3, 5)).astype(np.int32))
  label_lengths = jnp.array([5, 2, 0])
  return [m.encode(feats, lengths) for m in models], labels, label_lengths


def _paths(t_len, u_len):
  """Every alignment of a `t_len` x `u_len` lattice as its list of (cell, arc) steps."""
  def walk(t, u):
    if t == t_len - 1 and u == u_len:
      yield [((t, u), "blank")]
      return
    if t < t_len - 1:
      for rest in walk(t + 1, u):
        yield [((t, u), "blank")] + rest
    if u < u_len:
      for rest in walk(t, u + 1):
        yield [((t, u), "label")] + rest
  return list(walk(0, 0))


def _numpy_occupancy(blank, label, t_len, u_len):
  """float64 forward-backward over one utterance's lattice: gamma [T, U+1]."""
  alpha = np.full((t_len, u_len + 1), -np.inf)
  beta = np.full((t_len, u_len + 1), -np.inf)
  for t in range(t_len):
    for u in range(u_len + 1):
      if t == u == 0:
        alpha[t, u] = 0.0
        continue
      a = alpha[t - 1, u] + blank[t - 1, u] if t > 0 else -np.inf
      c = alpha[t, u - 1] + label[t, u - 1] if u > 0 else -np.inf
      alpha[t, u] = np.logaddexp(a, c)
  for t in reversed(range(t_len)):
    for u in reversed(range(u_len + 1)):
      if t == t_len - 1 and u == u_len:
        beta[t, u] = blank[t, u]
        continue
      a = beta[t + 1, u] + blank[t, u] if t < t_len - 1 else -np.inf
      c = beta[t, u + 1] + label[t, u] if u < u_len else -np.inf
      beta[t, u] = np.logaddexp(a, c)
  return np.exp(alpha + beta - beta[0, 0])


def test_the_alignment_occupancy_equals_the_sum_over_every_path():
  rng = np.random.default_rng(5)
  t_len, u_len = 4, 2
  logits = rng.standard_normal((t_len, u_len + 1, 2))
  logp = logits - np.logaddexp(logits[..., :1], logits[..., 1:])   # blank vs label per cell
  blank, label = logp[..., 0], logp[:, :u_len, 1]
  prob = {}
  for path in _paths(t_len, u_len):
    prob[tuple(path)] = np.exp(sum(blank[c] if a == "blank" else label[c] for c, a in path))
  z = sum(prob.values())
  expected = np.zeros((t_len, u_len + 1))
  for path, p in prob.items():
    for cell, _ in path:
      expected[cell] += p / z
  # One utterance padded to 6 frames and 3 labels beside a second: padding adds nothing.
  pad_blank = np.full((2, 6, 4), -1.0)
  pad_label = np.full((2, 6, 3), -1.0)
  pad_blank[0, :t_len, : u_len + 1], pad_label[0, :t_len, :u_len] = blank, label
  got = np.asarray(D.alignment_occupancy(jnp.asarray(pad_blank, jnp.float32),
                                         jnp.asarray(pad_label, jnp.float32),
                                         jnp.array([t_len, 6]), jnp.array([u_len, 3])))
  np.testing.assert_allclose(got[0, :t_len, : u_len + 1], expected, rtol=1e-5, atol=1e-6)
  assert np.abs(got[0]).sum() == pytest.approx(t_len + u_len, rel=1e-5)   # zero off the lattice
  assert got[1].sum() == pytest.approx(6 + 3, rel=1e-5)                    # T + U cells a path
  np.testing.assert_allclose(_numpy_occupancy(blank, label, t_len, u_len), expected, rtol=1e-9)


def _numpy_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form, cells="lattice",
              tau=1.0):
  def logp(model, enc, tau):
    logits = model.joint(model.joint.project_encoder(enc.frames),
                         model.joint.project_prediction(model.predictor(labels)))
    logits = np.asarray(logits, np.float64) / tau
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))   # [B, T, U+1, V]
  lt, ls = logp(teacher, t_enc, tau), logp(student, s_enc, tau)
  lt1 = logp(teacher, t_enc, 1.0)   # the alignment: the teacher's own distributions
  out, weights = [], []
  for b in range(labels.shape[0]):
    t_len, u_len = int(s_enc.lengths[b]), int(label_lengths[b])
    if cells == "alignment":
      label = np.take_along_axis(lt1[b, :t_len, :u_len], np.asarray(labels[b, :u_len])[None, :, None],
                                 -1)[..., 0]
      gamma = _numpy_occupancy(lt1[b, :t_len, :, 0], label, t_len, u_len)
    else:
      gamma = np.ones((t_len, u_len + 1))
    weights.append(gamma.sum())
    total = 0.0
    for t in range(t_len):
      for u in range(u_len + 1):
        pt, ps = np.exp(lt[b, t, u]), np.exp(ls[b, t, u])
        if form == "collapsed":
          y = int(labels[b, u]) if u < label_lengths[b] else None
          def three(p):
            label = p[y] if y is not None else 0.0
            return np.array([p[0], label, 1.0 - p[0] - label])
          pt, ps = three(pt), three(ps)
        total += gamma[t, u] * sum(a * (np.log(a) - np.log(c)) for a, c in zip(pt, ps) if a > 0)
    out.append(tau ** 2 * total)
  return np.array(out), np.array(weights)


@pytest.mark.parametrize("cells", ["lattice", "alignment"])
@pytest.mark.parametrize("form", ["full", "collapsed"])
def test_the_lattice_kl_equals_numpy_cell_by_cell_and_is_zero_for_the_teacher_itself(form, cells):
  teacher, student = _model(1), _model(2)
  (t_enc, s_enc), labels, label_lengths = _inputs(teacher, student)
  kl, weights = D.lattice_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form, cells)
  expected, expected_weights = _numpy_kl(teacher, student, t_enc, s_enc, labels, label_lengths,
                                         form, cells)
  np.testing.assert_allclose(kl, expected, rtol=1e-3)
  np.testing.assert_allclose(weights, expected_weights, rtol=1e-4)
  lengths, label_lengths_np = np.asarray(s_enc.lengths), np.asarray(label_lengths)
  np.testing.assert_allclose(weights, lengths * (label_lengths_np + 1) if cells == "lattice"
                             else lengths + label_lengths_np, rtol=1e-4)
  assert float(kl.min()) > 0
  same, _ = D.lattice_kl(teacher, teacher, t_enc, t_enc, labels, label_lengths, form, cells)
  np.testing.assert_allclose(same, 0.0, atol=1e-4)


@pytest.mark.parametrize("form", ["full", "collapsed"])
def test_a_temperature_softens_both_distributions_and_scales_the_kl_by_its_square(form):
  teacher, student = _model(1), _model(2)
  (t_enc, s_enc), labels, label_lengths = _inputs(teacher, student)
  kl, weights = D.lattice_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form,
                             "alignment", temperature=3.0)
  expected, expected_weights = _numpy_kl(teacher, student, t_enc, s_enc, labels, label_lengths,
                                         form, "alignment", tau=3.0)
  np.testing.assert_allclose(kl, expected, rtol=1e-3)
  np.testing.assert_allclose(weights, expected_weights, rtol=1e-4)   # gamma at temperature 1
  plain, _ = D.lattice_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form,
                          "alignment")
  assert not np.allclose(kl, plain, rtol=0.05)
  same, _ = D.lattice_kl(teacher, teacher, t_enc, t_enc, labels, label_lengths, form,
                         "alignment", temperature=3.0)
  np.testing.assert_allclose(same, 0.0, atol=1e-4)


@pytest.mark.parametrize("reduce", [1, 2])
def test_the_ctc_kl_equals_numpy_frame_by_frame_and_is_zero_for_the_teacher_itself(reduce):
  # reduce=2: the heads read the 30 ms frames below the time reduction, not the encoder's output.
  lstm = dict(layers=2, reduce=reduce, reduce_after=1)
  teacher, student = _model(1, lstm=lstm), _model(2, lstm=lstm)
  (t_enc, s_enc), _, _ = _inputs(teacher, student)
  kl, frames = D.ctc_kl(teacher, student, t_enc, s_enc, temperature=2.0)
  below = s_enc.aux.get("pre_reduction", s_enc.frames)
  lengths = np.asarray(s_enc.aux.get("pre_reduction_lengths", s_enc.lengths))
  assert below.shape[1] == 14 and (reduce == 1 or s_enc.frames.shape[1] == 7)
  def logp(model, enc):
    x = np.asarray(model.ctc_head(enc.aux.get("pre_reduction", enc.frames)), np.float64) / 2.0
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
  lt, ls = logp(teacher, t_enc), logp(student, s_enc)
  expected = [4.0 * np.sum(np.exp(lt[b, :n]) * (lt[b, :n] - ls[b, :n])) for b, n in
              enumerate(lengths)]
  np.testing.assert_allclose(kl, expected, rtol=1e-4)
  np.testing.assert_array_equal(frames, lengths)
  assert float(np.min(kl)) > 0
  same, _ = D.ctc_kl(teacher, teacher, t_enc, t_enc)
  np.testing.assert_allclose(same, 0.0, atol=1e-5)


@pytest.fixture
def teacher_run(tiny_trained_run):
  return tiny_trained_run


def _student(teacher_run, cells="lattice", ctc=0.0, **model):
  c = get_config("tiny")
  c.imports = ["compression.distillation"]
  c.loss.distill = ml_collections.ConfigDict(dict(weight=0.5, teacher=str(teacher_run),
                                                  cells=cells, ctc=ctc))
  for k, v in model.items():
    setattr(c.model, k, v)
  return c


def _as_teacher(state):
  """`state` with the student's parameters set to the teacher's (which the step carries)."""
  teacher = state["terms"]["distill"]
  return {**state, "params": jax.tree.map(jnp.asarray, teacher["params"]),
          "model_state": jax.tree.map(jnp.asarray, teacher["model_state"])}


def test_a_student_that_is_its_teacher_has_zero_distillation_loss_and_a_student_learns(
    teacher_run):
  c = _student(teacher_run)
  _, state, step, batch, _ = tiny_step(c)
  step = jax.jit(step)
  _, m = step(state, batch)   # a fresh student: the teacher disagrees
  assert float(m["loss/distill"]) > 0.01 and float(m["weight/distill"]) == 0.5
  terms = [k.removeprefix("weight/") for k in m if k.startswith("weight/")]
  assert "distill" in terms and "rnnt" in terms
  assert float(m["loss"]) == pytest.approx(
      sum(float(m[f"weight/{n}"]) * float(m[f"loss/{n}"]) for n in terms), rel=1e-5)
  assert "loss/distill/ctc" not in m          # off: the CTC heads' KL is not computed
  # The student given the teacher's own parameters: nothing to learn from it.
  _, state, _, _, _ = tiny_step(c)
  _, m = step(_as_teacher(state), batch)
  assert float(m["loss/distill"]) == pytest.approx(0.0, abs=1e-5)
  assert int(m["loss/distill/cells"]) > 0


def test_the_ctc_kl_in_the_step_is_zero_for_the_teacher_and_leaves_the_joint_kl_alone(
    teacher_run):
  c = _student(teacher_run, ctc=2.0)
  _, state, step, batch, _ = tiny_step(c)
  step = jax.jit(step)
  _, m = step(state, batch)
  assert float(m["loss/distill/ctc"]) > 0.01
  assert float(m["loss/distill"]) == pytest.approx(
      float(m["loss/distill/lattice"]) + 2.0 * float(m["loss/distill/ctc"]), rel=1e-6)
  real = np.asarray(batch["audio_lengths"]) > 0
  from asr.training.loop import build_model
  feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"],
                             F.FeatureConfig(num_mels=c.model.num_mels))
  frames = np.asarray(build_model(c).encode(feats, lengths).lengths)
  assert float(m["loss/distill/frames"]) == float(np.sum(frames[real]))
  # The joint's KL is what it is alone (the two share the teacher's pass, nothing else).
  _, state_alone, step_alone, _, _ = tiny_step(_student(teacher_run))
  _, m_alone = jax.jit(step_alone)(state_alone, batch)
  assert float(m["loss/distill/lattice"]) == pytest.approx(float(m_alone["loss/distill"]),
                                                           rel=1e-5)
  _, m = step(_as_teacher(state), batch)
  assert float(m["loss/distill/ctc"]) == pytest.approx(0.0, abs=1e-5)
  c = _student(teacher_run, ctc=1.0)
  c.loss.ctc = 0.0   # the student has no CTC head
  _, state, step, batch, _ = tiny_step(c)
  with pytest.raises(ValueError, match="distill ctc=1: the student has no CTC head"):
    jax.eval_shape(step, state, batch)


def test_the_alignment_weighted_term_in_the_step_weighs_one_per_aligned_step(teacher_run):
  c = _student(teacher_run, cells="alignment")
  _, state, step, batch, _ = tiny_step(c)
  _, m = jax.jit(step)(state, batch)
  assert float(m["loss/distill"]) > 0.01 and np.isfinite(float(m["loss"]))
  # gamma sums to T + U over each real utterance's lattice (the student's frames).
  from asr.training.loop import build_model
  model = build_model(c)
  feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"],
                             F.FeatureConfig(num_mels=c.model.num_mels))
  frames = np.asarray(model.encode(feats, lengths).lengths)
  real = batch["audio_lengths"] > 0   # the last row is batch padding
  expected = float(np.sum(np.where(real, frames + np.asarray(batch["label_lengths"]), 0)))
  assert float(m["loss/distill/cells"]) == pytest.approx(expected, rel=1e-4)
  with pytest.raises(ValueError, match="cells='path' is not one of lattice, alignment"):
    D.Distill(teacher=str(teacher_run), cells="path")
  with pytest.raises(ValueError, match="temperature=0 must be above 0"):
    D.Distill(teacher=str(teacher_run), temperature=0)


def test_options_are_checked_against_what_the_term_declares(teacher_run):
  from asr.training.loop import loss_terms
  c = _student(teacher_run)
  c.loss.distill.tau = 2.0
  with pytest.raises(ValueError, match="config.loss.distill has no option.* tau; its options: "
                                       "cells, ctc, form, step, teacher, temperature"):
    loss_terms(c)
  c = _student(teacher_run)
  del c.loss.distill.teacher
  with pytest.raises(ValueError, match="config.loss.distill needs option.* teacher"):
    loss_terms(c)
  c = _student(teacher_run)
  del c.loss.ctc
  c.loss.ctc = ml_collections.ConfigDict(dict(weight=0.5, blank=1))
  with pytest.raises(ValueError, match="config.loss.ctc has no option.* blank; its options: "
                                       "none"):
    loss_terms(c)
  c = _student(teacher_run)
  del c.loss.distill.weight
  with pytest.raises(ValueError, match="config.loss.distill has options but no weight"):
    loss_terms(c)


def test_a_teacher_of_another_vocabulary_or_frame_rate_is_named(teacher_run):
  c = _student(teacher_run, vocab=40)
  _, state, step, batch, _ = tiny_step(c)
  with pytest.raises(ValueError, match="vocabulary of 29, the student 40"):
    jax.eval_shape(step, state, batch)   # raised as the step is traced
  c = _student(teacher_run)
  c.model.lstm.layers, c.model.lstm.reduce = 2, 2   # 60 ms frames against 30
  _, state, step, batch, _ = tiny_step(c)
  with pytest.raises(ValueError, match="teacher .* gives 33 frames of 30 ms where the student "
                                       "gives 17 of 60 ms"):
    jax.eval_shape(step, state, batch)
  with pytest.raises(FileNotFoundError, match="holds no config.json"):
    D.Distill(teacher=str(teacher_run / "nowhere"))


def test_a_distilled_student_checkpoints_and_loads_without_its_teacher(
    teacher_run, tiny_data_dir, tmp_path):
  import shutil
  from asr.training.checkpoint import Checkpointer
  from asr.training.loop import load_for_inference, train
  teacher = tmp_path / "teacher"
  shutil.copytree(teacher_run, teacher)
  c = _student(teacher)
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 2, 1000, 2
  train(c, tmp_path / "student")
  ckpt = Checkpointer(tmp_path / "student" / "checkpoints")
  try:
    stored = ckpt.stored()
  finally:
    ckpt.close()
  assert stored and not [p for p in stored if p.startswith("terms")]
  shutil.rmtree(teacher)
  config, graphdef, variables, step = load_for_inference(tmp_path / "student")
  assert step == 2 and config.loss.distill.teacher == str(teacher)
  nnx.merge(graphdef, *variables)   # the student, whole
  with pytest.raises(FileNotFoundError, match="teacher workdir .* holds no config.json"):
    train(c, tmp_path / "student")   # resuming its training needs the teacher again
