"""The training objective: a weighted set of named loss terms.

`loss = sum_term weight(term, step) * term(inputs)`, where a term's weight is `config.loss.<term>`,
times the schedule `config.schedules.<term>_weight` when the run declares one. Every term is
logged unweighted (`loss/<term>`) beside its weight (`weight/<term>`).

A term is a function of `LossInputs` (the model, its transformed parameters, the batch, one
encoder pass and the scores of the labels against it, the step's schedule values and a PRNG
key) returning a scalar, or a scalar and a dict of its own metrics (logged `loss/<term>/<k>`).
`rnnt` and `ctc` are built in; a later mechanism adds its own
(`compute`, `latency`, `distill`, `mwer`, `quant_reg`) with `@register_loss_term(name)` in a
module the run imports (`config.imports`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

LOSS_TERMS: dict[str, Callable] = {}


@dataclasses.dataclass
class LossInputs:
  model: object            # the Transducer, merged from the transformed parameters
  params: object           # those parameters (nnx.State)
  batch: dict              # the batch contract's arrays
  encoded: object          # EncoderOutput of this batch (its `aux` for penalties)
  nll: dict                # model.score(...): per-utterance `rnnt` (and `ctc`) [B]
  is_real: jax.Array       # [B] bool, False on batch-padding rows
  num_labels: jax.Array    # labels over the real rows (at least 1)
  schedules: dict          # name -> this step's value
  rng: jax.Array           # a key for this term's randomness
  transforms: tuple = ()   # the run's parameter transforms, [(name, transform)]: a term
                           # that needs one (`quant_reg`, `distill`) finds it here
  transform_states: dict = dataclasses.field(default_factory=dict)   # their states, by name
  memo: dict = dataclasses.field(default_factory=dict)   # what one term computed that another
                           # of the same step reuses (a teacher's encoder pass), by a key the
                           # terms' module owns


def register_loss_term(name: str):
  def register(fn):
    LOSS_TERMS[name] = fn
    return fn
  return register


def _per_label(x: LossInputs, values: jax.Array) -> jax.Array:
  # where, not a product: a padding row's value may be inf, and inf * 0 is NaN.
  return jnp.sum(jnp.where(x.is_real, values, 0.0)) / x.num_labels


@register_loss_term("rnnt")
def rnnt_term(x: LossInputs) -> jax.Array:
  """The transducer's negative log-likelihood, nats per label (Graves, 2012)."""
  return _per_label(x, x.nll["rnnt"])


@register_loss_term("ctc")
def ctc_term(x: LossInputs) -> tuple[jax.Array, dict]:
  """Auxiliary CTC on the encoder, nats per label: the encoder learns alignments faster. Over
  the utterances whose frames can hold their labels; the others are counted (`infeasible`)."""
  use = x.is_real & x.nll["ctc_feasible"]
  labels = jnp.sum(jnp.where(use, x.batch["label_lengths"], 0))
  value = jnp.sum(jnp.where(use, x.nll["ctc"], 0.0)) / jnp.maximum(labels, 1)
  return value, {"infeasible": jnp.sum(x.is_real & ~x.nll["ctc_feasible"])}


def check_terms(weights: dict, schedules: dict) -> None:
  """Fails, naming it, on a weight for an unknown term or a `<term>_weight` schedule for a term
  with no weight."""
  unknown = sorted(set(weights) - set(LOSS_TERMS))
  if unknown:
    raise ValueError(f"config.loss names unknown term(s) {', '.join(unknown)}; registered: "
                     f"{', '.join(sorted(LOSS_TERMS))} (a term from another package is "
                     "registered by a module listed in config.imports)")
  orphans = sorted(n for n in schedules if n.endswith("_weight")
                   and n.removesuffix("_weight") in LOSS_TERMS
                   and n.removesuffix("_weight") not in weights)
  if orphans:
    raise ValueError(f"schedule(s) {', '.join(orphans)} scale a loss term with no weight in "
                     "config.loss")


def active_terms(weights: dict, schedules: dict) -> dict[str, float]:
  """The terms that count: a non-zero weight, or a weight schedule."""
  return {n: float(w) for n, w in sorted(weights.items())
          if w != 0 or f"{n}_weight" in schedules}


def objective(terms: dict[str, float], x: LossInputs) -> tuple[jax.Array, dict]:
  """(weighted total, metrics: `loss/<term>` unweighted and `weight/<term>`)."""
  total, metrics = 0.0, {}
  for name, base in terms.items():
    value = LOSS_TERMS[name](x)
    if isinstance(value, tuple):  # (value, the term's own metrics)
      value, extra = value
      metrics.update({f"loss/{name}/{k}": jnp.asarray(v, jnp.float32) for k, v in extra.items()})
    weight = base * x.schedules.get(f"{name}_weight", 1.0)
    total = total + weight * value
    metrics[f"loss/{name}"] = value
    metrics[f"weight/{name}"] = jnp.asarray(weight, jnp.float32)
  return total, metrics
