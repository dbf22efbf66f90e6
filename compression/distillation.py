"""Teacher-student distillation of transducers: a trained RNN-T (any family, loaded from its run's
Orbax checkpoint) teaches a smaller one through a KL term on the joint's output distributions,
mixed with the student's own RNN-T loss.

At every cell `(t, u)` of the output lattice (frame `t`, `u` labels emitted) both models give a
distribution over the vocabulary; the term is `KL(teacher || student)` averaged over the cells
of the batch, in nats. Two forms:

- `full`: over the whole vocabulary.
- `collapsed`: over three outcomes, blank, the correct next label `y[u]` and everything else
  (Panchapagesan et al., ICASSP 2021, "Efficient knowledge distillation for RNN-transducer
  models"): it keeps what the transducer's loss depends on and costs O(1) per cell to compare;
  at `u = U` (no next label) the outcomes are blank and the rest.

and two ways to weigh the cells (`cells`):

- `lattice`: every valid cell alike (the paper's sum over the lattice). Most of an utterance's
  `T (U + 1)` cells lie far from any likely alignment (u labels emitted by frame t where the
  speech holds far fewer or far more), and the student spends its capacity matching the
  teacher's guesses there.
- `alignment`: each cell weighted by the teacher's posterior probability that the alignment
  passes through it, `gamma(t, u) = exp(alpha(t, u) + beta(t, u) - log P(y | x))` on the
  teacher's lattice (its RNN-T forward-backward; `gamma` sums to `T + U` over an utterance, one
  per arc of a path), so the term is the KL per aligned step. Ours: this weighting is not the
  paper's.

Either form may soften both distributions by a temperature `tau` first (`temperature`; Hinton
et al., 2015, "Distilling the knowledge in a neural network": logits / tau, the KL scaled by
tau^2 so its gradients keep their size), to show the student the relative probabilities of
the outputs a confident teacher gives almost none; the alignment weights stay the teacher's
own distributions, at tau = 1.

A second KL, on the option `ctc`, teaches the encoder directly: `KL(teacher || student)` of the
auxiliary CTC heads' distributions at every frame below the time reduction (where the heads
read), averaged over the batch's real frames, at the same temperature. The joint's KL reaches
the encoder only through the joint and the lattice; this one gives the lower encoder a target
at each 30 ms frame (the frame-level distillation of hybrid and CTC acoustic models: Hinton et
al., 2015; Takashima et al., ICASSP 2018, "An investigation of a knowledge distillation method
for CTC acoustic models"). The term is `lattice KL + ctc * CTC KL`; both KLs are logged
(`loss/distill/lattice`, `loss/distill/ctc`) and share one teacher pass.

The teacher sees the clean log-mels of the batch's audio (with its own feature settings), never
the student's augmentation, and runs in inference mode. Teacher and student must share the
vocabulary and the frame rate (both checked when the step is traced: the lattices must align).

As a run declares it, the teacher and every option in the loss term:

  c.imports = ["compression.distillation"]          # registers the term `distill`
  c.loss.distill = ml_collections.ConfigDict(dict(
      weight=1.0, teacher="workdirs/big", form="collapsed", cells="lattice",
      temperature=1.0, ctc=0.0))                    # ctc > 0 needs a CTC head in both

The teacher's parameters are loaded from its run's newest checkpoint (or `step`) when the
student's run starts or resumes, and ride in the step's state, never in the student's
checkpoints: a student loads for inference without its teacher, and a resumed student needs
the teacher's workdir where the config says.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from flax import nnx

from asr import features as F
from asr.arrays import length_mask
from asr.losses import rnnt_loss_from_log_probs
from asr.losses.rnnt import arc_log_probs
from asr.training.objective import LossInputs, LossTerm, register_loss_term

FORMS = ("full", "collapsed")
CELLS = ("lattice", "alignment")


def kl_full(teacher_logits: jax.Array, student_logits: jax.Array,
            temperature: float = 1.0) -> jax.Array:
  """`[..., V]` logits of both -> `tau^2 KL(p_teacher || p_student)` `[...]`, nats, both
  distributions at temperature `tau` (softmax of logits / tau)."""
  log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
  return temperature ** 2 * jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1)


def collapse(logits: jax.Array, next_label: jax.Array, has_label: jax.Array) -> jax.Array:
  """`logits [..., V]`, the correct next label `[...]` (int) and whether there is one `[...]` ->
  log-probabilities of (blank, that label, the rest) `[..., 3]`; without a next label, the
  label's share is 0 (log = -inf is kept finite: -1e30) and the rest is all but blank."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  blank = logp[..., 0]
  label = jnp.take_along_axis(logp, next_label[..., None], -1)[..., 0]
  labelled = has_label & (next_label != 0)
  label = jnp.where(labelled, label, -1e30)
  # log(1 - p_blank - p_label), computed as logsumexp over the other outputs (stable).
  vocab = jnp.arange(logits.shape[-1])
  other = (vocab != 0) & ((vocab != next_label[..., None]) | ~labelled[..., None])
  rest = jax.nn.logsumexp(jnp.where(other, logp, -jnp.inf), -1)
  return jnp.stack([blank, label, rest], -1)


def kl_collapsed(teacher_logits, student_logits, next_label, has_label,
                 temperature: float = 1.0) -> jax.Array:
  """`kl_full` over the three collapsed outcomes of each distribution at temperature `tau`."""
  log_t = collapse(teacher_logits.astype(jnp.float32) / temperature, next_label, has_label)
  log_s = collapse(student_logits.astype(jnp.float32) / temperature, next_label, has_label)
  p_t = jnp.exp(log_t)
  return temperature ** 2 * jnp.sum(jnp.where(p_t > 0, p_t * (log_t - log_s), 0.0), -1)


def alignment_occupancy(blank: jax.Array, label: jax.Array, frames: jax.Array,
                        label_lengths: jax.Array) -> jax.Array:
  """A transducer's arc log-probabilities, blank `[B, T, U+1]` and label `[B, T, U]`, with the
  lengths `[B]` -> `gamma [B, T, U+1]`: the posterior probability that an alignment of the
  labels passes through each cell (0 off the utterance's lattice). Every path leaves each cell
  it visits by one arc, so `gamma` is the sum of the posteriors of a cell's two outgoing arcs:
  minus the gradient of `-log P(y | x)` with respect to their log-probabilities (the loss's
  backward pass computes exactly that, `exp(alpha + arc + beta - log P)`)."""
  grad_blank, grad_label = jax.grad(
      lambda b, l: jnp.sum(rnnt_loss_from_log_probs(b, l, frames, label_lengths)), (0, 1))(
          blank, label)
  return -(grad_blank + jnp.pad(grad_label, ((0, 0), (0, 0), (0, 1))))


def lattice_kl(teacher_model, student_model, t_encoded, s_encoded, labels, label_lengths,
               form: str, cells: str = "lattice",
               temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """KL summed over each utterance's lattice `[B]` with every valid cell weighing 1 (`cells=
  "lattice"`) or the teacher's alignment occupancy (`"alignment"`, from the teacher's own
  distributions, at temperature 1 whatever `temperature` softens the KL's), and the weights'
  sum `[B]` (the cell count, or `T + U`). Chunked over frames like the RNN-T loss's lean path,
  so `[B, T, U+1, V]` is never held."""
  def projected(model, encoded):
    enc = model.joint.project_encoder(encoded.frames)
    pred = model.joint.project_prediction(model.predictor(labels))
    return enc, pred
  t_enc, t_pred = projected(teacher_model, t_encoded)
  s_enc, s_pred = projected(student_model, s_encoded)
  t_enc = jax.lax.stop_gradient(t_enc)
  t_pred = jax.lax.stop_gradient(t_pred)
  b, frames, _ = s_enc.shape
  u1 = labels.shape[1] + 1
  next_label = jnp.pad(labels, ((0, 0), (0, 1)))                          # [B, U+1]
  has_label = length_mask(label_lengths, u1)                              # u < U
  in_lattice = length_mask(label_lengths + 1, u1)                         # u <= U
  chunk = 16
  pad = -frames % chunk

  def padded(x):
    return jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, chunk, x.shape[-1]) \
        .transpose(1, 0, 2, 3)
  valid_t = length_mask(s_encoded.lengths, frames + pad)                  # [B, T + pad]
  weight = (valid_t[:, :, None] & in_lattice[:, None, :]).astype(jnp.float32)
  if cells == "alignment":
    def arcs(_, te):
      return None, arc_log_probs(teacher_model.joint(te, t_pred), labels, 0)
    _, (blank, label) = jax.lax.scan(arcs, None, padded(t_enc))         # [T / C, B, C, ...]
    def whole(x):
      return x.transpose(1, 0, 2, 3).reshape(b, frames + pad, x.shape[-1])
    weight = weight * jax.lax.stop_gradient(alignment_occupancy(
        whole(blank), whole(label), s_encoded.lengths, label_lengths))
  elif cells != "lattice":
    raise ValueError(f"distillation: cells={cells!r} is not one of {', '.join(CELLS)}")
  chunked_weight = weight.reshape(b, -1, chunk, u1).transpose(1, 0, 2, 3)

  def one(total, xs):
    te, se, w = xs
    t_logits = teacher_model.joint(te, t_pred)                          # [B, C, U+1, V]
    s_logits = student_model.joint(se, s_pred)
    if form == "full":
      kl = kl_full(jax.lax.stop_gradient(t_logits), s_logits, temperature)
    else:
      shape = t_logits.shape[:3]
      kl = kl_collapsed(jax.lax.stop_gradient(t_logits), s_logits,
                        jnp.broadcast_to(next_label[:, None], shape),
                        jnp.broadcast_to(has_label[:, None], shape), temperature)
    return total + jnp.sum(jnp.where(w > 0, w * kl, 0.0), (1, 2)), None
  total, _ = jax.lax.scan(one, jnp.zeros(b, jnp.float32), (padded(t_enc), padded(s_enc),
                                                           chunked_weight))
  return total, jnp.sum(weight, (1, 2))


def _check_frames(workdir: str, teacher_frames: jax.Array, student_frames: jax.Array,
                  teacher_unit: str, student_unit: str) -> None:
  """Fails, naming the teacher, when its frames `[B, T, ...]` and the student's do not align."""
  if teacher_frames.shape[1] != student_frames.shape[1]:
    raise ValueError(
        f"distillation: the teacher ({workdir}) gives {teacher_frames.shape[1]} frames"
        f"{teacher_unit} where the student gives {student_frames.shape[1]}{student_unit}: "
        "they must align (the same frame rate)")


def ctc_kl(teacher_model, student_model, t_encoded, s_encoded,
           temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """KL(teacher || student) of the CTC heads' distributions summed over each utterance's frames
  below the time reduction (where the heads read; the encoder's output frames where it has
  none) `[B]`, and those frames' count `[B]`."""
  t_frames = t_encoded.aux.get("pre_reduction", t_encoded.frames)
  s_frames = s_encoded.aux.get("pre_reduction", s_encoded.frames)
  lengths = s_encoded.aux.get("pre_reduction_lengths", s_encoded.lengths)
  kl = kl_full(jax.lax.stop_gradient(teacher_model.ctc_head(t_frames)),
               student_model.ctc_head(s_frames), temperature)             # [B, T]
  valid = length_mask(lengths, s_frames.shape[1])
  return jnp.sum(jnp.where(valid, kl, 0.0), 1), lengths.astype(jnp.float32)


@register_loss_term("distill")
class Distill(LossTerm):
  """KL(teacher || student) per lattice cell (each weighed as `cells` says) over the batch's
  real utterances, plus `ctc` times the CTC heads' KL per real frame below the time
  reduction."""

  def __init__(self, teacher: str, step: int | None = None, form: str = "collapsed",
               cells: str = "lattice", temperature: float = 1.0, ctc: float = 0.0):
    from asr.training.loop import load_for_inference, model_config
    if form not in FORMS:
      raise ValueError(f"distillation: form={form!r} is not one of {', '.join(FORMS)}")
    if cells not in CELLS:
      raise ValueError(f"distillation: cells={cells!r} is not one of {', '.join(CELLS)}")
    if not temperature > 0:
      raise ValueError(f"distillation: temperature={temperature!r} must be above 0")
    if not ctc >= 0:
      raise ValueError(f"distillation: ctc={ctc!r} must be 0 (off) or above")
    if not (pathlib.Path(teacher) / "config.json").exists():
      raise FileNotFoundError(f"distillation: teacher workdir {teacher!r} holds no config.json "
                              "(the teacher is a finished training run)")
    self.workdir, self.form, self.cells = str(teacher), form, cells
    self.temperature, self.ctc = float(temperature), float(ctc)
    self.config, self.graphdef, self._variables, self.step = load_for_inference(teacher, step)
    self.features = model_config(self.config).features

  def init(self) -> dict:
    params, model_state = self._variables
    return {"params": params, "model_state": model_state}

  def model(self, state) -> nnx.Module:
    """The teacher, from the arrays the step carries."""
    return nnx.merge(self.graphdef, state["params"], state["model_state"])

  def __call__(self, x: LossInputs, state) -> tuple[jax.Array, dict]:
    teacher_model = self.model(state)
    teacher_vocab = teacher_model.joint.out.kernel.shape[-1]
    student_vocab = x.model.joint.out.kernel.shape[-1]
    if teacher_vocab != student_vocab:
      raise ValueError(f"distillation: the teacher ({self.workdir}) has a vocabulary of "
                       f"{teacher_vocab}, the student {student_vocab}: they must share one")
    feats, lengths = F.log_mel(x.batch["audio"], x.batch["audio_lengths"], self.features)
    t_encoded = teacher_model.encode(feats, lengths)
    _check_frames(self.workdir, t_encoded.frames, x.encoded.frames,
                  f" of {t_encoded.frame_seconds * 1000:g} ms",
                  f" of {x.encoded.frame_seconds * 1000:g} ms")
    kl, cells = lattice_kl(teacher_model, x.model, t_encoded, x.encoded, x.batch["labels"],
                           x.batch["label_lengths"], self.form, self.cells, self.temperature)
    real_cells = jnp.sum(jnp.where(x.is_real, cells, 0.0))
    value = jnp.sum(jnp.where(x.is_real, kl, 0.0)) / jnp.maximum(real_cells, 1)
    metrics = {"cells": real_cells}
    if self.ctc > 0:
      metrics["lattice"] = value
      ctc_value, metrics["frames"] = self._ctc_value(teacher_model, t_encoded, x)
      metrics["ctc"] = ctc_value
      value = value + self.ctc * ctc_value
    return value, metrics

  def _ctc_value(self, teacher_model, t_encoded, x: LossInputs) -> tuple[jax.Array, jax.Array]:
    """The CTC heads' KL per real frame below the time reduction, and those frames' count."""
    if teacher_model.ctc_head is None or x.model.ctc_head is None:
      who = "the teacher" if teacher_model.ctc_head is None else "the student"
      raise ValueError(f"loss.distill ctc={self.ctc:g}: {who} has no CTC head (a run "
                       "trained with loss.ctc > 0 has one)")
    _check_frames(self.workdir, t_encoded.aux.get("pre_reduction", t_encoded.frames),
                  x.encoded.aux.get("pre_reduction", x.encoded.frames),
                  " below its time reduction", "")
    kl, frames = ctc_kl(teacher_model, x.model, t_encoded, x.encoded, self.temperature)
    real_frames = jnp.sum(jnp.where(x.is_real, frames, 0.0))
    return jnp.sum(jnp.where(x.is_real, kl, 0.0)) / jnp.maximum(real_frames, 1), real_frames
