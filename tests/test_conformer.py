"""The Transformer and Conformer encoder families: streaming against the whole utterance, padding
against the unpadded utterance, the attention mask against one built by hand and against a NumPy
attention, FLOPs against a hand count and against the matrix products the program executes,
subsampled lengths against the formula, the factory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asr.models import (ConformerConfig, ConformerEncoder, Transducer, TransducerConfig,
                        TransformerConfig, TransformerEncoder)
from asr.models.attention import ChunkedSelfAttention, chunk_visibility
from asr.models.encoder import encoder_config
from tests.helpers import matmul_flops, randomize

FAMILIES = {
    "conformer": lambda **kw: ConformerEncoder(
        6, ConformerConfig(**{**dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2,
                                     left_chunks=2, conv_kernel=3, dropout=0.0), **kw}),
        rngs=nnx.Rngs(0)),
    "transformer": lambda **kw: TransformerEncoder(
        6, TransformerConfig(**{**dict(dim=16, layers=2, heads=2, ffn_mult=2, chunk=2,
                                       left_chunks=2, dropout=0.0), **kw}),
        rngs=nnx.Rngs(0)),
}


_run = nnx.jit(lambda enc, x, n: enc(x, n))  # compiled: faster than op by op for these sizes


def _features(lengths, frames, dim=6, seed=0):
  """Random normalized features, zero past each length (as the frontend leaves them)."""
  x = np.random.default_rng(seed).standard_normal((len(lengths), frames, dim)).astype(np.float32)
  x[np.arange(frames)[None, :] >= np.asarray(lengths)[:, None]] = 0.0
  return jnp.asarray(x), jnp.asarray(lengths, jnp.int32)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("chunks_per_step", [1, 3])
def test_streaming_equals_the_whole_utterance_for_chunks_that_do_and_do_not_divide_it(
    family, chunks_per_step):
  enc = randomize(FAMILIES[family](), seed=1, scale=0.4)
  lengths = [53, 40, 7]  # 53 and 7 are not multiples of the 8-frame chunk; 40 is
  x, n = _features(lengths, 53)
  full = _run(enc, x, n)
  size = enc.stream_multiple * chunks_per_step
  padded = jnp.pad(x, ((0, 0), (0, -x.shape[1] % size), (0, 0)))
  state, frames, flops = enc.init_state(3), [], []
  step = nnx.jit(lambda e, s, f, k: e.step(s, f, k))
  for start in range(0, padded.shape[1], size):
    out, state = step(enc, state, padded[:, start:start + size], jnp.clip(n - start, 0, size))
    frames.append(np.asarray(out.frames))
    flops.append(np.asarray(out.flops))
  streamed, streamed_flops = np.concatenate(frames, 1), np.concatenate(flops, 1)
  t = full.frames.shape[1]
  np.testing.assert_array_equal(np.asarray(full.lengths), [14, 10, 2])
  np.testing.assert_allclose(streamed[:, :t], np.asarray(full.frames), atol=1e-5)
  assert not streamed[:, t:].any()
  np.testing.assert_array_equal(streamed_flops[:, :t], np.asarray(full.flops))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_padding_changes_nothing(family):
  enc = randomize(FAMILIES[family](), seed=2, scale=0.4)  # LayerNorm biases far from 0
  x, n = _features([30, 13], 30, seed=2)
  batch = _run(enc, x, n)
  for i, length in enumerate([30, 13]):
    alone = _run(enc, x[i:i + 1, :length], n[i:i + 1])
    valid = int(alone.lengths[0])
    assert valid == int(batch.lengths[i]) == -(-length // 4)
    np.testing.assert_allclose(np.asarray(batch.frames[i, :valid]),
                               np.asarray(alone.frames[0]), atol=1e-5)
    assert not np.asarray(batch.frames[i, valid:]).any()
    np.testing.assert_array_equal(np.asarray(batch.flops[i, :valid]), np.asarray(alone.flops[0]))


def _hand_mask(t, chunk, left, length):
  """Query i sees key j iff j's chunk is i's or one of the `left` before it, and j < length."""
  m = np.zeros((t, t), bool)
  for i in range(t):
    for j in range(t):
      m[i, j] = i // chunk - left <= j // chunk <= i // chunk and j < length
  return m


def test_visibility_equals_a_hand_built_mask():
  # 3 cached frames are not a multiple of chunk 2: only whole chunks are cached, so use 4.
  np.testing.assert_array_equal(np.asarray(chunk_visibility(6, 6, 2, 1)),
                                _hand_mask(6, 2, 1, 6))
  with_cache = np.asarray(chunk_visibility(4, 8, 2, 1))  # 4 cached keys, then the 4 queries
  np.testing.assert_array_equal(with_cache, _hand_mask(8, 2, 1, 8)[4:])
  np.testing.assert_array_equal(np.asarray(chunk_visibility(3, 3, 1, 0)), np.eye(3, dtype=bool))


def _numpy_attention(att, x, length):
  """Textbook masked multi-head attention in float64 with rotary positions written as complex
  rotations, on one utterance `x [T, D]`."""
  p = lambda v: np.asarray(v[...], np.float64)
  t, d = x.shape
  h, dh = att.heads, d // att.heads
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  xn = (x - mu) / np.sqrt(var + 1e-6) * p(att.norm.scale) + p(att.norm.bias)
  qkv = (xn @ p(att.qkv.kernel) + p(att.qkv.bias)).reshape(t, 3, h, dh)
  theta = 10000.0 ** (-np.arange(dh // 2) / (dh // 2))
  rot = np.exp(1j * np.arange(t)[:, None, None] * theta)            # [T, 1, dh/2]

  def rotate(a):
    z = (a[..., :dh // 2] + 1j * a[..., dh // 2:]) * rot
    return np.concatenate([z.real, z.imag], -1)
  q, k, v = rotate(qkv[:, 0]), rotate(qkv[:, 1]), qkv[:, 2]
  mask = _hand_mask(t, att.chunk, att.left, length)
  out = np.zeros((t, h, dh))
  for head in range(h):
    s = q[:, head] @ k[:, head].T / np.sqrt(dh)
    s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    out[:, head] = (w / w.sum(-1, keepdims=True)) @ v[:, head]
  return out.reshape(t, d) @ p(att.out.kernel) + p(att.out.bias)


def test_attention_equals_a_numpy_attention_and_depends_only_on_what_the_mask_lets_it_see():
  att = randomize(ChunkedSelfAttention(8, 2, 2, 1, rngs=nnx.Rngs(0)), seed=3)
  t, length = 8, 7
  x = np.random.default_rng(3).standard_normal((1, t, 8)).astype(np.float32)
  positions = jnp.arange(t)[None]

  def run(inp):
    y, keys, _ = att.forward(inp, jnp.array([length]), positions, att_cache)
    return y, keys
  att_cache = (jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 2), bool))
  y, keys = run(jnp.asarray(x))
  want = _numpy_attention(att, x[0].astype(np.float64), length)
  np.testing.assert_allclose(np.asarray(y[0, :length]), want[:length], atol=1e-4)
  mask = _hand_mask(t, 2, 1, length)
  np.testing.assert_array_equal(np.asarray(keys[0, :length]), mask.sum(1)[:length])
  # Output frame i changes with input frame j only where the mask lets i see j (or j == i).
  jac = jax.jacobian(lambda inp: run(inp)[0])(jnp.asarray(x))[0, :, :, 0, :, :]  # [T, D, T, D]
  depends = np.abs(np.asarray(jac)).sum(axis=(1, 3)) > 0
  expect = mask | np.eye(t, dtype=bool)
  np.testing.assert_array_equal(depends[:length], expect[:length])


def test_flops_per_sub_block_equal_a_hand_count():
  # num_mels 6, dim 16, ffn_mult 2, conv_kernel 3, subsampling (2, 2) with kernel 3, chunk 2,
  # one chunk of left context.
  enc = FAMILIES["conformer"](left_chunks=1)
  x, n = _features([20], 20)
  out = _run(enc, x, n)
  blocks = {k: np.asarray(v[0]) for k, v in out.aux["flops_by_block"].items()}
  # Subsampling, MACs: layer 1 (3 x 6 inputs -> 16) runs twice per output frame, layer 2
  # (3 x 16 -> 16) once: 2 * 288 + 768 = 1344; FLOPs 2688.
  np.testing.assert_array_equal(blocks["subsampling"], np.full(5, 2688.0))
  # Feed-forward: 16 x 32 + 32 x 16 = 1024 MACs, 2048 FLOPs, in each half.
  np.testing.assert_array_equal(blocks["ffn1"], np.full((5, 2), 2048.0))
  np.testing.assert_array_equal(blocks["ffn2"], np.full((5, 2), 2048.0))
  # Convolution: 16 x 32 + 3 x 16 + 16 x 16 = 816 MACs.
  np.testing.assert_array_equal(blocks["conv"], np.full((5, 2), 1632.0))
  # Attention: 16 x 48 + 16 x 16 = 1024 MACs of projections, plus 2 x 16 per visible key. Frames
  # 0, 1 see chunk 0 (2 keys); 2, 3 see chunks 0-1 (4); frame 4 sees chunks 1-2, whose frame 5
  # is past the length (3).
  keys = np.array([2, 2, 4, 4, 3])
  np.testing.assert_array_equal(blocks["attention"], np.repeat(2 * (1024 + 32 * keys), 2)
                                .reshape(5, 2))
  np.testing.assert_array_equal(np.asarray(out.flops[0]),
                                2688 + 2 * (2 * 2048 + 1632) + 2 * 2 * (1024 + 32 * keys))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_flops_equal_the_matrix_products_the_encoder_executes(family):
  # One utterance filling its 6 output frames (3 chunks): the program computes every frame's
  # products, and its scores over all T keys of the utterance (a whole utterance has no cache)
  # where a frame sees only its window.
  enc = FAMILIES[family]()
  x, n = _features([24], 24)
  out = enc(x, n)
  t, d = 6, 16                                                   # frames, dim
  unseen = t * t - sum(_hand_mask(t, 2, 2, t).sum(1))           # scores never used by a frame
  program = matmul_flops(lambda x: enc(x, n).frames, x)
  depthwise = 0 if family == "transformer" else 2 * 3 * 16 * t * 2   # elementwise, not a matmul
  assert program + depthwise == float(out.flops.sum()) + 2 * 2 * 2 * d * unseen


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lengths_follow_the_formula_and_a_one_frame_utterance_is_finite(family):
  enc = randomize(FAMILIES[family](subsample=(3, 2)), seed=5)
  x, n = _features([1, 5, 6, 7, 0], 12)
  out = _run(enc, x, n)
  np.testing.assert_array_equal(np.asarray(out.lengths), [1, 1, 1, 2, 0])  # ceil(n / 6)
  assert np.isfinite(np.asarray(out.frames)).all()
  assert np.asarray(out.frames[0, 0]).any() and not np.asarray(out.frames[4]).any()
  assert out.frame_seconds == pytest.approx(0.06)


def test_factory_builds_each_family_and_names_bad_options():
  for family, cfg in [("conformer", ConformerConfig(dim=16, layers=1, heads=2)),
                      ("transformer", TransformerConfig(dim=16, layers=1, heads=2))]:
    model = Transducer(TransducerConfig(num_mels=6, encoder=family, encoder_config=cfg),
                       rngs=nnx.Rngs(0))
    assert type(model.encoder).family == family and model.encoder.out_dim == 16
  with pytest.raises(ValueError, match="model.transformer has no option.*'conv_kernel'"):
    encoder_config("transformer", {"conv_kernel": 3})
  with pytest.raises(ValueError, match="model.conformer.subsample"):
    FAMILIES["conformer"](subsample=(4,))   # a stride wider than the kernel skips frames
  with pytest.raises(ValueError, match="heads of an even size"):
    FAMILIES["transformer"](heads=3)
  enc = FAMILIES["conformer"]()
  with pytest.raises(ValueError, match="not a multiple of 8"):
    enc.step(enc.init_state(1), jnp.zeros((1, 6, 6)), jnp.array([6]))
