"""The call context of a forward pass, passed from `Transducer.encode` down to every encoder,
block, residual unit and cell: whether the pass trains, its PRNG key, the step's schedule
values, whether layers with statistics update them, and a hook that sees the residual stream.

A mechanism that needs a temperature (`ctx.schedules["gate_temperature"]`), noise
(`ctx.key(...)`) or a statistic finds it here, where it computes, instead of each layer
between it and the training step growing an argument:

  ctx = Context(train=True, rng=key, schedules=values, statistics=True)
  encoded = model.encode(features, lengths, ctx)

Keys are derived by folding in integers (`ctx.fold(i)` for layer `i`, then `ctx.key(j)` for
its sub-block `j`), so a unit's randomness depends on where it sits, never on call order.
`observe(name, x)` is called with the residual stream after each residual unit (calibration of
the int8 path: `hardware.int8_transducer.calibrate`), as the pass is traced: under `jit` it sees
tracers, and what it computes from them must leave as the jitted function's outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Mapping

import jax

from asr.models import dense


@dataclasses.dataclass(frozen=True)
class Context:
  train: bool = False                  # dropout and other training-only randomness
  rng: jax.Array | None = None         # this pass's key (None: no randomness)
  schedules: Mapping[str, Any] = dataclasses.field(default_factory=dict)   # name -> value
  statistics: bool = False             # layers with statistics (activation ranges) update them
  observe: Callable[[str, jax.Array], None] | None = None   # sees the residual stream

  def fold(self, *path: int) -> "Context":
    """This context with its key folded by each integer of `path` (no key: unchanged)."""
    return dataclasses.replace(self, rng=self.key(*path))

  def key(self, *path: int) -> jax.Array | None:
    """The key folded by each integer of `path`; None without a key."""
    rng = self.rng
    if rng is None:
      return None
    for i in path:
      rng = jax.random.fold_in(rng, i)
    return rng

  def note(self, name: str, x: jax.Array) -> None:
    """Hands `x` to the `observe` hook, if any."""
    if self.observe is not None:
      self.observe(name, x)

  @contextlib.contextmanager
  def updating(self):
    """Within the block, `Dense` layers with statistics update them iff `statistics`
    (`asr.models.dense.updating_statistics`): the model's own passes enter it, so a loss term
    that runs the model again (beam search inside a step) does not write them."""
    with dense.updating_statistics(self.statistics):
      yield
