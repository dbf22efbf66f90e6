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

A term with options is a `LossTerm` class: `config.loss.<term>` is then a dict, its `weight`
and the options, which are the keyword parameters of the class's constructor (checked: an
option it does not declare is refused by name) and are fixed for the run:

  c.loss.distill = ml_collections.ConfigDict(dict(weight=3.0, teacher="workdirs/big",
                                                  form="collapsed"))

The term is built once per run (`build_terms`); arrays it carries into the step (a teacher's
parameters) come from its `init()` and ride in the train state under `terms/<name>`, never in
checkpoints: they are rebuilt from the options whenever a run starts, resumes or is evaluated,
so a model loads for inference without what its training terms needed.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

LOSS_TERMS: dict[str, Callable | type] = {}


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
                           # that needs one (`quant_reg`) finds it here
  transform_states: dict = dataclasses.field(default_factory=dict)   # their states, by name
  step: jax.Array | int = 0  # the step being taken (a term that acts on some steps only)


class LossTerm:
  """A loss term with options: constructed once per run with them (the constructor's keyword
  parameters are the options it declares), then called in every step with the inputs and
  the arrays its `init()` made."""

  def init(self) -> Any:
    """Arrays the step carries for this term (a pytree; `{}` if none)."""
    return {}

  def attach(self, tokenizer) -> None:
    """Called once with the run's tokenizer (`build_terms`): a term that counts words needs
    its pieces. Most terms need nothing."""

  def __call__(self, x: LossInputs, state: Any) -> jax.Array | tuple[jax.Array, dict]:
    raise NotImplementedError


def register_loss_term(name: str):
  """Decorator: registers a term function `fn(x: LossInputs)` or a `LossTerm` class."""
  def register(fn):
    LOSS_TERMS[name] = fn
    return fn
  return register


@dataclasses.dataclass(frozen=True)
class TermSpec:
  """One `config.loss` entry: its weight and its options."""
  weight: float
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def declared_options(name: str) -> dict[str, Any]:
  """`{option: default}` of a registered term (a default of `inspect.Parameter.empty`: the
  option is required); a term function has none."""
  term = LOSS_TERMS[name]
  if not isinstance(term, type):
    return {}
  params = inspect.signature(term.__init__).parameters
  return {k: p.default for k, p in params.items()
          if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


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


def term_specs(loss: Mapping, schedules: Mapping) -> dict[str, TermSpec]:
  """`config.loss` as `{term: TermSpec}`, checked: fails, naming it, on an unknown term, an
  option its term does not declare or a required one left out, an entry without a weight, or
  a `<term>_weight` schedule for a term with no weight."""
  unknown = sorted(set(loss) - set(LOSS_TERMS))
  if unknown:
    raise ValueError(f"config.loss names unknown term(s) {', '.join(unknown)}; registered: "
                     f"{', '.join(sorted(LOSS_TERMS))} (a term from another package is "
                     "registered by a module listed in config.imports)")
  specs = {}
  for name, entry in sorted(loss.items()):
    declared = declared_options(name)
    if not isinstance(entry, Mapping):
      entry = {"weight": entry}
    entry = dict(entry)
    if "weight" not in entry:
      raise ValueError(f"config.loss.{name} has options but no weight")
    weight = entry.pop("weight")
    extra = sorted(set(entry) - set(declared))
    if extra:
      offered = ", ".join(sorted(declared)) or "none"
      raise ValueError(f"config.loss.{name} has no option(s) {', '.join(extra)}; its options: "
                       f"{offered}")
    missing = sorted(k for k, v in declared.items()
                     if v is inspect.Parameter.empty and k not in entry)
    if missing:
      raise ValueError(f"config.loss.{name} needs option(s) {', '.join(missing)}")
    specs[name] = TermSpec(float(weight), entry)
  orphans = sorted(n for n in schedules if n.endswith("_weight")
                   and n.removesuffix("_weight") in LOSS_TERMS
                   and n.removesuffix("_weight") not in specs)
  if orphans:
    raise ValueError(f"schedule(s) {', '.join(orphans)} scale a loss term with no weight in "
                     "config.loss")
  return specs


def active_terms(specs: Mapping[str, TermSpec], schedules: Mapping) -> dict[str, TermSpec]:
  """The terms that count: a non-zero weight, or a weight schedule."""
  return {n: s for n, s in sorted(specs.items())
          if s.weight != 0 or f"{n}_weight" in schedules}


@dataclasses.dataclass(frozen=True)
class BuiltTerm:
  weight: float
  term: Callable           # the term function, or the `LossTerm` built with its options


def build_terms(loss: Mapping, schedules: Mapping, tokenizer=None) -> dict[str, BuiltTerm]:
  """The run's active terms, each built once (a `LossTerm` constructed with its options and
  attached to the run's `tokenizer`, when given)."""
  built = {}
  for name, spec in active_terms(term_specs(loss, schedules), schedules).items():
    term = LOSS_TERMS[name]
    if isinstance(term, type):
      term = term(**spec.options)
      if tokenizer is not None:
        term.attach(tokenizer)
    built[name] = BuiltTerm(spec.weight, term)
  return built


def init_term_states(terms: Mapping[str, BuiltTerm]) -> dict:
  """`{name: arrays}` of the terms that carry any (`LossTerm.init`)."""
  return {name: t.term.init() for name, t in terms.items() if isinstance(t.term, LossTerm)}


def objective(terms: Mapping[str, BuiltTerm], x: LossInputs,
              states: Mapping | None = None) -> tuple[jax.Array, dict]:
  """(weighted total, metrics: `loss/<term>` unweighted and `weight/<term>`); `states`:
  `init_term_states(terms)` as the train state carries them."""
  total, metrics = 0.0, {}
  for name, built in terms.items():
    if isinstance(built.term, LossTerm):
      if states is None or name not in states:
        raise ValueError(f"loss.{name} carries arrays the train state lacks (terms/{name}): "
                         "init_train_state(..., terms=...) makes them")
      value = built.term(x, states[name])
    else:
      value = built.term(x)
    base = built.weight
    if isinstance(value, tuple):  # (value, the term's own metrics)
      value, extra = value
      metrics.update({f"loss/{name}/{k}": jnp.asarray(v, jnp.float32) for k, v in extra.items()})
    weight = base * x.schedules.get(f"{name}_weight", 1.0)
    total = total + weight * value
    metrics[f"loss/{name}"] = value
    metrics[f"weight/{name}"] = jnp.asarray(weight, jnp.float32)
  return total, metrics
