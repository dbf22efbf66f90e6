"""Each integer sub-block against the float module it comes from, on the same dequantized input.

The standard is the quantization noise: the error the float module itself shows when its
products' operands are put on their 8-bit grids (inputs at their calibrated int8 scales,
weights per output channel: `tests.helpers.on_int8_grids`), computed from the float model and
the calibrated magnitudes only, never from a converted layer. The integer sub-block adds its own
roundings (q, k and v in int8, probabilities in Q0.8, tables, requantizations) and must stay
within twice that noise, in RMS over valid frames. A conversion that gets a multiplier wrong
fails: with the attention-score multiplier 1.5x too large or too small the attention's error
is 3 to 6 times the noise (measured over seeds 1-3 of this setup), where the whole-model
comparisons of `test_int8_transformer` let a multiplier twice too large pass.

The attention's weights are scaled so that it is peaked: a frame gives its largest key a half
to two thirds of its weight (of up to 12 keys it sees), where the softmax's temperature, which the score
multiplier sets, matters most (near-uniform attention hides it, and so does attention on one
key)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import Transducer, TransducerConfig
from asr.models.attention import chunk_visibility, rotary
from asr.models.conformer import ConformerConfig, TransformerConfig
from asr.models.lstm import LSTM
from hardware import fixed_point as fp
from hardware.int8_layers import IntLayerNorm, IntLSTM, quantize, quantize_activation_scale
from hardware.int8_transducer import calibrate, convert
from asr.arrays import mask_padding
from asr.models.context import Context
from asr.models.units import Frames
from tests.helpers import on_int8_grids, randomize

_apply = fp.integer_jit(lambda layer, *args: layer.apply(*args))
DIM, HEADS, CHUNK, LEFT = 32, 2, 4, 2


def _model(encoder, peak=1.5, seed=0):
  sizes = dict(dim=DIM, layers=2, heads=HEADS, ffn_mult=2, chunk=CHUNK, left_chunks=LEFT,
               dropout=0.0)
  enc = (ConformerConfig(conv_kernel=5, **sizes) if encoder == "conformer"
         else TransformerConfig(**sizes))
  cfg = TransducerConfig(vocab=6, num_mels=8, encoder=encoder, encoder_config=enc,
                         predictor="stateless", pred_embed=8, joint_dim=16)
  m = randomize(Transducer(cfg, rngs=nnx.Rngs(seed)), seed, scale=0.4)
  for block in m.encoder.blocks:      # q and k larger: scores `peak^2` times as spread
    qkv = block.attention.qkv.kernel
    qkv[...] = qkv[...].at[:, : 2 * DIM].multiply(peak)
  return m


class _Setup:
  """A model calibrated on a batch, converted, and the float residual stream as its blocks
  hand it to `observe` (`residuals[name]`: after the subsampling, then after each unit, zero
  past each length): a unit's input is the stream after the unit before it."""

  def __init__(self, encoder, seed=0):
    self.model = _model(encoder, seed=seed)
    rng = np.random.default_rng(seed)
    t = 96
    feats = jnp.asarray(rng.standard_normal((4, t, 8)) * 2 - 3, jnp.float32)
    lengths = jnp.asarray([t, 70, 41, 13])
    self.scales = calibrate(self.model, [(feats, lengths)])
    self.int_model = convert(self.model, self.scales)
    self.lengths = (lengths + 3) // 4                                 # 40 ms frames
    self.residuals = {}
    keep = lambda name, x: self.residuals.__setitem__(name, mask_padding(x, self.lengths))
    self.model.encode(feats, lengths, Context(observe=keep))
    self.frames = self.residuals["encoder/subsampling"].shape[1]
    self.valid = np.arange(self.frames)[None] < np.asarray(self.lengths)[:, None]
    self.s_r = 2 * self.scales["encoder/residual"] / (2 ** 15 - 1)   # the int16 residual's
    self.block, self.int_block = self.model.encoder.blocks[0], self.int_model.encoder.blocks[0]
    self.cache = self.model.encoder.init_state(4).layers[0]      # {unit: its cache}
    self.positions = jnp.broadcast_to(jnp.arange(self.frames)[None], (4, self.frames))
    self.at = Frames(self.lengths, self.positions)

  def before(self, unit: str) -> jax.Array:
    """The residual stream entering the first block's `unit`."""
    layout = [name for name, _ in self.block.layout]
    i = layout.index(unit)
    return self.residuals["encoder/subsampling" if i == 0 else
                          f"encoder/blocks/0/{layout[i - 1]}"]

  def compare(self, float_fn, unit: str):
    """(RMS error of the integer sub-block, RMS of the noise, RMS of the float output) on the
    residual `x` put on the int16 grid; `float_fn(x)` is the float sub-block's output in the
    residual's units (a half step's 1/2 included), the integer one's in int16 units."""
    r = jnp.asarray(np.round(np.asarray(self.before(unit)) / self.s_r), jnp.int32)
    x = r * self.s_r
    want = np.asarray(float_fn(x))
    with on_int8_grids(self.model, self.scales):
      noisy = np.asarray(float_fn(x))
    got = np.asarray(_apply(self.int_block.units[unit], r, self.at)) * self.s_r
    rms = lambda d: float(np.sqrt(np.mean(d[self.valid] ** 2)))
    return rms(got - want), rms(noisy - want), rms(want)


_setup = functools.lru_cache(_Setup)     # one per encoder family for the module's tests


def _assert_within_twice_the_noise(error, noise, signal):
  assert 0 < noise < 0.05 * signal       # a real, small noise to compare with
  assert error <= 2 * noise, (error, noise)


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_attention_within_twice_the_quantization_noise(encoder):
  s = _setup(encoder)
  a = s.block.attention
  float_fn = lambda v: a.forward(v, s.lengths, s.positions, s.cache["attention"])[0]
  _assert_within_twice_the_noise(*s.compare(float_fn, "attention"))
  # The attention is peaked: a frame's largest probability is a half to two thirds on average.
  x = s.before("attention")
  q, k, _ = jnp.split(a.qkv(a.norm(x)).reshape(4, s.frames, 3 * HEADS, DIM // HEADS), 3, axis=2)
  q, k = rotary(q, s.positions), rotary(k, s.positions)
  seen = (chunk_visibility(s.frames, s.frames, CHUNK, LEFT)[None]
          & s.valid[:, None, :])[:, None]
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(DIM // HEADS)
  top = np.asarray(jax.nn.softmax(jnp.where(seen, scores, -1e30), -1).max(-1))  # [B, H, T]
  assert 0.35 < top.transpose(0, 2, 1)[s.valid].mean() < 0.8


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
def test_feed_forward_within_twice_the_quantization_noise(encoder):
  s = _setup(encoder)
  # A half step's 1/2 (the Conformer's): the integer form folds it into its requantization.
  for name, scale, unit in s.block.units():
    if name.startswith("ffn"):
      _assert_within_twice_the_noise(*s.compare(lambda v: scale * unit.forward(v), name))


def test_convolution_module_within_twice_the_quantization_noise():
  s = _setup("conformer")
  conv = s.block.conv
  _assert_within_twice_the_noise(*s.compare(lambda v: conv.forward(v, s.cache["conv"])[0],
                                            "conv"))


def test_layer_norm_within_twice_its_output_rounding():
  """The integer layer norm's only noise is its output's rounding (its statistics are exact):
  RMS `step / sqrt(12)` for a uniform rounding error."""
  s = _setup("transformer")
  norm = s.block.attention.norm
  step = quantize_activation_scale(s.scales["encoder/blocks/0/attention/qkv"])
  int_norm = IntLayerNorm.from_float(np.asarray(norm.scale[...]), np.asarray(norm.bias[...]),
                                     step)
  r = jnp.asarray(np.round(np.asarray(s.before("attention")) / s.s_r), jnp.int32)
  want = np.asarray(norm(r * s.s_r))
  got = np.asarray(_apply(int_norm, r)) * step
  error = float(np.sqrt(np.mean((got - want)[s.valid] ** 2)))
  assert error <= 2 * step / np.sqrt(12)
  assert np.abs(want[s.valid]).max() > 50 * step        # a range the grid resolves


def test_lstm_within_twice_the_quantization_noise():
  rng = np.random.default_rng(5)
  b, t, d, h = 4, 30, 12, 16
  layer = randomize(LSTM(d, h, rngs=nnx.Rngs(0)), 0, scale=0.5)
  x = rng.normal(0, 1.0, (b, t, d)).astype(np.float32)
  lengths = jnp.array([30, 22, 9, 1])
  valid = np.arange(t)[None] < np.asarray(lengths)[:, None]
  s_x = quantize_activation_scale(np.abs(x).max())
  x_q = quantize(x, s_x)
  int_layer = IntLSTM.from_float(layer.input.kernel[...], layer.input.bias[...],
                                 layer.recurrent.kernel[...], s_x)
  got = np.asarray(_apply(int_layer, x_q, lengths)[0]) * 2.0 ** -7
  run = lambda: np.asarray(layer(jnp.asarray(x_q * s_x, jnp.float32), lengths)[0])
  want = run()
  with on_int8_grids(layer, {"input": np.abs(x).max()}):
    noisy = run()
  rms = lambda v: float(np.sqrt(np.mean(v[valid] ** 2)))
  _assert_within_twice_the_noise(rms(got - want), rms(noisy - want), rms(want))
