"""Reading users' audio files (WAV, FLAC, OGG: whatever libsndfile reads) as 16 kHz mono."""

from __future__ import annotations

import os

import numpy as np

from asr.data import acoustics


class AudioFileError(ValueError):
  """A file that cannot be used as speech; the message names the file and the problem."""


def load_audio(path: os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """`[num_samples]` float32 in [-1, 1] at `sample_rate`: channels averaged, resampled with the
  corpus's anti-aliasing resampler when the file's rate differs."""
  import soundfile
  try:
    audio, rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
  except Exception as e:  # libsndfile's errors name the format problem, not the file
    raise AudioFileError(f"{path}: unreadable audio ({type(e).__name__}: {e})") from e
  if audio.shape[0] == 0:
    raise AudioFileError(f"{path}: empty audio (no samples)")
  audio = audio.mean(axis=1)
  if not np.all(np.isfinite(audio)):
    raise AudioFileError(f"{path}: audio holds non-finite samples")
  if rate != sample_rate:
    audio = acoustics.resample(audio, rate, sample_rate)
  return audio.astype(np.float32)
