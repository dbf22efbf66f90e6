"""The model's feature normalization: each mode against NumPy, streaming against the whole."""

import jax.numpy as jnp
import numpy as np
import pytest

from asr.models.frontend import FeatureNormalizer

RNG = np.random.default_rng(0)
X = RNG.normal(3.0, 2.0, (3, 50, 4)).astype(np.float32)
LENGTHS = np.array([50, 20, 1])
MEAN, STD = np.array([2.5, 3.0, 3.5, 4.0]), np.array([1.5, 2.0, 2.5, 3.0])


def _normalizer(mode, prior=7.0):
  n = FeatureNormalizer(4, mode, prior_frames=prior)
  n.set_statistics(MEAN, STD)
  return n


def _causal_reference(x, prior, eps=1e-5):
  """Frame by frame, float64: the running statistics of the standardized frames so far, with a
  prior of `prior` frames of mean 0 and variance 1."""
  z = (x.astype(np.float64) - MEAN) / (STD + eps)
  out = np.zeros_like(z)
  for t in range(len(z)):
    n = t + 1 + prior
    m = z[: t + 1].sum(0) / n
    v = ((z[: t + 1] ** 2).sum(0) + prior) / n - m * m
    out[t] = (z[t] - m) / np.sqrt(v + eps)
  return out


def test_causal_normalization_equals_the_frame_by_frame_reference():
  y = np.asarray(_normalizer("causal")(jnp.asarray(X), jnp.asarray(LENGTHS)))
  for b, n in enumerate(LENGTHS):
    np.testing.assert_allclose(y[b, :n], _causal_reference(X[b, :n], 7.0), atol=2e-5)
    assert not np.any(y[b, n:])


def test_global_and_utterance_normalization():
  y = np.asarray(_normalizer("global")(jnp.asarray(X), jnp.asarray(LENGTHS)))
  np.testing.assert_allclose(y[0], (X[0] - MEAN) / (STD + 1e-5), rtol=1e-5, atol=1e-6)
  y = np.asarray(_normalizer("utterance")(jnp.asarray(X), jnp.asarray(LENGTHS)))
  for b, n in enumerate(LENGTHS[:2]):
    np.testing.assert_allclose(y[b, :n].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y[b, :n].std(0), 1, atol=1e-3)
    assert not np.any(y[b, n:])


def test_a_long_prior_tends_to_global_and_a_short_one_to_the_utterance_so_far():
  x, lengths = jnp.asarray(X), jnp.asarray(LENGTHS)
  glob = np.asarray(_normalizer("global")(x, lengths))
  np.testing.assert_allclose(np.asarray(_normalizer("causal", 1e9)(x, lengths)), glob, atol=1e-3)
  last = np.asarray(_normalizer("causal", 1e-6)(x, lengths))[0, -1]
  whole = np.asarray(_normalizer("utterance")(x, lengths))[0, -1]
  np.testing.assert_allclose(last, whole, atol=1e-3)


@pytest.mark.parametrize("mode", ["causal", "global"])
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_streaming_equals_the_whole_utterance_and_padding_changes_nothing(mode, chunk):
  n = _normalizer(mode)
  whole = np.asarray(n(jnp.asarray(X), jnp.asarray(LENGTHS)))
  state, parts = n.init_state(3), []
  for start in range(0, 50, chunk):
    part_lengths = np.clip(LENGTHS - start, 0, chunk)
    y, state = n.step(state, jnp.asarray(X[:, start:start + chunk]), jnp.asarray(part_lengths))
    parts.append(np.asarray(y))
  np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)
  padded = np.concatenate([X, RNG.normal(size=(3, 30, 4)).astype(np.float32)], axis=1)
  np.testing.assert_array_equal(np.asarray(n(jnp.asarray(padded), jnp.asarray(LENGTHS)))[:, :50],
                                whole)


def test_utterance_normalization_cannot_stream_and_unknown_modes_are_named():
  n = _normalizer("utterance")
  with pytest.raises(ValueError, match="cannot stream"):
    n.step(n.init_state(1), jnp.zeros((1, 3, 4)), jnp.array([3]))
  with pytest.raises(ValueError, match="model.normalization='cmvn'"):
    FeatureNormalizer(4, "cmvn")
