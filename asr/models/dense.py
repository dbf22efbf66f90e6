"""The one dense layer every weight matrix of the transducer goes through.

The LSTM's input and recurrent matrices, the prediction network's projection, the joint and the
CTC head are all `Dense`, so a compression method finds every weight matrix by type (its kernel
is the leaf `.../kernel` of the parameter tree) and can change how every one of them is applied
in one place:

- weights: a parameter transform rewrites the `kernel` leaves before the model runs (pruning
  masks, fake quantization; `asr.training.transforms`);
- activations: `intercept_dense(fn)` routes every `Dense` call made while it is active through
  `fn(layer, x, apply)`, where `apply(x, kernel, bias)` is the plain product;
- layers that keep statistics of what flows through them (a subclass that fake-quantizes its
  input with a moving-average range: `compression.quantization`) update them only inside
  `training_pass()`, which the training step enters around the forward pass: evaluation and
  decoding use the statistics as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax
from flax import nnx

_INTERCEPTOR: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "dense_interceptor", default=None)
_TRAINING: contextvars.ContextVar[bool] = contextvars.ContextVar("training_pass", default=False)


def _apply(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  # One 2-D product over all rows: XLA's CPU backend runs a `[B, T, D] @ [D, E]` contraction
  # (and its kernel gradient over two axes) about 1.5x slower than the same rows flattened
  # (measured on this project's 2-core machine, a 12-layer 144 x 576 feed-forward stack).
  y = (x.reshape(-1, x.shape[-1]) @ kernel).reshape(*x.shape[:-1], kernel.shape[-1])
  return y if bias is None else y + bias


class Dense(nnx.Module):
  """`x [..., in_dim]` -> `[..., out_dim]` = `x @ kernel (+ bias)`."""

  def __init__(self, in_dim: int, out_dim: int, *, use_bias: bool = True,
               kernel_init=nnx.initializers.lecun_normal(), bias_init=nnx.initializers.zeros,
               rngs: nnx.Rngs):
    self.in_dim, self.out_dim = in_dim, out_dim
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_dim, out_dim)))
    self.bias = nnx.Param(bias_init(rngs.params(), (out_dim,))) if use_bias else None

  def macs(self) -> int:
    """Multiply-accumulates per input row."""
    return self.in_dim * self.out_dim

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    bias = None if self.bias is None else self.bias[...]
    fn = _INTERCEPTOR.get()
    if fn is None:
      return _apply(x, kernel, bias)
    return fn(self, x, lambda x_, k=kernel, b=bias: _apply(x_, k, b))


@contextlib.contextmanager
def intercept_dense(fn: Callable[[Dense, jax.Array, Callable], jax.Array]):
  """Within the block, every `Dense` call is `fn(layer, x, apply)` (see the module docstring)."""
  token = _INTERCEPTOR.set(fn)
  try:
    yield
  finally:
    _INTERCEPTOR.reset(token)


@contextlib.contextmanager
def training_pass():
  """Within the block, layers with statistics update them (see the module docstring)."""
  token = _TRAINING.set(True)
  try:
    yield
  finally:
    _TRAINING.reset(token)


def in_training_pass() -> bool:
  return _TRAINING.get()
