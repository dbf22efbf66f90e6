"""Fixed-point arithmetic of the int8 processor: multipliers to 31 bits, requantization and
int8 products bit for bit against the plain Python-integer reference (extremes included), and
lookup tables against the functions they tabulate."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware import fixed_point as fp
from hardware import int8_reference as ref


@settings(max_examples=200, deadline=None)
@given(st.floats(2.0 ** -30, 2.0 ** 29))
def test_multiplier_carries_31_significant_bits(real):
  m0, n = fp.quantize_multiplier(real)
  assert (1 << 30) <= m0 < (1 << 31) and 1 <= n <= 62
  assert abs(m0 * 2.0 ** -n - real) <= real * 2.0 ** -31


def test_multiplier_bad_input():
  for bad in (0.0, -1.0, math.inf, math.nan):
    with pytest.raises(ValueError, match="positive and finite"):
      fp.quantize_multiplier(bad)
  with pytest.raises(ValueError, match="out of the fixed-point range"):
    fp.quantize_multiplier(2.0 ** 40)


_requantize = fp.integer_jit(fp.requantize, static_argnames=("bits",))


@pytest.mark.parametrize("bits", [8, 16])
def test_requantize_equals_the_reference_bit_for_bit(bits):
  rng = np.random.default_rng(bits)
  acc = rng.integers(-(1 << 31), (1 << 31), (40, 6), dtype=np.int64)
  acc[0] = [-(1 << 31), (1 << 31) - 1, 0, 1, -1, 255]
  acc[1] = rng.integers(-3000, 3000, 6)        # small accumulators: rounding decides
  reals = np.array([1e-9, 3.7e-6, 0.0123, 0.5, 0.999999, 1.5])
  m0, n = fp.quantize_multipliers(reals)
  got = np.asarray(_requantize(jnp.asarray(acc, jnp.int32), jnp.asarray(m0), jnp.asarray(n),
                               bits=bits))
  np.testing.assert_array_equal(got, ref.requantize(acc, m0, n, bits))
  # And it is the rounded product, saturated (the multiplier's error is far below a half).
  lo, hi = fp.int_range(bits)
  exact = np.clip(np.floor(acc * reals + 0.5), lo, hi)
  assert np.abs(got - exact).max() <= 1
  assert (got == exact).mean() > 0.95
  # Ties round up: 3 * 0.5 = 1.5 -> 2, -3 * 0.5 = -1.5 -> -1.
  half = fp.quantize_multiplier(0.5)
  assert ref.requantize(np.array([3, -3]), *half).tolist() == [2, -1]


def test_int8_products_accumulate_in_int32_as_the_reference_does():
  rng = np.random.default_rng(0)
  x = rng.integers(-128, 128, (3, 5, 70)).astype(np.int8)
  w = rng.integers(-128, 128, (70, 9)).astype(np.int8)
  bias = rng.integers(-(1 << 20), 1 << 20, 9).astype(np.int32)
  got = np.asarray(fp.int_matmul(jnp.asarray(x), jnp.asarray(w), jnp.asarray(bias)))
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, ref.int_matmul(x, w, bias))
  # Products in float32 slices of 1,024 stay exact at the extremes, across slices too.
  k = 2 * fp.EXACT_K + 77
  x = np.full((2, k), -128, np.int8)
  x[1, ::3] = 127
  w = np.stack([np.full(k, -127), rng.integers(-127, 128, k)], axis=1).astype(np.int8)
  got = np.asarray(fp.int_matmul(jnp.asarray(x), jnp.asarray(w)))
  np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))
  assert got[0, 0] == k * 128 * 127
  # The reference says when an accumulator would leave int32.
  with pytest.raises(OverflowError, match="outside int32"):
    ref.int_matmul(np.full((1, 2), 1 << 16), np.full((2, 1), 1 << 15))


def test_lookup_tables_tabulate_their_functions():
  s_in, s_out = 8.0 / 128, 1.0 / 128
  tanh = fp.lookup_table(np.tanh, s_in, s_out)
  q = np.arange(-128, 128)
  error = np.abs(tanh * s_out - np.tanh(q * s_in))
  inside = np.abs(np.tanh(q * s_in)) <= 127 * s_out
  assert error[inside].max() <= s_out / 2 + 1e-12 and error.max() <= s_out  # saturated: 1 > 127/128
  assert tanh[0 + 128] == 0 and tanh[127 + 128] == 127   # tanh(7.94) * 128 saturates to 127
  sig = fp.lookup_table(lambda v: 1 / (1 + np.exp(-v)), s_in, 2.0 ** -15, out_bits=16)
  assert sig[128] == 1 << 14 and sig.min() >= 0             # sigmoid(0) = 0.5 in Q0.15
  np.testing.assert_array_equal(np.asarray(fp.lookup(jnp.asarray(tanh), jnp.asarray(q))),
                                ref.lookup(tanh, q))
