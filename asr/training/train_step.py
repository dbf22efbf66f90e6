"""The jitted training step: features, augmentation, RNN-T (+ CTC) loss, AdamW, a non-finite guard.

Train state is one pytree (a dict): `params` (nnx.State of the model's parameters),
`opt_state`, `step` (int32) and `rng` (the run's base key; step `s` uses `fold_in(rng, s)`, so
randomness is a function of the step and a resumed run draws what an uninterrupted one would).
`train_step(state, batch) -> (state, metrics)` donates the state; schedules are functions of
`step` evaluated inside it, so nothing recompiles as they move.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from asr import features as F

BATCH_KEYS = ("audio", "audio_lengths", "labels", "label_lengths")


def learning_rate_schedule(peak_lr: float, warmup_steps: int, total_steps: int,
                           end_lr_ratio: float = 0.05) -> optax.Schedule:
  """Linear warm-up to `peak_lr`, then cosine decay to `peak_lr * end_lr_ratio`."""
  return optax.warmup_cosine_decay_schedule(
      0.0, peak_lr, max(1, warmup_steps), max(warmup_steps + 1, total_steps),
      end_value=peak_lr * end_lr_ratio)


def make_optimizer(schedule: optax.Schedule, weight_decay: float, clip_norm: float):
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(schedule, weight_decay=weight_decay))


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int) -> dict:
  params = nnx.state(model, nnx.Param)
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
          "rng": jax.random.PRNGKey(seed)}


@dataclasses.dataclass(frozen=True)
class StepConfig:
  ctc_weight: float = 0.0
  augment: F.AugmentConfig | None = None
  features: F.FeatureConfig = F.FeatureConfig()


def make_loss_fn(graphdef, cfg: StepConfig) -> Callable:
  """`loss_fn(params, batch, rng, train) -> (loss, aux)`; loss is summed negative
  log-likelihood per label over the batch's real rows (padding rows have `audio_lengths == 0`)."""

  def loss_fn(params, batch, rng, train: bool):
    model = nnx.merge(graphdef, params)
    feats, lengths = F.featurize(batch["audio"], batch["audio_lengths"], cfg.features)
    if train and cfg.augment is not None:
      feats, lengths = F.augment(rng, feats, lengths, cfg.augment)
    out = model.losses(feats, lengths, batch["labels"], batch["label_lengths"], train=train)
    is_real = batch["audio_lengths"] > 0
    real = is_real.astype(jnp.float32)
    labels = jnp.maximum(jnp.sum(batch["label_lengths"] * real), 1.0)
    # where, not a product: a padding row's loss may be inf, and inf * 0 is NaN.
    rnnt = jnp.sum(jnp.where(is_real, out["rnnt"], 0.0)) / labels
    loss = rnnt
    aux = {"rnnt_per_label": rnnt, "utterances": real.sum()}
    if "ctc" in out:
      ctc = jnp.sum(jnp.where(is_real, out["ctc"], 0.0)) / labels
      loss = loss + cfg.ctc_weight * ctc
      aux["ctc_per_label"] = ctc
    frames = jnp.maximum(jnp.sum(out["frame_lengths"] * real), 1.0)
    aux["flops_per_frame"] = jnp.sum(out["flops"] * real[:, None]) / frames
    return loss, aux

  return loss_fn


def make_train_step(graphdef, tx: optax.GradientTransformation, cfg: StepConfig,
                    schedule: optax.Schedule | None = None) -> Callable:
  """The un-jitted step; `asr.training.loop` jits it with shardings and donation."""
  loss_fn = make_loss_fn(graphdef, cfg)

  def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
    rng = jax.random.fold_in(state["rng"], state["step"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, rng, True)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    # A non-finite loss or gradient skips the update (and is counted by the caller).
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = {"params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "step": state["step"] + 1, "rng": state["rng"]}
    metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": 1 - finite.astype(jnp.int32),
               "param_norm": optax.global_norm(state["params"]), **aux}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state["step"])
    return new_state, metrics

  return train_step


class NonFiniteGuard:
  """Counts skipped (non-finite) steps; raises after `limit` in a row with the batch named."""

  def __init__(self, limit: int):
    self.limit, self.in_a_row, self.total = limit, 0, 0

  def update(self, nonfinite: bool, step: int, batch_ids) -> None:
    if not nonfinite:
      self.in_a_row = 0
      return
    self.in_a_row += 1
    self.total += 1
    if self.in_a_row >= self.limit:
      ids = ", ".join(i for i in list(batch_ids)[:4] if i)
      raise FloatingPointError(
          f"step {step}: loss or gradient non-finite {self.in_a_row} steps in a row "
          f"(updates skipped); last batch holds {ids}. Lower optim.peak_lr or check the data.")


class CompileGuard:
  """Fails loudly if a jitted function traces more often than the data has shapes.

  Call `traced()` inside the function being jitted (it runs once per trace, not per call).
  """

  def __init__(self, limit: int, name: str = "train_step"):
    self.limit, self.name, self.count = limit, name, 0

  def traced(self) -> None:
    self.count += 1
    if self.count > self.limit:
      raise RuntimeError(f"{self.name} compiled {self.count} times, more than the {self.limit} "
                         "bucket shapes allow: some batch has a shape outside the buckets")
