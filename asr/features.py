"""Acoustic features in JAX: log-mel filterbanks (whole utterances or streamed chunks),
augmentation, frame stacking, and the statistics that the model's normalization starts from.

Every function is jittable and works on padded batches with explicit lengths:
`audio [B, S]` float32 in [-1, 1] with `audio_lengths [B]`, features `[B, T, F]` with
`feature_lengths [B]`. Frames past a length are zero on output. Constants (window, mel matrix) are
computed once in NumPy. Normalization lives in the model (`asr.models.frontend`), so a
streaming recognizer normalizes exactly as training did.

Conventions (shared with `librosa.feature.melspectrogram(center=False)` up to where a window
sits inside its FFT frame): 25 ms Hann window (periodic), 10 ms hop, 512-point FFT, power
spectrum, 80 Slaney-scale mel bands with Slaney area normalization, natural log with a floor.
Frame `t` covers samples `[t * hop, t * hop + window)`; an utterance of `S >= window` samples has
`1 + (S - window) // hop` frames.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from asr.arrays import length_mask, mask_padding


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  sample_rate: int = 16000
  num_mels: int = 80
  window_ms: float = 25.0
  hop_ms: float = 10.0
  fft_size: int = 512
  fmin: float = 0.0
  fmax: float | None = None   # None: Nyquist
  log_floor: float = 1e-6

  @property
  def window(self) -> int:
    return int(round(self.sample_rate * self.window_ms / 1000))

  @property
  def hop(self) -> int:
    return int(round(self.sample_rate * self.hop_ms / 1000))

  @property
  def hop_seconds(self) -> float:
    """The time between feature frames: an encoder's input frame."""
    return self.hop_ms / 1000


def num_frames(num_samples, cfg: FeatureConfig = FeatureConfig()):
  """Frames for `num_samples` samples (NumPy or JAX ints; 0 when shorter than one window)."""
  xp = jnp if isinstance(num_samples, jax.Array) else np
  return xp.maximum(0, (num_samples - cfg.window) // cfg.hop + 1) * (num_samples >= cfg.window)


# ---- constants, NumPy ----

def _hz_to_mel(f):
  """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
  f = np.asarray(f, np.float64)
  lin = f / (200.0 / 3)
  log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
  return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
  m = np.asarray(m, np.float64)
  lin = m * (200.0 / 3)
  log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
  return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=8)
def mel_matrix(cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """Triangular mel filters, `[fft_size // 2 + 1, num_mels]` float32, area-normalized (Slaney)."""
  fmax = cfg.fmax or cfg.sample_rate / 2
  fft_hz = np.linspace(0, cfg.sample_rate / 2, cfg.fft_size // 2 + 1)
  edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(fmax), cfg.num_mels + 2))
  lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (fft_hz[None] - lower) / (center - lower)
  down = (upper - fft_hz[None]) / (upper - center)
  weights = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (upper - lower))
  return weights.T.astype(np.float32)


@functools.lru_cache(maxsize=8)
def hann_window(cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
  n = np.arange(cfg.window)
  return (0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.window)).astype(np.float32)  # periodic


@functools.lru_cache(maxsize=8)
def _mel_bands(cfg: FeatureConfig, groups: int = 4) -> tuple:
  """The mel matrix cut into `groups` blocks of consecutive bands, each with the FFT-bin range
  where its filters are non-zero: (band slice, bin start, bin stop, block [stop-start, bands])."""
  m = mel_matrix(cfg)
  blocks = []
  for bands in np.array_split(np.arange(cfg.num_mels), groups):
    nonzero = np.flatnonzero(m[:, bands].any(axis=1))
    lo, hi = int(nonzero.min()), int(nonzero.max()) + 1
    blocks.append((lo, hi, m[lo:hi, bands[0]:bands[-1] + 1]))
  return tuple(blocks)


def _apply_mel(power: jax.Array, cfg: FeatureConfig) -> jax.Array:
  """`power [..., fft_size // 2 + 1] @ mel_matrix`, skipping the filters' zeros: each block of
  bands multiplies only its own bins (a quarter of the multiply-adds, exactly the same sums)."""
  return jnp.concatenate([
      jnp.matmul(power[..., lo:hi], block, precision=jax.lax.Precision.HIGHEST)
      for lo, hi, block in _mel_bands(cfg)], axis=-1)


# ---- features, JAX ----

def log_mel(audio: jax.Array, audio_lengths: jax.Array,
            cfg: FeatureConfig = FeatureConfig()) -> tuple[jax.Array, jax.Array]:
  """`audio [B, S]` (float in [-1, 1], or int16 PCM), `audio_lengths [B]` -> log-mel
  `[B, T, num_mels]`, frame lengths `[B]`."""
  audio = jnp.asarray(audio)
  if audio.dtype == jnp.int16:
    audio = audio.astype(jnp.float32) / 32768.0
  audio = audio.astype(jnp.float32)
  total = int(num_frames(audio.shape[1], cfg))
  if total == 0:
    raise ValueError(f"padded audio of {audio.shape[1]} samples is shorter than one window")
  # Zero samples past each length, so padding never leaks into the last real frames.
  audio = jnp.where(length_mask(audio_lengths, audio.shape[1]), audio, 0.0)
  starts = jnp.arange(total) * cfg.hop
  frames = audio[:, starts[:, None] + jnp.arange(cfg.window)[None, :]]  # [B, T, window]
  spectrum = jnp.fft.rfft(frames * hann_window(cfg), n=cfg.fft_size)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  mel = _apply_mel(power, cfg)
  feats = jnp.log(jnp.maximum(mel, cfg.log_floor))
  lengths = num_frames(jnp.asarray(audio_lengths, jnp.int32), cfg)
  return jnp.where(length_mask(lengths, total)[..., None], feats, 0.0), lengths


def global_stats(batches) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std `[F]` over the valid frames of an iterable of (features, lengths) batches
  (float64 sums: the training statistics the model's normalization starts from)."""
  total, sq, count = 0.0, 0.0, 0
  for features, lengths in batches:
    features, lengths = np.asarray(features, np.float64), np.asarray(lengths)
    valid = features[length_mask(lengths, features.shape[1])]
    total, sq, count = total + valid.sum(0), sq + (valid**2).sum(0), count + len(valid)
  mean = total / count
  return mean.astype(np.float32), np.sqrt(np.maximum(sq / count - mean**2, 0.0)).astype(np.float32)


def stack_frames(features: jax.Array, lengths: jax.Array, factor: int) -> tuple[jax.Array, jax.Array]:
  """Concatenates `factor` consecutive frames and keeps every `factor`-th: `[B, T, F]` ->
  `[B, ceil(T / factor), F * factor]`, lengths `ceil(lengths / factor)`. A partial last group
  is kept, completed with zeros (never with whatever lies past the length)."""
  b, t, f = features.shape
  pad = -t % factor
  features = jnp.pad(mask_padding(features, lengths), ((0, 0), (0, pad), (0, 0)))
  stacked = features.reshape(b, (t + pad) // factor, factor * f)
  return stacked, (lengths + factor - 1) // factor


# ---- training-time augmentation ----

@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """SpecAugment (Park et al., 2019) plus feature-domain speed and vocal-tract perturbation."""
  freq_masks: int = 2
  freq_mask_width: int = 15        # at most this many mel bins per mask
  time_masks: int = 2
  time_mask_ratio: float = 0.05    # each time mask covers at most this share of the utterance
  speed: tuple = (0.9, 1.1)        # time-axis resampling factors (1.1 = 10% faster)
  warp: tuple = (0.9, 1.1)         # mel-axis warping factors (vocal-tract length)


def _resample_axis(x: jax.Array, positions: jax.Array, axis: int) -> jax.Array:
  """Linear interpolation of `x` along `axis` at fractional `positions` (clamped to the ends)."""
  n = x.shape[axis]
  lo = jnp.clip(jnp.floor(positions).astype(jnp.int32), 0, n - 1)
  hi = jnp.clip(lo + 1, 0, n - 1)
  w = jnp.clip(positions - lo, 0.0, 1.0)
  take = lambda idx: jnp.take_along_axis(x, idx, axis=axis)
  shape = [1] * x.ndim
  shape[0], shape[axis] = positions.shape[0], positions.shape[1]
  lo, hi, w = lo.reshape(shape), hi.reshape(shape), w.reshape(shape)
  return take(lo) * (1 - w) + take(hi) * w


def perturb(rng: jax.Array, features: jax.Array, lengths: jax.Array,
            speed=(0.9, 1.1), warp=(0.9, 1.1), strength=1.0) -> tuple[jax.Array, jax.Array]:
  """Random per-utterance speed (time resampling) and mel-axis warp. Shapes are kept: a slowed
  utterance that would outgrow the padding is slowed less (its factor is raised to length / T).
  `strength` (a scalar in [0, 1], may be traced) pulls every factor toward 1: 0 changes nothing."""
  b, t, f = features.shape
  k_speed, k_warp = jax.random.split(rng)
  toward_one = lambda x: 1.0 + (x - 1.0) * strength
  factor = toward_one(jax.random.uniform(k_speed, (b,), minval=speed[0], maxval=speed[1]))
  factor = jnp.maximum(factor, lengths / t)
  new_lengths = jnp.minimum(jnp.floor(lengths / factor).astype(jnp.int32), t)
  positions = jnp.arange(t)[None, :] * factor[:, None]
  out = _resample_axis(features, positions, axis=1)
  alpha = toward_one(jax.random.uniform(k_warp, (b,), minval=warp[0], maxval=warp[1]))
  out = _resample_axis(out, jnp.arange(f)[None, :] / alpha[:, None], axis=2)
  return jnp.where(length_mask(new_lengths, t)[..., None], out, 0.0), new_lengths


def spec_augment(rng: jax.Array, features: jax.Array, lengths: jax.Array,
                 cfg: AugmentConfig = AugmentConfig(), strength=1.0) -> jax.Array:
  """Zeroes random frequency bands and time spans (within each utterance's length). `strength`
  (a scalar in [0, 1], may be traced) scales the masks' widths: 0 masks nothing."""
  b, t, f = features.shape
  keys = jax.random.split(rng, 4)
  keep = jnp.ones((b, t, f), bool)
  if cfg.freq_masks:
    width = jax.random.randint(keys[0], (b, cfg.freq_masks), 0, cfg.freq_mask_width + 1)
    width = jnp.floor(width * strength).astype(jnp.int32)
    start = (jax.random.uniform(keys[1], (b, cfg.freq_masks)) * (f - width)).astype(jnp.int32)
    bins = jnp.arange(f)[None, None, :]
    band = (bins >= start[..., None]) & (bins < (start + width)[..., None])  # [B, M, F]
    keep &= ~jnp.any(band, axis=1)[:, None, :]
  if cfg.time_masks:
    max_width = jnp.floor(lengths * cfg.time_mask_ratio * strength).astype(jnp.int32)[:, None]
    width = (jax.random.uniform(keys[2], (b, cfg.time_masks)) * (max_width + 1)).astype(jnp.int32)
    start = (jax.random.uniform(keys[3], (b, cfg.time_masks)) *
             jnp.maximum(lengths[:, None] - width, 1)).astype(jnp.int32)
    frames = jnp.arange(t)[None, None, :]
    span = (frames >= start[..., None]) & (frames < (start + width)[..., None])  # [B, M, T]
    keep &= ~jnp.any(span, axis=1)[:, :, None]
  return jnp.where(keep, features, 0.0)


def augment(rng: jax.Array, features: jax.Array, lengths: jax.Array,
            cfg: AugmentConfig = AugmentConfig(), strength=1.0) -> tuple[jax.Array, jax.Array]:
  """`perturb` then `spec_augment`: `[B, T, F]` -> `[B, T, F]`, new lengths `[B]`. `strength`
  in [0, 1] (the `augment_strength` schedule in training) scales both; 0 is the identity."""
  k1, k2 = jax.random.split(rng)
  features, lengths = perturb(k1, features, lengths, cfg.speed, cfg.warp, strength)
  return spec_augment(k2, features, lengths, cfg, strength), lengths


featurize = jax.jit(log_mel, static_argnames=("cfg",))
featurize.__doc__ = """The input pipeline's feature step, jitted: `log_mel`. `audio [B, S]` ->
`features [B, T, num_mels]`, `feature_lengths [B]` int32 (the model normalizes them)."""


# ---- streaming ----

def stream_chunk_samples(frames_per_chunk: int, cfg: FeatureConfig = FeatureConfig()
                         ) -> tuple[int, int]:
  """(first chunk, every later chunk) in samples, so each chunk of a stream yields
  `frames_per_chunk` feature frames: the first holds one window and `frames_per_chunk - 1`
  hops, the later ones `frames_per_chunk` hops."""
  return cfg.window + (frames_per_chunk - 1) * cfg.hop, frames_per_chunk * cfg.hop


def stream_log_mel(state, audio: jax.Array, audio_lengths: jax.Array,
                   cfg: FeatureConfig = FeatureConfig()):
  """Log-mels of audio heard in chunks; the frames equal `log_mel` of the whole utterance.

  Args:
    state: None before the first chunk, then what the previous call returned: the samples
      not yet past (`window - hop` of them, `[B, window - hop]`) and how many are real `[B]`.
    audio: `[B, S]` this chunk; sized by `stream_chunk_samples` (the first chunk is
      `window - hop` samples longer than the others).
    audio_lengths: `[B]` real samples in this chunk: S, then fewer in an utterance's last chunk,
      then 0 in every chunk after it.
  Returns:
    features `[B, T, F]`, lengths `[B]`, the new state.
  """
  keep = cfg.window - cfg.hop
  audio = jnp.asarray(audio)
  if audio.dtype == jnp.int16:
    audio = audio.astype(jnp.float32) / 32768.0
  if state is None:
    buffer, real = audio, audio_lengths
  else:
    carry, carry_lengths = state
    buffer = jnp.concatenate([carry, audio.astype(jnp.float32)], axis=1)
    real = carry_lengths + audio_lengths
  if (buffer.shape[1] - keep) % cfg.hop or buffer.shape[1] < cfg.window:
    raise ValueError(f"a stream chunk of {audio.shape[1]} samples does not end on a frame "
                     "boundary; size chunks with stream_chunk_samples")
  feats, lengths = log_mel(buffer, real, cfg)
  consumed = feats.shape[1] * cfg.hop
  new_state = (buffer[:, consumed:consumed + keep], jnp.clip(real - consumed, 0, keep))
  return feats, lengths, new_state
