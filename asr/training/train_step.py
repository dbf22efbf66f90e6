"""The jitted training step: features, augmentation, parameter transforms, the model, the
weighted loss terms, AdamW at the scheduled learning rate, and a non-finite guard.

Train state is one pytree (a dict):
  params       nnx.State of the model's parameters (what the optimizer trains)
  model_state  the model's other variables (feature statistics, activation ranges): saved,
               never trained; layers with statistics update them in the forward pass
  opt_state    the optimizer's state
  transforms   each parameter transform's state, by name
  terms        arrays loss terms carry (a teacher's parameters), by term: rebuilt from the
               config when a run starts or resumes, never checkpointed (`checkpointed`)
  guard        non-finite counters: `in_a_row`, `total`, `tripped_at` (the step a run of
               `limit` skipped steps ended, 0 if none) - checked by the loop at log steps
  step         int32
  rng          the run's base key; step `s` uses `fold_in(rng, s)`, so randomness is a function
               of the step and a resumed run draws what an uninterrupted one would

`train_step(state, batch) -> (state, metrics)` donates the state. Every schedule, the learning
rate included, is a function of `state["step"]` evaluated inside it: a skipped (non-finite)
step advances the step and so the schedules, and nothing recompiles as they move.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from asr import features as F
from asr.arrays import tree_where
from asr.models.context import Context
from asr.training import objective
from asr.training import transforms as T

BATCH_KEYS = ("audio", "audio_lengths", "labels", "label_lengths")


def split_model(model: nnx.Module):
  """(graphdef, params, model_state): the trained parameters and everything else."""
  return nnx.split(model, nnx.Param, ...)


def make_optimizer(weight_decay: float, clip_norm: float) -> optax.GradientTransformation:
  """AdamW's direction without its learning rate: the step scales it by the scheduled rate
  (optax's own count would fall behind the step on every skipped update)."""
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.scale_by_adam(),
                     optax.add_decayed_weights(weight_decay))


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int,
                     transforms=(), terms: dict | None = None) -> dict:
  """`terms`: the run's loss terms (`objective.build_terms`), whose arrays the state carries."""
  _, params, model_state = split_model(model)
  zero = lambda: jnp.zeros((), jnp.int32)  # one buffer each: the step donates them all
  return {"params": params, "model_state": model_state, "opt_state": tx.init(params),
          "transforms": T.init_states(transforms, params),
          "terms": objective.init_term_states(terms or {}),
          "guard": {"in_a_row": zero(), "total": zero(), "tripped_at": zero()},
          "step": zero(), "rng": jax.random.PRNGKey(seed)}


def checkpointed(state: dict) -> dict:
  """The part of a train state a checkpoint holds: all but the loss terms' arrays."""
  return {k: v for k, v in state.items() if k != "terms"}


def inference_variables(state: dict, transforms=(), schedules: dict | None = None):
  """The parameters a trained model runs with (its transforms applied, at the state's step)
  and its other variables: `nnx.merge(graphdef, *inference_variables(...))` is the model."""
  values = {name: fn(state["step"]) for name, fn in (schedules or {}).items()}
  params = T.apply_all(transforms, state["params"], state["transforms"], state["step"], values)
  return params, state["model_state"]


@dataclasses.dataclass(frozen=True)
class StepConfig:
  terms: tuple = (("rnnt", objective.BuiltTerm(1.0, objective.rnnt_term)),)   # (name,
                                     # objective.BuiltTerm) of each active loss term
  augment: F.AugmentConfig | None = None
  features: F.FeatureConfig = F.FeatureConfig()
  nonfinite_limit: int = 5           # skipped steps in a row that trip the guard


def make_train_step(graphdef, tx: optax.GradientTransformation, cfg: StepConfig,
                    schedules: dict[str, Callable], transforms=()) -> Callable:
  """The un-jitted step; `asr.training.loop` jits it with shardings and donation.
  `schedules` must hold `learning_rate`."""
  terms = dict(cfg.terms)

  def loss_fn(params, state, batch, rng, values):
    k_augment, k_model, k_terms = jax.random.split(rng, 3)
    seen = T.apply_all(transforms, params, state["transforms"], state["step"], values)
    # Fresh variables of this trace (copy): layers with statistics may then update them.
    model = nnx.merge(graphdef, seen, state["model_state"], copy=True)
    loss, metrics = forward(model, seen, state, batch, values, k_augment, k_model, k_terms)
    # Statistics the forward pass updated (activation ranges); unchanged for most models.
    return loss, (metrics, split_model(model)[2])

  def forward(model, seen, state, batch, values, k_augment, k_model, k_terms):
    # Named scopes name the step's parts in profiles (`benchmarks.step_ops`).
    with jax.named_scope("features"):
      feats, lengths = F.log_mel(batch["audio"], batch["audio_lengths"], cfg.features)
      if cfg.augment is not None:
        # A schedule `augment_strength` ramps augmentation in (SpecAugment late in training).
        feats, lengths = F.augment(k_augment, feats, lengths, cfg.augment,
                                   values.get("augment_strength", 1.0))
    # The model's own pass updates statistics; a loss term that runs it again does not.
    ctx = Context(train=True, rng=k_model, schedules=values, statistics=True)
    with jax.named_scope("encoder"):
      encoded = model.encode(feats, lengths, ctx)
    with jax.named_scope("score"):
      nll = model.score(encoded, batch["labels"], batch["label_lengths"], ctx)
    is_real = batch["audio_lengths"] > 0
    real = is_real.astype(jnp.float32)
    inputs = objective.LossInputs(
        model=model, params=seen, batch=batch, encoded=encoded, nll=nll, is_real=is_real,
        num_labels=jnp.maximum(jnp.sum(batch["label_lengths"] * real), 1.0), schedules=values,
        rng=k_terms, transforms=tuple(transforms), transform_states=state["transforms"],
        step=state["step"])
    with jax.named_scope("terms"):
      loss, metrics = objective.objective(terms, inputs, state.get("terms"))
    frames = jnp.sum(encoded.lengths * real)
    encoder_flops = jnp.sum(encoded.flops * real[:, None])
    decoding = jnp.sum(model.decoding_flops(encoded.lengths, batch["label_lengths"]) * real)
    audio_s = jnp.sum(batch["audio_lengths"] * real) / cfg.features.sample_rate
    metrics.update(utterances=real.sum(),
                   flops_per_frame=encoder_flops / jnp.maximum(frames, 1.0),
                   flops_per_second=(encoder_flops + decoding) / jnp.maximum(audio_s, 1e-9))
    if "fast" in encoded.aux:   # a branching encoder's weight on its cheap branch
      metrics["fast_fraction"] = (jnp.sum(encoded.aux["fast"] * real[:, None])
                                  / jnp.maximum(frames, 1.0))
    if "open" in encoded.aux:   # a gated encoder's share of open sub-block gates
      metrics["open_fraction"] = (jnp.sum(encoded.aux["open"] * real[:, None])
                                  / jnp.maximum(frames, 1.0))
    return loss, metrics

  def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
    step = state["step"]
    values = {name: fn(step) for name, fn in schedules.items()}
    rng = jax.random.fold_in(state["rng"], step)
    (loss, (aux, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state, batch, rng, values)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    with jax.named_scope("optimizer"):
      direction, opt_state = tx.update(grads, state["opt_state"], state["params"])
    lr = values["learning_rate"]
    params = jax.tree.map(lambda p, d: p - lr * d, state["params"], direction)
    params, t_states = T.update_all(transforms, params, state["transforms"], step, values)
    # A non-finite loss or gradient skips the update; the guard counts it.
    guard = state["guard"]
    in_a_row = jnp.where(finite, 0, guard["in_a_row"] + 1)
    tripped = (guard["tripped_at"] == 0) & (in_a_row >= cfg.nonfinite_limit)
    new_state = {
        "params": tree_where(finite, params, state["params"]),
        "opt_state": tree_where(finite, opt_state, state["opt_state"]),
        "transforms": tree_where(finite, t_states, state["transforms"]),
        "model_state": tree_where(finite, model_state, state["model_state"]),
        "guard": {"in_a_row": in_a_row, "total": guard["total"] + (~finite),
                  "tripped_at": jnp.where(tripped, step + 1, guard["tripped_at"])},
        "terms": state.get("terms", {}), "step": step + 1, "rng": state["rng"]}
    metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": (~finite).astype(jnp.int32),
               "param_norm": optax.global_norm(state["params"]), "learning_rate": lr,
               **{f"schedule/{n}": v for n, v in values.items() if n != "learning_rate"}, **aux}
    return new_state, metrics

  return train_step


def check_guard(guard: dict, limit: int, recent_ids: dict) -> None:
  """Host side, at log steps: raises if `limit` steps in a row were skipped, naming the step
  and the batches of that run that are still in `recent_ids` (step -> ids)."""
  end = int(guard["tripped_at"])
  if not end:
    return
  ids = [i for s in range(end - limit + 1, end + 1) for i in list(recent_ids.get(s, []))[:2] if i]
  raise FloatingPointError(
      f"step {end}: loss or gradient non-finite {limit} steps in a row (updates skipped)"
      + (f"; those batches hold {', '.join(ids[:8])}" if ids else "")
      + ". Lower optim.peak_lr or check the data.")


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
