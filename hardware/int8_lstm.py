"""The LSTM encoder family (`asr.models.lstm_encoder`) in integers: frame stacking, integer LSTM
layers (`hardware.int8_layers.IntLSTM`: a Q3.12 cell, h in Q0.7), integer layer norms into the
next layer's calibrated int8 scale, and the time reduction (moving int8 values).
`hardware.int8_reference.lstm_encoder` computes the same with Python integers. Registered as
the `lstm` family of `hardware.int8_families`. Each float layer's cell class converts by the
function registered for it (`register_int_cell`), so a new cell (`asr.models.lstm.LSTM`'s
`inputs`/`cell` interface) runs here by registering one converter to an integer cell with the
same interface (`hardware.int8_layers.IntLSTM`, `scan_int_cell`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from asr.arrays import mask_padding
from asr.features import stack_frames
from asr.models.lstm import LSTM
from hardware.int8_families import register_int8_family
from hardware.int8_layers import (H_FRAC, IntLayerNorm, IntLSTM, calibrated_scale, dense_arrays,
                                  quantize, scan_int_cell)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class IntLSTMEncoder:
  """`asr.models.lstm_encoder.LSTMEncoder` in integers: LSTM layers, layer norms, stacking."""
  layers: list                    # integer cells (`IntLSTM`, or what a cell converter makes)
  norms: list                     # [IntLayerNorm], or none
  stack: int = dataclasses.field(metadata=dict(static=True))
  reduce: int = dataclasses.field(metadata=dict(static=True))
  reduce_after: int = dataclasses.field(metadata=dict(static=True))

  def prepare(self, features: jax.Array, lengths: jax.Array, scale: float):
    """Normalized float log-mels `[B, T, F]` -> int8 stacked frames, lengths."""
    return quantize_features(features, lengths, self.stack, scale)

  def encode(self, features: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int8 stacked features `[B, T', F * stack]` (`prepare`) -> int8 encoder frames
    `[B, T'', H]` at the enc_proj's input scale, and their lengths."""
    x = features
    for i, layer in enumerate(self.layers):
      if i and i == self.reduce_after and self.reduce > 1:
        x, lengths = _stack(x, lengths, self.reduce)
      x, _, _ = scan_int_cell(layer, x, lengths)
      if self.norms:
        x = self.norms[i].apply(x)
        x = mask_padding(x, lengths, 0)
    return x, lengths

  def visible_keys(self, lengths: jax.Array, frames: int) -> jax.Array:
    """No attention: zero keys a frame, `[B, frames]`."""
    return jnp.zeros((lengths.shape[0], frames), jnp.int32)

  macs_per_key = 0

  def macs(self, executed: bool = False) -> int:
    """MACs per output frame (`executed`: on non-zero weights): both products of every layer,
    the layers below the time reduction `reduce` times."""
    return sum(layer.macs(executed) * (self.reduce if i < self.reduce_after and self.reduce > 1
                                       else 1)
               for i, layer in enumerate(self.layers))


def _stack(x, lengths, factor):
  b, t, f = x.shape
  x = mask_padding(x, lengths, 0)
  x = jnp.pad(x, ((0, 0), (0, -t % factor), (0, 0)))
  return x.reshape(b, -1, f * factor), (lengths + factor - 1) // factor


def quantize_features(features: jax.Array, lengths: jax.Array, stack: int, scale: float):
  """Normalized float log-mels `[B, T, F]` -> int8 stacked frames (the processor's input)."""
  x, lengths = stack_frames(features, lengths, stack)
  return quantize(x, scale), lengths


# ---- calibration and conversion (`hardware.int8_transducer`) ----

def stage_lengths(enc, frames: int, lengths: jax.Array) -> dict[int, jax.Array]:
  """`{frames at a rate: lengths [B] at that rate}` for every rate the float encoder `enc`
  multiplies at: stacked input frames, and after the time reduction."""
  t, lengths = -(-frames // enc.stack), (lengths + enc.stack - 1) // enc.stack
  out = {t: lengths}
  if enc.reduce > 1:
    out[-(-t // enc.reduce)] = (lengths + enc.reduce - 1) // enc.reduce
  return out


def note_output(name: str, y: jax.Array, note) -> None:
  """Nothing: every range an LSTM encoder needs is a product's input."""


CELL_CONVERTERS: dict[type, object] = {}


def register_int_cell(float_class: type):
  """Decorator: the converter of a float LSTM layer class (`asr.models.lstm.LSTM` or a
  subclass with its own cell) to an integer cell, `fn(layer, name, in_scale) -> cell`."""
  def register(fn):
    CELL_CONVERTERS[float_class] = fn
    return fn
  return register


@register_int_cell(LSTM)
def _lstm(layer: LSTM, name: str, in_scale: float) -> IntLSTM:
  k_in, b_in = dense_arrays(layer.input, f"{name}/input")
  k_rec = dense_arrays(layer.recurrent, f"{name}/recurrent")[0]
  return IntLSTM.from_float(k_in, b_in, k_rec, in_scale, name=name)


def int_cell(layer, name: str, in_scale: float):
  """The float LSTM layer `layer` as an integer cell, by its class's registered converter."""
  if type(layer) not in CELL_CONVERTERS:
    raise ValueError(f"{name}: the int8 path cannot run a {type(layer).__name__} layer: no "
                     "converter is registered for its cell (register_int_cell)")
  return CELL_CONVERTERS[type(layer)](layer, name, in_scale)


def convert_encoder(enc, scales: dict[str, float]) -> tuple[IntLSTMEncoder, float, float]:
  """A float `LSTMEncoder` in integers, with calibrated `scales` -> (the integer encoder, its
  input's int8 scale, its output's: the joint's encoder projection input, or Q0.7 without layer
  norms)."""
  in_scale = calibrated_scale(scales, "encoder/layers/0/input")
  out_scale = calibrated_scale(scales, "joint/enc_proj") if enc.norms else 2.0 ** -H_FRAC
  layers, norms = [], []
  for i, layer in enumerate(enc.layers):
    s_x = in_scale if i == 0 else (calibrated_scale(scales, f"encoder/layers/{i}/input")
                                   if enc.norms else 2.0 ** -H_FRAC)
    layers.append(int_cell(layer, f"encoder/layers/{i}", s_x))
    if enc.norms:
      nxt = (f"encoder/layers/{i + 1}/input" if i + 1 < len(enc.layers) else "joint/enc_proj")
      norm = enc.norms[i]
      norms.append(IntLayerNorm.from_float(np.asarray(norm.scale[...]),
                                           np.asarray(norm.bias[...]),
                                           calibrated_scale(scales, nxt)))
  return (IntLSTMEncoder(layers, norms, enc.stack, enc.reduce, enc.reduce_after), in_scale,
          out_scale)


register_int8_family("lstm", stage_lengths=stage_lengths, note_output=note_output,
                     convert_encoder=convert_encoder)
