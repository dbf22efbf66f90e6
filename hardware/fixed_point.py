"""Integer arithmetic of the int8 processor under `jax.jit`: fixed-point multipliers, int8
products accumulated in int32, requantization by integer multiply and shift, lookup tables.

The conventions are gemmlowp's / TFLite's integer-only inference (Jacob et al., 2018,
"Quantization and training of neural networks for efficient integer-arithmetic-only
inference"), symmetric (no zero points: our weights and activations are quantized
symmetrically, `compression.quantization`):

- A real value is `q * scale`, `q` an integer of `bits` bits.
- A product of int8 activations and int8 weights is accumulated in int32: `acc = sum x_q w_q`,
  worth `acc * s_x * s_w`. A bias is stored as int32 at that scale.
- Requantization to an output scale `s_y` multiplies by `M = s_x s_w / s_y`, a real number
  carried as an integer `m0` in `[2^30, 2^31)` and a right shift `n`, `M ~ m0 2^-n`:
  `y = (acc * m0 + 2^(n-1)) >> n` (the 64-bit product of two 32-bit integers; rounding half
  up; arithmetic shift), then saturated to the output's range. Hardware does the same with a
  32 x 32 -> 64-bit multiply and a shift.
- Nonlinearities of an 8-bit input (sigmoid, tanh) are tables of 256 entries built from the
  input and output scales (`lookup_table`), indexed by the input.

64-bit integers need JAX's x64 mode: `integer_jit` traces and runs a function with it on, so the
rest of the program keeps its 32-bit defaults. `hardware.int8_reference` is the same arithmetic
in plain Python integers, the reference the tests hold this to bit for bit.

Products of 8-bit values are computed as float32 matrix products (exact: `int_matmul`). That is
only true of 8-bit operands, so 8-bit values are stored as int8 (uint8 for probabilities) from
the step that makes them (`requantize` and `saturate` to 8 bits, 8-bit tables), and every
product takes only those types (`check_operand`): a conversion that wires a wider value into a
product fails when it is traced, naming the layer, instead of computing something else, and
the guard costs nothing at run time.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def quantize_multiplier(real: float, name: str = "") -> tuple[int, int]:
  """A positive real multiplier -> `(m0, n)` with `m0` in `[2^30, 2^31)` and `real ~ m0 * 2^-n`
  (31 significant bits: relative error below 2^-31). `n` must land in 1..62; errors name the
  layer `name`."""
  where = f" (layer {name!r})" if name else ""
  if not (real > 0 and math.isfinite(real)):
    raise ValueError(f"a requantization multiplier must be positive and finite, got {real}"
                     f"{where}")
  mantissa, exponent = math.frexp(real)          # real = mantissa 2^exponent, mantissa in [.5, 1)
  m0 = round(mantissa * (1 << 31))
  if m0 == 1 << 31:                              # rounded up to the next power of two
    m0, exponent = m0 // 2, exponent + 1
  n = 31 - exponent
  if not 1 <= n <= 62:
    raise ValueError(f"multiplier {real:g} is out of the fixed-point range (shift {n}){where}")
  return m0, n


def quantize_multipliers(reals, name: str = "") -> tuple[np.ndarray, np.ndarray]:
  """Per-channel `quantize_multiplier`: `[C]` reals -> `m0 [C]` int64, `n [C]` int64."""
  pairs = [quantize_multiplier(float(r), name)
           for r in np.asarray(reals, np.float64).reshape(-1)]
  m0, n = (np.array(v, np.int64).reshape(np.shape(reals)) for v in zip(*pairs))
  return m0, n


def int_range(bits: int) -> tuple[int, int]:
  return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def storage(bits: int):
  """The dtype values of `bits` signed bits are kept in: int8 for 8 (what a product takes),
  int32 for wider ones."""
  return jnp.int8 if bits == 8 else jnp.int32


def requantize(acc: jax.Array, m0, n, bits: int = 8) -> jax.Array:
  """`acc` int32 (any shape, channels last) times `m0 2^-n` (scalars or per channel `[C]`),
  rounded half up, saturated to `bits` bits -> values in range, as `storage(bits)`. Needs
  x64."""
  prod = acc.astype(jnp.int64) * jnp.asarray(m0, jnp.int64)
  n = jnp.asarray(n, jnp.int64)
  y = jnp.right_shift(prod + jnp.left_shift(jnp.int64(1), n - 1), n)
  lo, hi = int_range(bits)
  return jnp.clip(y, lo, hi).astype(storage(bits))


# Products of 8-bit integers (|x w| <= 2^14) summed over at most 2^10 terms never exceed 2^24,
# below which float32 holds every integer exactly, whatever the order of the additions: so a
# float32 matrix product of 8-bit values, K <= 1024 at a time, is the exact int32 accumulator.
# It runs on the CPU's float GEMM, several times faster than XLA's integer dot.
EXACT_K = 1024


def check_operand(x, name: str, dtype=jnp.int8) -> None:
  """Refuses, naming layer `name`, an operand of an exact product that is not stored as
  `dtype` (int8, or uint8 for probabilities): only 8-bit values keep the float32 product
  exact, and only a step that saturates to 8 bits makes that type. Checked when traced."""
  if jnp.dtype(x.dtype) != jnp.dtype(dtype):
    raise ValueError(f"{name or 'an int8 product'}: an operand of type {jnp.dtype(x.dtype)}, "
                     f"where the exact float32 product takes {jnp.dtype(dtype)} (8-bit values, "
                     "from a step that saturates to 8 bits)")


def int_matmul(x: jax.Array, w: jax.Array, bias: jax.Array | None = None,
               name: str = "") -> jax.Array:
  """int8 `x [..., K]` @ int8 `w [K, N]` (+ int32 `bias [N]`), accumulated exactly in int32
  (computed in float32 over slices of `EXACT_K`, exact by the bound above). Operands of any
  other type are refused, naming the layer `name`."""
  check_operand(x, name)
  check_operand(w, name)
  acc = None
  for start in range(0, x.shape[-1], EXACT_K):
    part = jnp.matmul(x[..., start:start + EXACT_K].astype(jnp.float32),
                      w[start:start + EXACT_K].astype(jnp.float32)).astype(jnp.int32)
    acc = part if acc is None else acc + part
  return acc if bias is None else acc + bias.astype(jnp.int32)


def lookup_table(fn, in_scale: float, out_scale: float, out_bits: int = 8,
                 in_bits: int = 8) -> np.ndarray:
  """`fn` (a NumPy function of reals) on every `in_bits`-bit input `q` (worth `q * in_scale`),
  on the output grid `out_scale`, saturated to `out_bits` bits: `[2^in_bits]` of
  `storage(out_bits)`, entry `q + 2^(in_bits - 1)`."""
  lo_in, hi_in = int_range(in_bits)
  q = np.arange(lo_in, hi_in + 1)
  lo, hi = int_range(out_bits)
  return np.clip(np.round(fn(q * np.float64(in_scale)) / out_scale), lo, hi).astype(
      storage(out_bits))


def lookup(table: jax.Array, q: jax.Array) -> jax.Array:
  """The table's entries for inputs `q` (int32 within the table's input range)."""
  table = jnp.asarray(table)
  return jnp.take(table, q + table.shape[0] // 2)


def rounding_shift(x: jax.Array, k: int) -> jax.Array:
  """`x / 2^k` rounded half up (`k >= 1`): `(x + 2^(k-1)) >> k`, in x's integer type."""
  return jnp.right_shift(x + (1 << (k - 1)), k)


def saturate(x: jax.Array, bits: int) -> jax.Array:
  """`x` clipped to `bits` signed bits: int8 for 8 bits (`storage`), x's type otherwise."""
  lo, hi = int_range(bits)
  y = jnp.clip(x, lo, hi)
  return y.astype(jnp.int8) if bits == 8 else y


def isqrt(n: jax.Array) -> jax.Array:
  """Integer square root, `floor(sqrt(n))`, of int64 `n` in `0..2^52` (exact: a float64 root,
  corrected by one either way). Needs x64."""
  r = jnp.floor(jnp.sqrt(n.astype(jnp.float64))).astype(jnp.int64)
  r = r - (r * r > n)
  return r + ((r + 1) * (r + 1) <= n)


def round_div(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a / b` rounded half up, for integers `b > 0`: `floor((2a + b) / 2b)`."""
  return jnp.floor_divide(2 * a + b, 2 * b)


def integer_jit(fn=None, **jit_kwargs):
  """`jax.jit` whose tracing and calls run with 64-bit integers on (`requantize` needs them).
  Pass int64 values as NumPy arrays: `jnp.asarray` outside the x64 mode truncates to int32."""
  if fn is None:
    return functools.partial(integer_jit, **jit_kwargs)
  jitted = jax.jit(fn, **jit_kwargs)

  @functools.wraps(fn)
  def call(*args, **kwargs):
    with jax.enable_x64(True):
      return jitted(*args, **kwargs)
  return call
