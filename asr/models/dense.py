"""The one dense layer every weight matrix of the transducer goes through.

The LSTM's input and recurrent matrices, the prediction network's projection, the joint and the
CTC head are all `Dense`, so a compression method finds every weight matrix by type (its kernel
is the leaf `.../kernel` of the parameter tree) and can change how every one of them is applied
in one place:

- weights: a parameter transform rewrites the `kernel` leaves before the model runs (pruning
  masks, fake quantization; `asr.training.transforms`);
- activations: `intercept_dense(fn)` routes every `Dense` call made while it is active through
  `fn(layer, x, apply)`, where `apply(x, kernel, bias)` is the plain product;
- precision: every `Dense` (and the attention products, `mixed_einsum`) multiplies in its
  `matmul_dtype`, "float32" or "bfloat16" (`set_matmul_dtype(model, ...)`, which
  `Transducer` calls with `model.matmul_dtype`). In bfloat16 the operands are rounded to
  bfloat16 (a GPU's tensor cores) and the products summed and returned in float32, so the
  parameters, their gradients and the optimizer's state, the activations between products
  and the loss all stay float32 (mixed precision as in Micikevicius et al., 2018, without the
  loss scaling float16 needs: bfloat16 has float32's exponent range);
- layers that keep statistics of what flows through them (a subclass that fake-quantizes its
  input with a moving-average range: `compression.quantization`) update them only inside
  `updating_statistics(True)`, which the model's own passes enter when their call context says
  so (`asr.models.context.Context.statistics`: the training step's encode and score); evaluation,
  decoding and a loss term that runs the model again use the statistics as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

_INTERCEPTOR: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "dense_interceptor", default=None)
_UPDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("updating_statistics",
                                                                 default=False)


MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(dtype: str) -> str:
  if dtype not in MATMUL_DTYPES:
    raise ValueError(f"unknown matmul dtype {dtype!r} (model.matmul_dtype): "
                     f"{' or '.join(MATMUL_DTYPES)}")
  return dtype


def matmul(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
  """`a @ b` with operands in `dtype` ("float32" or "bfloat16") and a float32 result."""
  if dtype == "float32":
    return a @ b
  return jnp.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype: str = "float32") -> jax.Array:
  """`jnp.einsum(spec, a, b)` with operands in `dtype` and a float32 result."""
  if dtype == "float32":
    return jnp.einsum(spec, a, b)
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _apply(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
           dtype: str = "float32") -> jax.Array:
  # One 2-D product over all rows: XLA's CPU backend runs a `[B, T, D] @ [D, E]` contraction
  # (and its kernel gradient over two axes) about 1.5x slower than the same rows flattened
  # (measured on this project's 2-core machine, a 12-layer 144 x 576 feed-forward stack).
  y = matmul(x.reshape(-1, x.shape[-1]), kernel, dtype).reshape(*x.shape[:-1], kernel.shape[-1])
  return y if bias is None else y + bias


class Dense(nnx.Module):
  """`x [..., in_dim]` -> `[..., out_dim]` = `x @ kernel (+ bias)`, float32.

  `input_bound`: the largest input magnitude by construction, where the layer that builds it
  knows one (1 after a `tanh` or `sigmoid * tanh`), else None. An activation quantizer uses it
  as a fixed range instead of a statistic (`compression.quantization`)."""

  matmul_dtype = "float32"  # set per model by `set_matmul_dtype`

  def __init__(self, in_dim: int, out_dim: int, *, use_bias: bool = True,
               kernel_init=nnx.initializers.lecun_normal(), bias_init=nnx.initializers.zeros,
               input_bound: float | None = None, rngs: nnx.Rngs):
    self.in_dim, self.out_dim, self.input_bound = in_dim, out_dim, input_bound
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
      return _apply(x, kernel, bias, self.matmul_dtype)
    return fn(self, x, lambda x_, k=kernel, b=bias: _apply(x_, k, b, self.matmul_dtype))


def columns(layer: Dense, x: jax.Array, start: int, stop: int) -> jax.Array:
  """`layer(x)[..., start:stop]`, computing only those outputs where the layer is plain
  (`is_plain`); otherwise all of them, then the slice, so statistics and interceptors see the
  whole product as always."""
  if not is_plain(layer):
    return layer(x)[..., start:stop]
  bias = None if layer.bias is None else layer.bias[start:stop]
  return _apply(x, layer.kernel[:, start:stop], bias, layer.matmul_dtype)


def executed_macs(module: nnx.Module) -> jax.Array:
  """Multiply-accumulates per input row on the non-zero weights of every `Dense` in `module`
  (a `Dense` itself, or the factors of a factorized layer): what a processor that skips zero
  weights spends. An int32 scalar, traced under `jit`."""
  return sum(jnp.count_nonzero(node.kernel[...]) for _, node in nnx.iter_graph(module)
             if isinstance(node, Dense))


def is_plain(layer: Dense) -> bool:
  """Whether calling `layer` now is exactly `matmul(x, kernel, matmul_dtype) (+ bias)`: a
  `Dense` itself (no subclass with statistics) and no interceptor active. Code that fuses the
  product into something larger (`asr.models.lstm`'s recurrence) may then stand in for it."""
  return type(layer) is Dense and _INTERCEPTOR.get() is None


def set_matmul_dtype(model: nnx.Module, dtype: str) -> None:
  """Every layer of `model` with a `matmul_dtype` (each `Dense`, attention) multiplies in
  `dtype` from now on. A static attribute: jitted functions of the model trace it once."""
  check_matmul_dtype(dtype)
  for _, module in model.iter_modules():
    if hasattr(module, "matmul_dtype"):
      module.matmul_dtype = dtype


@contextlib.contextmanager
def intercept_dense(fn: Callable[[Dense, jax.Array, Callable], jax.Array]):
  """Within the block, every `Dense` call is `fn(layer, x, apply)` (see the module docstring)."""
  token = _INTERCEPTOR.set(fn)
  try:
    yield
  finally:
    _INTERCEPTOR.reset(token)


@contextlib.contextmanager
def updating_statistics(on: bool = True):
  """Within the block, layers with statistics update them iff `on` (see the module
  docstring); blocks nest, the innermost decides."""
  token = _UPDATING.set(bool(on))
  try:
    yield
  finally:
    _UPDATING.reset(token)


def statistics_updating() -> bool:
  return _UPDATING.get()
