"""The acoustic condition of an example, as facets the evaluation breaks WER down by.

`condition(example)` -> `"noise=pink snr=10-15dB reverb=yes whisper=no"` from the schema's
`noise`, `snr_db`, `reverb` and `whisper` fields (SNR in 5 dB bands; `noise=none snr=none` for
speech with no added noise); `""` where the source does not record them (LibriSpeech).
`facets(condition)` splits one back into `{"noise": "pink", ...}`.
"""

from __future__ import annotations

import math

UNRECORDED = "unrecorded"   # the `noise` value of a source that does not record conditions
SNR_BAND_DB = 5


def condition(example: dict) -> str:
  noise = str(example.get("noise", UNRECORDED))
  if noise == UNRECORDED:
    return ""
  if noise:
    low = math.floor(float(example["snr_db"]) / SNR_BAND_DB) * SNR_BAND_DB
    snr = f"{low}-{low + SNR_BAND_DB}dB"
  else:
    noise = snr = "none"
  yes = lambda flag: "yes" if flag else "no"
  return (f"noise={noise} snr={snr} reverb={yes(example.get('reverb'))} "
          f"whisper={yes(example.get('whisper'))}")


def facets(cond: str) -> dict[str, str]:
  return dict(part.split("=", 1) for part in cond.split())
