"""Finding a model's dense layers by name and replacing them in place: what the model-surgery
methods (`factorization`, activation quantization) share. Names are module paths joined by `/`
(`encoder/layers/0/input`), as `config.surgery` patterns see them."""

from __future__ import annotations

import re

from flax import nnx

from asr.models.dense import Dense


def dense_layers(model: nnx.Module, include: str, exclude: str | None, what: str):
  """`[(path, name, layer)]` of the plain `Dense` layers (not ones already replaced) whose name
  matches `include` and not `exclude`; fails naming `what` and the pattern if none does."""
  inc, exc = re.compile(include), re.compile(exclude) if exclude else None
  found = []
  for path, node in nnx.iter_graph(model):
    name = "/".join(str(p) for p in path)
    if type(node) is Dense and inc.search(name) and not (exc and exc.search(name)):
      found.append((path, name, node))
  if not found:
    raise ValueError(f"{what}: no dense layer matches include={include!r}"
                     + (f" and not exclude={exclude!r}" if exclude else ""))
  return found


def replace(model: nnx.Module, path: tuple, new: nnx.Module) -> None:
  """Puts `new` where the module at `path` is (an attribute or a list item)."""
  parent = model
  for key in path[:-1]:
    parent = parent[key] if isinstance(key, int) else getattr(parent, key)
  if isinstance(path[-1], int):
    parent[path[-1]] = new
  else:
    setattr(parent, path[-1], new)
