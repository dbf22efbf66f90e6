"""Teacher-student distillation: the lattice KL against NumPy on every cell (full and collapsed
forms), zero when the student is the teacher, and the term in the real training step with a
teacher loaded from a run's checkpoint; a teacher of another vocabulary or frame rate is named."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from asr.training import transforms as T
from compression import distillation as D
from experiments.configs.rnnt import get_config
from tests.helpers import randomize, tiny_step


def _model(seed, **model):
  from asr.training.loop import build_model
  c = get_config("tiny")
  for k, v in model.items():
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


def _numpy_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form):
  def logp(model, enc):
    logits = model.joint(model.joint.project_encoder(enc.frames),
                         model.joint.project_prediction(model.predictor(labels)))
    return np.asarray(jax.nn.log_softmax(logits, -1), np.float64)   # [B, T, U+1, V]
  lt, ls = logp(teacher, t_enc), logp(student, s_enc)
  out = []
  for b in range(labels.shape[0]):
    total = 0.0
    for t in range(int(s_enc.lengths[b])):
      for u in range(int(label_lengths[b]) + 1):
        pt, ps = np.exp(lt[b, t, u]), np.exp(ls[b, t, u])
        if form == "collapsed":
          y = int(labels[b, u]) if u < label_lengths[b] else None
          def three(p):
            label = p[y] if y is not None else 0.0
            return np.array([p[0], label, 1.0 - p[0] - label])
          pt, ps = three(pt), three(ps)
        total += sum(a * (np.log(a) - np.log(c)) for a, c in zip(pt, ps) if a > 0)
    out.append(total)
  return np.array(out)


@pytest.mark.parametrize("form", ["full", "collapsed"])
def test_the_lattice_kl_equals_numpy_cell_by_cell_and_is_zero_for_the_teacher_itself(form):
  teacher, student = _model(1), _model(2)
  (t_enc, s_enc), labels, label_lengths = _inputs(teacher, student)
  kl, cells = D.lattice_kl(teacher, student, t_enc, s_enc, labels, label_lengths, form)
  np.testing.assert_allclose(kl, _numpy_kl(teacher, student, t_enc, s_enc, labels,
                                           label_lengths, form), rtol=1e-3)
  np.testing.assert_array_equal(cells, np.asarray(s_enc.lengths) * (np.asarray(label_lengths) + 1))
  assert float(kl.min()) > 0
  same, _ = D.lattice_kl(teacher, teacher, t_enc, t_enc, labels, label_lengths, form)
  np.testing.assert_allclose(same, 0.0, atol=1e-4)


@pytest.fixture
def teacher_run(tiny_trained_run):
  return tiny_trained_run


def _student(teacher_run, **model):
  c = get_config("tiny")
  c.imports = ["compression.distillation"]
  c.loss.distill = 0.5
  for k, v in model.items():
    setattr(c.model, k, v)
  transforms = T.build_transforms({"teacher": {
      "factory": "compression.distillation:teacher", "workdir": str(teacher_run)}})
  return c, transforms


def test_a_student_that_is_its_teacher_has_zero_distillation_loss_and_a_student_learns(
    teacher_run):
  c, transforms = _student(teacher_run)
  _, state, step, batch, _ = tiny_step(c, transforms)
  step = jax.jit(step)
  _, m = step(state, batch)   # a fresh student: the teacher disagrees
  assert float(m["loss/distill"]) > 0.01 and float(m["weight/distill"]) == 0.5
  terms = [k.removeprefix("weight/") for k in m if k.startswith("weight/")]
  assert "distill" in terms and "rnnt" in terms
  assert float(m["loss"]) == pytest.approx(
      sum(float(m[f"weight/{n}"]) * float(m[f"loss/{n}"]) for n in terms), rel=1e-5)
  # The student given the teacher's own parameters: nothing to learn from it.
  _, state, _, _, _ = tiny_step(c, transforms)
  state["params"] = jax.tree.map(jnp.asarray, state["transforms"]["teacher"]["params"])
  state["model_state"] = jax.tree.map(jnp.asarray, state["transforms"]["teacher"]["model_state"])
  _, m = step(state, batch)
  assert float(m["loss/distill"]) == pytest.approx(0.0, abs=1e-5)
  assert int(m["loss/distill/cells"]) > 0


def test_a_teacher_of_another_vocabulary_or_frame_rate_is_named(teacher_run):
  with pytest.raises(ValueError, match="vocabulary of 29, the student 40"):
    c, transforms = _student(teacher_run, vocab=40)
    tiny_step(c, transforms)
  c, transforms = _student(teacher_run)
  c.model.lstm.layers, c.model.lstm.reduce = 2, 2   # 60 ms frames against 30
  _, state, step, batch, _ = tiny_step(c, transforms)
  with pytest.raises(ValueError, match="teacher .* gives 33 frames of 30 ms where the student "
                                       "gives 17 of 60 ms"):
    step(state, batch)
  with pytest.raises(FileNotFoundError, match="holds no config.json"):
    D.Teacher(workdir=str(teacher_run / "nowhere"))
