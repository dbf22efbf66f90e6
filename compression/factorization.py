"""Matrix factorization: a dense layer's kernel `W [m, n]` replaced by two thin factors,
`x @ W ~ (x @ U) @ V` with `U [m, r]`, `V [r, n]`, which costs `r (m + n)` multiply-accumulates
a row instead of `m n`.

The factors are two `Dense` layers (`<layer>/u/kernel`, `<layer>/v/kernel` and the bias on `v`),
so every other compression method (pruning, quantization) and the FLOP counts of every encoder
(`macs()`) see them like any other weight matrix, with no special case.

Initialization is a truncated SVD of the layer's kernel, `W = A S B^T`: `U = A_r S_r^1/2`,
`V = S_r^1/2 B_r^T`, the best rank-`r` approximation in the Frobenius norm (Eckart and Young,
1936). Of a freshly initialized kernel, it is a random low-rank start (training from scratch);
of a trained model's kernel (`svd_from=<its workdir>`: the model is loaded from that run's
checkpoint first, every parameter or those matching `svd_from_keys`, each from its path after
`svd_from_rename` as `init_from_rename` does: `asr.training.loop.take_stored`; a new branch
can so start as the factors of a trained layer), it starts from the trained layer (Xue, Li and Gong, Interspeech 2013,
"Restructuring of deep neural network acoustic models with singular value decomposition").

The rank of each layer comes from one of:
  rank=r            the same rank everywhere
  macs_ratio=q      the rank whose factors cost `q` of the dense layer's MACs (0.5 halves them)
  energy=e          the smallest rank keeping `e` of the squared singular values (trained
                    weights only: with `svd_from`)
A layer whose factors would cost at least its dense MACs stays dense. A model built to be
restored from a checkpoint (evaluation, a resumed run) takes each layer's rank from the
checkpoint's factor shapes instead, so `svd_from` need not exist any more.

As model surgery (`config.surgery`, applied by `asr.training.loop.build_model` wherever the
model is built, so a checkpoint and its model always agree):

  c.surgery.factorize = ml_collections.ConfigDict(dict(
      factory="compression.factorization:factorize", macs_ratio=0.5, include="^encoder/"))
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from asr.models.dense import Dense
from asr.training.checkpoint import tree_paths
from asr.training.loop import load_for_inference, restoring_shapes, take_stored
from compression.surgery import dense_layers, replace


class LowRankDense(nnx.Module):
  """`x [..., in_dim]` -> `[..., out_dim]` = `(x @ u.kernel) @ v.kernel + v.bias`."""

  def __init__(self, u: Dense, v: Dense):
    self.u, self.v = u, v
    self.in_dim, self.out_dim, self.rank = u.in_dim, v.out_dim, u.out_dim

  def macs(self) -> int:
    """Multiply-accumulates per input row: `r (in_dim + out_dim)`."""
    return self.u.macs() + self.v.macs()

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.v(self.u(x))


def svd_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
  """`w [m, n]` -> `U [m, r]`, `V [r, n]` with `U @ V` the best rank-`r` approximation."""
  a, s, bt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
  root = np.sqrt(s[:rank])
  return (a[:, :rank] * root).astype(np.float32), (root[:, None] * bt[:rank]).astype(np.float32)


def rank_for(w: np.ndarray, rank: int | None, macs_ratio: float | None,
             energy: float | None) -> int:
  """The rank of `w [m, n]` the options ask for (see the module docstring)."""
  m, n = w.shape
  if rank is not None:
    return int(min(rank, m, n))
  if macs_ratio is not None:
    return max(1, int(math.floor(macs_ratio * m * n / (m + n))))
  s2 = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False) ** 2
  return int(min(np.searchsorted(np.cumsum(s2) / s2.sum(), energy - 1e-12) + 1, len(s2)))


class Factorize:
  def __init__(self, rank: int | None = None, macs_ratio: float | None = None,
               energy: float | None = None, svd_from: str = "", step: int | None = None,
               svd_from_keys: str = "", svd_from_rename=(), include: str = "",
               exclude: str = r"^ctc_head"):
    given = [k for k, v in (("rank", rank), ("macs_ratio", macs_ratio), ("energy", energy))
             if v is not None]
    if len(given) != 1:
      raise ValueError("factorization: give exactly one of rank, macs_ratio, energy "
                       f"(got {', '.join(given) or 'none'})")
    if energy is not None and not svd_from:
      raise ValueError("factorization: energy chooses ranks from trained weights: give svd_from "
                       "(a trained run's workdir)")
    if energy is not None and not 0 < energy <= 1:
      raise ValueError(f"factorization: energy={energy} must be in (0, 1]")
    if macs_ratio is not None and not 0 < macs_ratio < 1:
      raise ValueError(f"factorization: macs_ratio={macs_ratio} must be in (0, 1)")
    self.rank, self.macs_ratio, self.energy = rank, macs_ratio, energy
    self.svd_from, self.step = svd_from, step
    self.svd_from_keys, self.svd_from_rename = svd_from_keys, tuple(map(tuple, svd_from_rename))
    self.include, self.exclude = include, exclude

  def _load(self, model) -> None:
    if not (pathlib.Path(self.svd_from) / "config.json").exists():
      raise FileNotFoundError(f"factorization: svd_from={self.svd_from!r} holds no config.json "
                              "(a trained run's workdir)")
    _, _, (params, model_state), _ = load_for_inference(self.svd_from, self.step)
    stored = dict(tree_paths({"params": params, "model_state": model_state}))
    _, ours, rest = nnx.split(model, nnx.Param, ...)
    tree, _ = take_stored({"params": ours, "model_state": rest}, stored, self.svd_from_keys,
                          self.svd_from_rename,
                          where=f"factorization: svd_from={self.svd_from!r} is not this model "
                                "before factorization")
    tree = jax.tree.map(jnp.asarray, tree)   # the model's arrays: JAX's, not read-only NumPy
    nnx.update(model, tree["params"], tree["model_state"])

  def __call__(self, model) -> None:
    # A model its checkpoint will fill takes each layer's rank from the checkpoint's factor
    # shapes: the ranks an energy threshold chose from `svd_from`'s weights stay the run's
    # without that run on disk, and nothing is loaded or decomposed only to be overwritten.
    stored = restoring_shapes()
    if self.svd_from and stored is None:
      self._load(model)
    for path, name, dense in dense_layers(model, self.include, self.exclude, "factorization"):
      if stored is None:
        w = np.asarray(dense.kernel[...])
        r = rank_for(w, self.rank, self.macs_ratio, self.energy)
      else:
        r = stored.get(f"params/{name}/u/kernel/value", (0, dense.in_dim + dense.out_dim))[1]
      if r * (dense.in_dim + dense.out_dim) >= dense.in_dim * dense.out_dim:
        continue   # no saving (or none in the checkpoint): stays dense
      rngs = nnx.Rngs(0)
      u = Dense(dense.in_dim, r, use_bias=False, input_bound=dense.input_bound, rngs=rngs)
      v = Dense(r, dense.out_dim, use_bias=dense.bias is not None, rngs=rngs)
      if stored is None:
        u_w, v_w = svd_factors(w, r)
        u.kernel[...] = jnp.asarray(u_w)
        v.kernel[...] = jnp.asarray(v_w)
        if dense.bias is not None:
          v.bias[...] = dense.bias[...]
      replace(model, path, LowRankDense(u, v))   # its rank: `.rank`


def factorize(**options) -> Factorize:
  """The factory `config.surgery.<name>.factory` names (options as in `Factorize`)."""
  return Factorize(**options)
