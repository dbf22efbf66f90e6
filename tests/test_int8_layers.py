"""Integer layers (hardware.int8_layers): jitted equal to the plain Python-integer reference bit
for bit, and close to the float layers they come from."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models.lstm import LSTM
from hardware import fixed_point as fp
from hardware import int8_reference as ref
from hardware.int8_layers import (IntDense, IntLayerNorm, IntLSTM, quantize,
                                  quantize_activation_scale)

_apply = fp.integer_jit(lambda layer, *args: layer.apply(*args))


def test_isqrt_is_exact():
  rng = np.random.default_rng(0)
  n = np.concatenate([rng.integers(0, 1 << 52, 2000), np.arange(200),
                      [k * k + e for k in (3, 2 ** 20 + 7, 2 ** 26 - 1) for e in (-1, 0, 1)]])
  got = np.asarray(fp.integer_jit(fp.isqrt)(n.astype(np.int64)))  # int64 inside x64 only
  np.testing.assert_array_equal(got, [math.isqrt(int(v)) for v in n])


def test_dense_equals_reference_and_the_float_layer():
  rng = np.random.default_rng(1)
  kernel, bias = rng.normal(0, 0.3, (24, 10)), rng.normal(0, 0.5, 10)
  x = rng.normal(0, 1.0, (2, 3, 24))
  s_x = quantize_activation_scale(np.abs(x).max())
  y_float = x @ kernel + bias
  s_y = quantize_activation_scale(np.abs(y_float).max())
  layer = IntDense.from_float(kernel, bias, s_x, s_y)
  x_q = quantize(x, s_x)
  got = np.asarray(_apply(layer, jnp.asarray(x_q)))
  np.testing.assert_array_equal(got, ref.dense(layer, x_q))
  # Quantization error: a few output steps at most (inputs and weights each carry half a step).
  assert np.abs(got * s_y - y_float).max() < 4 * s_y


def _float_lstm(d, h, seed):
  layer = LSTM(d, h, rngs=nnx.Rngs(seed))
  layer.input.bias[...] = layer.input.bias[...] + 0.3 * jax.random.normal(
      jax.random.key(seed), (4 * h,))
  return layer


def test_lstm_equals_reference_bit_for_bit_and_follows_the_float_lstm():
  rng = np.random.default_rng(2)
  b, t, d, h = 3, 9, 6, 5
  layer = _float_lstm(d, h, 0)
  x = rng.normal(0, 1.0, (b, t, d)).astype(np.float32)
  lengths = np.array([9, 4, 1])
  s_x = quantize_activation_scale(np.abs(x).max())
  int_layer = IntLSTM.from_float(layer.input.kernel[...], layer.input.bias[...],
                                 layer.recurrent.kernel[...], s_x)
  x_q = quantize(x, s_x)
  y, (h_last, c_last) = _apply(int_layer, jnp.asarray(x_q), jnp.asarray(lengths))
  y = np.asarray(y)
  np.testing.assert_array_equal(y, ref.lstm(int_layer, x_q, lengths)[0])
  assert not y[1, 4:].any() and not y[2, 1:].any()              # zero past each length
  np.testing.assert_array_equal(np.asarray(h_last)[1], y[1, 3])  # the state after frame 4
  # Against the float layer on the same (dequantized) input.
  y_float, _ = layer(jnp.asarray(x_q * s_x, jnp.float32), jnp.asarray(lengths))
  err = np.abs(y * 2.0 ** -7 - np.asarray(y_float))
  assert err.max() < 0.03 and np.abs(np.asarray(y_float)).max() > 0.2


def test_lstm_state_carries_across_chunks():
  rng = np.random.default_rng(3)
  layer = _float_lstm(4, 6, 1)
  int_layer = IntLSTM.from_float(layer.input.kernel[...], layer.input.bias[...],
                                 layer.recurrent.kernel[...], 0.02)
  x = jnp.asarray(rng.integers(-128, 128, (2, 10, 4)), jnp.int8)
  full, _ = _apply(int_layer, x, jnp.array([10, 7]))
  first, state = _apply(int_layer, x[:, :6], jnp.array([6, 6]))
  second, _ = _apply(int_layer, x[:, 6:], jnp.array([4, 1]), state)
  np.testing.assert_array_equal(np.concatenate([first, second], axis=1), full)


def test_layer_norm_equals_reference_and_the_float_norm():
  rng = np.random.default_rng(4)
  x = rng.integers(-128, 128, (4, 3, 32))
  x[0, 0] = 5                                                   # a constant row: no variance
  gamma, beta = rng.normal(1, 0.2, 32), rng.normal(0, 0.1, 32)
  s_out = 4.0 / 127
  norm = IntLayerNorm.from_float(gamma, beta, s_out)
  got = np.asarray(_apply(norm, jnp.asarray(x, jnp.int32)))
  np.testing.assert_array_equal(got, ref.layer_norm(norm, x))
  mean, std = x.mean(-1, keepdims=True), x.std(-1, keepdims=True)
  want = gamma * (x - mean) / np.maximum(std, 1e-9) + beta
  assert np.abs(got * s_out - np.clip(want, -128 * s_out, 127 * s_out)).max() < 1.5 * s_out
  np.testing.assert_array_equal(got[0, 0], np.round(beta / s_out))


def test_an_operand_wider_than_8_bits_is_refused_naming_the_layer():
  """Only int8 values (uint8 probabilities) enter an exact product: what a step that saturates
  to 8 bits makes. A wider value, an int16 residual wired into a product say, is refused when
  traced, with the layer's name."""
  from hardware.int8_transformer import exact_einsum
  rng = np.random.default_rng(6)
  layer = IntDense.from_float(rng.normal(0, 0.3, (8, 4)), np.zeros(4), 0.05, 0.1,
                              name="encoder/blocks/0/ffn/up")
  x = rng.integers(-128, 128, (2, 8))
  np.testing.assert_array_equal(np.asarray(_apply(layer, jnp.asarray(x, jnp.int8))),
                                ref.dense(layer, x))
  with pytest.raises(ValueError, match="encoder/blocks/0/ffn/up: an operand of type int32, "
                                       "where the exact float32 product takes int8"):
    _apply(layer, jnp.asarray(x, jnp.int32))
  # Attention's products: int8 scores, uint8 probabilities times int8 values.
  einsum = fp.integer_jit(exact_einsum, static_argnames=("spec", "name", "a_type"))
  p, v = rng.integers(0, 256, (3, 5)), rng.integers(-128, 128, (5, 4))
  got = einsum("qk,kd->qd", jnp.asarray(p, jnp.uint8), jnp.asarray(v, jnp.int8), "att/context",
               jnp.uint8)
  np.testing.assert_array_equal(np.asarray(got), p @ v)
  with pytest.raises(ValueError, match="att/context: an operand of type int32"):
    einsum("qk,kd->qd", jnp.asarray(p, jnp.int32), jnp.asarray(v, jnp.int8), "att/context",
           jnp.uint8)


def test_a_bias_beyond_int32_saturates_where_the_output_does_or_is_refused_by_name():
  rng = np.random.default_rng(7)
  kernel = rng.normal(0, 0.3, (16, 3))
  # Channel 1's bias is 10^7 output steps: the output saturates whatever the products, so the
  # saturated bias gives the same result (127), and nothing wraps.
  bias = np.array([0.1, 1e5, -0.2])
  layer = IntDense.from_float(kernel, bias, 1e-3, 0.01, name="joint/enc_proj")
  assert int(layer.bias[1]) == 2 ** 31 - 1 - 128 * 127 * 16
  x = rng.integers(-128, 128, (5, 16))
  got = np.asarray(_apply(layer, jnp.asarray(x, jnp.int8)))
  np.testing.assert_array_equal(got, ref.dense(layer, x))
  assert (got[:, 1] == 127).all()
  # A channel of tiny weights: its bias is 6 x 10^10 accumulator steps but a small output (0.5
  # at a scale of 0.01, 50 steps), which a saturated bias would get wrong.
  kernel[:, 2] = 1e-6
  with pytest.raises(ValueError, match="layer 'encoder/layers/0/input': the bias of output "
                                       "channel 2 .*would not saturate"):
    IntDense.from_float(kernel, np.array([0.1, 0.2, 0.5]), 1e-3, 0.01,
                        name="encoder/layers/0/input")
