"""Schedules: named values that are pure functions of the train state's step.

Each is evaluated inside the jitted step from `state["step"]`, so nothing recompiles as it moves
and a resumed or skip-interrupted run follows the same curve. The learning rate is one
(`learning_rate`, from `config.optim`); any other is declared under `config.schedules` by name,
reaches the loss terms and the model (temperatures, penalty weights, sparsity targets,
distillation weights) and is logged as `schedule/<name>`.

  c.schedules.ctc_weight = ml_collections.ConfigDict(dict(kind="linear", start=1.0, end=0.2,
                                                          begin_step=0, end_step=2000))

Kinds and their fields (steps are ints; before `begin_step` a ramp holds `start`, after
`end_step` it holds `end`):
  constant      value
  linear        start, end, begin_step, end_step
  cosine        start, end, begin_step, end_step             (half-cosine from start to end)
  exponential   start, end, begin_step, end_step             (geometric: both > 0; temperatures)
  polynomial    start, end, begin_step, end_step, power      (Zhu and Gupta, 2017, "To prune,
                                                              or not to prune": power 3 ramps
                                                              sparsity fast, then slowly)
  warmup_cosine peak, warmup_steps, end_step, end_ratio      (linear warm-up from 0, cosine
                                                              decay to peak * end_ratio)
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

RAMP = ("start", "end", "begin_step", "end_step")
KINDS = {
    "constant": ("value",),
    "linear": RAMP,
    "cosine": RAMP,
    "exponential": RAMP,
    "polynomial": RAMP + ("power",),
    "warmup_cosine": ("peak", "warmup_steps", "end_step", "end_ratio"),
}


def _progress(step, begin, end):
  """0 before `begin`, 1 after `end`, linear between (float32)."""
  return jnp.clip((jnp.asarray(step, jnp.float32) - begin) / max(end - begin, 1), 0.0, 1.0)


def make_schedule(name: str, spec: dict) -> Callable:
  """`spec` (a dict with `kind` and that kind's fields) -> `fn(step) -> float32 scalar`."""
  spec = dict(spec)
  kind = spec.pop("kind", None)
  if kind not in KINDS:
    raise ValueError(f"schedules.{name}: kind {kind!r} is not one of {', '.join(sorted(KINDS))}")
  missing = [f for f in KINDS[kind] if f not in spec]
  unknown = sorted(set(spec) - set(KINDS[kind]))
  if missing or unknown:
    raise ValueError(f"schedules.{name} ({kind}) needs {', '.join(KINDS[kind])}"
                     + (f"; missing {', '.join(missing)}" if missing else "")
                     + (f"; unknown {', '.join(unknown)}" if unknown else ""))
  s = {k: float(v) for k, v in spec.items()}
  if kind == "constant":
    return lambda step: jnp.full((), s["value"], jnp.float32)
  if kind == "warmup_cosine":
    warm, end = max(int(s["warmup_steps"]), 1), s["end_step"]
    peak, low = s["peak"], s["peak"] * s["end_ratio"]

    def warmup_cosine(step):
      up = peak * _progress(step, 0, warm)
      down = low + (peak - low) * 0.5 * (1 + jnp.cos(math.pi * _progress(step, warm, end)))
      return jnp.where(jnp.asarray(step) < warm, up, down)
    return warmup_cosine
  start, stop, begin, end = s["start"], s["end"], s["begin_step"], s["end_step"]
  if kind == "linear":
    return lambda step: start + (stop - start) * _progress(step, begin, end)
  if kind == "cosine":
    return lambda step: stop + (start - stop) * 0.5 * (
        1 + jnp.cos(math.pi * _progress(step, begin, end)))
  if kind == "exponential":
    if start <= 0 or stop <= 0:
      raise ValueError(f"schedules.{name} (exponential): start and end must be positive")
    return lambda step: start * (stop / start) ** _progress(step, begin, end)
  power = s["power"]
  return lambda step: stop + (start - stop) * (1 - _progress(step, begin, end)) ** power


def learning_rate_spec(optim, num_steps: int) -> dict:
  """The learning-rate schedule of `config.optim`: warm-up, then cosine decay to the end."""
  return {"kind": "warmup_cosine", "peak": optim.peak_lr, "warmup_steps": optim.warmup_steps,
          "end_step": max(optim.warmup_steps + 1, num_steps), "end_ratio": optim.end_lr_ratio}


def make_schedules(specs: dict) -> dict[str, Callable]:
  """`{name: spec}` -> `{name: fn(step)}`, in name order."""
  return {name: make_schedule(name, spec) for name, spec in sorted(specs.items())}
