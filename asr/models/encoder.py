"""The encoder contract, and the factory that builds an encoder family by name.

Every encoder (LSTM stack, Transformer, the amortized encoders to come) has one call and one
output:

  encoder(features [B, T, F], lengths [B], ctx) -> EncoderOutput

- `frames [B, T', H]`, `lengths [B]`: the output frames, zero past each length; padded input
  frames never change a valid frame (mask after every normalization).
- `flops [B, T']`: the analytic cost spent on each output frame (multiply-accumulates x 2),
  zero on padding, so compute regularizers, latency simulation and dashboards treat every
  model alike.
- `frame_seconds`: the audio one output frame covers, so cost compares across frame rates
  (`flops_per_second = flops_per_frame / frame_seconds`).
- `aux`: whatever penalties and auxiliary losses need (frames below a time reduction, routing
  probabilities, gate decisions).

`ctx` (`asr.models.context.Context`) carries the training flag, a PRNG key (dropout, Gumbel
noise), the step's schedule values (temperatures, penalty weights) and whether statistics
update; the default is inference.
Every encoder knows `input_frame_seconds`, the hop of the features it takes (the model's
`TransducerConfig.features`). Causal encoders also stream: `init_state(batch)` and
`step(state, features, lengths)`, fed
chunks of a multiple of `stream_multiple` input frames (an utterance's last chunk may hold
fewer real frames); the streamed output equals the full-utterance output.

A family is a module class plus a frozen dataclass of its options, registered under a name;
`config.model.encoder` names the family and `config.model.<family>` holds its options.
"""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EncoderOutput:
  frames: jax.Array    # [B, T', H]
  lengths: jax.Array   # [B]
  flops: jax.Array     # [B, T']
  frame_seconds: float = dataclasses.field(default=0.0, metadata=dict(static=True))
  aux: dict = dataclasses.field(default_factory=dict)


ENCODERS: dict[str, tuple[type, type]] = {}


def register_encoder(family: str, config_class: type):
  """Class decorator: `@register_encoder("lstm", LSTMEncoderConfig)`. The class is built as
  `cls(num_mels, config, input_frame_seconds=..., rngs=...)`."""
  def register(cls):
    ENCODERS[family] = (config_class, cls)
    return cls
  return register


def _family(name: str) -> tuple[type, type]:
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder family {name!r} (model.encoder); known: "
                     f"{', '.join(sorted(ENCODERS))}")
  return ENCODERS[name]


def encoder_config(family: str, options: dict):
  """The family's config dataclass from a dict of options; an unknown key fails, named."""
  config_class, _ = _family(family)
  fields = {f.name for f in dataclasses.fields(config_class)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ValueError(f"model.{family} has no option(s) {', '.join(map(repr, unknown))}; the "
                     f"{family} encoder takes {', '.join(sorted(fields))}")
  return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def build_encoder(family: str, config, num_mels: int, *, input_frame_seconds: float, rngs):
  config_class, cls = _family(family)
  if not isinstance(config, config_class):
    raise TypeError(f"the {family} encoder takes a {config_class.__name__}, got {config!r}")
  return cls(num_mels, config, input_frame_seconds=input_frame_seconds, rngs=rngs)
