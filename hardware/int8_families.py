"""The integer form of each float encoder family, registered by the family's name as
`asr.models.encoder.register_encoder` registers the float ones: what `hardware.int8_transducer`
needs to calibrate and convert an encoder.

  register_int8_family("lstm", stage_lengths=..., note_output=..., convert_encoder=...)

- `stage_lengths(encoder, frames, lengths [B]) -> {frames at a rate: lengths at that rate}`:
  every frame rate the float encoder multiplies at, so calibration sees valid frames only;
- `note_output(layer name, product output, note)`: the ranges the integer form needs of a
  product's output (beyond its inputs, which calibration always notes);
- `convert_encoder(encoder, scales) -> (integer encoder, its input's int8 scale, its output's)`;
- `note_encoded(encoder, encoded, note)` (optional): ranges only the encoder's output shows
  (`EncoderOutput.aux`: what its cells report per frame from inside their scans).
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Int8Family:
  stage_lengths: Callable
  note_output: Callable
  convert_encoder: Callable
  note_encoded: Callable | None = None


INT8_FAMILIES: dict[str, Int8Family] = {}


def register_int8_family(*names: str, stage_lengths: Callable, note_output: Callable,
                         convert_encoder: Callable, note_encoded: Callable | None = None) -> None:
  for name in names:
    INT8_FAMILIES[name] = Int8Family(stage_lengths, note_output, convert_encoder, note_encoded)


def int8_family(name: str) -> Int8Family:
  if name not in INT8_FAMILIES:
    raise ValueError(f"the int8 executor runs {', '.join(sorted(INT8_FAMILIES))} encoders; this "
                     f"model's encoder is {name!r}")
  return INT8_FAMILIES[name]
