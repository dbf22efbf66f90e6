"""Synthetic speakers: an English accent of eSpeak NG crossed with a continuous voice design.

A speaker is one accent (eSpeak NG's language voice) plus one generated *variant file*: base pitch
and range, a vocal-tract scale that moves every formant together (with per-formant jitter),
formant heights and widths, flutter, roughness, consonant strength, the Klatt or the default
synthesizer, and a speaking rate. Because the design is continuous, a corpus can hold hundreds of
distinct voices per accent; held-out speakers are new draws, never seen in training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# eSpeak NG language voice -> accent name. en-Shaw (Shavian script) is not an accent.
ACCENTS = {
    "en-us": "us",
    "en": "uk",
    "en-gb-scotland": "scottish",
    "en-gb-x-rp": "rp",
    "en-us-nyc": "new_york",
    "en-gb-x-gbclan": "lancaster",
    "en-gb-x-gbcwmd": "west_midlands",
    "en-029": "caribbean",
}
# One accent never appears in train/dev/test; its own split serves fairness work.
HELD_OUT_ACCENT = "en-029"
SEEN_ACCENTS = tuple(a for a in ACCENTS if a != HELD_OUT_ACCENT)

_WHISPER_LINES = "voicing 17\nbreath 75 75 50 40 15 10\nbreathw 150 150 200 200 400 400\n"


@dataclasses.dataclass(frozen=True)
class Speaker:
  speaker_id: str         # e.g. "scottish-train-0012"
  language: str           # eSpeak NG language voice, e.g. "en-gb-scotland"
  variant: str            # variant file name, e.g. "v3t0012"
  variant_text: str       # the variant file's contents
  rate_wpm: float         # mean speaking rate in words per minute

  @property
  def accent(self) -> str:
    return ACCENTS[self.language]

  def voice(self, whisper: bool = False) -> str:
    return f"{self.language}+{self.variant}{'w' if whisper else ''}"

  def variant_files(self) -> dict[str, str]:
    return {self.variant: self.variant_text, self.variant + "w": self.variant_text + _WHISPER_LINES}


def _variant_text(rng: np.random.Generator, name: str) -> tuple[str, float]:
  """Draws one voice design; returns (variant file text, speaking rate in wpm)."""
  female = rng.random() < 0.5
  # Vocal-tract scale: formants of shorter tracts are higher (children and women ~ +15-20%).
  tract = rng.uniform(1.02, 1.22) if female else rng.uniform(0.84, 1.04)
  pitch = rng.uniform(150, 250) if female else rng.uniform(70, 140)
  pitch_range = pitch * rng.uniform(1.15, 1.9)
  lines = [
      "language variant", f"name {name}", f"gender {'female' if female else 'male'}", "",
      f"pitch {pitch:.0f} {pitch_range:.0f}",
      f"flutter {rng.integers(0, 30)}",
      f"roughness {rng.integers(0, 4)}",
      f"consonants {rng.integers(80, 125)} {rng.integers(80, 125)}",
  ]
  for k in range(0, 9):
    freq = 100 * tract * rng.uniform(0.96, 1.04) if 1 <= k <= 5 else 100
    lines.append(f"formant {k} {freq:.0f} {rng.integers(70, 125)} {rng.integers(80, 160)}")
  if rng.random() < 0.25:
    lines.append(f"klatt {rng.integers(1, 5)}")
  if rng.random() < 0.2:
    lines.append(f"echo {rng.integers(10, 60)} {rng.integers(5, 20)}")
  if rng.random() < 0.2:
    lines.append("breath " + " ".join(str(rng.integers(0, 12)) for _ in range(8)))
  return "\n".join(lines) + "\n", float(rng.uniform(130, 230))


def make_speakers(seed: int, split: str, language: str, count: int) -> list[Speaker]:
  """`count` speakers of one accent for one split, a pure function of (seed, split, language)."""
  split_code = {"train": 1, "dev": 2, "test": 3, "test_accent": 4, "test_handwritten": 5}[split]
  lang_code = list(ACCENTS).index(language)
  speakers = []
  for i in range(count):
    rng = np.random.default_rng([seed, 7, split_code, lang_code, i])
    variant = f"v{lang_code}{split[:2]}{split_code}{i:04d}"
    text, rate = _variant_text(rng, variant)
    speakers.append(Speaker(f"{ACCENTS[language]}-{split}-{i:04d}", language, variant, text, rate))
  return speakers
