"""Parameter transforms: functions of the parameters that the model sees in the training step,
with state of their own (pruning masks, quantizer ranges) in the train state and checkpoints.

A transform has three methods, all pure and jittable:

  init(params) -> state
  apply(params, state, step, schedules) -> params    before the model runs, inside the loss
      (so gradients flow through it: a mask, a straight-through fake quantizer)
  update(params, state, step, schedules) -> (params, state)    after the optimizer's update
      (recompute a mask every N steps; keep pruned weights at exactly zero)

Runs declare transforms in `config.transforms`, one block per name, each naming a factory
`"module:callable"` that is called with the block's other keys; blocks run in the order of
their `order` key (then name). The factory is imported by name, so `asr` never imports the
packages (`compression`, `hardware`) that provide them:

  c.transforms.prune = ml_collections.ConfigDict(dict(
      factory="compression.sparsity:gradual_magnitude_pruning", order=0, target=0.5))

Evaluation and export see `apply`'s output too (`inference_params`).
"""

from __future__ import annotations

import importlib
from typing import Protocol

import jax


class ParamTransform(Protocol):
  def init(self, params): ...
  def apply(self, params, state, step, schedules): ...
  def update(self, params, state, step, schedules): ...


def _import(where: str, path: str):
  module, _, attr = path.partition(":")
  if not module or not attr:
    raise ValueError(f"{where}.factory={path!r} must be 'module:callable'")
  try:
    return getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"{where}.factory={path!r} cannot be imported: {e}") from e


def build_transforms(blocks: dict, section: str = "transforms") -> list[tuple[str, object]]:
  """`{name: {"factory": "module:callable", "order": int, **options}}` -> `[(name,
  factory(**options))]` in application order. Also builds `config.surgery`'s blocks (the
  same shape; `section` names the config section in errors)."""
  built = []
  for name, block in blocks.items():
    block = dict(block)
    if "factory" not in block:
      raise ValueError(f"{section}.{name} needs a factory ('module:callable')")
    factory = _import(f"{section}.{name}", block.pop("factory"))
    order = block.pop("order", 0)
    built.append((order, name, factory(**block)))
  return [(name, t) for _, name, t in sorted(built, key=lambda x: (x[0], x[1]))]


def init_states(transforms, params) -> dict:
  return {name: t.init(params) for name, t in transforms}


def apply_all(transforms, params, states: dict, step: jax.Array, schedules: dict):
  for name, t in transforms:
    params = t.apply(params, states[name], step, schedules)
  return params


def update_all(transforms, params, states: dict, step: jax.Array, schedules: dict):
  states = dict(states)
  for name, t in transforms:
    params, states[name] = t.update(params, states[name], step, schedules)
  return params, states
