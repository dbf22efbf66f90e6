"""Streaming Conformer (or Transformer) transducer on the synthetic corpus. Variants: `tiny`
(tests, CI: trains and evaluates in under two minutes on CPU), `small`, `base`.

  asr-train --config experiments/configs/conformer.py:small --workdir W
  asr-train --config experiments/configs/conformer.py:small --workdir W \
      --config.model.encoder=transformer      # the same sizes without convolution modules

Everything but the encoder (data, prediction network, joint, objective, optimizer, training
loop) is `experiments/configs/rnnt.py`'s, changed only where noted.
"""

import ml_collections

from experiments.configs import rnnt


def encoder_sizes(variant: str) -> dict:
  """The options both families share (asr/models/conformer.py)."""
  return dict(
      dim={"tiny": 48, "small": 144, "base": 256}[variant],
      layers={"tiny": 2, "small": 6, "base": 12}[variant],
      heads={"tiny": 2, "small": 4, "base": 4}[variant],
      ffn_mult=4,
      subsample=(2, 2),       # 40 ms frames
      subsample_kernel=3,
      chunk=4,                # 160 ms chunks: a frame looks ahead at most 120 ms
      left_chunks=8,          # 1.28 s of left context
      dropout=0.0 if variant == "tiny" else 0.1,
  )


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  c = rnnt.get_config(arg)
  variant = c.variant
  del c.model.lstm
  c.model.encoder = "conformer"
  c.model.conformer = ml_collections.ConfigDict(
      dict(encoder_sizes(variant), conv_kernel={"tiny": 7, "small": 15, "base": 15}[variant]))
  c.model.transformer = ml_collections.ConfigDict(encoder_sizes(variant))
  c.model.joint_dim = {"tiny": 64, "small": 256, "base": 320}[variant]
  c.optim.peak_lr = {"tiny": 3e-3, "small": 2e-3, "base": 1e-3}[variant]
  return c
