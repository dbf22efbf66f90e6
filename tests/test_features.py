"""Features against an independent implementation (librosa), and their properties."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from asr import features as F

CFG = F.FeatureConfig()


def _librosa_log_mel(y):
  # librosa centres the 400-sample window in its 512-sample FFT frame, 56 samples in; padding
  # 56 zeros on each side puts its frame t on samples [160 t, 160 t + 400) as ours.
  s = librosa.feature.melspectrogram(
      y=np.pad(np.asarray(y, np.float64), (56, 56)), sr=16000, n_fft=512, hop_length=160,
      win_length=400, window="hann", center=False, power=2.0, n_mels=80, htk=False,
      norm="slaney")
  return np.log(np.maximum(s.T, CFG.log_floor))


def test_mel_matrix_equals_librosa():
  ours = F.mel_matrix(CFG)
  ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80).T
  np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_hann_window_equals_scipy():
  import scipy.signal
  np.testing.assert_allclose(F.hann_window(CFG), scipy.signal.get_window("hann", 400), atol=1e-7)


@pytest.mark.parametrize("seconds", [0.03, 0.5, 1.337])
def test_log_mel_equals_librosa(seconds):
  rng = np.random.default_rng(0)
  n = int(seconds * 16000)
  t = np.arange(n) / 16000
  y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
  ours, lengths = F.log_mel(y[None], jnp.array([n]))
  ref = _librosa_log_mel(y)
  assert int(lengths[0]) == ref.shape[0] == 1 + (n - 400) // 160
  # Stated tolerance: 1e-3 in natural-log units (float32 FFT against librosa's float64 path).
  np.testing.assert_allclose(np.asarray(ours[0]), ref, atol=1e-3)


def test_padding_changes_nothing_and_padded_frames_are_zero():
  rng = np.random.default_rng(1)
  y = rng.standard_normal(8000).astype(np.float32) * 0.1
  short, ls = F.log_mel(y[None], jnp.array([8000]))
  padded = np.concatenate([y, rng.standard_normal(4000).astype(np.float32)])  # junk, not zeros
  long, ll = F.log_mel(padded[None], jnp.array([8000]))
  assert int(ls[0]) == int(ll[0])
  np.testing.assert_allclose(np.asarray(long[0, : ls[0]]), np.asarray(short[0]), atol=1e-6)
  assert not np.any(np.asarray(long[0, ls[0]:]))


def test_num_frames():
  assert F.num_frames(399) == 0 and F.num_frames(400) == 1 and F.num_frames(559) == 1
  assert F.num_frames(560) == 2
  np.testing.assert_array_equal(F.num_frames(jnp.array([0, 400, 16000])), [0, 1, 98])


def test_global_stats_equal_numpy_over_valid_frames():
  rng = np.random.default_rng(3)
  x = rng.normal(1.0, 3.0, (3, 40, 5)).astype(np.float32)
  lengths = np.array([40, 10, 25])
  x[1, 10:] = 1e6  # junk past a length must not count
  mean, std = F.global_stats([(x[:2], lengths[:2]), (x[2:], lengths[2:])])
  valid = np.concatenate([x[b, :n] for b, n in enumerate(lengths)])
  np.testing.assert_allclose(mean, valid.mean(0), rtol=1e-5)
  np.testing.assert_allclose(std, valid.std(0), rtol=1e-4)


def test_stack_frames_matches_numpy():
  x = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
  y, lengths = F.stack_frames(jnp.asarray(x), jnp.array([7, 4]), 3)
  assert y.shape == (2, 3, 9)
  np.testing.assert_array_equal(np.asarray(y[0, 1]), x[0, 3:6].reshape(-1))
  np.testing.assert_array_equal(np.asarray(y[0, 2]), np.concatenate([x[0, 6], np.zeros(6)]))
  # The second utterance is 4 frames long: its partial last group takes zeros, not frames 4-5.
  np.testing.assert_array_equal(np.asarray(y[1, 1]), np.concatenate([x[1, 3], np.zeros(6)]))
  assert not np.asarray(y[1, 2]).any()
  np.testing.assert_array_equal(np.asarray(lengths), [3, 2])


def test_spec_augment_masks_stay_within_limits():
  cfg = F.AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_ratio=0.1)
  x = jnp.ones((8, 100, 80))
  lengths = jnp.array([100, 90, 80, 70, 60, 50, 40, 30])
  y = np.asarray(F.spec_augment(jax.random.key(0), x, lengths, cfg))
  for b, n in enumerate(np.asarray(lengths)):
    masked_bins = np.all(y[b] == 0, axis=0).sum()
    masked_frames = np.all(y[b] == 0, axis=1).sum()
    assert masked_bins <= 2 * 10
    assert masked_frames <= 2 * int(n * 0.1)
  assert (y == 0).any() and (y == 1).any()


def test_perturb_with_unit_factors_is_identity_and_keeps_shapes():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((2, 30, 8)).astype(np.float32))
  lengths = jnp.array([30, 12])
  x = jnp.where(jnp.arange(30)[None, :, None] < lengths[:, None, None], x, 0.0)
  y, ly = F.perturb(jax.random.key(1), x, lengths, speed=(1.0, 1.0), warp=(1.0, 1.0))
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ly), [30, 12])


def test_perturb_speed_changes_lengths_by_the_factor():
  x = jnp.ones((64, 200, 8))
  lengths = jnp.full((64,), 100)
  y, ly = F.perturb(jax.random.key(2), x, lengths, speed=(0.8, 1.25), warp=(1.0, 1.0))
  ly = np.asarray(ly)
  assert ly.min() >= 80 and ly.max() <= 125 and len(set(ly.tolist())) > 5
  # A full-length utterance cannot be slowed past the padding.
  y, ly = F.perturb(jax.random.key(3), x, jnp.full((64,), 200), speed=(0.8, 1.0), warp=(1, 1))
  assert int(np.max(ly)) <= 200


def test_augment_strength_zero_is_the_identity_and_half_strength_halves_the_limits():
  """The `augment_strength` schedule's scale: 0 leaves features and lengths alone (the ramp's
  start), a half halves the widest masks and pulls speed factors halfway to 1."""
  rng = np.random.default_rng(6)
  cfg = F.AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_ratio=0.2,
                        speed=(0.8, 1.25), warp=(0.9, 1.1))
  x = jnp.asarray(rng.standard_normal((16, 120, 40)).astype(np.float32))
  lengths = jnp.full((16,), 100)
  x = jnp.where(jnp.arange(120)[None, :, None] < 100, x, 0.0)
  y, ly = F.augment(jax.random.key(7), x, lengths, cfg, strength=0.0)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ly), np.asarray(lengths))
  # Half strength: lengths within 100 / (1 +- half the range), masks within half the widths.
  _, ly = F.perturb(jax.random.key(8), x, lengths, cfg.speed, (1.0, 1.0), strength=0.5)
  assert 100 / 1.125 - 1 <= int(np.min(ly)) and int(np.max(ly)) <= 100 / 0.9 + 1
  ones = jnp.ones((16, 100, 40))
  y = np.asarray(F.spec_augment(jax.random.key(9), ones, lengths, cfg, strength=0.5))
  for b in range(16):
    assert np.all(y[b] == 0, axis=0).sum() <= 2 * 5
    assert np.all(y[b] == 0, axis=1).sum() <= 2 * 10
  assert (y == 0).any()


def test_featurize_is_the_jitted_log_mel():
  rng = np.random.default_rng(5)
  audio = jnp.asarray(rng.standard_normal((2, 16000)).astype(np.float32) * 0.1)
  feats, lengths = F.featurize(audio, jnp.array([16000, 8000]))
  assert feats.shape == (2, 98, 80) and feats.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(lengths), [98, 48])
  ref, _ = F.log_mel(audio, jnp.array([16000, 8000]))
  np.testing.assert_allclose(np.asarray(feats), np.asarray(ref), atol=1e-5)  # jit fuses ops


@pytest.mark.parametrize("frames_per_chunk", [1, 6])
def test_streamed_log_mel_equals_the_whole_utterance(frames_per_chunk):
  rng = np.random.default_rng(6)
  lengths = np.array([16000, 9123, 2000])
  audio = (rng.standard_normal((3, 16000)) * 3000).astype(np.int16)
  whole, whole_lengths = F.log_mel(audio, jnp.asarray(lengths))
  first, rest = F.stream_chunk_samples(frames_per_chunk)
  state, pieces, counts, start = None, [], np.zeros(3, int), 0
  while start < 16000:
    size = first if state is None else rest
    chunk = np.zeros((3, size), np.int16)
    part = audio[:, start:start + size]
    chunk[:, :part.shape[1]] = part
    chunk_lengths = np.clip(lengths - start, 0, size)
    feats, got, state = F.stream_log_mel(state, jnp.asarray(chunk), jnp.asarray(chunk_lengths))
    assert feats.shape[1] == frames_per_chunk
    for b in range(3):
      pieces.append((b, counts[b], np.asarray(feats[b, : int(got[b])])))
      counts[b] += int(got[b])
    start += size
  np.testing.assert_array_equal(counts, np.asarray(whole_lengths))
  for b, at, frames in pieces:
    np.testing.assert_allclose(frames, np.asarray(whole[b, at:at + len(frames)]), atol=1e-4)


def test_a_stream_chunk_off_the_frame_grid_is_refused():
  with pytest.raises(ValueError, match="does not end on a frame boundary"):
    F.stream_log_mel(None, jnp.zeros((1, 500)), jnp.array([500]))
