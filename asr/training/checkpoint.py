"""Orbax checkpoints of the train state and the data position, with automatic resume.

The train state is saved as its flat list of leaves (keyed by position) and restored into the
structure of a freshly initialized state, so any pytree (nnx.State, optax states) round-trips.
Saves are synchronous and atomic (Orbax writes a temporary folder and renames it); the newest
`keep` are kept.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory: os.PathLike, keep: int = 3):
    self.directory = os.path.abspath(os.fspath(directory))
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    leaves = jax.tree.leaves(state)
    tree = {str(i): np.asarray(jax.device_get(x)) for i, x in enumerate(leaves)}
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), data=ocp.args.JsonSave(data_state or {})))
    self._mgr.wait_until_finished()

  def restore(self, like, step: int | None = None):
    """(state shaped like `like`, data_state dict, step) of `step` or the newest checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    leaves, treedef = jax.tree.flatten(like)
    abstract = {str(i): jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)
                for i, x in enumerate(leaves)}
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    restored = [out["state"][str(i)] for i in range(len(leaves))]
    return jax.tree.unflatten(treedef, restored), dict(out["data"] or {}), step

  def close(self) -> None:
    self._mgr.close()
