"""Which leaves of a parameter tree a compression method acts on, by name.

Every weight matrix of the transducer is a `Dense` kernel (`asr.models.dense`), so a method
selects leaves by their path, written as in checkpoints without the trailing `/value`
(`encoder/layers/0/input/kernel`), with two regular expressions: `include` (searched) and
`exclude`. Only matrices (rank 2) are selected: biases, normalization scales and the
depthwise convolution's filters stay float and dense.

The default leaves out the auxiliary CTC head (`ctc_head/`): it trains the encoder and is not
part of the model a device runs, so compressing it would spend the sparsity budget on nothing.
"""

from __future__ import annotations

import re
from typing import Callable

import jax

INCLUDE = r"(^|/)kernel$"
EXCLUDE = r"^ctc_head/"


def leaf_name(path) -> str:
  """A key path -> `encoder/layers/0/input/kernel` (nnx's `/value` suffix dropped)."""
  name = jax.tree_util.keystr(path, simple=True, separator="/")
  return name.removesuffix("/value")


class Selection:
  """The matrices of a parameter tree whose names match `include` and not `exclude`."""

  def __init__(self, include: str = INCLUDE, exclude: str = EXCLUDE):
    self.include, self.exclude = re.compile(include), re.compile(exclude) if exclude else None

  def __call__(self, name: str, leaf) -> bool:
    return (getattr(leaf, "ndim", 0) == 2 and bool(self.include.search(name))
            and not (self.exclude and self.exclude.search(name)))

  def items(self, params) -> list[tuple[str, jax.Array]]:
    """`[(name, matrix)]` of the selected leaves, in tree order."""
    return [(leaf_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
            if self(leaf_name(p), x)]

  def names(self, params) -> list[str]:
    return [name for name, _ in self.items(params)]

  def map(self, fn: Callable, params, *rest, other=None):
    """`params` with every selected leaf `x` replaced by `fn(x, *rest_leaves)` (`rest`: trees
    shaped like the output of an earlier `map`, None on leaves not selected) and every other
    leaf by `other(x)` (None: kept as is)."""
    def one(path, x, *r):
      if self(leaf_name(path), x):
        return fn(x, *r)
      return x if other is None else other(x)
    # `rest` holds None on the leaves not selected: flatten it against params' structure.
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    rest_flat = [treedef.flatten_up_to(r) for r in rest]
    out = [one(p, x, *(r[i] for r in rest_flat)) for i, (p, x) in enumerate(flat)]
    return jax.tree.unflatten(treedef, out)

  def check(self, params, what: str) -> None:
    """Fails, naming the patterns, when nothing is selected (a typo would compress nothing)."""
    if not self.names(params):
      raise ValueError(f"{what}: no weight matrix matches include={self.include.pattern!r}"
                       + (f" and not exclude={self.exclude.pattern!r}" if self.exclude else ""))
