"""Signal processing for the synthetic corpus: resampling, speed change, noise, reverberation, gain.

All functions take and return float32 mono audio `[num_samples]` and draw randomness from a
`numpy.random.Generator` they are given, so a corpus is a pure function of its seed.
"""

from __future__ import annotations

import fractions

import numpy as np
import scipy.signal


def resample(audio: np.ndarray, rate_in: int, rate_out: float) -> np.ndarray:
  """Polyphase resampling with a Kaiser-windowed anti-aliasing FIR (scipy.signal.resample_poly).

  `rate_out` may be fractional: a ratio is approximated by a fraction with denominator <= 1000,
  exact for 22050 -> 16000 (320/441).
  """
  ratio = fractions.Fraction(rate_out / rate_in).limit_denominator(1000)
  if ratio == 1:
    return audio.astype(np.float32)
  out = scipy.signal.resample_poly(audio, ratio.numerator, ratio.denominator,
                                   window=("kaiser", 8.0))
  return out.astype(np.float32)


def change_speed(audio: np.ndarray, rate: int, factor: float) -> np.ndarray:
  """Plays `audio` `factor` times faster (tempo and pitch together, as Kaldi's speed perturbation)."""
  return resample(audio, rate, rate / factor)


def room_impulse_response(rng: np.random.Generator, rate: int, rt60_s: float,
                          direct_to_reverb_db: float) -> np.ndarray:
  """A synthetic RIR: a unit direct path followed by exponentially decaying noise (decay 60 dB in rt60)."""
  n = max(2, int(rt60_s * rate))
  t = np.arange(n) / rate
  tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)  # ln(1000) = 6.9078: -60 dB at rt60
  tail[0] = 0.0
  tail *= np.sqrt(10 ** (-direct_to_reverb_db / 10) / max(np.sum(tail**2), 1e-12))
  tail[0] = 1.0
  return tail.astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
  """Convolves with `rir`; keeps the first `len(audio) + len(rir) // 4` samples (part of the tail)."""
  out = scipy.signal.fftconvolve(audio, rir)[: len(audio) + len(rir) // 4]
  return out.astype(np.float32)


def _colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
  """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
  spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
  f = np.arange(n // 2 + 1, dtype=np.float64)
  f[0] = 1.0
  noise = np.fft.irfft(spectrum / f ** (exponent / 2), n)
  return noise / (np.std(noise) + 1e-12)


def make_noise(rng: np.random.Generator, n: int, rate: int, kind: str) -> np.ndarray:
  """Unit-variance noise of a kind: white, pink, brown, hum (mains and harmonics), babble-like."""
  if kind == "white":
    x = rng.standard_normal(n)
  elif kind == "pink":
    x = _colored_noise(rng, n, 1.0)
  elif kind == "brown":
    x = _colored_noise(rng, n, 2.0)
  elif kind == "hum":
    t = np.arange(n) / rate
    base = rng.choice([50.0, 60.0])
    x = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 6)) + 0.1 * rng.standard_normal(n)
  elif kind == "babble":
    # Speech-shaped noise with a syllable-rate (~4 Hz) amplitude modulation.
    x = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    t = np.arange(n) / rate
    x *= 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
  else:
    raise ValueError(f"unknown noise kind {kind!r}")
  x = np.asarray(x, np.float64)
  return (x / (np.std(x) + 1e-12)).astype(np.float32)


NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
  """Mixes unit-variance `noise` so that speech power / noise power = `snr_db`.

  Speech power is measured over samples above 1% of the peak, so leading silence does not
  make the noise quieter than asked.
  """
  active = audio[np.abs(audio) > 0.01 * (np.max(np.abs(audio)) + 1e-12)]
  power = np.mean(active**2) if active.size else 0.0
  scale = np.sqrt(power / 10 ** (snr_db / 10))
  return (audio + scale * noise[: len(audio)]).astype(np.float32)


def set_peak(audio: np.ndarray, peak_dbfs: float) -> np.ndarray:
  """Scales so that the largest magnitude is `peak_dbfs` decibels below full scale."""
  peak = np.max(np.abs(audio)) + 1e-12
  return (audio * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def to_int16(audio: np.ndarray) -> np.ndarray:
  return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
