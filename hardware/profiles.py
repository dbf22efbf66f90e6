"""Device profiles: what one second of a device buys. Every number of the simulated devices is here.

A profile turns a frame's work into seconds: multiply-accumulates (dense, and those left when
zeros are skipped) and weight bytes fetched from off-chip memory.

- `cpu650`: one CPU thread sustaining 650 MFLOP/s (2 FLOPs a MAC), no zero skipping, weights in
  cache or not counted. The setting the AmNet paper simulates its latencies in (Macoskey et al.,
  "Amortized Neural Networks for Low-Latency Speech Recognition", Interspeech 2021: one thread
  at 650 MFLOP/s), so latencies compare with its table.
- `cpu36sparse`: a slow float core, 36 MFLOP/s, whose sparse kernels skip zero weights: the
  AmNet experiment's processor (`experiments/configs/amnet.py`). There, every single encoder the
  paper compares ran slower than real time on its 650 MFLOP/s thread (30-43 MFLOPs a frame);
  this project's `rnnt.py:small` LSTM (3.6 MFLOPs a 60 ms frame, 67 MFLOP/s with the joint and
  prediction network) would not, so the processor is slowed instead of the model grown: the
  full LSTM runs at 1.85x real time here and a single encoder compressed to 70% of its MACs at
  1.35x, as the paper's single encoders did (its factorized AmNet, 23 MFLOPs, ran below).
- `npu`: an int8 neural edge processor of the kind Amazon describes for its AZ1/AZ2 (8-bit or
  lower arithmetic, weights stored compressed and decompressed on chip, zeros skipped). Amazon
  publishes no figures, so these are assumed, of the order of published edge NPUs (e.g. Arm's
  Ethos-U55 at 256 MACs a cycle): 256 int8 MACs a cycle at 500 MHz (128 GMAC/s), 1 MiB of on-chip
  memory for weights, 2 GB/s of off-chip bandwidth, a decompressor of 16 bytes a cycle, zero
  skipping on. A model whose compressed weights fit on chip loads them once; a larger one streams
  them on every chunk.

Time of a unit of work on the NPU: three pipelined stages (fetch, decompress, compute), the
slowest sets the pace: `max(macs / (macs_per_cycle * clock), bytes / bandwidth,
bytes / (decompress_bytes_per_cycle * clock))`. On the CPU: `2 * macs / flops_per_second`.

Profiles load from a dict or a JSON file (`load_profile`); a missing or unknown field fails at
once, naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np


@dataclasses.dataclass(frozen=True)
class CPUProfile:
  """A float processor: every multiply-accumulate costs the same, or (`zero_skipping`, a
  sparse kernel) those on zero weights cost nothing."""
  name: str
  flops_per_second: float
  zero_skipping: bool = False
  kind: str = "cpu"

  def seconds(self, macs_dense, macs_executed=None, weight_bytes=0.0):
    """Seconds for `macs_dense` multiply-accumulates, `macs_executed` of them on non-zero
    weights (what runs with zero skipping on; default all); arrays broadcast. Weight traffic
    is not modelled."""
    macs = macs_dense if macs_executed is None or not self.zero_skipping else macs_executed
    return 2.0 * np.asarray(macs, np.float64) / self.flops_per_second


@dataclasses.dataclass(frozen=True)
class NPUProfile:
  """An int8 accelerator: MAC array, on-chip weight memory, off-chip bandwidth, decompressor."""
  name: str
  macs_per_cycle: int
  clock_hz: float
  on_chip_bytes: int
  memory_bytes_per_second: float
  decompress_bytes_per_cycle: float
  zero_skipping: bool
  kind: str = "npu"

  @property
  def macs_per_second(self) -> float:
    return self.macs_per_cycle * self.clock_hz

  def seconds(self, macs_dense, macs_executed=None, weight_bytes=0.0):
    """Seconds for a unit of work: `macs_dense` MACs, `macs_executed` of them on non-zero
    weights (what runs with zero skipping on; default all), `weight_bytes` fetched from off-chip
    memory (compressed) and decompressed. Arrays broadcast."""
    macs = macs_dense if macs_executed is None or not self.zero_skipping else macs_executed
    compute = np.asarray(macs, np.float64) / self.macs_per_second
    fetch = np.asarray(weight_bytes, np.float64) / self.memory_bytes_per_second
    decompress = np.asarray(weight_bytes, np.float64) / (self.decompress_bytes_per_cycle
                                                         * self.clock_hz)
    return np.maximum(compute, np.maximum(fetch, decompress))

  def weight_bytes_per_chunk(self, model_bytes: int) -> int:
    """Weight bytes fetched per processed chunk: none when the (compressed) model fits on chip
    (loaded once, before the utterance), all of it every chunk when it does not."""
    return 0 if model_bytes <= self.on_chip_bytes else int(model_bytes)


PROFILES = {
    "cpu650": CPUProfile(name="cpu650", flops_per_second=650e6),
    "cpu36sparse": CPUProfile(name="cpu36sparse", flops_per_second=36e6, zero_skipping=True),
    "npu": NPUProfile(name="npu", macs_per_cycle=256, clock_hz=500e6, on_chip_bytes=1 << 20,
                      memory_bytes_per_second=2e9, decompress_bytes_per_cycle=16.0,
                      zero_skipping=True),
}
KINDS = {"cpu": CPUProfile, "npu": NPUProfile}


def profile_from_dict(spec: dict, where: str = "profile") -> CPUProfile | NPUProfile:
  """A profile from `{"kind": "cpu"|"npu", "name": ..., <every field of that kind>}`; a missing
  or unknown field raises ValueError naming it and `where` the spec came from."""
  kind = spec.get("kind")
  if kind not in KINDS:
    raise ValueError(f"{where}: 'kind' must be one of {sorted(KINDS)}, got {kind!r}")
  cls = KINDS[kind]
  fields = {f.name for f in dataclasses.fields(cls)} - {"kind"}
  required = {f.name for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING} - {"kind"}
  missing = sorted(required - set(spec))
  unknown = sorted(set(spec) - fields - {"kind"})
  if missing:
    raise ValueError(f"{where}: a {kind} profile needs {', '.join(missing)} (missing)")
  if unknown:
    raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} for a {kind} profile "
                     f"(fields: {', '.join(sorted(fields))})")
  profile = cls(**{k: spec[k] for k in fields if k in spec})
  for f in dataclasses.fields(cls):
    value = getattr(profile, f.name)
    if f.type in ("float", "int") and not (isinstance(value, (int, float))
                                           and not isinstance(value, bool) and value > 0):
      raise ValueError(f"{where}: {f.name} must be a positive number, got {value!r}")
    if f.type == "bool" and not isinstance(value, bool):
      raise ValueError(f"{where}: {f.name} must be true or false, got {value!r}")
  return profile


def load_profile(name_or_path: str | os.PathLike) -> CPUProfile | NPUProfile:
  """A built-in profile by name (`cpu650`, `cpu36sparse`, `npu`) or one from a JSON file."""
  if str(name_or_path) in PROFILES:
    return PROFILES[str(name_or_path)]
  path = pathlib.Path(name_or_path)
  if not path.exists():
    raise ValueError(f"unknown device profile {str(name_or_path)!r}: built in are "
                     f"{', '.join(PROFILES)}, or give a JSON file")
  return profile_from_dict(json.loads(path.read_text()), where=str(path))
