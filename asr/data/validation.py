"""Checks that every example is usable, with errors that name the utterance and the problem.

`check_audio` and `check_transcript` return an example's first problem or None. The pipeline either raises
`BadExampleError` on a problem or, where the config says `on_bad_example="skip"`, drops the
example and counts it under the problem's name in `ProblemCounter` (reported in run metrics):
nothing is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

PROBLEMS = ("unreadable_audio", "empty_audio", "sample_rate", "too_short", "too_long",
            "empty_transcript",
            "out_of_vocabulary", "transcript_too_long")


class BadExampleError(ValueError):
  def __init__(self, utterance_id: str, problem: str, detail: str):
    super().__init__(f"utterance {utterance_id!r}: {problem}: {detail}")
    self.utterance_id, self.problem, self.detail = utterance_id, problem, detail


@dataclasses.dataclass(frozen=True)
class Problem:
  name: str      # one of PROBLEMS
  detail: str


def check_audio(audio, sample_rate: int, *, expected_rate: int, max_seconds: float,
                min_samples: int = 1) -> Problem | None:
  """Audio must be a finite 1-D signal at `expected_rate`, non-silent, with at least
  `min_samples` (one analysis window) and at most `max_seconds` of audio."""
  try:
    audio = np.asarray(audio)
    if audio.ndim != 1 or not (np.issubdtype(audio.dtype, np.integer)
                               or np.issubdtype(audio.dtype, np.floating)):
      return Problem("unreadable_audio", f"expected 1-D numeric samples, got {audio.dtype} "
                     f"of shape {audio.shape}")
  except Exception as e:  # a malformed object that NumPy cannot even hold
    return Problem("unreadable_audio", f"{type(e).__name__}: {e}")
  if sample_rate != expected_rate:
    return Problem("sample_rate", f"{sample_rate} Hz, expected {expected_rate} Hz")
  if audio.size == 0:
    return Problem("empty_audio", "no samples")
  if np.issubdtype(audio.dtype, np.floating) and not np.all(np.isfinite(audio)):
    return Problem("unreadable_audio", "non-finite samples (NaN or inf)")
  if not np.any(audio):
    return Problem("empty_audio", f"all {audio.size} samples are zero")
  if audio.size < min_samples:
    return Problem("too_short", f"{audio.size} samples, shorter than one {min_samples}-sample "
                   "analysis window")
  seconds = audio.size / expected_rate
  if seconds > max_seconds:
    return Problem("too_long", f"{seconds:.2f} s, maximum is {max_seconds:.2f} s")
  return None


def check_transcript(text: str, unknown_characters) -> Problem | None:
  """`unknown_characters(text) -> list[str]` is the tokenizer's vocabulary check."""
  if not text.strip():
    return Problem("empty_transcript", "the transcript is empty")
  unknown = unknown_characters(text)
  if unknown:
    return Problem("out_of_vocabulary",
                   f"characters outside the vocabulary: {''.join(unknown)!r} in {text!r}")
  return None


class ProblemCounter:
  """Counts skipped examples per problem; `as_metrics()` gives `{"skipped/<problem>": n}`."""

  def __init__(self):
    self.counts: collections.Counter = collections.Counter()

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def as_metrics(self) -> dict[str, int]:
    return {f"skipped/{name}": self.counts[name] for name in PROBLEMS if self.counts[name]}
