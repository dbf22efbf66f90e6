"""Orbax checkpoints of the train state and the loop's position, keyed by tree path.

The state is saved as a nested dict whose keys are its tree paths (`params/encoder/layers/0/
input/kernel/value`, `opt_state/1/mu/...`), so a restore matches leaves by name, never by
position: a checkpoint whose paths or shapes differ from the state it is restored into fails
and names them, instead of loading leaves of equal shape into each other's places. Saves are
synchronous and atomic (Orbax writes a temporary folder and renames it; a temporary folder
left by a killed save is removed on the next start); the newest `keep` are kept.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def tree_paths(tree) -> list[tuple[str, object]]:
  """`(path, leaf)` of every leaf, the path as `a/b/0/c`."""
  return [(jax.tree_util.keystr(p, simple=True, separator="/"), leaf)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _host_copy(x) -> np.ndarray:
  """A leaf as a NumPy array; a replicated array of a multi-process run gives its local copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def _nest(flat: dict) -> dict:
  nested: dict = {}
  for path, value in flat.items():
    *parents, last = path.split("/")
    node = nested
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  return nested


def _flatten_metadata(tree, prefix="") -> dict:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten_metadata(value, path + "/"))
    else:
      out[path] = value
  return out


class CheckpointMismatchError(ValueError):
  pass


class Checkpointer:
  def __init__(self, directory: os.PathLike, keep: int = 3):
    self.directory = os.path.abspath(os.fspath(directory))
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                             create=True, cleanup_tmp_directories=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def save(self, step: int, state, data_state: dict | None = None) -> None:
    tree = _nest({path: _host_copy(x) for path, x in tree_paths(state)})
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), data=ocp.args.JsonSave(data_state or {})))
    self._mgr.wait_until_finished()

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return step

  def stored(self, step: int | None = None) -> dict:
    """`{path: (shape, dtype)}` of a checkpoint's state."""
    meta = self._mgr.item_metadata(self._step(step))["state"]
    tree = getattr(meta, "tree", meta)
    return {p: (tuple(m.shape), np.dtype(m.dtype)) for p, m in _flatten_metadata(tree).items()}

  def read(self, step: int | None = None) -> tuple[dict, dict, int]:
    """`({path: array}, data_state, step)` as stored, whatever state it came from."""
    step = self._step(step)
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
    return _flatten_metadata(out["state"]), dict(out["data"] or {}), step

  def restore(self, like, step: int | None = None):
    """(state shaped like `like`, data_state dict, step) of `step` or the newest checkpoint.
    Raises `CheckpointMismatchError` naming the paths that are missing, unexpected or of
    another shape or dtype."""
    step = self._step(step)
    # Shapes and dtypes read without a copy to the host (the state may live on accelerators),
    # and each array restored straight onto the devices its counterpart in `like` uses.
    expected = {p: (tuple(np.shape(x)), np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype))
                for p, x in tree_paths(like)}
    shardings = {p: getattr(x, "sharding", None) for p, x in tree_paths(like)}
    stored = self.stored(step)
    problems = ([f"missing {p}" for p in sorted(set(expected) - set(stored))]
                + [f"unexpected {p}" for p in sorted(set(stored) - set(expected))]
                + [f"{p}: stored {stored[p][0]} {stored[p][1]}, expected {e[0]} {e[1]}"
                   for p, e in sorted(expected.items()) if p in stored and stored[p] != e])
    if problems:
      shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8
                                         else "")
      raise CheckpointMismatchError(
          f"checkpoint {step} in {self.directory} does not fit this run's state: {shown}")
    abstract = _nest({p: jax.ShapeDtypeStruct(*e, sharding=shardings[p])
                      for p, e in expected.items()})
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    flat = _flatten_metadata(out["state"])
    leaves, treedef = jax.tree.flatten(like)
    restored = [flat[p] for p, _ in tree_paths(like)]
    assert len(restored) == len(leaves)
    return jax.tree.unflatten(treedef, restored), dict(out["data"] or {}), step

  def close(self) -> None:
    self._mgr.close()
